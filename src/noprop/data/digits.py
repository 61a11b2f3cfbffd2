"""The embedded default: scikit-learn's 8x8 handwritten digits (1,797 images, shipped in the wheel).

No download, so ``noprop train`` with no arguments works on a fresh, offline machine.
"""

from __future__ import annotations

import torch

from noprop.data.base import ClassificationData

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits() -> ClassificationData:
    """A fixed 80/20 split of the digits, scaled to [0, 1] then standardised with train statistics."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(len(x) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return ClassificationData("digits", x[train], y[train], x[test], y[test], num_classes=10,
                              normalization=((float(mean),), (float(std),)))
