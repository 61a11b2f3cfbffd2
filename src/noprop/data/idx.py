"""MNIST and Fashion-MNIST from their original IDX files (gzip-compressed), read with numpy."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from noprop.data.base import ClassificationData, DataError

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
#: Per-dataset pixel mean and standard deviation of the training set (after scaling to [0, 1]).
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
_MAGIC = {1: 2049, 3: 2051}  # labels, images


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip-compressed IDX file (uint8 payload); errors name the file and the fault."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing data file {path}") from None
    except (OSError, EOFError) as err:
        raise DataError(f"corrupt or truncated data file {path}: {err}") from None
    if len(raw) < 8:
        raise DataError(f"corrupt data file {path}: too short for an IDX header")
    magic = int.from_bytes(raw[0:4], "big")
    ndim = raw[3]
    if magic not in _MAGIC.values() or _MAGIC.get(ndim) != magic:
        raise DataError(f"{path} is not an IDX file of uint8 images or labels (magic {magic})")
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"corrupt data file {path}: {len(raw)} bytes, header promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_dataset(name: str, directory: Path) -> ClassificationData:
    """Load ``name`` (``mnist`` or ``fashion-mnist``) from the four IDX files in ``directory``."""
    if not directory.is_dir():
        raise DataError(f"{name}: data directory {directory} does not exist")
    missing = [f for f in IDX_FILES.values() if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{name}: missing {', '.join(missing)} in {directory}")
    arrays = {key: read_idx(directory / fname) for key, fname in IDX_FILES.items()}
    mean, std = NORMALISATION[name]

    def images(a: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(a.copy()).float() / 255.0 - mean) / std).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return ClassificationData(
        name,
        images(arrays["train_x"]),
        labels(arrays["train_y"]),
        images(arrays["test_x"]),
        labels(arrays["test_y"]),
        num_classes=10,
    )
