"""Noise schedules: how much of the clean label embedding survives at each time.

NoProp runs time *opposite* to DDPM: ``z_0`` is (almost) pure noise and ``z_T`` (or ``z_1``)
is (almost) the clean label embedding ``u_y``. Every schedule here therefore has an
``alpha_bar`` that *increases* with time:

    q(z_t | y) = N(sqrt(alpha_bar_t) * u_y, (1 - alpha_bar_t) * I)
    SNR(t)     = alpha_bar_t / (1 - alpha_bar_t)          (increasing in t)

Two schedules live here:

* :class:`CosineSchedule` - the fixed discrete schedule of NoProp-DT (T blocks, integer levels
  ``t = 0 .. T``).
* :class:`LearnedSchedule` - the trainable monotone schedule of NoProp-CT (paper App. B,
  after Kingma et al.'s VDM), continuous ``t`` in [0, 1].

Both answer the same questions (:class:`NoiseSchedule`), so a method asks its schedule instead of
re-deriving the formulas::

    schedule.alpha_bar(t)                     # ab_t
    schedule.snr(t)                           # ab_t / (1 - ab_t)
    schedule.snr_derivative(t)                # DT: SNR(t) - SNR(t-1); CT: dSNR/dt
    schedule.sample(u, t, eps=None)           # PathSample: z_t = sqrt(ab_t) u + sqrt(1 - ab_t) eps
    schedule.posterior_coefficients(t_prev, t)

``t`` is an int level (DT), or a tensor of levels / times broadcastable against the leading
(non-feature) dims of ``u``: a per-example ``(batch,)`` tensor, or ``(k, 1)`` for ``k`` stacked
samples of the whole batch (fused DT). :meth:`posterior_coefficients` gives the ``(a, b, c)`` of
the Gaussian posterior ``q(z_t | z_{t_prev}, y) = N(a * u_y + b * z_{t_prev}, c * I)`` that the
inference sampler steps with (paper Eq. 3 and Eqs. 40-41).

Flow matching's :class:`noprop.flow.LinearPath` is the third way to noise a label: its ``sample``
takes the same ``(u, t, noise)`` call and returns the same :class:`PathSample` (its target is the
velocity rather than ``u``); :class:`NoisingPath` is what all three share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class PathSample:
    """A draw ``z_t`` of a noising path at time ``t``, and what a block is trained to predict there.

    ``target`` is the clean label embedding ``u`` for the diffusion schedules (DT, CT: the blocks
    denoise toward it) and the velocity ``dz_t/dt`` for flow matching's path.
    """

    z_t: Tensor
    target: Tensor


@runtime_checkable
class NoisingPath(Protocol):
    """Anything that noises a label embedding ``u`` at time ``t``: both schedules and FM's path."""

    def sample(self, u: Tensor, t: Tensor | int, noise: Tensor | None = None, /) -> PathSample:
        """``z_t`` (drawn with ``noise``, or fresh standard normal noise) and its training target."""
        ...


@runtime_checkable
class NoiseSchedule(NoisingPath, Protocol):
    """A diffusion schedule ``q(z_t | y) = N(sqrt(ab_t) u_y, (1 - ab_t) I)``, ``ab_t`` rising in t."""

    def alpha_bar(self, t: Tensor | int) -> Tensor:
        """``ab_t``."""
        ...

    def snr(self, t: Tensor | int) -> Tensor:
        """``SNR(t) = ab_t / (1 - ab_t)``."""
        ...

    def snr_derivative(self, t: Tensor | int) -> Tensor:
        """How fast SNR rises into ``t``: the weight of the denoising loss there."""
        ...

    def posterior_coefficients(self, t_prev: Tensor | int, t: Tensor | int) -> PosteriorCoefficients:
        """``(a, b, c)`` of ``q(z_t | z_{t_prev}, y)``."""
        ...


def _per_row(level: Tensor) -> Tensor:
    """A noise level (one per row of ``u``) made to broadcast over the feature dim; scalars stay."""
    return level.unsqueeze(-1) if level.dim() > 0 else level


def gaussian_sample(u: Tensor, alpha_bar: Tensor, one_minus_alpha_bar: Tensor,
                    eps: Tensor | None = None) -> PathSample:
    """``z = sqrt(ab) * u + sqrt(1 - ab) * eps`` (eps standard normal if not given); target ``u``.

    ``alpha_bar`` and ``one_minus_alpha_bar`` are scalars or shaped like ``u`` without its last dim.
    """
    ab, rest = _per_row(alpha_bar), _per_row(one_minus_alpha_bar)
    z_t = ab.sqrt() * u + rest.sqrt() * (torch.randn_like(u) if eps is None else eps)
    return PathSample(z_t=z_t, target=u)


