"""Where a named dataset's files are: the data root, and the dataset folder inside it.

The root is, in this order: the ``--data-dir`` argument, the ``NOPROP_DATA`` environment variable,
then a per-user cache folder (``$XDG_CACHE_HOME/noprop/data``, default ``~/.cache/noprop/data``).
The argument may name either a root holding one sub-folder per dataset (``data/mnist``,
``data/cifar-10``) or the dataset folder itself, so both are searched.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from noprop.data.catalog import DatasetInfo, FileLayout

ENV_VAR = "NOPROP_DATA"


def user_cache_dir() -> Path:
    """The per-user cache folder for downloaded datasets, following each platform's convention."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "noprop" / "Cache" / "data"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "noprop" / "data"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "noprop" / "data"


@dataclass(frozen=True)
class DataRoot:
    """A resolved data root and where it came from (``--data-dir``, ``NOPROP_DATA`` or ``cache``)."""

    path: Path
    source: str

    @property
    def is_cache(self) -> bool:
        """Only the cache is ours to write into without being asked."""
        return self.source == "cache"


def resolve_root(data_dir: str | Path | None) -> DataRoot:
    if data_dir is not None and str(data_dir) != "":
        return DataRoot(Path(data_dir).expanduser(), "--data-dir")
    if os.environ.get(ENV_VAR):
        return DataRoot(Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR)
    return DataRoot(user_cache_dir(), "cache")


def candidate_dirs(info: DatasetInfo, root: Path) -> list[Path]:
    """The root itself (it may be the dataset folder), then ``root/<folder>``."""
    return [root] if root.name == info.folder else [root, root / info.folder]


def download_dir(info: DatasetInfo, root: Path) -> Path:
    """Where ``noprop data download`` puts the files: ``root/<folder>``, or ``root`` if it is that folder."""
    return root if root.name == info.folder else root / info.folder


@dataclass(frozen=True)
class Found:
    """A complete layout of the dataset's files in ``directory``."""

    directory: Path
    layout: FileLayout

    def paths(self) -> list[Path]:
        return [self.directory / f.path for f in self.layout.files]

    @property
    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.paths())


def find(info: DatasetInfo, root: Path) -> Found | None:
    """The first directory and layout in which every file of the dataset exists, or ``None``."""
    for directory in candidate_dirs(info, root):
        for layout in info.layouts:
            if all((directory / f.path).is_file() for f in layout.files):
                return Found(directory, layout)
    return None


def missing_message(info: DatasetInfo, root: DataRoot) -> str:
    """One line: which files are missing, where we looked, and how to get them there."""
    dirs = candidate_dirs(info, root.path)
    best: tuple[int, Path, FileLayout] | None = None
    for directory in dirs:
        for layout in info.layouts:
            present = sum((directory / f.path).is_file() for f in layout.files)
            if present and (best is None or present > best[0]):
                best = (present, directory, layout)
    looked = " and ".join(str(d) for d in dirs)
    target = download_dir(info, root.path)
    fix = (f"put the official files in {target} or run `noprop data download {info.name}"
           f"{'' if root.is_cache else f' --data-dir {root.path}'}`")
    if best is not None:
        _, directory, layout = best
        missing = [f.path for f in layout.files if not (directory / f.path).is_file()]
        return f"{info.name}: missing {', '.join(missing)} in {directory} (looked in {looked}); {fix}"
    wanted = " or ".join(_describe(layout) for layout in info.layouts[:2])
    return f"{info.name}: no data found (looked in {looked} for {wanted}); {fix}"


def _describe(layout: FileLayout) -> str:
    if len(layout.files) == 1:
        return layout.files[0].path
    folder = layout.files[0].path.rsplit("/", 1)[0] if "/" in layout.files[0].path else None
    return f"the {folder}/ folder" if folder else ", ".join(f.path for f in layout.files)
