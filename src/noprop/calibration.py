"""Calibration of class probabilities: do the numbers a model reports mean what they say?

A model that says ``p = 0.8`` should be right on 80 % of the inputs it says that of. Given
probabilities ``P`` (N, C) and labels ``y`` (N,), with confidence ``conf_i = max_c P_ic`` and
prediction ``pred_i = argmax_c P_ic`` (ties: the lowest class index)::

    ECE   = sum_b (n_b / N) |acc_b - conf_b|        equal-width bins of conf on (0, 1], 15 by default
    NLL   = mean_i -log P_{i, y_i}                   (natural log)
    Brier = mean_i sum_c (P_ic - [c == y_i])^2       (multi-class; 0 is perfect, 2 the worst)
    AUROC = P(conf of a right answer > conf of a wrong one)      (ties count 1/2)

``acc_b`` and ``conf_b`` are the accuracy and the mean confidence of the ``n_b`` examples in bin
``b`` (Naeini et al. 2015, Guo et al. 2017); bin ``b`` holds ``(b / B, (b + 1) / B]``. The
reliability diagram is the same bins drawn: accuracy against confidence, on the diagonal when
calibrated. ECE says nothing about *which* answers get the low numbers: a model right on 98 % that
says 0.98 to every input has ECE 0 and is useless to threshold on. The AUROC of the confidence
(right against wrong answers; 0.5: no better than chance) measures that.

Temperature scaling (Guo et al. 2017) divides the logits by one ``T > 0`` fitted on held-out
examples by minimising their NLL. The NLL is convex in ``1 / T`` (a log-sum-exp of functions linear
in it), so it has one minimum along ``log T`` too, found here by a golden-section search on
``log T`` in ``[-5, 5]`` (``T`` from 0.0067 to 148; a fit at an end means the held-out examples
wanted a more extreme temperature, e.g. all of them right). Logits of ``k`` passes ``(k, N, C)``
are fitted as the mean of their softmaxes, ``p = mean_k softmax(logits_k / T)``; that NLL need not
be convex, and the search finds a minimum (one, on every run measured). Usage::

    from noprop.calibration import calibration_metrics, fit_temperature
    t = fit_temperature(val_logits, val_y).temperature
    m = calibration_metrics((test_logits / t).softmax(-1), test_y)
    m.ece, m.nll, m.brier, m.reliability.accuracy
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Equal-width confidence bins of the ECE and the reliability diagram.
DEFAULT_BINS = 15
#: The search interval of ``log T`` in :func:`fit_temperature`.
LOG_T_RANGE = (-5.0, 5.0)
#: ``-log`` of a probability of 0 given to the true class is counted as ``-log`` of this
#: (float64's smallest normal number, so the NLL stays finite: about 708).
TINY = torch.finfo(torch.float64).tiny


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: per equal-width confidence bin, its edges, examples, mean confidence
    and accuracy (``None`` where the bin is empty)."""

    edges: list[float]
    count: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]


@dataclass(frozen=True)
class CalibrationMetrics:
    """How well probabilities of ``n`` examples are calibrated (all in [0, 1] but ``nll`` and ``brier``)."""

    n: int
    accuracy: float
    #: mean of the top probability
    mean_confidence: float
    ece: float
    nll: float
    brier: float
    #: how well the confidence separates right from wrong answers (``None``: all right or all wrong)
    auroc: float | None
    reliability: Reliability


@dataclass(frozen=True)
class TemperatureFit:
    """A temperature fitted on held-out logits, and their NLL at ``T = 1`` and at the fit."""

    temperature: float
    nll_before: float
    nll_after: float
    n: int
    #: ``True`` when the minimum lies at an end of the searched interval (the true optimum is beyond)
    at_bound: bool


