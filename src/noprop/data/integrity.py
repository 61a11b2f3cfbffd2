"""Checking a file against its official checksum before anything reads it.

Hashing is cheap next to decoding (Fashion-MNIST: md5 of all four files ~0.1 s, gunzip ~0.7 s on
the 2-core development machine; see docs/data.md), so every load hashes every file: there is no
"verified" marker that could go stale. A failed check names the file and never deletes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from noprop.data.base import DataError
from noprop.data.catalog import DataFile

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: DataFile) -> None:
    """Raise :class:`DataError` naming ``path`` unless it is byte for byte the official file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"missing data file {path}") from None
    if expected.size is not None and size != expected.size:
        what = "truncated" if size < expected.size else "too long"
        raise DataError(
            f"{path} is {what}: {size} bytes, the official file has {expected.size}; "
            "delete it and download it again"
        )
    actual = file_md5(path)
    if actual != expected.md5:
        raise DataError(
            f"{path} is corrupt or not the official file: md5 {actual}, expected {expected.md5}; "
            "delete it and download it again"
        )
