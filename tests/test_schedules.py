"""The DT schedule and the posterior sampler coefficients, checked against independent derivations;
the surface both schedules and FM's path share (``noprop.schedules.NoiseSchedule`` / ``NoisingPath``)."""

from __future__ import annotations

import pytest
import torch

from noprop.flow import LinearPath
from noprop.methods import NoPropDT
from noprop.schedules import (
    CosineSchedule,
    LearnedSchedule,
    NoiseSchedule,
    NoisingPath,
    PathSample,
    gaussian_prior_kl,
    posterior_coefficients,
)
from noprop.spec import DataSpec


@pytest.mark.parametrize("T", [1, 2, 10, 100])
def test_cosine_alpha_bar_rises_from_noise_to_label(T: int) -> None:
    ab = CosineSchedule(T, clip=1e-4).alpha_bars
    assert ab.shape == (T + 1,)
    assert torch.all(ab[1:] > ab[:-1]), "alpha_bar must increase with t (NoProp's time direction)"
    assert ab[0] == pytest.approx(1e-4, rel=1e-3)  # z_0 is (almost) pure noise
    assert ab[-1] == pytest.approx(1 - 1e-4, abs=1e-7)  # z_T is (almost) the label


def test_denoising_weights_positive_and_scaled_by_T_eta() -> None:
    sched = CosineSchedule(10)
    snr = sched.alpha_bars / (1 - sched.alpha_bars)
    w = sched.denoising_weights(eta=0.1)
    assert torch.all(w > 0)
    assert torch.allclose(w, 10 * 0.1 / 2 * (snr[1:] - snr[:-1]))
    assert torch.equal(sched.snr(sched.levels), snr)
    assert float(sched.snr_derivative(4)) == pytest.approx(float(snr[4] - snr[3]))


def _posterior_by_completing_the_square(ab_prev: float, ab: float) -> tuple[float, float, float]:
    """Prior z_t ~ N(sqrt(ab) u, 1 - ab); likelihood z_{t-1} | z_t ~ N(sqrt(alpha) z_t, 1 - alpha).

    Posterior precision = 1/(1-ab) + alpha/(1-alpha); mean = var * (sqrt(ab) u/(1-ab)
    + sqrt(alpha) z/(1-alpha)). Returns the coefficients of u and z in the mean, and the variance.
    """
    alpha = ab_prev / ab
    precision = 1.0 / (1.0 - ab) + alpha / (1.0 - alpha)
    var = 1.0 / precision
    return var * ab**0.5 / (1.0 - ab), var * alpha**0.5 / (1.0 - alpha), var


@pytest.mark.parametrize("t", [1, 3, 5, 10])
def test_posterior_coefficients_match_completing_the_square(t: int) -> None:
    sched = CosineSchedule(10)
    coef = sched.step_into(t)
    a, b, c = _posterior_by_completing_the_square(float(sched.alpha_bar(t - 1)), float(sched.alpha_bar(t)))
    assert float(coef.a) == pytest.approx(a, rel=1e-4)
    assert float(coef.b) == pytest.approx(b, rel=1e-4)
    assert float(coef.c) == pytest.approx(c, rel=1e-4)


@pytest.mark.parametrize("t", [2, 6, 9])
def test_posterior_coefficients_match_monte_carlo_regression(t: int) -> None:
    """Simulate the forward noising process and regress z_t on z_{t-1}: slope b, intercept a*u, residual c."""
    torch.manual_seed(0)
    sched = CosineSchedule(10)
    ab_prev, ab = sched.alpha_bar(t - 1).double(), sched.alpha_bar(t).double()
    alpha = ab_prev / ab
    u, n = 1.7, 400_000
    z_t = ab.sqrt() * u + (1 - ab).sqrt() * torch.randn(n, dtype=torch.float64)
    z_prev = alpha.sqrt() * z_t + (1 - alpha).sqrt() * torch.randn(n, dtype=torch.float64)
    cov = torch.cov(torch.stack([z_prev, z_t]))
    slope = cov[0, 1] / cov[0, 0]
    intercept = z_t.mean() - slope * z_prev.mean()
    residual = (z_t - intercept - slope * z_prev).var()
    coef = sched.step_into(t)
    assert float(slope) == pytest.approx(float(coef.b), abs=0.01)
    assert float(intercept) == pytest.approx(float(coef.a) * u, abs=0.01)
    assert float(residual) == pytest.approx(float(coef.c), rel=0.02, abs=1e-4)