def _check(probabilities: Tensor, labels: Tensor) -> None:
    if probabilities.dim() != 2 or labels.dim() != 1 or len(probabilities) != len(labels):
        raise ValueError(f"need probabilities (N, C) and labels (N,), got {tuple(probabilities.shape)} "
                         f"and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("cannot measure calibration on no examples")


def reliability(probabilities: Tensor, labels: Tensor, bins: int = DEFAULT_BINS) -> Reliability:
    """The reliability diagram of ``probabilities`` (N, C) against ``labels`` (N,)."""
    _check(probabilities, labels)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p = probabilities.double()
    conf, pred = p.max(-1)
    right = (pred == labels.to(pred.device)).double()
    index = (torch.ceil(conf * bins) - 1).clamp(0, bins - 1).long()  # (b/B, (b+1)/B] -> b
    count = torch.bincount(index, minlength=bins)
    conf_sum = torch.bincount(index, weights=conf, minlength=bins)
    right_sum = torch.bincount(index, weights=right, minlength=bins)
    return Reliability(
        edges=[b / bins for b in range(bins + 1)],
        count=count.tolist(),
        confidence=[float(s / n) if n else None for s, n in zip(conf_sum, count, strict=True)],
        accuracy=[float(s / n) if n else None for s, n in zip(right_sum, count, strict=True)],
    )


def expected_calibration_error(probabilities: Tensor, labels: Tensor, bins: int = DEFAULT_BINS) -> float:
    """``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width confidence bins."""
    return _ece(reliability(probabilities, labels, bins))


def _ece(r: Reliability) -> float:
    n = sum(r.count)
    gaps = (c / n * abs(a - f) for c, a, f in zip(r.count, r.accuracy, r.confidence, strict=True) if c)
    return float(sum(gaps))


def negative_log_likelihood(probabilities: Tensor, labels: Tensor) -> float:
    """``mean_i -log P_{i, y_i}``; a probability of 0 counts as :data:`TINY`."""
    _check(probabilities, labels)
    p_true = probabilities.double().gather(1, labels.view(-1, 1).to(probabilities.device)).squeeze(1)
    return float(-p_true.clamp_min(TINY).log().mean())


def brier_score(probabilities: Tensor, labels: Tensor) -> float:
    """``mean_i sum_c (P_ic - [c == y_i])^2``."""
    _check(probabilities, labels)
    p = probabilities.double()
    onehot = torch.zeros_like(p).scatter_(1, labels.view(-1, 1).to(p.device), 1.0)
    return float((p - onehot).pow(2).sum(-1).mean())


def confidence_auroc(probabilities: Tensor, labels: Tensor) -> float | None:
    """The probability that a right answer has a higher confidence than a wrong one (ties count
    1/2; the Mann-Whitney statistic on average ranks); ``None`` when all are right or all wrong."""
    _check(probabilities, labels)
    conf, pred = probabilities.double().max(-1)
    right = pred == labels.to(pred.device)
    n_right, n_wrong = int(right.sum()), int((~right).sum())
    if n_right == 0 or n_wrong == 0:
        return None
    _, inverse, counts = torch.unique(conf, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # 1-based rank of each distinct value's last copy
    ranks = (last - (counts.double() - 1) / 2)[inverse]  # ties: their average rank
    u = float(ranks[right].sum()) - n_right * (n_right + 1) / 2
    return u / (n_right * n_wrong)


def calibration_metrics(probabilities: Tensor, labels: Tensor, bins: int = DEFAULT_BINS
                        ) -> CalibrationMetrics:
    """Accuracy, mean confidence, ECE, NLL, Brier score, AUROC and the reliability diagram."""
    r = reliability(probabilities, labels, bins)
    conf, pred = probabilities.double().max(-1)
    return CalibrationMetrics(
        n=len(labels), accuracy=float((pred == labels.to(pred.device)).double().mean()),
        mean_confidence=float(conf.mean()), ece=_ece(r),
        nll=negative_log_likelihood(probabilities, labels), brier=brier_score(probabilities, labels),
        auroc=confidence_auroc(probabilities, labels), reliability=r)


def tempered_probabilities(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` of logits ``(N, C)``, or the mean over passes of logits ``(k, N, C)``."""
    p = (logits / temperature).softmax(-1)
    return p.mean(0) if logits.dim() == 3 else p


def temperature_nll(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """The NLL of :func:`tempered_probabilities` (float64)."""
    z = logits.double()
    y = labels.to(z.device)
    if z.dim() == 2:
        return float(torch.nn.functional.cross_entropy(z / temperature, y))
    p_true = tempered_probabilities(z, temperature).gather(1, y.view(-1, 1)).squeeze(1)
    return float(-p_true.clamp_min(TINY).log().mean())


def fit_temperature(logits: Tensor, labels: Tensor, *, tolerance: float = 1e-4) -> TemperatureFit:
    """The ``T`` minimising the NLL of :func:`tempered_probabilities` of ``logits`` ``(N, C)`` (or
    ``(k, N, C)``: ``k`` passes) on these (held-out) examples: golden-section search on ``log T``
    in :data:`LOG_T_RANGE`, to ``tolerance`` in ``log T``."""
    _check(logits if logits.dim() == 2 else logits[0], labels)
    z, y = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return temperature_nll(z, y, math.exp(log_t))

    lo, hi = LOG_T_RANGE
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > tolerance:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    log_t = (lo + hi) / 2.0
    ends = LOG_T_RANGE
    return TemperatureFit(temperature=math.exp(log_t), nll_before=nll(0.0), nll_after=nll(log_t), n=len(y),
                          at_bound=min(abs(log_t - ends[0]), abs(log_t - ends[1])) < 10 * tolerance)