@dataclass(frozen=True)
class PosteriorCoefficients:
    """Coefficients of ``q(z_t | z_{t-1}, y) = N(a * u_y + b * z_{t-1}, c * I)``.

    With ``alpha_prev = alpha_bar_{t-1} / alpha_bar_t`` (paper Eqs. 40-41)::

        a = sqrt(alpha_bar_t) * (1 - alpha_prev) / (1 - alpha_bar_{t-1})
        b = sqrt(alpha_prev) * (1 - alpha_bar_t) / (1 - alpha_bar_{t-1})
        c = (1 - alpha_bar_t) * (1 - alpha_prev) / (1 - alpha_bar_{t-1})
    """

    a: Tensor
    b: Tensor
    c: Tensor


def posterior_coefficients(alpha_bar_prev: Tensor, alpha_bar: Tensor) -> PosteriorCoefficients:
    """Posterior coefficients for one step from noise level ``alpha_bar_prev`` to ``alpha_bar``."""
    alpha_prev = alpha_bar_prev / alpha_bar
    denom = 1.0 - alpha_bar_prev
    a = alpha_bar.sqrt() * (1.0 - alpha_prev) / denom
    b = alpha_prev.sqrt() * (1.0 - alpha_bar) / denom
    c = (1.0 - alpha_bar) * (1.0 - alpha_prev) / denom
    return PosteriorCoefficients(a=a, b=b, c=c)


def gaussian_prior_kl(u: Tensor, alpha_bar_0: Tensor) -> Tensor:
    """``KL(q(z_0 | y) || N(0, I))`` per row of ``u`` (shape ``(batch, d)`` -> ``(batch,)``).

    ``q(z_0 | y) = N(sqrt(ab0) u, (1 - ab0) I)``, so the closed form is
    ``0.5 * (ab0 * |u|^2 + d * (1 - ab0) - d - d * log(1 - ab0))``.
    """
    d = u.shape[-1]
    var = 1.0 - alpha_bar_0
    return 0.5 * (alpha_bar_0 * u.pow(2).sum(-1) + d * var - d - d * torch.log(var))


