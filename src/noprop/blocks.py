"""The paper's blocks (v1 Fig. 6 / v2 Fig. 5): networks that map (input, noisy label) to class logits.

A block never sees another block: it takes the image ``x`` and a noisy label embedding ``z`` and
returns ``C`` logits; the method turns them into ``u_hat = softmax(logits) @ W_embed`` (DT, CT) or
``v = logits @ W_embed`` (FM).

The input goes through an encoder (:mod:`noprop.encoders`); the paper's conv stack,
:class:`~noprop.encoders.ImageBranch`, is the default one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from noprop.encoders import HIDDEN, EncoderFactory, ImageBranch


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
