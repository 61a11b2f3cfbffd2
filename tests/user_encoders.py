"""Encoders as a user writes them, for the tests: importable as ``user_encoders:<name>``."""

from __future__ import annotations

from torch import Tensor, nn

from noprop.spec import DataSpec


class TinyConv(nn.Module):
    """A class used as a factory (called with no arguments): 16 features from 1-channel images."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def conv_for(spec: DataSpec) -> nn.Module:
    """A factory that takes the data spec: 8 features from any image."""
    return nn.Sequential(nn.Conv2d(spec.channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


SHARED = nn.Linear(64, 8)


def shared_layer() -> nn.Module:
    """Wrong: every call hands out the same trainable layer, so gradients would cross blocks."""
    return nn.Sequential(nn.Flatten(), SHARED)


FROZEN = nn.Linear(64, 16).requires_grad_(False)


def frozen_then_trained() -> nn.Module:
    """Allowed: a frozen extractor shared by all blocks, then each block's own trainable layer."""
    return nn.Sequential(nn.Flatten(), FROZEN, nn.ReLU(), nn.Linear(16, 8))


def not_flat() -> nn.Module:
    """Wrong: returns feature maps, not (batch, features)."""
    return nn.Conv2d(1, 2, 3)


def not_a_module() -> int:
    return 3


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: runs eagerly, but not under vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 8)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x.flatten(1))
        return h if float(h.sum()) > -1e30 else -h


def raises() -> nn.Module:
    """Wrong: a factory with a bug of its own."""
    raise ValueError("width must be positive")
