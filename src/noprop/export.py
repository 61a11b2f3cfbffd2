"""A trained model as one ``.safetensors`` file: weights plus the configuration that rebuilds them.

The file holds the method's ``state_dict`` (no optimizer state, no random states) and, in the
safetensors header's string metadata, JSON of what loading needs: the run configuration, the data
spec and the input preparation (``data_info``: normalisation, class names).
:meth:`noprop.saved_run.SavedRun.read` (so ``Classifier.load`` and every command) reads it like a
checkpoint; nothing in it is executable, unlike a pickle. This module is the file format alone;
``SavedRun.export`` writes a saved run's model in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from noprop.atomic import atomic_write_bytes

SUFFIX = ".safetensors"
FORMAT = "noprop-model/1"
#: The checkpoint entries an exported model keeps (JSON in the metadata), besides the weights.
META_KEYS = ("config", "spec", "data_info", "noprop_version", "temperatures")


class ExportError(ValueError):
    """A file that is not a readable exported noprop model."""


def write_model(model: dict[str, torch.Tensor], meta: dict[str, Any], out: Path) -> Path:
    """Write the weights ``model`` and the JSON-able ``meta`` entries to ``out``; return ``out``."""
    # contiguous, unshared copies: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.items()}
    metadata = {"format": FORMAT, **{k: json.dumps(meta.get(k)) for k in META_KEYS}}
    # as every run file: atomically, with the umask's permissions (save_file leaves a 0600 file)
    atomic_write_bytes(out, save(tensors, metadata=metadata))
    return out


def read_model(path: Path) -> dict[str, Any]:
    """An exported model as the checkpoint-like dict ``SavedRun`` reads (``model`` = weights)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ExportError(f"{path} is not a readable .safetensors file: {err}") from None
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{path} is a .safetensors file but not a noprop model "
                              f"(no {FORMAT!r} metadata)")
    state: dict[str, Any] = {k: json.loads(metadata[k]) for k in META_KEYS if k in metadata}
    state["model"] = dict(tensors)
    return state


def is_exported(path: Path) -> bool:
    return path.suffix == SUFFIX


__all__ = ["ExportError", "is_exported", "read_model", "write_model"]
