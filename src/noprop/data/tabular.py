"""Tables of features: one example per row, a label, and ``D`` numeric features.

* A ``.csv`` file: a header line naming the columns, then one row per example (comma-separated,
  UTF-8). The label column (``label_column``, default ``label``) holds integer classes ``0..C-1``
  or strings; if any label is not an integer, the classes are the sorted distinct strings and
  become ``class_names``. Every other column is a feature and must hold a number in every row.
  An optional column ``split`` marks each row ``train`` or ``test``; without it a fixed, seeded
  20 % of the rows is held out for testing (:func:`noprop.data.base.hold_out`).
* Feature arrays ``(N, D)`` (an ``.npz`` whose ``x`` is 2-D, or arrays given to ``Classifier``):
  taken as they are, whatever their dtype; a uint8 table is never divided by 255.

Either way every feature is standardised with the training split's mean and std (std of a
feature that is constant on the training split: 1, so that it becomes 0, never NaN), recorded
in ``ClassificationData.normalization`` with the column names in ``feature_names``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noprop.data.base import ClassificationData, DataError, hold_out, standardised_data

#: Cells that mean "no value" (compared stripped and lower-cased); missing values are refused.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
#: The optional column that marks each row ``train`` or ``test``.
SPLIT_COLUMN = "split"
#: A feature whose training std is below this is constant: its std is taken as 1.
CONSTANT_STD = 1e-6
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class CsvTable:
    """A ``.csv`` file's feature columns, its label cells (if it has the label column) and its split."""

    feature_names: tuple[str, ...]
    x: np.ndarray  # (N, D) float32
    labels: list[str] | None
    split: list[str] | None
    lines: list[int]  # the file line of each row (the header is line 1)


def read_csv(path: Path, label_column: str = "label", *, need_labels: bool = True) -> CsvTable:
    """Read ``path``: the label column and the optional split column (``need_labels=False``: both
    dropped unread, for prediction), and every other column as numbers. Errors are one line naming
    the column, line and cell."""
    header, rows, lines = _read_rows(path)
    if label_column not in header and need_labels:
        raise DataError(f"{path} has no label column {label_column!r}; its columns are: "
                        f"{', '.join(header)} (choose the label column with --label-column)")
    special = {label_column, SPLIT_COLUMN}
    features = [i for i, name in enumerate(header) if name not in special]
    if not features:
        raise DataError(f"{path} has no feature columns, only {', '.join(header)}")
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    for r, (row, line) in enumerate(zip(rows, lines, strict=True)):
        try:
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: reported below
                x[r] = [float(row[i]) for i in features]
            ok = all(map(math.isfinite, x[r]))
        except ValueError:
            ok = False
        if not ok:
            _raise_bad_cell(path, header, row, line, features)

    def column(name: str) -> list[str] | None:
        if name not in header or not need_labels:
            return None
        i = header.index(name)
        for row, line in zip(rows, lines, strict=True):
            if row[i].lower() in MISSING:
                raise DataError(f"{path} line {line}: column {name!r} has no value ({row[i]!r})")
        return [row[i] for row in rows]

    split = column(SPLIT_COLUMN) if label_column != SPLIT_COLUMN else None
    return CsvTable(tuple(header[i] for i in features), x, column(label_column), split, lines)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, stripped cells of each non-blank row, and the line each row starts on."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            records = []
            start = 1
            for row in reader:
                if any(cell.strip() for cell in row):
                    records.append((start, [cell.strip() for cell in row]))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text file; a table must be comma-separated text") from None
    except (OSError, csv.Error) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not records:
        raise DataError(f"{path} is empty; a table needs a header line naming the columns, then one row "
                        "per example")
    (_, header), body = records[0], records[1:]
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"{path}: column {i + 1} of the header has no name")
        if header.index(name) != i:
            raise DataError(f"{path}: the header names column {name!r} twice")
    if not body:
        raise DataError(f"{path} has a header but no rows")
    for line, row in body:
        if len(row) != len(header):
            raise DataError(f"{path} line {line} has {len(row)} fields but the header has {len(header)}")
    return header, [row for _, row in body], [line for line, _ in body]


