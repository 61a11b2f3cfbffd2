"""The user's own data, given as a path in place of a dataset name.

* A ``.npz`` file with ``x`` (images) and ``y`` (integer labels ``0..C-1``); optionally ``x_test``
  and ``y_test`` (otherwise a fixed, seeded 20 % of the examples is held out for testing) and
  ``class_names``. Images are ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` (channels last
  is recognised when the last axis is 1, 3 or 4 and the second is not). A 2-D ``x`` ``(N, D)`` is a
  table of features (:mod:`noprop.data.tabular`), optionally with ``feature_names``.
* A ``.csv`` table (:mod:`noprop.data.tabular`), its labels in the column ``label_column``.
* A folder with one sub-folder of images per class (the sub-folder names, sorted, are the
  classes), or with ``train/`` and ``test/`` sub-folders each laid out that way. Read with Pillow;
  all images must have one size; greyscale stays one channel, anything else becomes RGB.

Shapes and the number of classes come from the data. uint8 pixels are scaled to [0, 1]; then each
channel is standardised with the training set's mean and standard deviation (tables: each feature,
as it is, never rescaled).
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from noprop.data.base import ClassificationData, DataError, hold_out, standardised_data
from noprop.data.tabular import assemble_table, features_from_array, load_csv

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
#: What ``np.load`` of a damaged ``.npz`` / ``.npy`` raises: a broken zip, a compressed stream or
#: array header that does not decode, a compression method zipfile lacks, a short read.
NPY_READ_ERRORS = (zipfile.BadZipFile, zlib.error, tokenize.TokenError, NotImplementedError, OSError,
                   EOFError, ValueError)


def load_user_data(path: Path, label_column: str = "label") -> ClassificationData:
    """A ``.npz`` file, a ``.csv`` table or an image folder; errors are one line naming the problem."""
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    if path.suffix.lower() == ".csv":
        return load_csv(path, label_column)
    raise DataError(f"{path}: a dataset path must be a .npz file, a .csv table or a folder of images "
                    "per class")


# -- .npz ------------------------------------------------------------------------------------
def load_npz(path: Path) -> ClassificationData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except NPY_READ_ERRORS as err:
        raise DataError(f"{path} is not a readable .npz file: {err}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path} has no {key!r} array ({'images' if key == 'x' else 'labels'}); "
                            f"it holds: {', '.join(sorted(arrays)) or 'nothing'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: give both x_test and y_test, or neither")
    names = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else None
    table = arrays["x"].ndim == 2  # rows of features, not images
    inputs, items = (features_from_array, "rows") if table else (images_from_array, "images")
    x, y = inputs(arrays["x"], f"{path}: x"), _labels(arrays["y"], f"{path}: y")
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} {items} but y has {len(y)} labels")
    if "x_test" in arrays:
        xt = inputs(arrays["x_test"], f"{path}: x_test")
        yt = _labels(arrays["y_test"], f"{path}: y_test")
        if len(xt) != len(yt):
            raise DataError(f"{path}: x_test has {len(xt)} {items} but y_test has {len(yt)} labels")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test {items} are {xt.shape[1:]}, x {items} are {x.shape[1:]}")
    else:
        x, y, xt, yt = hold_out(x, y, path)
    if not table:
        return _assemble(path.stem, x, y, xt, yt, names, path)
    features = tuple(str(n) for n in arrays["feature_names"]) if "feature_names" in arrays else None
    if features is not None and len(features) != x.shape[1]:
        raise DataError(f"{path}: feature_names lists {len(features)} names but x has {x.shape[1]} features")
    return assemble_table(path.stem, x, y, xt, yt, names, features, path)


#: The input contract for images: uint8 0..255 (scaled to [0, 1]) or floats in [0, 1]. Numbers
#: that are never negative and reach past ``PIXEL_MAX`` are 0..255 pixels in another dtype: taken
#: as they are, they train a model on another scale than ``noprop predict``'s image files have.
PIXEL_MAX = 1.5


def images_from_array(a: np.ndarray, what: str) -> np.ndarray:
    """``(N, C, H, W)`` float32 in [0, 1] (uint8 scaled), or as given where the numbers are not
    pixels (standardised, signed); other dtypes holding 0..255 pixels are refused."""
    if a.dtype.kind not in "uif" or a.dtype == np.bool_:
        raise DataError(f"{what} must hold numbers, found dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
            a = a.transpose(0, 3, 1, 2)
    elif a.ndim == 2:
        raise DataError(f"{what} is a table of features (N, D) = {a.shape}, not images (N, H, W), "
                        "(N, C, H, W) or (N, H, W, C)")
    else:
        raise DataError(f"{what} must be images (N, H, W), (N, C, H, W) or (N, H, W, C); got shape {a.shape}")
    if len(a) == 0:
        raise DataError(f"{what} holds no images")
    out = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
    if not np.isfinite(out).all():
        raise DataError(f"{what} contains NaN or infinite values")
    lo, hi = float(out.min()), float(out.max())
    if a.dtype != np.uint8 and lo >= 0 and hi > PIXEL_MAX:
        raise DataError(f"{what} holds {a.dtype} pixels from {lo:g} to {hi:g}; images are uint8 0..255 "
                        "or floats in [0, 1]: divide by 255 (or pass uint8)")
    return np.ascontiguousarray(out)


def check_training_range(x: np.ndarray | torch.Tensor, normalization: Sequence[Sequence[float]] | None,
                         what: str) -> None:
    """Refuse images far outside the range the model was trained on (beyond 10 std of a channel's
    training mean): 0..255 floats given to a model trained on [0, 1] score near chance, silently."""
    if normalization is None:
        return
    t = torch.as_tensor(x)
    if t.dim() != 4 or t.numel() == 0:
        return
    mean = torch.tensor(normalization[0], dtype=torch.float32)
    std = torch.tensor(normalization[1], dtype=torch.float32)
    if len(mean) != t.shape[1]:
        return
    band = (10 * std).clamp_min(1.0)  # a channel constant in training (std floored) still has room
    low, high = mean - band, mean + band
    values = t.float().transpose(0, 1).reshape(t.shape[1], -1)
    lo, hi = values.min(1).values, values.max(1).values
    if bool((lo < low).any() or (hi > high).any()):
        trained = f"{float(low.min()):.2g} to {float(high.max()):.2g}"
        raise DataError(f"{what} run from {float(lo.min()):g} to {float(hi.max()):g}, far outside what "
                        f"the model was trained on (about {trained}); "
                        "images are uint8 0..255 or floats in [0, 1]: divide by 255 (or pass uint8)")


def _labels(a: np.ndarray, what: str) -> np.ndarray:
    if a.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of class indices, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise DataError(f"{what} must hold integer class indices 0..C-1, found dtype {a.dtype}")
    return a.astype(np.int64)


def _assemble(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    class_names: tuple[str, ...] | None,
    source: Path,
) -> ClassificationData:
    """Check labels, standardise per channel with training statistics, build the container."""
    mean = x.mean(axis=(0, 2, 3))
    std = np.maximum(x.std(axis=(0, 2, 3)), 1e-6)
    return standardised_data(name, x, y, xt, yt, (tuple(mean.tolist()), tuple(std.tolist())),
                             class_names=class_names, source=source)


# -- image folders ---------------------------------------------------------------------------
def load_image_folder(root: Path) -> ClassificationData:
    if (root / "train").is_dir() and (root / "test").is_dir():
        files, classes = _class_files(root / "train")
        test_files, test_classes = _class_files(root / "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(f"{root / 'test'} has classes not in {root / 'train'}: {', '.join(unknown)}")
        paths = [p for p, _ in files] + [p for p, _ in test_files]
        images = read_image_files(paths)
        x, xt = images[: len(files)], images[len(files) :]
        y = np.array([classes.index(c) for _, c in files], dtype=np.int64)
        yt = np.array([classes.index(c) for _, c in test_files], dtype=np.int64)
    else:
        files, classes = _class_files(root)
        x = read_image_files([p for p, _ in files])
        y = np.array([classes.index(c) for _, c in files], dtype=np.int64)
        x, y, xt, yt = hold_out(x, y, root)
    return _assemble(root.name, x, y, xt, yt, tuple(classes), root)


def _class_files(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """``(image path, class name)`` pairs from one sub-folder per class, and the sorted class names."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{folder} has no class sub-folders; expected one folder of images per class")
    pairs = []
    for d in class_dirs:
        images = sorted(p for p in d.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise DataError(f"class folder {d} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        pairs += [(p, d.name) for p in images]
    if len(class_dirs) < 2:
        raise DataError(f"{folder} has only one class folder ({class_dirs[0].name}); need at least 2 classes")
    return pairs, [d.name for d in class_dirs]


def read_image_files(paths: list[Path]) -> np.ndarray:
    """All images as ``(N, C, H, W)`` float32 in [0, 1]; one size required."""
    from PIL import Image, UnidentifiedImageError

    loaded = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                loaded.append((p, im.copy()))
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {p}: {err}") from None
    first_path, first = loaded[0]
    for p, im in loaded:
        if im.size != first.size:
            raise DataError(f"images of mixed sizes: {first_path} is {first.size[0]}x{first.size[1]} "
                            f"but {p} is {im.size[0]}x{im.size[1]}; resize them to one size")
    mode = "L" if all(im.mode in _GREY_MODES for _, im in loaded) else "RGB"
    arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for _, im in loaded]
    x = np.stack(arrays)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0
