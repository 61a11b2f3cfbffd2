"""Writers for small files in the official dataset formats (IDX .gz, CIFAR python pickles); no tests here."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from noprop.data.catalog import DataFile, FileLayout

#: ../shared/data relative to the project root: the real MNIST and Fashion-MNIST files.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def idx_bytes(array: np.ndarray) -> bytes:
    """A gzip-compressed IDX file of uint8 ``array`` (images ``(N, H, W)`` or labels ``(N,)``)."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def tiny_idx_files(n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(np.arange(n_test) % 10),
    }


def layout_for(files: dict[str, bytes], mirrors: tuple[str, ...] = (), kind: str = "idx") -> FileLayout:
    """A catalog layout whose md5s and sizes are those of ``files`` (to stand in for the official)."""
    return FileLayout(kind, tuple(DataFile(name, hashlib.md5(data).hexdigest(), len(data), mirrors)
                              for name, data in files.items()))


def cifar_batch(n: int, label_key: str | tuple[str, ...], num_classes: int | tuple[int, ...], seed: int,
                *, bytes_keys: bool = False) -> dict:
    """A batch dict as in the official pickles: ``data`` (N, 3072) uint8 and list labels.

    Image i has the constant colour (R, G, B) = (i % 256, 2 * i % 256, 3 * i % 256), so tests can
    check the channel order of the decoded images."""
    i = np.arange(n)
    planes = [np.repeat(((k + 1) * i % 256)[:, None], 1024, axis=1) for k in range(3)]
    data = np.concatenate(planes, axis=1).astype(np.uint8)
    keys = (label_key,) if isinstance(label_key, str) else label_key
    counts = (num_classes,) if isinstance(num_classes, int) else num_classes
    rng = np.random.default_rng(seed)
    d: dict = {"batch_label": "synthetic", "data": data, "filenames": [f"img{k}.png" for k in range(n)]}
    for key, c in zip(keys, counts, strict=True):
        d[key] = [int(v) for v in rng.integers(0, c, n)]
    return {k.encode() if bytes_keys else k: v for k, v in d.items()}


def cifar_members(variant: str, n: int = 6, *, bytes_keys: bool = False) -> dict[str, bytes]:
    """Member name -> pickled bytes for a tiny CIFAR-10 (5 train batches) or CIFAR-100."""
    dump = lambda obj: pickle.dumps(obj, protocol=2)  # noqa: E731 - the official files are protocol 2
    if variant == "cifar-10":
        members = {f"data_batch_{b}": dump(cifar_batch(n, "labels", 10, b, bytes_keys=bytes_keys))
                   for b in range(1, 6)}
        members["test_batch"] = dump(cifar_batch(n, "labels", 10, 9, bytes_keys=bytes_keys))
        members["batches.meta"] = dump({"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072})
        return members
    keys, counts = ("fine_labels", "coarse_labels"), (100, 20)
    return {
        "train": dump(cifar_batch(5 * n, keys, counts, 1, bytes_keys=bytes_keys)),
        "test": dump(cifar_batch(n, keys, counts, 2, bytes_keys=bytes_keys)),
        "meta": dump({"fine_label_names": [f"f{k}" for k in range(100)],
                      "coarse_label_names": [f"s{k}" for k in range(20)]}),
    }


def write_cifar_archive(path: Path, variant: str, n: int = 6, **kw) -> Path:
    folder = "cifar-10-batches-py" if variant == "cifar-10" else "cifar-100-python"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in cifar_members(variant, n, **kw).items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar_folder(root: Path, variant: str, n: int = 6, **kw) -> Path:
    folder = root / ("cifar-10-batches-py" if variant == "cifar-10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in cifar_members(variant, n, **kw).items():
        (folder / name).write_bytes(data)
    return folder


def cifar_binary_members(variant: str, n: int = 6, seed: int = 0) -> dict[str, bytes]:
    """Member name -> bytes of a tiny binary-version CIFAR: records of label byte(s) + 3,072 pixels.

    Image i has the constant colour (i, 2i, 3i) % 256; CIFAR-10 labels are i % 10, CIFAR-100
    records hold (coarse, fine) = (i % 20, (3 i + 1) % 100), so tests can tell the two apart."""
    def records(count: int) -> bytes:
        i = np.arange(count)
        planes = [np.repeat(((k + 1) * i % 256)[:, None], 1024, axis=1) for k in range(3)]
        if variant == "cifar-10":
            labels = [(i % 10)[:, None]]
        else:
            labels = [(i % 20)[:, None], ((3 * i + 1) % 100)[:, None]]
        return np.concatenate([*labels, *planes], axis=1).astype(np.uint8).tobytes()

    if variant == "cifar-10":
        out = {f"data_batch_{b}.bin": records(n) for b in range(1, 6)}
        out["test_batch.bin"] = records(n)
        return out
    return {"train.bin": records(5 * n), "test.bin": records(n)}


def write_cifar_binary(root: Path, variant: str, n: int = 6, *, archive: bool = False) -> Path:
    """The binary version's folder (``cifar-10-batches-bin/``, ``cifar-100-binary/``) under
    ``root``, or with ``archive`` its ``.tar.gz``; returns the folder or archive path."""
    folder = "cifar-10-batches-bin" if variant == "cifar-10" else "cifar-100-binary"
    members = cifar_binary_members(variant, n)
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / f"{variant}-binary.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    (root / folder).mkdir(exist_ok=True)
    for name, data in members.items():
        (root / folder / name).write_bytes(data)
    return root / folder
