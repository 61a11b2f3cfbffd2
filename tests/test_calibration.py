"""noprop.calibration: ECE, the reliability diagram, NLL, Brier score and temperature fitting, on
synthetic probabilities whose calibration is known."""

from __future__ import annotations

import math

import pytest
import torch

from noprop.calibration import (
    DEFAULT_BINS,
    brier_score,
    calibration_metrics,
    confidence_auroc,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    tempered_probabilities,
)


def _calibrated(n: int = 40_000, classes: int = 5, seed: int = 0, scale: float = 3.0):
    """Logits, and labels drawn from their softmax: calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, classes, generator=g, dtype=torch.float64)
    labels = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    return logits, labels


def test_a_calibrated_model_has_an_ece_near_zero_and_an_overconfident_one_a_large_ece() -> None:
    logits, labels = _calibrated()
    calibrated = expected_calibration_error(logits.softmax(-1), labels)
    overconfident = expected_calibration_error((logits / 0.25).softmax(-1), labels)
    underconfident = expected_calibration_error((logits / 4.0).softmax(-1), labels)
    assert calibrated < 0.01
    assert overconfident > 0.15 and underconfident > 0.15


def test_ece_and_the_reliability_bins_by_hand() -> None:
    # two examples at confidence 0.9 (one right), three at 0.6-0.65 (all right)
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6], [0.35, 0.65]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    r = reliability(probs, labels, bins=3)  # bins (0, 1/3], (1/3, 2/3], (2/3, 1]
    assert r.edges == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert r.count == [0, 3, 2]
    assert r.confidence[0] is None and r.accuracy[0] is None
    assert r.confidence[1] == pytest.approx((0.6 + 0.6 + 0.65) / 3) and r.accuracy[1] == 1.0
    assert r.confidence[2] == pytest.approx(0.9) and r.accuracy[2] == 0.5
    expected = 3 / 5 * abs(1.0 - (0.6 + 0.6 + 0.65) / 3) + 2 / 5 * abs(0.5 - 0.9)
    assert expected_calibration_error(probs, labels, bins=3) == pytest.approx(expected)
    assert len(reliability(probs, labels).count) == DEFAULT_BINS == 15


def test_nll_and_brier_by_hand_and_a_zero_probability_stays_finite() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    assert brier_score(probs, labels) == pytest.approx(((0.3**2 + 0.2**2 + 0.1**2) + (0.25 + 0.25 + 1)) / 2)
    nll = negative_log_likelihood(probs, labels)
    assert math.isfinite(nll) and nll == pytest.approx((-math.log(0.7) + 708.396) / 2, rel=1e-3)
    m = calibration_metrics(probs, labels)
    assert m.n == 2 and m.accuracy == 0.5 and m.mean_confidence == pytest.approx(0.6)


def test_temperature_fitting_recovers_a_known_temperature() -> None:
    logits, labels = _calibrated(seed=1)
    for true_t in (0.5, 2.5):
        fit = fit_temperature(logits * true_t, labels)  # softmax(z * t / T) is calibrated at T = t
        assert fit.temperature == pytest.approx(true_t, rel=0.05)
        assert fit.nll_after < fit.nll_before and not fit.at_bound


def test_all_right_examples_push_the_temperature_to_the_end_of_its_range() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    fit = fit_temperature(logits, logits.argmax(-1))
    assert fit.at_bound and fit.temperature < 0.01


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        expected_calibration_error(torch.rand(3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="no examples"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_the_auroc_says_whether_the_confidence_ranks_wrong_answers_below_right_ones() -> None:
    labels = torch.tensor([0, 0, 0, 0])  # class 0 right, class 1 wrong
    separating = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])  # right 0.9, 0.8
    reversed_ = torch.tensor([[0.55, 0.45], [0.6, 0.4], [0.1, 0.9], [0.2, 0.8]])  # wrong 0.9, 0.8
    flat = torch.tensor([[0.8, 0.2], [0.8, 0.2], [0.2, 0.8], [0.2, 0.8]])  # 0.8 right or wrong
    assert confidence_auroc(separating, labels) == 1.0
    assert confidence_auroc(reversed_, labels) == 0.0
    assert confidence_auroc(flat, labels) == 0.5
    assert confidence_auroc(separating[:2], labels[:2]) is None  # all right: nothing to separate
    assert calibration_metrics(flat, labels).auroc == 0.5


def test_the_temperature_of_several_passes_is_that_of_the_mean_of_their_softmaxes() -> None:
    logits, labels = _calibrated(n=20_000, seed=2)
    noisy = torch.stack([logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(k),
                                              dtype=torch.float64) for k in range(3)])
    fit = fit_temperature(noisy, labels)
    mean = tempered_probabilities(noisy, fit.temperature)
    assert torch.allclose(mean.sum(-1), torch.ones(20_000, dtype=torch.float64))
    assert fit.nll_after == pytest.approx(negative_log_likelihood(mean, labels))
    for other in (0.8 * fit.temperature, 1.25 * fit.temperature):
        assert negative_log_likelihood(tempered_probabilities(noisy, other), labels) > fit.nll_after
