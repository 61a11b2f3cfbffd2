"""Predict classes for new images or table rows with a saved model: read, prepare as in training,
classify.

For a model trained on images, inputs are image files (anything Pillow reads), folders of them,
``.npz`` files with an ``x`` array, or ``.npy`` arrays, of any sizes in one call. The input
contract is ``Classifier``'s: uint8 pixels 0..255 (scaled to [0, 1]) or floats in [0, 1]; 0..255
pixels in another dtype, and inputs far outside the model's training range, are refused in one
line (divide by 255, or pass uint8). Inputs are converted to the model's channels (grey <-> RGB,
RGBA loses alpha) and size (bilinear, antialiased), each conversion reported as a note, then
standardised with the
per-channel mean and std the model was trained with, which the checkpoint records
(``data_info.normalization``).

For a model trained on a table, inputs are ``.csv`` tables (the run's label column and a ``split``
column, if there, are dropped; the other columns must be the training table's, by name and order,
``data_info.feature_names``) or ``.npz``/``.npy`` arrays ``(N, D)``; each row is standardised per
feature with the saved statistics and named ``table.csv[row]`` (rows counted from 0).

A classifier answers the same way every time: its class probabilities are the mean over
``stochastic`` (default 10) seeded passes of the paper's stochastic sampler of the head's softmax
at the temperature fitted when the model was trained (``noprop.inference.class_probabilities``;
``T = 1`` for a run saved before; docs/calibration.md), or, with ``stochastic=0``, one pass of the
noise-free sampler from a seeded ``z_0`` at its own temperature. A row's class is the argmax of
its probabilities, and its probability that class's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noprop.data import DataError
from noprop.data.base import standardise
from noprop.data.tabular import check_columns, features_from_array, read_csv
from noprop.data.user import (
    IMAGE_SUFFIXES,
    NPY_READ_ERRORS,
    check_training_range,
    images_from_array,
    read_image_files,
)
from noprop.inference import PROBABILITY_PASSES, InferenceOptions, class_probabilities, probability_passes
from noprop.saved_run import LoadedRun
from noprop.spec import DataSpec


@dataclass
class Prediction:
    source: str
    label: int
    name: str
    probability: float


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"input {path} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"input folder {path} holds no images")
            files += found
        else:
            files.append(path)
    return files


def _load_array(path: Path, what: str) -> np.ndarray:
    """The array ``x`` (``what``: images, rows) of an ``.npz`` file, or an ``.npy`` array."""
    try:
        raw = np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz" and "x" not in raw.files:
            raise DataError(f"{path} holds no array 'x' (the {what}); it holds: "
                            f"{', '.join(raw.files) or 'nothing'}")
        return np.asarray(raw["x"] if path.suffix.lower() == ".npz" else raw)
    except NPY_READ_ERRORS as err:
        raise DataError(f"cannot read {what} from {path}: {err}") from None


def read_inputs(paths: list[Path]) -> tuple[list[str], list[np.ndarray]]:
    """Source names and groups of images ``(n, C, H, W)`` in [0, 1] scale (one shape per group, in
    the order given), from files, folders and arrays."""
    sources: list[str] = []
    arrays: list[np.ndarray] = []
    for path in _expand(paths):
        suffix = path.suffix.lower()
        if suffix == ".csv":
            raise DataError(f"{path} is a table, but this model takes images")
        if suffix in (".npz", ".npy"):
            a = _load_array(path, "images")
            if a.ndim == 2:
                raise DataError(f"{path} holds a table of features {a.shape}, but this model takes images")
            x = images_from_array(a, f"{path}")
            arrays.append(x)
            sources += [f"{path}[{i}]" for i in range(len(x))]
        else:  # one at a time: files of any size, each resized by prepare()
            arrays.append(read_image_files([path]))
            sources.append(str(path))
    groups: list[np.ndarray] = []
    for a in arrays:  # neighbours of one shape go together (one note, one resize)
        if groups and groups[-1].shape[1:] == a.shape[1:]:
            groups[-1] = np.concatenate([groups[-1], a])
        else:
            groups.append(a)
    return sources, groups


def read_table_inputs(paths: list[Path], spec: DataSpec, feature_names: list[str] | None,
                      label_column: str) -> tuple[list[str], np.ndarray]:
    """Source names and rows ``(N, D)`` as they are, from ``.csv`` tables and ``(N, D)`` arrays;
    a table's columns are checked against the model's ``feature_names``."""
    takes = f"rows of {spec.describe()} (.csv tables or .npz/.npy arrays (N, {spec.input_size}))"
    sources: list[str] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"input {path} does not exist")
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in IMAGE_SUFFIXES:
            what = "a folder" if path.is_dir() else "an image"
            raise DataError(f"{path} is {what}, but this model takes {takes}")
        if suffix == ".csv":
            table = read_csv(path, label_column, need_labels=False)
            check_columns(table.feature_names, feature_names, path)
            x = table.x
        elif suffix in (".npz", ".npy"):
            a = _load_array(path, "rows")
            if a.ndim != 2:
                raise DataError(f"{path} holds {'images' if a.ndim in (3, 4) else 'an array'} of shape "
                                f"{a.shape}, but this model takes {takes}")
            x = features_from_array(a, f"{path}")
        else:
            raise DataError(f"{path}: cannot read {suffix or 'a file without a suffix'}; "
                            f"this model takes {takes}")
        if x.shape[1] != spec.input_size:
            raise DataError(f"{path} has {x.shape[1]} features per row, but the model takes "
                            f"{spec.input_size}")
        arrays.append(x)
        sources += [f"{path}[{i}]" for i in range(len(x))]
    return sources, np.concatenate(arrays)


#: ITU-R BT.601 luma weights: how an RGB image becomes grey (as Pillow's ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)


def prepare_all(groups: list[np.ndarray], spec: DataSpec, normalization: list[list[float]] | None
                ) -> tuple[Tensor, list[str]]:
    """:func:`prepare` on groups of images of different shapes, joined; notes merged."""
    prepared = [prepare(g, spec, normalization) for g in groups]
    notes = list(dict.fromkeys(n for _, ns in prepared for n in ns))
    return torch.cat([t for t, _ in prepared]), notes


def prepare(x: np.ndarray, spec: DataSpec, normalization: list[list[float]] | None
            ) -> tuple[Tensor, list[str]]:
    """Images ``(N, C, H, W)`` in [0, 1] made the model's shape and standardised as in training;
    also the notes on what was converted. Inputs far outside the training range are refused."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    notes = []
    channels = t.shape[1]
    if channels == 4:
        t, channels = t[:, :3], 3
        notes.append("dropped the alpha channel")
    if channels != spec.channels:
        if channels == 1 and spec.channels == 3:
            t = t.expand(-1, 3, -1, -1)
        elif channels == 3 and spec.channels == 1:
            t = (t * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise DataError(f"inputs have {x.shape[1]} channels but the model takes {spec.channels}")
        notes.append(f"converted {'grey' if channels == 1 else 'RGB'} inputs to "
                     f"{'RGB' if spec.channels == 3 else 'grey'}")
    size = (spec.height, spec.width)
    if tuple(t.shape[2:]) != size:
        notes.append(f"resized {len(t)} inputs from {t.shape[2]}x{t.shape[3]} to {size[0]}x{size[1]}")
        t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    check_training_range(t, normalization, "inputs")
    return standardise(t, normalization).contiguous(), notes


def predict(run: LoadedRun, paths: list[Path], *, steps: int | None = None,
            stochastic: int = PROBABILITY_PASSES, precision: str | None = None
            ) -> tuple[list[Prediction], list[str]]:
    """One prediction per input, and the notes on converted inputs. ``stochastic`` > 0 averages
    the class probabilities of that many passes of the stochastic sampler (seeded); 0: one
    noise-free pass. Inference runs at ``precision`` (default: the run's), with the run's fitted
    temperatures (:func:`noprop.inference.class_probabilities`)."""
    info, spec = run.data_info, run.spec
    if spec.is_image:
        sources, groups = read_inputs(paths)
        x, notes = prepare_all(groups, spec, info.normalization)
    elif len(spec.input_shape) == 1:
        sources, rows = read_table_inputs(paths, spec, info.feature_names, run.config.label_column)
        x, notes = standardise(torch.from_numpy(rows), info.normalization).contiguous(), []
    else:
        raise DataError(f"noprop predict reads images and tables; this model takes inputs of "
                        f"shape {spec.describe()}")
    method = run.method
    options = InferenceOptions.of_run(run.config, next(method.parameters()).device, steps=steps,
                                      deterministic=not stochastic, precision=run.precision(precision))
    # noise-free too: the chain starts from z_0 ~ N(0, I), seeded, so an answer never changes
    passes = min(max(stochastic, 1), probability_passes(method))  # passes without noise are all the same
    probs = class_probabilities(method, x, options, run.temperatures, passes=passes)
    names = info.class_names
    best, labels = probs.max(-1)
    rows = [Prediction(s, int(c), names[int(c)] if names else str(int(c)), float(p))
            for s, c, p in zip(sources, labels, best, strict=True)]
    return rows, notes
