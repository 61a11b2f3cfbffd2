"""Seeded sampler passes: each is the trainer's evaluation at its seed; their vote finds the mode."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from helpers import make_blobs
from noprop.inference import InferenceOptions, InferenceRuns, accuracy, inference_runs, seeded_pass
from noprop.methods import build_method
from noprop.spec import DataSpec


class NoisyOracle(nn.Module):
    """Predicts the true class with probability ``p``, else a uniformly drawn other class."""

    def __init__(self, y: Tensor, num_classes: int, p: float) -> None:
        super().__init__()
        self.spec = DataSpec(input_shape=(1,), num_classes=num_classes)
        self.weight = nn.Parameter(torch.zeros(1))
        self.y, self.p = y, p

    def predict_logits(self, x: Tensor, *, steps=None, deterministic=False, generator=None) -> Tensor:
        c = self.spec.num_classes
        y = self.y[x[:, 0].long()]
        other = (y + torch.randint(1, c, y.shape, generator=generator)) % c
        keep = torch.rand(y.shape, generator=generator) < self.p
        return nn.functional.one_hot(torch.where(keep, y, other), c).float()


def test_one_run_scores_the_true_class_probability_and_the_vote_finds_the_mode() -> None:
    y = torch.randint(0, 5, (2000,), generator=torch.Generator().manual_seed(0))
    x = torch.arange(len(y)).float().unsqueeze(1)
    r = inference_runs(NoisyOracle(y, 5, p=0.6), x, y, runs=25)
    assert r.mean == pytest.approx(0.6, abs=0.02)
    assert len(set(r.accuracies)) > 1 and r.stderr is not None and 0 < r.stderr < 0.01
    assert r.vote_accuracy > 0.97          # the true class is the mode of every example's draws


@pytest.mark.parametrize(("method", "n_test"), [("dt", 200), ("ct", 200), ("fm", 200), ("ct", 129)])
def test_run_k_is_the_trainers_evaluation_seeded_seed_plus_k(method: str, n_test: int) -> None:
    data = make_blobs(n_test=n_test)  # 129 = 2 x 64 + 1: the last row joins the batch before it
    model = build_method(method, data.spec, {"num_blocks": 2} if method == "dt" else None)
    options = InferenceOptions(steps=4, seed=7, batch_size=64)
    r = inference_runs(model, data.test_x, data.test_y, 3, options)
    for k, acc in enumerate(r.accuracies):
        assert acc == accuracy(model, data.test_x, data.test_y, options.replace(seed=7 + k))
    assert 0.0 <= r.vote_accuracy <= 1.0


def test_stderr_is_the_standard_error_of_the_mean() -> None:
    r = InferenceRuns(accuracies=[0.5, 0.6, 0.7], vote_accuracy=0.7)
    assert r.mean == pytest.approx(0.6) and r.stderr == pytest.approx(0.1 / 3 ** 0.5)
    assert InferenceRuns(accuracies=[0.5], vote_accuracy=0.5).stderr is None


def test_no_runs_is_refused() -> None:
    data = make_blobs(n_test=8)
    with pytest.raises(ValueError, match="runs"):
        inference_runs(build_method("dt", data.spec), data.test_x, data.test_y, runs=0)


def test_a_pass_restores_train_mode_even_when_it_fails() -> None:
    model = NoisyOracle(torch.zeros(4, dtype=torch.long), 3, p=1.0).train()
    with pytest.raises(RuntimeError, match="boom"), seeded_pass(model, seed=0) as (_, generator):
        assert not model.training and generator.initial_seed() == 0
        raise RuntimeError("boom")
    assert model.training
