"""MNIST and Fashion-MNIST from their original IDX files (gzip-compressed), read with numpy.

IDX: a 4-byte magic number (0x0000, type 0x08 = uint8, number of dimensions), one big-endian
uint32 per dimension, then the uint8 payload. Images are ``(N, 28, 28)``, labels ``(N,)``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from noprop.data.base import ClassificationData, DataError
from noprop.data.catalog import CATALOG

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
#: Per-dataset pixel mean and standard deviation of the training set (after scaling to [0, 1]).
NORMALISATION = {name: (CATALOG[name].mean[0], CATALOG[name].std[0]) for name in ("mnist", "fashion-mnist")}
_MAGIC = {1: 2049, 3: 2051}  # labels, images


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip-compressed IDX file (uint8 payload); errors name the file and the fault."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing data file {path}") from None
    except (OSError, EOFError, zlib.error) as err:
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
    """Load ``name`` (``mnist`` or ``fashion-mnist``) from the four IDX files in ``directory``.

    This reads the files as they are; :func:`noprop.data.load_dataset` verifies them first.
    """
    if not directory.is_dir():
        raise DataError(f"{name}: data directory {directory} does not exist")
    missing = [f for f in IDX_FILES.values() if not (directory / f).is_file()]
    if missing:
        raise DataError(f"{name}: missing {', '.join(missing)} in {directory}")
    arrays = {key: read_idx(directory / fname) for key, fname in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name}: {split} files hold {x.shape} images, {y.shape} labels in {directory}")
    mean, std = NORMALISATION[name]

    def images(a: np.ndarray) -> torch.Tensor:
        # one pass, in place: uint8 -> float32 -> standardised (no full-size temporaries)
        t = torch.from_numpy(a.astype(np.float32))
        return t.mul_(1.0 / 255.0).sub_(mean).div_(std).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return ClassificationData(
        name,
        images(arrays["train_x"]),
        labels(arrays["train_y"]),
        images(arrays["test_x"]),
        labels(arrays["test_y"]),
        num_classes=CATALOG[name].num_classes,
        normalization=((mean,), (std,)),
    )
