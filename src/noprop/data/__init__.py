"""Datasets by name: the embedded digits, MNIST and Fashion-MNIST from IDX files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from noprop.data.base import ClassificationData, DataError, batches, num_batches
from noprop.data.digits import load_digits
from noprop.data.idx import load_idx_dataset

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")


def load_dataset(name: str, data_dir: str | Path | None = None) -> ClassificationData:
    """Load dataset ``name``; file-based datasets read from ``data_dir``."""
    loaders: dict[str, Callable[[], ClassificationData]] = {
        "digits": load_digits,
        "mnist": lambda: load_idx_dataset("mnist", _require_dir(name, data_dir)),
        "fashion-mnist": lambda: load_idx_dataset("fashion-mnist", _require_dir(name, data_dir)),
    }
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return loaders[name]()


def _require_dir(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise DataError(f"{name} needs --data-dir: the folder holding its IDX .gz files")
    return Path(data_dir)


__all__ = ["DATASETS", "ClassificationData", "DataError", "batches", "load_dataset", "num_batches"]
