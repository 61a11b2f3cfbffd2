"""In-memory classification data: the container every loader returns, and the batch iterator.

The paper's datasets fit in memory many times over, so a loader reads the files once into
tensors and training draws batches from them by index: no worker processes, no per-item Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

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

    @property
    def spec(self) -> DataSpec:
        return DataSpec(tuple(self.train_x.shape[1:]), self.num_classes)


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
    """
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx]
        yield (transform(xb, generator) if transform is not None else xb), y[idx]


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