class CosineSchedule(nn.Module):
    """Fixed cosine schedule of NoProp-DT over levels ``t = 0 .. T``.

    The paper says only "a fixed cosine noise schedule". We use the Nichol & Dhariwal curve
    run backwards so that ``alpha_bar`` rises from ~0 at ``t = 0`` to ~1 at ``t = T``::

        f(s)        = cos^2(((s + offset) / (1 + offset)) * pi / 2)
        alpha_bar_t = clip(f((T - t) / T) / f(0), clip, 1 - clip)

    The clip keeps both ends finite: it sets ``SNR(T) = (1 - clip) / clip``, and so the weight of
    the last block's denoising loss (``docs/design.md`` lists the resulting weights).
    """

    def __init__(self, num_steps: int, *, clip: float = 1e-4, offset: float = 0.008) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not 0.0 < clip < 0.5:
            raise ValueError(f"clip must be in (0, 0.5), got {clip}")
        self.num_steps = num_steps
        s = (num_steps - torch.arange(num_steps + 1, dtype=torch.float64)) / num_steps

        def f(v: Tensor | float) -> Tensor:
            v = torch.as_tensor(v, dtype=torch.float64)
            return torch.cos((v + offset) / (1.0 + offset) * math.pi / 2).pow(2)

        alpha_bar = (f(s) / f(0.0)).clamp(clip, 1.0 - clip)
        #: ``alpha_bar_t`` for every level ``t = 0 .. T`` (shape ``(T + 1,)``), rising
        self.register_buffer("alpha_bars", alpha_bar.float(), persistent=False)

    @property
    def levels(self) -> Tensor:
        """All levels ``0 .. T`` as a tensor (on the schedule's device)."""
        return torch.arange(self.num_steps + 1, device=self.alpha_bars.device)

    def alpha_bar(self, t: Tensor | int) -> Tensor:
        """``alpha_bar_t`` at level(s) ``t`` (an int, or an integer tensor of any shape)."""
        return self.alpha_bars[t]

    def snr(self, t: Tensor | int) -> Tensor:
        """``SNR(t) = alpha_bar_t / (1 - alpha_bar_t)``, increasing in the level ``t``."""
        ab = self.alpha_bar(t)
        return ab / (1.0 - ab)

    def snr_derivative(self, t: Tensor | int) -> Tensor:
        """The discrete derivative ``SNR(t) - SNR(t-1)`` into level ``t >= 1``: positive."""
        return self.snr(t) - self.snr(t - 1)

    def denoising_weights(self, eta: float) -> Tensor:
        """Weight of block t's squared error in Eq. 8: ``T * eta / 2 * (SNR(t) - SNR(t-1))``.

        Shape ``(T,)``, entry ``t - 1`` belongs to block ``t``. All positive.
        """
        return self.num_steps * eta / 2.0 * self.snr_derivative(self.levels[1:])

    def sample(self, u: Tensor, t: Tensor | int, eps: Tensor | None = None) -> PathSample:
        """``z_t = sqrt(ab_t) * u + sqrt(1 - ab_t) * eps``, a draw of ``q(z_t | y)``; target ``u``.

        ``t``: an int level, or integer levels broadcastable against ``u``'s leading dims
        (``(batch,)``: one level per example; ``(k, 1)``: ``k`` samples of the batch, ``eps`` then
        ``(k, batch, d)``). ``eps`` defaults to ``torch.randn_like(u)``.
        """
        ab = self.alpha_bar(t)
        return gaussian_sample(u, ab, 1.0 - ab, eps)

    def posterior_coefficients(self, t_prev: Tensor | int, t: Tensor | int) -> PosteriorCoefficients:
        """Coefficients for an inference step from level ``t_prev`` to ``t > t_prev`` (Eqs. 40-41)."""
        if isinstance(t_prev, int) and isinstance(t, int) and not 0 <= t_prev < t <= self.num_steps:
            raise ValueError(f"need 0 <= t_prev < t <= {self.num_steps}, got t_prev={t_prev}, t={t}")
        return posterior_coefficients(self.alpha_bar(t_prev), self.alpha_bar(t))

    def step_into(self, t: int) -> PosteriorCoefficients:
        """Coefficients for the inference step into level ``t`` (``1 <= t <= T``): from ``t - 1``."""
        if not 1 <= t <= self.num_steps:
            raise ValueError(f"t must be in [1, {self.num_steps}], got {t}")
        return self.posterior_coefficients(t - 1, t)


