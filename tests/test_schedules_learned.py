"""The learnable NoProp-CT schedule (paper App. B): monotone, with a correct closed-form SNR'(t)."""

from __future__ import annotations

import torch

from noprop.schedules import LearnedSchedule, posterior_coefficients

GRID = torch.linspace(0.0, 1.0, 201)


def _assert_monotone(schedule: LearnedSchedule) -> None:
    with torch.no_grad():
        ab = schedule.alpha_bar(GRID)
        snr = schedule.snr(GRID)
        assert torch.all(ab[1:] > ab[:-1]), "alpha_bar must rise with t"
        assert torch.all(snr[1:] > snr[:-1]), "SNR must rise with t"
        assert torch.all(schedule.snr_derivative(GRID) > 0)


def test_fresh_schedule_is_increasing_with_ordered_end_points() -> None:
    torch.manual_seed(0)
    schedule = LearnedSchedule(gamma_0=-5.0, gamma_1=6.0)
    _assert_monotone(schedule)
    with torch.no_grad():
        ends = schedule.gamma(torch.tensor([0.0, 1.0]))
    # gamma(0) = gamma_1 (noisy end), gamma(1) = gamma_0 (clean end)
    torch.testing.assert_close(ends, torch.tensor([6.0, -5.0]), atol=1e-4, rtol=0)


def test_schedule_stays_monotone_after_adversarial_training_steps() -> None:
    """Push alpha_bar toward a decreasing target with a large learning rate: it cannot comply."""
    torch.manual_seed(1)
    schedule = LearnedSchedule()
    opt = torch.optim.Adam(schedule.parameters(), lr=0.3)
    t = torch.rand(256)
    target = 1.0 - t  # decreasing: the opposite of what the schedule may represent
    before = [p.detach().clone() for p in schedule.parameters()]
    for _ in range(50):
        loss = (schedule.alpha_bar(t) - target).pow(2).mean() - schedule.gamma_0  # also drag gamma_0 up
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, schedule.parameters(), strict=True))
    _assert_monotone(schedule)
    assert float((schedule.gamma_1 - schedule.gamma_0).detach()) > 0


def test_snr_derivative_matches_central_finite_difference() -> None:
    torch.manual_seed(2)
    schedule = LearnedSchedule().double()
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        numeric = (schedule.snr(t + h) - schedule.snr(t - h)) / (2 * h)
        closed = schedule.snr_derivative(t)
    torch.testing.assert_close(closed, numeric, rtol=1e-6, atol=1e-8)


def test_gamma_slope_matches_autograd() -> None:
    torch.manual_seed(3)
    schedule = LearnedSchedule().double()
    t = torch.rand(20, dtype=torch.float64, requires_grad=True)
    gamma, slope = schedule.gamma_and_slope(t)
    (auto,) = torch.autograd.grad(gamma.sum(), t)
    torch.testing.assert_close(slope, auto)


def test_noise_levels_sum_to_one_and_match_alpha_bar() -> None:
    schedule = LearnedSchedule()
    with torch.no_grad():
        ab, rest = schedule.noise_levels(GRID)
        torch.testing.assert_close(ab + rest, torch.ones_like(ab))
        torch.testing.assert_close(ab, schedule.alpha_bar(GRID))


def test_posterior_coefficients_agree_with_the_generic_formula_and_are_valid() -> None:
    torch.manual_seed(4)
    schedule = LearnedSchedule()
    grid = torch.linspace(0.0, 1.0, 1001)
    with torch.no_grad():
        coef = schedule.posterior_coefficients(grid[:-1], grid[1:])
        generic = posterior_coefficients(schedule.alpha_bar(grid[:-1]).double(),
                                         schedule.alpha_bar(grid[1:]).double())
    assert coef.a.dtype == torch.float32
    assert torch.all(coef.a > 0) and torch.all(coef.b > 0) and torch.all(coef.c > 0)
    torch.testing.assert_close(coef.b.double(), generic.b, rtol=1e-3, atol=1e-6)
    # the exact posterior keeps the marginal: ab_t = (a + b sqrt(ab_prev))^2 and var matches
    ab_prev = torch.sigmoid(-schedule.gamma(grid[:-1]).double())
    ab = torch.sigmoid(-schedule.gamma(grid[1:]).double())
    a, b, c = coef.a.double(), coef.b.double(), coef.c.double()
    torch.testing.assert_close((a + b * ab_prev.sqrt()) ** 2, ab, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(b**2 * (1 - ab_prev) + c, 1 - ab, rtol=1e-4, atol=1e-9)
