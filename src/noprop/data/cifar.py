"""CIFAR-10 and CIFAR-100 from either official version: the ``.tar.gz`` archive or its folder.

*Python version*: each batch file is a pickled dict: ``data`` a ``(N, 3072)`` uint8 array (1024
red, 1024 green, 1024 blue values of a 32x32 image, row by row) and the labels (``labels`` for
CIFAR-10; ``fine_labels`` and ``coarse_labels`` for CIFAR-100); the meta file holds the class
names. Unpickling can run code, so the unpickler here accepts nothing but numpy arrays and plain
containers.

*Binary version*: each ``.bin`` file is a run of fixed-size records, the label byte(s) then the
same 3,072 pixel bytes: CIFAR-10 ``<label><3072 pixels>`` (3,073 bytes), CIFAR-100
``<coarse><fine><3072 pixels>`` (3,074 bytes). No pickle is involved; the class names come from
:mod:`noprop.data.cifar_names`, so the archive's text files are not needed.

Either way :func:`noprop.data.load_dataset` checks the official md5 before reading.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noprop.data.augment import cifar_augmentation
from noprop.data.base import ClassificationData, DataError
from noprop.data.catalog import (
    CIFAR10_BINARY_FOLDER,
    CIFAR10_FOLDER,
    CIFAR100_BINARY_FOLDER,
    CIFAR100_FOLDER,
    DatasetInfo,
)
from noprop.data.cifar_names import class_names

VERSIONS = ("python", "binary")
PIXELS = 3072


@dataclass(frozen=True)
class CifarFormat:
    """File and key names of one CIFAR variant in one version (``meta`` is empty for binary)."""

    folder: str
    archive: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    version: str = "python"
    #: Binary version: label bytes before the pixels of a record, and which of them is the label.
    label_bytes: int = 1
    label_offset: int = 0

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXELS


def cifar_format(variant: str, label_kind: str = "fine", version: str = "python") -> CifarFormat:
    """``variant`` is ``cifar-10`` or ``cifar-100``; ``label_kind`` (CIFAR-100) ``fine`` or ``coarse``;
    ``version`` the official ``python`` (pickles) or ``binary`` (fixed-size records) distribution."""
    if version not in VERSIONS:
        raise DataError(f"CIFAR comes as the 'python' or the 'binary' version, got {version!r}")
    if variant == "cifar-10":
        if version == "binary":
            return CifarFormat(CIFAR10_BINARY_FOLDER, "cifar-10-binary.tar.gz",
                               tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin",
                               "", "labels", "", "binary")
        return CifarFormat(CIFAR10_FOLDER, "cifar-10-python.tar.gz",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                           "batches.meta", "labels", "label_names")
    if variant == "cifar-100":
        if label_kind not in ("fine", "coarse"):
            raise DataError(f"CIFAR-100 labels are 'fine' or 'coarse', got {label_kind!r}")
        if version == "binary":  # records are <coarse label><fine label><pixels>
            return CifarFormat(CIFAR100_BINARY_FOLDER, "cifar-100-binary.tar.gz", ("train.bin",),
                               "test.bin", "", f"{label_kind}_labels", "", "binary", label_bytes=2,
                               label_offset=0 if label_kind == "coarse" else 1)
        return CifarFormat(CIFAR100_FOLDER, "cifar-100-python.tar.gz", ("train",), "test", "meta",
                           f"{label_kind}_labels", f"{label_kind}_label_names")
    raise DataError(f"unknown CIFAR variant {variant!r}")


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 rebuild bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and builtin containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def unpickle(raw: bytes, source: str) -> dict[str, Any]:
    """A CIFAR pickle as a dict with ``str`` keys (Python 2 pickles are read as latin-1)."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as err:  # any malformed pickle: report it by file name
        raise DataError(f"{source} is not a readable CIFAR pickle: {err}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{source} is not a CIFAR batch: expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_members(path: Path, fmt: CifarFormat) -> dict[str, bytes]:
    """The bytes of the batch and meta files, from the archive (one sequential pass) or the folder."""
    wanted = (*fmt.train, fmt.test, *((fmt.meta,) if fmt.meta else ()))
    if path.is_dir():
        folder = path / fmt.folder if (path / fmt.folder).is_dir() else path
        missing = [n for n in wanted if not (folder / n).is_file()]
        if missing:
            raise DataError(f"missing {', '.join(missing)} in {folder}")
        return {n: (folder / n).read_bytes() for n in wanted}
    members = {f"{fmt.folder}/{n}": n for n in wanted}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for info in tar:
                if info.name in members and info.isfile():
                    f = tar.extractfile(info)
                    assert f is not None
                    found[members[info.name]] = f.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable .tar.gz archive (corrupt or truncated?): {err}") from None
    missing = [m for m, n in members.items() if n not in found]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}")
    return found