class _PositiveLinear(nn.Module):
    """Linear layer whose weights stay positive (softplus of a free parameter)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.raw_weight = nn.Parameter(torch.randn(out_features, in_features) * 0.5)
        self.bias = nn.Parameter(torch.zeros(out_features))

    @property
    def weight(self) -> Tensor:
        return F.softplus(self.raw_weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class LearnedSchedule(nn.Module):
    """Trainable monotone schedule of NoProp-CT (paper App. B, Eqs. 65-67, after VDM).

    A two-layer network with positive weights, ``g(t) = l1(t) + l2(sigmoid(l3(l1(t))))``,
    is increasing in t; normalised to ``gbar(t) = (g(t) - g(0)) / (g(1) - g(0))`` in [0, 1]::

        gamma(t)     = gamma_0 + (gamma_1 - gamma_0) * (1 - gbar(t))     (decreasing)
        SNR(t)       = exp(-gamma(t))                                       (increasing)
        alpha_bar(t) = sigmoid(-gamma(t))

    ``gamma_0 < gamma_1`` are trainable end points, kept ordered by parameterising their gap
    with a softplus. The defaults put ``alpha_bar(0) ~ 1e-3`` and ``alpha_bar(1) ~ 1 - 1e-3``.
    """

    def __init__(self, *, gamma_0: float = -7.0, gamma_1: float = 7.0, hidden: int = 64) -> None:
        super().__init__()
        if gamma_1 <= gamma_0:
            raise ValueError("gamma_1 must exceed gamma_0 (alpha_bar must rise with t)")
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_0)))
        gap = gamma_1 - gamma_0
        self.raw_gap = nn.Parameter(torch.tensor(gap + math.log(-math.expm1(-gap))))
        self.l1 = _PositiveLinear(1, 1)
        self.l2 = _PositiveLinear(1, hidden)
        self.l3 = _PositiveLinear(hidden, 1)

    @property
    def gamma_1(self) -> Tensor:
        return self.gamma_0 + F.softplus(self.raw_gap)

    def _g(self, t: Tensor) -> Tensor:
        h = self.l1(t.unsqueeze(-1))
        return (h + self.l3(torch.sigmoid(self.l2(h)))).squeeze(-1)

    def _g_and_slope(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``g(t)`` and ``dg/dt`` in closed form (no autograd needed at sampling time)."""
        w1 = self.l1.weight.squeeze()
        h = self.l1(t.unsqueeze(-1))
        s = torch.sigmoid(self.l2(h))
        g = (h + self.l3(s)).squeeze(-1)
        ds_dh = s * (1 - s) * self.l2.weight.squeeze(-1)
        slope = w1 * (1.0 + ds_dh @ self.l3.weight.squeeze(0))
        return g, slope

    def gamma(self, t: Tensor) -> Tensor:
        """``gamma(t)`` for ``t`` in [0, 1] (any shape)."""
        return self.gamma_and_slope(t)[0]

    def gamma_and_slope(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``gamma(t)`` and ``d gamma / dt`` (negative) for ``t`` in [0, 1].

        At least float32, also under bf16 autocast: the CT loss weight ``exp(-gamma) * gamma'``
        amplifies bf16's rounding of the network's output (a 0.4 % change in ``g`` moved the
        weighted loss by 6 % in a test), and the schedule network is a few hundred FLOPs.
        """
        with torch.autocast(t.device.type, enabled=False):
            return self._gamma_and_slope(t if t.dtype in (torch.float32, torch.float64) else t.float())

    def _gamma_and_slope(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ends = self._g(torch.arange(2, device=t.device, dtype=t.dtype))  # g(0), g(1); no host copy
        span = ends[1] - ends[0]
        g, g_slope = self._g_and_slope(t)
        gbar = (g - ends[0]) / span
        width = self.gamma_1 - self.gamma_0
        return self.gamma_0 + width * (1.0 - gbar), -width * g_slope / span

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``alpha_bar(t) = sigmoid(-gamma(t))`` for ``t`` in [0, 1] (any shape)."""
        return torch.sigmoid(-self.gamma(t))

    def snr(self, t: Tensor) -> Tensor:
        """``SNR(t) = alpha_bar / (1 - alpha_bar) = exp(-gamma(t))``."""
        return torch.exp(-self.gamma(t))

    def snr_derivative(self, t: Tensor) -> Tensor:
        """``SNR'(t) = -gamma'(t) * exp(-gamma(t))``, positive: the CT loss weight (Eq. 9)."""
        gamma, slope = self.gamma_and_slope(t)
        return -slope * torch.exp(-gamma)

    def noise_levels(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_bar(t), 1 - alpha_bar(t))``, the second as ``sigmoid(gamma)`` so it stays
        accurate (and its square root differentiable) when ``alpha_bar`` is close to 1."""
        gamma = self.gamma(t)
        return torch.sigmoid(-gamma), torch.sigmoid(gamma)

    def sample(self, u: Tensor, t: Tensor, eps: Tensor | None = None) -> PathSample:
        """``z_t = sqrt(ab(t)) * u + sqrt(1 - ab(t)) * eps``, a draw of ``q(z_t | y)``; target ``u``.

        ``t``: times in [0, 1] broadcastable against ``u``'s leading dims (``(batch,)``: one per
        example); ``1 - ab`` is taken from :meth:`noise_levels`. ``eps`` defaults to
        ``torch.randn_like(u)``.
        """
        return gaussian_sample(u, *self.noise_levels(t), eps)

    def posterior_coefficients(self, t_prev: Tensor, t: Tensor) -> PosteriorCoefficients:
        """Coefficients for an inference step from time ``t_prev`` to ``t > t_prev``.

        Computed in float64 from ``gamma``: with 1000 steps, ``1 - alpha_bar_{t-1} / alpha_bar_t``
        is ~1e-5 near ``t = 1``, where float32 would keep only two or three digits.
        """
        ab_prev = torch.sigmoid(-self.gamma(t_prev).double())
        ab = torch.sigmoid(-self.gamma(t).double())
        coef = posterior_coefficients(ab_prev, ab)
        dtype = t.dtype
        return PosteriorCoefficients(a=coef.a.to(dtype), b=coef.b.to(dtype), c=coef.c.to(dtype))
