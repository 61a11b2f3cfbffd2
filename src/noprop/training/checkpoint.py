"""Checkpoints: one file of tensors and plain values, written atomically, read back safely.

``torch.load(weights_only=True)`` reads them, so a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from noprop.atomic import atomic_write_bytes

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or from an incompatible configuration."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (tensors, numbers, strings, dicts) and write it atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; corrupt files raise CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a noprop checkpoint (format {CHECKPOINT_FORMAT})")
    return state
