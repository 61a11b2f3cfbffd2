"""Flow matching's two objects, apart from any network: the probability path and the ODE solver.

In the spirit of facebookresearch/flow_matching (``path`` / ``solver``): NoProp-FM (Sec. 2.2.3)
trains a block to predict the path's velocity, then integrates that field at inference::

    path = LinearPath(sigma=0.0)
    s = path.sample(u_y, t)                 # s.z_t, s.target (the velocity): the regression target
    z_1 = EulerSolver(steps=1000).integrate(lambda z, t: model_velocity(z, t), z_0)

The path is the linear (rectified-flow / I-CFM) one, ``alpha_t = t``, ``sigma_t = 1 - t``. Its
``sample(u, t, z_0)`` has the shape of the diffusion schedules' ``sample(u, t, eps)``
(:class:`noprop.schedules.NoisingPath`): the clean label, the time, the noise it starts from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from noprop.schedules import PathSample


@dataclass(frozen=True)
class LinearPath:
    """``z_t = t * u + (1 - t) * z_0 + sigma * eps``, velocity ``u - z_0`` (paper Eq. 10, ``z_1 = u``).

    ``sigma`` widens the path into a tube of constant width (Tong et al.'s I-CFM); the paper
    writes the term but gives no value. ``sigma = 0`` is the straight line.
    """

    sigma: float = 0.0

    def sample(self, u: Tensor, t: Tensor, z_0: Tensor | None = None, *, eps: Tensor | None = None
               ) -> PathSample:
        """``z_t`` and its target, the velocity ``u - z_0``. ``u`` (the end ``z_1``): ``(batch, d)``;
        ``t``: ``(batch,)`` in [0, 1]; ``z_0`` defaults to ``torch.randn_like(u)``, and ``eps`` (drawn
        after it, only if ``sigma > 0``) to another."""
        if z_0 is None:
            z_0 = torch.randn_like(u)
        tt = t.unsqueeze(-1)
        z_t = tt * u + (1.0 - tt) * z_0
        if self.sigma > 0:
            z_t = z_t + self.sigma * (torch.randn_like(z_0) if eps is None else eps)
        return PathSample(z_t=z_t, target=u - z_0)


@dataclass(frozen=True)
class EulerSolver:
    """Integrate ``dz/dt = field(z, t)`` from ``t = 0`` to ``1`` in ``steps`` equal Euler steps::

        z_{k+1} = z_k + (1 / steps) * field(z_k, k / steps)
    """

    steps: int

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def integrate(self, field: Callable[[Tensor, Tensor], Tensor], z_0: Tensor, *,
                  field_input: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
        """``z_1`` from ``z_0`` (batch, d); ``field`` gets ``z`` and a scalar time tensor ``t``.

        ``field_input(k, z_k)``: where the field is evaluated at step ``k`` in place of ``z_k`` (an
        intervention for analysis; the Euler update still starts from ``z_k``). ``None``: ``z_k``."""
        z, dt = z_0, 1.0 / self.steps
        for k in range(self.steps):
            t = torch.tensor(k * dt, device=z_0.device, dtype=z_0.dtype)
            z = z + dt * field(z if field_input is None else field_input(k, z), t)
        return z

