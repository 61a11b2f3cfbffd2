"""Datasets by name or by path.

Names: ``digits`` (embedded, no files), the embedded tables ``breast-cancer`` and ``wine``
(:mod:`noprop.data.embedded_tables`), ``mnist``, ``fashion-mnist``, ``cifar-10``, ``cifar-100``
and ``cifar-100-coarse``, read from their original files, which are verified against the official
md5 before use. Paths: a ``.npz`` file, a ``.csv`` table or a folder of images per class
(:mod:`noprop.data.user`, :mod:`noprop.data.tabular`).
Where the files are looked for and when they are downloaded: :mod:`noprop.data.locate`, docs/data.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from noprop.data.base import BatchTransform, ClassificationData, DataError, batches, num_batches
from noprop.data.catalog import CATALOG, DataFile, DatasetInfo
from noprop.data.cifar import load_cifar
from noprop.data.digits import load_digits
from noprop.data.download import download_dataset
from noprop.data.embedded_tables import EMBEDDED_TABLES, load_embedded_table
from noprop.data.idx import load_idx_dataset
from noprop.data.integrity import file_md5, verify_file
from noprop.data.locate import Found, find, missing_message, resolve_root
from noprop.data.user import load_user_data

DATASETS: tuple[str, ...] = ("digits", *CATALOG, *EMBEDDED_TABLES)
#: The suffixes of a file given as a dataset (an image folder needs none).
DATASET_SUFFIXES = (".npz", ".csv")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    label_column: str = "label",
) -> ClassificationData:
    """Load dataset ``name`` (a known name, or the path of a ``.npz`` file, ``.csv`` table or image
    folder; ``label_column`` names a table's label column).

    Named datasets are looked for under ``data_dir``, else ``$NOPROP_DATA``, else the per-user
    cache; only into the cache are missing files downloaded (when ``download``). Every file is
    checked against its official md5 before it is read.
    """
    if name == "digits":
        return load_digits()
    if name in EMBEDDED_TABLES:
        return load_embedded_table(name)
    if name in CATALOG:
        return _load_known(CATALOG[name], data_dir, download=download, progress=progress)
    if is_dataset_path(name):
        return load_user_data(Path(name).expanduser(), label_column)
    raise DataError(unknown_dataset_message(name))


def locate_verified(
    info: DatasetInfo, data_dir: str | Path | None, *, download: bool = True, progress: bool = True
) -> Found:
    """Find ``info``'s files (downloading into the cache if allowed) and verify every one."""
    root = resolve_root(data_dir)
    found = find(info, root.path)
    if found is None:
        if not (root.is_cache and download):
            raise DataError(missing_message(info, root))
        try:
            return download_dataset(info, root.path, progress=progress)
        except DataError as err:  # offline, or every mirror failed: say what is missing and where
            raise DataError(f"{missing_message(info, root)}; downloading failed: {err}") from None
    verify_found(info, found)
    return found


class WrongDatasetError(DataError):
    """The files found are another known dataset's (MNIST and Fashion-MNIST share file names)."""


def verify_found(info: DatasetInfo, found: Found) -> None:
    """Verify every file of ``found``; a file that is another dataset's official file is reported
    as such, since the usual cause is a data directory pointing at the wrong dataset folder."""
    for expected in found.layout.files:
        path = found.directory / expected.path
        try:
            verify_file(path, expected)
        except DataError:
            owner = _owner(info, path, expected)
            if owner is not None:
                raise WrongDatasetError(
                    f"{path} is {owner.name}'s {expected.name}, not {info.name}'s: "
                    f"does the data directory point at the {owner.folder} folder?"
                ) from None
            raise


def _owner(info: DatasetInfo, path: Path, expected: DataFile) -> DatasetInfo | None:
    size = path.stat().st_size
    for other in CATALOG.values():
        if other.folder == info.folder:
            continue
        for f in (f for layout in other.layouts for f in layout.files):
            if f.name == expected.name and f.size == size and file_md5(path) == f.md5:
                return other
    return None


def _load_known(info: DatasetInfo, data_dir: str | Path | None, *, download: bool, progress: bool
                ) -> ClassificationData:
    found = locate_verified(info, data_dir, download=download, progress=progress)
    if found.layout.kind == "idx":
        return load_idx_dataset(info.name, found.directory)
    version = "binary" if found.layout.kind.startswith("cifar-binary") else "python"
    if found.layout.kind.endswith("-archive"):
        return load_cifar(info, found.directory / found.layout.files[0].path, version)
    return load_cifar(info, found.directory, version)


def is_dataset_path(text: str) -> bool:
    """Whether ``--dataset text`` means a path (has a separator, ends in .npz or .csv, or exists)."""
    return ("/" in text or os.sep in text or text.lower().endswith(DATASET_SUFFIXES)
            or Path(text).expanduser().exists())


def is_table_file(text: str) -> bool:
    """Whether dataset ``text`` is a ``.csv`` table (the datasets with a label column to name)."""
    return text.lower().endswith(".csv")


def unknown_dataset_message(name: str) -> str:
    return (f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
            "or give the path of a .npz file, a .csv table or a folder of images per class")


def check_data_dir(name: str, data_dir: str | Path | None) -> None:
    """Refuse a data root for a dataset that is not looked for under one: the embedded ones and a
    path need none, and a root given for them would be silently unused (a forgotten ``--dataset``)."""
    if data_dir is None or name in CATALOG:
        return
    where = "embedded in the library" if name in ("digits", *EMBEDDED_TABLES) else "read from its path"
    raise DataError(f"--data-dir does not apply to {name}, which is {where}; it locates the files of "
                    f"{', '.join(CATALOG)}")


def check_dataset(name: str) -> str:
    """``name`` if it names a known dataset or looks like a path; else :class:`DataError`."""
    if name in DATASETS or is_dataset_path(name):
        return name
    raise DataError(unknown_dataset_message(name))


__all__ = [
    "CATALOG",
    "DATASETS",
    "EMBEDDED_TABLES",
    "BatchTransform",
    "ClassificationData",
    "DataError",
    "WrongDatasetError",
    "batches",
    "check_data_dir",
    "check_dataset",
    "is_table_file",
    "load_dataset",
    "num_batches",
]