def read_cifar(path: Path, variant: str, label_kind: str = "fine", version: str = "python"
               ) -> dict[str, Any]:
    """Raw arrays from an archive or folder: ``train_x``/``test_x`` uint8 ``(N, 3, 32, 32)``,
    ``train_y``/``test_y`` int64, ``class_names``. Reads the files as they are (no checksum)."""
    fmt = cifar_format(variant, label_kind, version)
    if not path.exists():
        raise DataError(f"{variant}: {path} does not exist")
    raw = read_members(path, fmt)
    if version == "binary":
        return _read_binary(raw, fmt, path, class_names(variant, label_kind))

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        return _batch(unpickle(raw.pop(name), f"{path}:{name}"), fmt, f"{path}:{name}")

    meta = unpickle(raw[fmt.meta], f"{path}:{fmt.meta}")
    train = [batch(name) for name in fmt.train]
    test_x, test_y = batch(fmt.test)
    names = meta.get(fmt.names_key)
    if not isinstance(names, list | tuple):
        raise DataError(f"{path}:{fmt.meta} has no {fmt.names_key!r} list")
    return {
        "train_x": np.concatenate([x for x, _ in train]),
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": test_x,
        "test_y": test_y,
        "class_names": tuple(str(n) for n in names),
    }


def _read_binary(raw: dict[str, bytes], fmt: CifarFormat, path: Path, names: tuple[str, ...]
                 ) -> dict[str, Any]:
    train = [_records(raw.pop(name), fmt, f"{path}:{name}", len(names)) for name in fmt.train]
    test_x, test_y = _records(raw.pop(fmt.test), fmt, f"{path}:{fmt.test}", len(names))
    return {
        "train_x": np.concatenate([x for x, _ in train]),
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": test_x,
        "test_y": test_y,
        "class_names": names,
    }


def _records(data: bytes, fmt: CifarFormat, source: str, num_classes: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels from a binary batch of fixed-size records."""
    size = fmt.record_bytes
    if not data or len(data) % size:
        raise DataError(f"{source}: {len(data)} bytes is not a whole number of {size}-byte CIFAR records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, size)
    labels = records[:, fmt.label_offset].astype(np.int64)
    if labels.max() >= num_classes:
        raise DataError(f"{source}: label {int(labels.max())} found, "
                        f"{fmt.label_key} run 0..{num_classes - 1}")
    return records[:, fmt.label_bytes:].reshape(-1, 3, 32, 32).copy(), labels


def _batch(d: dict[str, Any], fmt: CifarFormat, source: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = d.get("data"), d.get(fmt.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{source}: 'data' must be a (N, 3072) uint8 array, found {shape}")
    if labels is None:
        raise DataError(f"{source} has no {fmt.label_key!r}")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(data),):
        raise DataError(f"{source}: {len(data)} images but {y.shape} labels")
    return data.reshape(-1, 3, 32, 32), y


def load_cifar(info: DatasetInfo, path: Path, version: str = "python") -> ClassificationData:
    """``info`` (cifar-10, cifar-100, cifar-100-coarse) from ``path``: the archive or the folder."""
    variant = "cifar-10" if info.name == "cifar-10" else "cifar-100"
    raw = read_cifar(path, variant, info.label_kind, version)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)).mul_(1.0 / 255.0).sub_(mean).div_(std)

    if len(raw["class_names"]) != info.num_classes:
        raise DataError(
            f"{path}: meta lists {len(raw['class_names'])} classes, {info.name} has {info.num_classes}"
        )
    return ClassificationData(
        info.name,
        images(raw["train_x"]),
        torch.from_numpy(raw["train_y"]),
        images(raw["test_x"]),
        torch.from_numpy(raw["test_y"]),
        num_classes=info.num_classes,
        train_transform=cifar_augmentation(info.mean, info.std),
        class_names=raw["class_names"],
        normalization=(tuple(info.mean), tuple(info.std)),
    )
