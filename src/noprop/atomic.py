"""Files written atomically: a reader sees the old file or the new one, never half of either.

Every write goes to a temporary file in the same directory, is flushed to disk, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows). A killed writer leaves only a
``.NAME.*.tmp`` file, which the next run in that directory removes.

A report (``noprop analyze``, ``calibration``, ``bench``, ``reproduce``) is a JSON file, a markdown
file or a figure beside it, written into one directory by :func:`write_report_files`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename; the file gets the usual
    permissions under the process's umask (``mkstemp`` alone would leave it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_report_files(out_dir: str | Path, json_name: str, data: Any, *,
                       markdown: tuple[str, str] | None = None,
                       figure: tuple[str, Callable[[Path], Any]] | None = None) -> list[Path]:
    """One report's files in ``out_dir`` (created): ``json_name`` holding ``data`` and, given
    ``markdown = (name, text)``, that markdown file, both atomic; given ``figure = (name, draw)``,
    the figure ``draw(path)`` saves (matplotlib writes it in place). The paths, in that order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / json_name, data)
    written = [out / json_name]
    if markdown is not None:
        name, text = markdown
        atomic_write_text(out / name, text)
        written.append(out / name)
    if figure is not None:
        name, draw = figure
        draw(out / name)
        written.append(out / name)
    return written