@pytest.mark.parametrize("level", [0, 4, 10])
def test_noisy_label_samples_have_the_marginal_moments(level: int) -> None:
    torch.manual_seed(0)
    model = NoPropDT(DataSpec.image(1, 8, 8, 5), num_blocks=10, embedding="learned", embedding_dim=6)
    u = model.embedding.weight[2].detach().expand(200_000, -1)
    z = model.noisy_label(u, level).detach()
    ab = model.schedule.alpha_bar(level)
    assert torch.allclose(z.mean(0), ab.sqrt() * u[0], atol=0.01)
    assert torch.allclose(z.var(0), (1 - ab).expand(6), rtol=0.02, atol=1e-4)


def test_prior_kl_matches_monte_carlo() -> None:
    torch.manual_seed(0)
    u, ab0 = torch.tensor([[0.8, -1.2, 0.3]]), torch.tensor(0.3)
    q = torch.distributions.Normal(ab0.sqrt() * u, (1 - ab0).sqrt())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    exact = torch.distributions.kl_divergence(q, p).sum()
    assert float(gaussian_prior_kl(u, ab0)[0]) == pytest.approx(float(exact), rel=1e-5)


# -- the shared surface ------------------------------------------------------------------------
def test_both_schedules_answer_the_schedule_questions_and_fms_path_samples_the_same_way() -> None:
    for schedule in (CosineSchedule(4), LearnedSchedule()):
        assert isinstance(schedule, NoiseSchedule) and isinstance(schedule, NoisingPath)
    assert isinstance(LinearPath(), NoisingPath) and not isinstance(LinearPath(), NoiseSchedule)


@pytest.mark.parametrize("schedule", [CosineSchedule(4), LearnedSchedule()], ids=["cosine", "learned"])
def test_sample_is_sqrt_ab_u_plus_sqrt_one_minus_ab_eps_with_target_u(schedule) -> None:
    g = torch.Generator().manual_seed(0)
    u, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = torch.tensor([0, 1, 2, 3, 4]) if isinstance(schedule, CosineSchedule) else torch.rand(5, generator=g)
    with torch.no_grad():
        s = schedule.sample(u, t, eps)
        ab = schedule.alpha_bar(t).unsqueeze(-1)
    assert isinstance(s, PathSample) and s.target is u
    torch.testing.assert_close(s.z_t, ab.sqrt() * u + (1 - ab).sqrt() * eps)
    torch.manual_seed(1)
    drawn = schedule.sample(u, t).z_t
    torch.manual_seed(1)
    torch.testing.assert_close(drawn, schedule.sample(u, t, torch.randn_like(u)).z_t)


def test_cosine_sample_at_stacked_levels_is_each_levels_sample_bit_for_bit() -> None:
    """``t`` of shape ``(k, 1)`` gives k samples of the whole batch (what the fused DT step draws)."""
    schedule = CosineSchedule(5)
    g = torch.Generator().manual_seed(0)
    u, eps = torch.randn(7, 3, generator=g), torch.randn(6, 7, 3, generator=g)
    stacked = schedule.sample(u, schedule.levels[:, None], eps).z_t
    assert stacked.shape == (6, 7, 3)
    for level in range(6):
        assert torch.equal(stacked[level], schedule.sample(u, level, eps[level]).z_t)


def test_cosine_posterior_coefficients_take_t_prev_and_t_like_the_learned_ones() -> None:
    schedule = CosineSchedule(10)
    for t in (1, 5, 10):
        one, into = schedule.posterior_coefficients(t - 1, t), schedule.step_into(t)
        assert all(torch.equal(getattr(one, k), getattr(into, k)) for k in "abc")
    two = schedule.posterior_coefficients(3, 5)  # a two-level step: the generic formula at ab_3, ab_5
    generic = posterior_coefficients(schedule.alpha_bar(3), schedule.alpha_bar(5))
    assert all(torch.equal(getattr(two, k), getattr(generic, k)) for k in "abc")
    for bad in ((3, 3), (-1, 2), (9, 11)):
        with pytest.raises(ValueError, match="t_prev"):
            schedule.posterior_coefficients(*bad)
    with pytest.raises(ValueError, match="t must be"):
        schedule.step_into(0)
