"""Property tests: the noise schedules and the sampler coefficients stay finite, in range and monotone
for any T, clip and learned-schedule parameters, not only for the defaults the other tests use."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noprop.schedules import CosineSchedule, LearnedSchedule, posterior_coefficients

FEW = settings(max_examples=50, deadline=None)
num_steps = st.integers(min_value=1, max_value=1000)
clips = st.floats(min_value=1e-6, max_value=0.4)


def assert_coefficients_valid(ab_prev: torch.Tensor, ab: torch.Tensor) -> None:
    """a, b >= 0, c in [0, 1), all finite; and one step of the sampler keeps the marginals:
    z_{t-1} ~ q(z_{t-1} | y) stepped with (a, b, c) is distributed as q(z_t | y)."""
    coef = posterior_coefficients(ab_prev, ab)
    for v in (coef.a, coef.b, coef.c):
        assert torch.isfinite(v).all()
    assert (coef.a >= 0).all() and (coef.b >= 0).all()
    assert (coef.c >= 0).all() and (coef.c < 1).all()
    mean = coef.a + coef.b * ab_prev.sqrt()  # coefficient of u_y in E[z_t]
    var = coef.c + coef.b**2 * (1 - ab_prev)
    torch.testing.assert_close(mean, ab.sqrt(), atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(var, 1 - ab, atol=1e-9, rtol=1e-6)


@FEW
@given(num_steps, clips)
def test_cosine_schedule_is_finite_in_range_and_increasing(steps, clip):
    schedule = CosineSchedule(steps, clip=clip)
    ab, snr = schedule.alpha_bar(schedule.levels), schedule.snr(schedule.levels)
    assert ab.shape == (steps + 1,)
    assert torch.isfinite(ab).all() and torch.isfinite(snr).all()
    # float32 storage of a float64 clip: allow one rounding step at either end
    assert (ab >= torch.tensor(clip).float()).all() and (ab <= torch.tensor(1 - clip).float()).all()
    assert (ab.diff() >= 0).all() and (snr.diff() >= 0).all()
    assert ab[-1] > ab[0]  # noise at t = 0, label at t = T
    weights = schedule.denoising_weights(eta=0.1)
    assert weights.shape == (steps,) and torch.isfinite(weights).all() and (weights >= 0).all()


@FEW
@given(num_steps, clips)
def test_cosine_posterior_coefficients_are_valid_at_every_step(steps, clip):
    schedule = CosineSchedule(steps, clip=clip)
    ab = schedule.alpha_bars.double()
    assert_coefficients_valid(ab[:-1], ab[1:])
    for t in (1, steps):  # the per-step accessor agrees with the vectorised formula
        coef = schedule.step_into(t)
        assert 0 <= float(coef.c) < 1 and float(coef.a) >= 0 and float(coef.b) >= 0


def random_learned_schedule(seed: int, scale: float, gamma_0: float, gap: float) -> LearnedSchedule:
    """A learned schedule with every network weight redrawn (float64, so rounding cannot hide a bend)."""
    schedule = LearnedSchedule(gamma_0=gamma_0, gamma_1=gamma_0 + gap).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in schedule.named_parameters():
            if name not in ("gamma_0", "raw_gap"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return schedule


learned = st.builds(
    random_learned_schedule,
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.05, 3.0),
    gamma_0=st.floats(-10.0, 5.0),
    gap=st.floats(0.1, 20.0),
)


@FEW
@given(learned)
def test_learned_schedule_is_monotone_for_random_parameters(schedule):
    t = torch.linspace(0, 1, 257, dtype=torch.float64)
    with torch.no_grad():
        gamma = schedule.gamma(t)
        ab = schedule.alpha_bar(t)
        snr_slope = schedule.snr_derivative(t)
        ends = schedule.gamma(torch.tensor([0.0, 1.0], dtype=torch.float64))
        gamma_1 = schedule.gamma_1
    assert torch.isfinite(gamma).all() and torch.isfinite(snr_slope).all()
    assert (gamma.diff() <= 0).all()  # gamma falls, so SNR = exp(-gamma) and alpha_bar rise
    assert (ab.diff() >= 0).all() and ((ab >= 0) & (ab <= 1)).all()
    assert (snr_slope >= 0).all()  # the CT loss weight SNR'(t) is never negative
    torch.testing.assert_close(ends, torch.stack([gamma_1, schedule.gamma_0]).detach())  # noise at t = 0


@FEW
@given(learned, st.integers(1, 1000))
def test_learned_posterior_coefficients_are_valid_on_a_grid(schedule, steps):
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    with torch.no_grad():
        ab = schedule.alpha_bar(t)
        coef = schedule.posterior_coefficients(t[:-1], t[1:])
    keep = ab[1:] > ab[:-1]  # equal levels (a flat stretch after rounding) make a 0/0 step
    assert_coefficients_valid(ab[:-1][keep], ab[1:][keep])
    for v in (coef.a, coef.b, coef.c):
        assert torch.isfinite(v[keep]).all()
    assert ((coef.c[keep] >= 0) & (coef.c[keep] < 1)).all()
