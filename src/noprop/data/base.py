"""In-memory classification data: the container every loader returns, and the batch iterator.

The paper's datasets fit in memory many times over, so a loader reads the files once into
tensors and training draws batches from them by index: no worker processes, no per-item Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noprop.settings import ConfigError
from noprop.spec import DataSpec

#: A per-batch training transform: ``(images (B, C, H, W), generator) -> images``, vectorised over
#: the batch and drawing all its randomness from ``generator`` so that a seeded run repeats exactly.
BatchTransform = Callable[[Tensor, torch.Generator | None], Tensor]


class DataError(ValueError):
    """Data that cannot be used: missing, corrupt or malformed. The message names the problem."""


@dataclass
class ClassificationData:
    """Normalised float inputs (images ``(N, C, H, W)``, features ``(N, D)``) and labels ``(N,)``.

    ``train_transform`` is the dataset's training augmentation (CIFAR: random crop and flip), or
    ``None``; the trainer applies it to each training batch only when the run asks for it.
    ``feature_names``: a table's column names, one per feature (saved with the model, so that
    ``noprop predict`` can check a new table's columns).
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    train_transform: BatchTransform | None = None
    class_names: tuple[str, ...] | None = None
    #: Per-channel ``(mean, std)`` the images were standardised with, in units of pixels scaled
    #: to [0, 1]; saved with the model so ``noprop predict`` can prepare raw images the same way.
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    feature_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dim() < 2:
                raise DataError(f"{self.name}: {split} inputs must be (N, ...) examples, e.g. images "
                                f"(N, C, H, W) or features (N, D); got {tuple(x.shape)}")
            if y.dim() != 1 or len(y) != len(x):
                raise DataError(
                    f"{self.name}: {split} has {len(x)} images but labels of shape {tuple(y.shape)}"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"{self.name}: {split} labels must lie in [0, {self.num_classes - 1}], "
                    f"found [{int(y.min())}, {int(y.max())}]"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(f"{self.name}: train and test images differ in shape")
        if self.feature_names is not None and (self.train_x.dim() != 2
                                               or len(self.feature_names) != self.train_x.shape[1]):
            raise DataError(f"{self.name}: {len(self.feature_names)} feature names for inputs of shape "
                            f"{tuple(self.train_x.shape[1:])}")

    @property
    def spec(self) -> DataSpec:
        return DataSpec(tuple(self.train_x.shape[1:]), self.num_classes)

    def check_trainable(self, *, augment: bool = False) -> None:
        """One line, before any step, for a training split a run cannot train on."""
        if len(self.train_x) < 2:  # BatchNorm cannot train on one example
            raise DataError(f"{self.name}: the training split holds {len(self.train_x)} example(s); "
                            "training needs at least 2")
        if augment and self.train_transform is None:
            raise ConfigError(f"augment applies to datasets with a training augmentation (CIFAR); "
                              f"{self.name} has none")


#: The fixed hold-out of data that comes without a test split: a seeded 20 % of the examples.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def hold_out(x: np.ndarray, y: np.ndarray, source: Path | str) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)``: a fixed seeded ``TEST_FRACTION`` (at least one
    example) held out for testing."""
    if len(x) < 2:
        raise DataError(f"{source}: need at least 2 examples to hold some out for testing")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = max(1, int(len(x) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def count_classes(y: np.ndarray, y_test: np.ndarray, class_names: tuple[str, ...] | None,
                  source: Path | str) -> int:
    """The number of classes: ``len(class_names)``, else the largest label + 1; labels checked."""
    lo, hi = int(min(y.min(), y_test.min())), int(max(y.max(), y_test.max()))
    num_classes = len(class_names) if class_names is not None else hi + 1
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(f"{source}: label {bad} is out of range; labels must be 0..{num_classes - 1}"
                        + (f" (class_names lists {num_classes} classes)" if class_names is not None else ""))
    if num_classes < 2:
        raise DataError(f"{source}: needs at least 2 classes, found {num_classes}")
    return num_classes


Normalization = tuple[tuple[float, ...], tuple[float, ...]] | list[list[float]]


def _channel_stats(x: Tensor, normalization: Normalization) -> tuple[Tensor, Tensor]:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(shape) for v in normalization)
    return mean, std


def standardise(x: Tensor, normalization: Normalization | None) -> Tensor:
    """``(x - mean) / std`` per channel (dim 1), as a dataset was prepared; ``None``: ``x``."""
    if normalization is None:
        return x
    mean, std = _channel_stats(x, normalization)
    return (x - mean) / std


def unstandardise(x: Tensor, normalization: Normalization | None) -> Tensor:
    """The inverse of :func:`standardise`: ``x * std + mean`` per channel."""
    if normalization is None:
        return x
    mean, std = _channel_stats(x, normalization)
    return x * std + mean


def standardised_data(name: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray,
                      normalization: Normalization, *, class_names: tuple[str, ...] | None,
                      source: Path | str, feature_names: tuple[str, ...] | None = None
                      ) -> ClassificationData:
    """The container for a user's train/test arrays: labels checked, both splits standardised with
    ``normalization`` (the training split's per-channel or per-feature ``(mean, std)``), recorded."""
    num_classes = count_classes(y, yt, class_names, source)
    return ClassificationData(
        name,
        standardise(torch.from_numpy(x), normalization),
        torch.from_numpy(y),
        standardise(torch.from_numpy(xt), normalization),
        torch.from_numpy(yt),
        num_classes=num_classes,
        class_names=class_names,
        normalization=(tuple(normalization[0]), tuple(normalization[1])),
        feature_names=feature_names,
    )


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    transform: BatchTransform | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` mini-batches; shuffled with ``generator`` so the order is reproducible.

    ``transform`` (e.g. ``data.train_transform``) is applied to each image batch and draws its
    randomness from the same ``generator``, after the shuffle, so augmentation is seeded too.
    A last batch of one example joins the batch before it: BatchNorm cannot train on one example.
    """
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(x.device)  # once per epoch: a GPU-resident set is then indexed without a host sync
    for start, stop in batch_bounds(n, batch_size, drop_last=drop_last):
        idx = order[start:stop]
        xb = x[idx]
        yield (transform(xb, generator) if transform is not None else xb), y[idx]


def batch_bounds(n: int, batch_size: int, *, drop_last: bool = False) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each batch :func:`batches` yields over ``n`` rows, for code that batches
    unlabelled rows the same way (a seeded sampler pass draws its noise batch by batch)."""
    count = num_batches(n, batch_size, drop_last=drop_last)
    for i in range(count):
        start = i * batch_size
        yield start, n if i == count - 1 and not drop_last else start + batch_size


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields (a last batch of one joins the one before)."""
    if drop_last or (n > batch_size and n % batch_size == 1):
        return n // batch_size
    return -(-n // batch_size)
