"""The order of an epoch's steps: which unit trains on which batch, and when.

* ``sequential`` (paper Algorithm 1): for each unit, a full pass over the training data;
* ``interleaved``: for each batch, a step on every unit.

Each pass is shuffled by a generator seeded from ``(seed, epoch, unit)`` (``(seed, epoch)`` when
interleaved), so the order of an epoch is a function of the run's seed alone: a run resumed
mid-epoch replays it and skips the steps already taken.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from noprop.config import RunConfig
from noprop.data.base import BatchTransform, batches


def epoch_batches(x: Tensor, y: Tensor, config: RunConfig, epoch: int, units: list[int],
                  augment: BatchTransform | None = None) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(unit, x_batch, y_batch)`` of epoch ``epoch`` (0-based) in the configured order;
    ``augment`` draws from the shuffle's generator, so it is seeded too."""
    bs = config.batch_size

    def gen(*salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((config.seed, epoch, *salt)) % 2**63)

    if config.block_order == "sequential":
        for unit in units:
            for xb, yb in batches(x, y, bs, shuffle=True, generator=gen(unit), transform=augment):
                yield unit, xb, yb
    else:
        for xb, yb in batches(x, y, bs, shuffle=True, generator=gen(), transform=augment):
            for unit in units:
                yield unit, xb, yb
