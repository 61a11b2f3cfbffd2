"""The Eq. 3 sampler, written once: NoProp-DT, fused DT and NoProp-CT all run this loop.

From ``z_0 ~ N(0, I)``, each step ``k = 1..N`` moves to the next noise level with the
posterior coefficients ``(a_k, b_k, c_k)`` of :func:`noprop.schedules.posterior_coefficients`::

    z_k = a_k * u_hat_k(z_{k-1}) + b_k * z_{k-1} + sqrt(c_k) * eps_k     (eps_k = 0 if deterministic)

``u_hat_k`` is the method's estimate of the clean label embedding (DT: block k; CT: the one block
at time ``t_{k-1}``). Usage::

    chain = posterior_chain(lambda k, z: model.denoise(k + 1, x, z),
                            lambda k: model.schedule.step_into(k + 1),
                            steps=T, shape=(len(x), d), device=x.device)
    logits = model.classifier(chain[-1])

Noise is drawn in a fixed order (``z_0``, then ``eps_1``, ..., ``eps_N``) from ``generator``, so
a seeded evaluation is repeatable and the fused and unfused DT samplers agree draw for draw.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from noprop.schedules import PosteriorCoefficients


def posterior_chain(
    denoise: Callable[[int, Tensor], Tensor],
    coefficients: Callable[[int], PosteriorCoefficients],
    *,
    steps: int,
    shape: tuple[int, int],
    device: torch.device | str,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    keep_chain: bool = True,
    denoiser_input: Callable[[int, Tensor], Tensor] | None = None,
) -> list[Tensor]:
    """``[z_0, z_1, ..., z_N]`` (just ``[z_N]`` without ``keep_chain``), each of ``shape`` (batch, d).

    ``denoise(k, z)``: ``u_hat`` for step ``k`` (0-based) from ``z = z_k``;
    ``coefficients(k)``: the coefficients of step ``k`` (scalars or broadcastable tensors);
    ``denoiser_input(k, z_k)``: what ``denoise`` is given at step ``k`` in place of ``z_k``, an
    intervention for analysis (``noprop analyze``: z zeroed, shuffled, replaced by noise; or an
    observer that returns ``z_k`` unchanged). The chain's own ``b_k z_k`` term keeps ``z_k``, and
    the sampler's noise draws are unchanged. ``None``: ``z_k`` itself.
    """
    z = torch.randn(shape, device=device, generator=generator)
    chain = [z]
    for k in range(steps):
        coef = coefficients(k)
        seen = z if denoiser_input is None else denoiser_input(k, z)
        z = coef.a * denoise(k, seen) + coef.b * z
        if not deterministic:
            z = z + coef.c.sqrt() * torch.randn(shape, device=device, generator=generator)
        if keep_chain:
            chain.append(z)
    return chain if keep_chain else [z]
