"""Predict classes for new images with a saved model: read, prepare as in training, classify.

Inputs are image files (anything Pillow reads), folders of them, ``.npz`` files with an ``x``
array, or ``.npy`` arrays. Pixels are brought to [0, 1] (uint8 / 255; floats taken as they are)
and standardised with the per-channel mean and std the model was trained with, which the
checkpoint records (``data_info.normalization``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noprop.data import DataError
from noprop.data.user import IMAGE_SUFFIXES, images_from_array, read_image_files
from noprop.run import LoadedRun
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


def read_inputs(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """Source names and images ``(N, C, H, W)`` in [0, 1] scale, from files, folders and arrays."""
    sources: list[str] = []
    arrays: list[np.ndarray] = []
    images: list[Path] = []
    for path in _expand(paths):
        suffix = path.suffix.lower()
        if suffix in (".npz", ".npy"):
            try:
                raw = np.load(path, allow_pickle=False)
                a = raw["x"] if suffix == ".npz" else raw
            except (OSError, ValueError, KeyError) as err:
                raise DataError(f"cannot read images from {path}: {err}") from None
            x = images_from_array(np.asarray(a), f"{path}")
            arrays.append(x)
            sources += [f"{path}[{i}]" for i in range(len(x))]
        else:
            images.append(path)
    if images:
        arrays.append(read_image_files(images))
        sources += [str(p) for p in images]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"inputs have different image shapes: {sorted(shapes)}")
    return sources, np.concatenate(arrays)


def prepare(x: np.ndarray, spec: DataSpec, normalization: list[list[float]] | None) -> Tensor:
    """Check the shape against the model's and standardise as in training."""
    if x.shape[1:] != spec.image_shape:
        if x.shape[1] == 1 and spec.channels == 3 and x.shape[2:] == spec.image_shape[1:]:
            x = np.repeat(x, 3, axis=1)
        else:
            raise DataError(f"inputs are {'x'.join(map(str, x.shape[1:]))} images but the model takes "
                            f"{'x'.join(map(str, spec.image_shape))} (channels x height x width)")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if normalization is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
        t = (t - mean) / std
    return t


@torch.inference_mode()
def predict(run: LoadedRun, paths: list[Path], *, steps: int | None = None, deterministic: bool = False,
            batch_size: int = 500) -> list[Prediction]:
    info = run.checkpoint.get("data_info") or {}
    spec = DataSpec(**run.checkpoint["spec"])
    sources, raw = read_inputs(paths)
    x = prepare(raw, spec, info.get("normalization"))
    method = run.method.eval()
    device = next(method.parameters()).device
    generator = torch.Generator(device=device).manual_seed(run.config.eval_seed)
    probs = torch.cat([
        method.predict_logits(x[i : i + batch_size].to(device), steps=steps, deterministic=deterministic,
                              generator=generator).softmax(-1).cpu()
        for i in range(0, len(x), batch_size)
    ])
    names = info.get("class_names")
    best, labels = probs.max(-1)
    return [Prediction(s, int(c), names[int(c)] if names else str(int(c)), float(p))
            for s, c, p in zip(sources, labels, best, strict=True)]
