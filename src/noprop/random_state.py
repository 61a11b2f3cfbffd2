"""The process's random state: seed it from one run seed, capture it, restore it.

A checkpoint stores :func:`capture_rng_state` so that a resumed run draws the same numbers as an
uninterrupted one; every training and benchmark process starts with :func:`seed_everything`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Every global random state a training step may draw from: torch CPU, CUDA, numpy, Python.

    Stored as tensors and plain numbers, so ``torch.load(weights_only=True)`` reads it back.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any] | torch.Tensor) -> None:
    """Undo :func:`capture_rng_state` (a bare tensor, from older checkpoints, is the torch CPU state)."""
    # a checkpoint loaded with map_location="cuda" brings these tensors to the GPU: set_rng_state
    # wants them on the CPU
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state.cpu())
        return
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # another GPU count: keep the current device's stream reproducible at least
            torch.cuda.set_rng_state(cuda[0])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random`` from one run seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
