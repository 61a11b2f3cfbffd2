"""Downloading the official files: one mirror after another, into a temporary file that becomes the
real file only once its size and md5 match the official ones.

A half-finished or corrupted download therefore never sits where a loader would find it; the
temporary file is ours, so it is removed (and the reason reported) when a mirror fails.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from noprop.data.base import DataError
from noprop.data.catalog import DataFile, DatasetInfo
from noprop.data.integrity import CHUNK, verify_file
from noprop.data.locate import Found, download_dir, find

TIMEOUT_S = 60
USER_AGENT = "noprop-data/1 (+https://github.com/)"


class _MirrorFailed(Exception):
    """One mirror did not deliver the official file; the next one is tried."""


def download_file(
    file: DataFile,
    directory: Path,
    *,
    urls: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Fetch ``file`` into ``directory`` (unless a verified copy is there); return its path.

    An existing file that fails verification is reported, not replaced: it may be the user's.
    """
    dest = directory / file.path
    if dest.exists():
        verify_file(dest, file)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls if urls is not None else file.urls:
        try:
            _fetch(url, dest, file, progress=progress)
            return dest
        except _MirrorFailed as err:
            failures.append(f"{url}: {err}")
    tried = "; ".join(failures) or "no download location known"
    raise DataError(
        f"could not download {file.name} ({tried}); copy the official file "
        f"(md5 {file.md5}) to {dest} by hand"
    )


def _fetch(url: str, dest: Path, file: DataFile, *, progress: bool) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, md5 = _stream(url, out, file, progress=progress)
        if file.size is not None and size != file.size:
            raise _MirrorFailed(f"got {size} bytes, the official file has {file.size}")
        if md5 != file.md5:
            raise _MirrorFailed(f"md5 {md5} does not match the official {file.md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, file: DataFile, *, progress: bool) -> tuple[int, str]:
    """Copy ``url`` to ``out``, hashing as it goes; network errors become :class:`_MirrorFailed`."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or file.size
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=file.name,
                      disable=not progress, leave=False, mininterval=0.5) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise _MirrorFailed(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _MirrorFailed(str(err.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as err:  # reset, IncompleteRead, timeout
        raise _MirrorFailed(f"{type(err).__name__}: {err}") from None
    return size, digest.hexdigest()


def download_dataset(info: DatasetInfo, root: Path, *, progress: bool = True, version: str = "python"
                     ) -> Found:
    """Make sure ``info``'s files are under ``root``: download a downloadable layout if needed.

    ``version`` picks CIFAR's official distribution (``python`` or ``binary``); data sets with one
    distribution ignore it. Files already there, in either version, are verified and kept.
    """
    found = find(info, root)
    if found is not None:
        for f in found.layout.files:
            verify_file(found.directory / f.path, f)
        return found
    downloadable = [lay for lay in info.layouts if lay.downloadable]
    binary = [lay for lay in downloadable if lay.kind.startswith("cifar-binary")]
    layout = (binary or downloadable)[0] if version == "binary" else (
        [lay for lay in downloadable if lay not in binary] or downloadable)[0]
    directory = download_dir(info, root)
    for f in layout.files:
        download_file(f, directory, progress=progress)
    return Found(directory, layout)
