"""NoProp on your own network: pass any ``nn.Module`` class as the blocks' encoder.

    python examples/own_encoder.py
    python examples/own_encoder.py --tiny

Each of the T NoProp-DT blocks gets its own copy of the encoder (the factory is called once per
block); the library finds its feature count with one pass on zeros. To save and reload such a
model, keep the encoder in an importable module rather than in the script (docs/own-network.md).
"""

import argparse
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from noprop import Classifier


class SmallConv(nn.Module):
    """Two 3x3 convolutions and global average pooling: (batch, 1, 8, 8) -> (batch, 32)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x):
        return self.net(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (seconds), to check that it runs")
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.images[:, None] * 255 / 16).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.2, random_state=0)

    budget = {"epochs": 1, "num_blocks": 2} if args.tiny else {"epochs": 10}
    clf = Classifier(method="dt", encoder=SmallConv, seed=0, **budget).fit(x_train, y_train)
    print(f"NoProp-DT with SmallConv blocks: test accuracy {clf.score(x_test, y_test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
