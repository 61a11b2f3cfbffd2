"""The paper's blocks (v1 Fig. 6 / v2 Fig. 5): networks that map (input, noisy label) to class logits.

A block never sees another block: it takes the image ``x`` and a noisy label embedding ``z`` and
returns ``C`` logits; the method turns them into ``u_hat = softmax(logits) @ W_embed`` (DT, CT) or
``v = logits @ W_embed`` (FM).

The input goes through an encoder (:mod:`noprop.encoders`); the paper's, the default, is this
image path (both kinds)::

    conv3x3(32)-ReLU-maxpool2-dropout(0.2)
    conv3x3(64)-ReLU-dropout(0.2)
    conv3x3(128)-ReLU-maxpool2-dropout(0.2)
    flatten-FC(256)-[BN for DT | ReLU for CT/FM]

Convolutions are unpadded ("valid"): only that reproduces the paper's parameter counts (v2 Table 5,
0.92 M per MNIST one-hot DT block). Images too small for three valid convolutions (e.g. the 8x8
digits) use padding 1 instead; ``conv_padding="auto"`` picks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from noprop.settings import ConfigError
from noprop.spec import DataSpec

if TYPE_CHECKING:
    from noprop.encoders import EncoderFactory

Padding = Literal["auto", "valid", "same"]
HIDDEN = 256
DROPOUT = 0.2


def resolve_padding(padding: Padding, spec: DataSpec) -> int:
    """Conv padding in pixels: 0 ("valid", the paper's) unless the image is too small for it."""
    if padding == "valid":
        return 0
    if padding == "same":
        return 1
    if padding != "auto":
        raise ValueError(f"conv padding must be auto, valid or same, got {padding!r}")
    return 0 if min(spec.height, spec.width) >= 16 else 1


def conv_stack_output(size: int, padding: int) -> int:
    """Side length after the image branch's conv-pool-conv-conv-pool (0: the image does not fit)."""
    for op in ("conv", "pool", "conv", "conv", "pool"):
        if op == "conv":
            if size + 2 * padding < 3:
                return 0
            size = size + 2 * padding - 2
        else:
            if size < 2:
                return 0
            size //= 2
    return size


def smallest_image(padding: int) -> int:
    """The smallest side length the image branch accepts at ``padding``."""
    return next(s for s in range(1, 64) if conv_stack_output(s, padding) > 0)


def check_image_fits(spec: DataSpec, padding: int) -> None:
    """A one-line error, instead of a convolution's traceback, for images too small for the block."""
    if min(conv_stack_output(spec.height, padding), conv_stack_output(spec.width, padding)) > 0:
        return
    kind = "valid (unpadded)" if padding == 0 else "padded"
    hint = (f"use --conv-padding same (needs {smallest_image(1)}x{smallest_image(1)}) or larger images"
            if padding == 0 else "use larger images")
    side = smallest_image(padding)
    raise ConfigError(f"{spec.height}x{spec.width} images are too small for the paper's block with {kind} "
                      f"convolutions, which needs at least {side}x{side}; {hint}")


class ImageBranch(nn.Module):
    """Conv stack of the paper's block ending in FC(256) and either BatchNorm (DT) or ReLU (CT/FM)."""

    def __init__(self, spec: DataSpec, *, padding: int, batch_norm: bool) -> None:
        super().__init__()
        check_image_fits(spec, padding)
        self.spec = spec
        self.features = nn.Sequential(
            nn.Conv2d(spec.channels, 32, 3, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(DROPOUT),
            nn.Conv2d(32, 64, 3, padding=padding),
            nn.ReLU(),
            nn.Dropout(DROPOUT),
            nn.Conv2d(64, 128, 3, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(DROPOUT),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *spec.input_shape)).shape[1]
        self.project = nn.Linear(flat, HIDDEN)
        self.out = nn.BatchNorm1d(HIDDEN) if batch_norm else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(batch, C, H, W)``, or flat ``(batch, C*H*W)`` for a prototype-shaped label."""
        if x.dim() == 2:
            x = x.reshape(x.shape[0], *self.spec.input_shape)
        return self.out(self.project(self.features(x)))


class ResidualLabelBranch(nn.Module):
    """DT label path: ``h = ReLU(BN(FC(z)))``; ``h + BN(FC(ReLU(BN(FC(h)))))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(dim, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU())
        self.residual = nn.Sequential(
            nn.Linear(HIDDEN, HIDDEN),
            nn.BatchNorm1d(HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.BatchNorm1d(HIDDEN),
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.inp(z)
        return h + self.residual(h)


def _label_branch(encoders: EncoderFactory, dim: int, *, batch_norm: bool) -> tuple[nn.Module, int]:
    """The label path and its width. A prototype label (``dim`` = input size) is an input-shaped
    value, so it goes through its own fresh encoder, reshaped to the input's shape."""
    spec = encoders.spec
    if dim == spec.input_size and dim > spec.num_classes:
        encoder = encoders.build()
        width = encoders.features(encoder)
        if isinstance(encoder, ImageBranch) or len(spec.input_shape) == 1:
            return encoder, width  # takes flat (batch, D) values itself
        return nn.Sequential(nn.Unflatten(1, spec.input_shape), encoder), width
    if batch_norm:
        return ResidualLabelBranch(dim), HIDDEN
    return nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU()), HIDDEN


class DTBlock(nn.Module):
    """NoProp-DT block ``u_hat_t(z_{t-1}, x)``: returns class logits, shape ``(batch, C)``.

    ``image``: the encoder of ``x`` (the paper's conv stack unless the config names another).
    """

    def __init__(self, encoders: EncoderFactory, embedding_dim: int) -> None:
        super().__init__()
        self.image = encoders.build()
        features = encoders.features(self.image)
        self.label, label_width = _label_branch(encoders, embedding_dim, batch_norm=True)
        self.head = nn.Sequential(
            nn.Linear(features + label_width, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Linear(128, encoders.spec.num_classes),
        )

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.head(torch.cat([self.image(x), self.label(z)], dim=1))


def sinusoidal_time_embedding(t: Tensor, dim: int = 64) -> Tensor:
    """Transformer-style positional embedding of ``t`` in [0, 1] (scaled to [0, 1000])."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeBlock(nn.Module):
    """The one time-conditioned block of NoProp-CT and -FM, ``(x, z_t, t) -> logits``; no BatchNorm
    outside the encoder."""

    TIME_DIM = 64

    def __init__(self, encoders: EncoderFactory, embedding_dim: int) -> None:
        super().__init__()
        self.image = encoders.build()
        features = encoders.features(self.image)
        self.label, label_width = _label_branch(encoders, embedding_dim, batch_norm=False)
        self.time = nn.Sequential(nn.Linear(self.TIME_DIM, HIDDEN), nn.ReLU())
        self.head = nn.Sequential(
            nn.Linear(features + label_width + HIDDEN, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, encoders.spec.num_classes),
        )
    def forward(self, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """``t``: shape ``(batch,)`` with values in [0, 1]."""
        return self.forward_features(self.image_features(x), z, t)

    def image_features(self, x: Tensor) -> Tensor:
        """The image path alone. It depends on neither ``z`` nor ``t``, so a sampler that calls the
        block many times on one image (1000 CT/FM steps) computes it once (in eval mode)."""
        return self.image(x)

    def forward_features(self, features: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Logits from precomputed :meth:`image_features`; ``t`` of shape ``(batch,)`` or ``()``."""
        time = self.time(sinusoidal_time_embedding(t, self.TIME_DIM))
        if time.dim() == 1:
            time = time.expand(features.shape[0], -1)
        return self.head(torch.cat([features, self.label(z), time], dim=1))