def _raise_bad_cell(path: Path, header: list[str], row: list[str], line: int, features: list[int]) -> None:
    for i in features:
        cell = row[i]
        if cell.lower() in MISSING:
            raise DataError(f"{path} line {line}: column {header[i]!r} has no value ({cell!r}); "
                            "fill in or drop rows with missing values")
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{path} line {line}: column {header[i]!r} holds {cell!r}, not a number; "
                            "every column but the label and split columns must be numeric") from None
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise DataError(f"{path} line {line}: column {header[i]!r} holds {cell!r}, not a finite number"
                            + (" in 32-bit floats" if math.isfinite(value) else ""))


def check_columns(columns: tuple[str, ...] | None, model_columns: list[str] | tuple[str, ...] | None,
                  source: Path | str) -> None:
    """Refuse a table whose feature columns are not the model's, by name and order (when both
    are known; an ``.npz`` table and ``Classifier`` arrays have no names)."""
    if columns is None or model_columns is None or tuple(columns) == tuple(model_columns):
        return
    if len(columns) != len(model_columns):
        raise DataError(f"{source} has {len(columns)} feature columns but the model was trained on "
                        f"{len(model_columns)}: {', '.join(model_columns)}")
    i = next(i for i, (a, b) in enumerate(zip(columns, model_columns, strict=True)) if a != b)
    raise DataError(f"{source}: feature column {i + 1} is {columns[i]!r} where the model's is "
                    f"{model_columns[i]!r}; give the training table's columns, in its order")


def load_csv(path: Path, label_column: str = "label") -> ClassificationData:
    """A ``.csv`` table as standardised features ``(N, D)`` and labels (see the module docstring)."""
    table = read_csv(path, label_column)
    assert table.labels is not None
    y, class_names = _classes(table.labels, path)
    if table.split is None:
        x, y, xt, yt = hold_out(table.x, y, path)
    else:
        split = [s.lower() for s in table.split]
        bad = next((i for i, s in enumerate(split) if s not in ("train", "test")), None)
        if bad is not None:
            raise DataError(f"{path} line {table.lines[bad]}: column {SPLIT_COLUMN!r} holds "
                            f"{table.split[bad]!r}; it must be train or test")
        test = np.array([s == "test" for s in split])
        if test.all() or not test.any():
            raise DataError(f"{path}: column {SPLIT_COLUMN!r} marks every row {split[0]}; "
                            "give some rows each of train and test")
        x, y, xt, yt = table.x[~test], y[~test], table.x[test], y[test]
    return assemble_table(path.stem, x, y, xt, yt, class_names, table.feature_names, path)


def _classes(labels: list[str], source: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Integer labels as they are; otherwise the index of each label among the sorted strings."""
    distinct = sorted(set(labels))
    if len(distinct) < 2:
        raise DataError(f"{source}: needs at least 2 classes, but every label is {distinct[0]!r}")
    try:
        return np.array([int(s) for s in labels], dtype=np.int64), None
    except ValueError:
        index = {name: i for i, name in enumerate(distinct)}
        return np.array([index[s] for s in labels], dtype=np.int64), tuple(distinct)


def features_from_array(a: np.ndarray, what: str) -> np.ndarray:
    """A table ``(N, D)`` as float32, taken as it is (never rescaled)."""
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold numbers, found dtype {a.dtype}")
    if a.ndim != 2:
        raise DataError(f"{what} must be a table of features (N, D); got shape {a.shape}")
    if len(a) == 0 or a.shape[1] == 0:
        raise DataError(f"{what} holds no features (shape {a.shape})")
    out = a.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{what} contains NaN or infinite values")
    return np.ascontiguousarray(out)


def feature_statistics(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of training rows ``(N, D)``; the std of a constant feature is 1."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std < CONSTANT_STD] = 1.0
    return tuple(mean.tolist()), tuple(std.tolist())


def assemble_table(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    class_names: tuple[str, ...] | None,
    feature_names: tuple[str, ...] | None,
    source: Path | str,
) -> ClassificationData:
    """Check labels, standardise every feature with training statistics, build the container."""
    return standardised_data(name, x, y, xt, yt, feature_statistics(x), class_names=class_names,
                             source=source, feature_names=feature_names)
