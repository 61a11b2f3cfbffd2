"""Flow matching's two objects, apart from any network: the probability path and the ODE solver.

In the spirit of facebookresearch/flow_matching (``path`` / ``solver``): NoProp-FM (Sec. 2.2.3)
trains a block to predict the path's velocity, then integrates that field at inference::

    path = LinearPath(sigma=0.0)
    s = path.sample(z_0, u_y, t)            # s.z_t, s.velocity: the regression target
    z_1 = EulerSolver(steps=1000).integrate(lambda z, t: model_velocity(z, t), z_0)

The path is the linear (rectified-flow / I-CFM) one, ``alpha_t = t``, ``sigma_t = 1 - t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PathSample:
    """A point ``z_t`` on the path between ``z_0`` (noise) and ``z_1`` (label), and its velocity."""

    z_t: Tensor
    velocity: Tensor


@dataclass(frozen=True)
class LinearPath:
    """``z_t = t * z_1 + (1 - t) * z_0 + sigma * eps``, velocity ``z_1 - z_0`` (paper Eq. 10).

    ``sigma`` widens the path into a tube of constant width (Tong et al.'s I-CFM); the paper
    writes the term but gives no value. ``sigma = 0`` is the straight line.
    """

    sigma: float = 0.0

    def sample(self, z_0: Tensor, z_1: Tensor, t: Tensor, eps: Tensor | None = None) -> PathSample:
        """``z_0``, ``z_1``: ``(batch, d)``; ``t``: ``(batch,)`` in [0, 1]."""
        tt = t.unsqueeze(-1)
        z_t = tt * z_1 + (1.0 - tt) * z_0
        if self.sigma > 0:
            z_t = z_t + self.sigma * (torch.randn_like(z_0) if eps is None else eps)
        return PathSample(z_t=z_t, velocity=z_1 - z_0)


@dataclass(frozen=True)
class EulerSolver:
    """Integrate ``dz/dt = field(z, t)`` from ``t = 0`` to ``1`` in ``steps`` equal Euler steps::

        z_{k+1} = z_k + (1 / steps) * field(z_k, k / steps)
    """

    steps: int

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def integrate(self, field: Callable[[Tensor, Tensor], Tensor], z_0: Tensor) -> Tensor:
        """``z_1`` from ``z_0`` (batch, d); ``field`` gets ``z`` and a scalar time tensor ``t``."""
        z, dt = z_0, 1.0 / self.steps
        for k in range(self.steps):
            t = torch.tensor(k * dt, device=z_0.device, dtype=z_0.dtype)
            z = z + dt * field(z, t)
        return z


def euler_integrate(field: Callable[[Tensor, Tensor], Tensor], z_0: Tensor, steps: int) -> Tensor:
    """``EulerSolver(steps).integrate(field, z_0)``, as a function."""
    return EulerSolver(steps).integrate(field, z_0)
