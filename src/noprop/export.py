"""A trained model as one ``.safetensors`` file: weights plus the configuration that rebuilds them.

The file holds the method's ``state_dict`` (no optimizer state, no random states) and, in the
safetensors header's string metadata, JSON of what loading needs: the run configuration, the data
spec and the input preparation (``data_info``: normalisation, class names). ``noprop.run.load_run``,
``Classifier.load`` and ``noprop predict`` read it like a checkpoint; nothing in it is executable,
unlike a pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from noprop.atomic import atomic_write_bytes
from noprop.training.checkpoint import CheckpointError, load_checkpoint

SUFFIX = ".safetensors"
FORMAT = "noprop-model/1"
#: The checkpoint entries an exported model keeps (JSON in the metadata), besides the weights.
META_KEYS = ("config", "spec", "data_info", "noprop_version")


def export_model(checkpoint: Path, out: Path) -> Path:
    """Write ``checkpoint``'s model to ``out`` (a ``.safetensors`` file); return ``out``."""
    state = load_checkpoint(checkpoint)
    # contiguous, unshared copies: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state["model"].items()}
    metadata = {"format": FORMAT, **{k: json.dumps(state.get(k)) for k in META_KEYS}}
    # as every run file: atomically, with the umask's permissions (save_file leaves a 0600 file)
    atomic_write_bytes(out, save(tensors, metadata=metadata))
    return out


def read_model(path: Path) -> dict[str, Any]:
    """An exported model as the checkpoint-like dict ``load_run`` expects (``model`` = weights)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable .safetensors file: {err}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a .safetensors file but not a noprop model "
                              f"(no {FORMAT!r} metadata)")
    state: dict[str, Any] = {k: json.loads(metadata[k]) for k in META_KEYS if k in metadata}
    state["model"] = dict(tensors)
    return state


def is_exported(path: Path) -> bool:
    return path.suffix == SUFFIX


__all__ = ["export_model", "is_exported", "read_model"]
