"""Difference target propagation (``dtp``, SDTP of Bartunov et al. 2018): it learns a tiny problem, its
targets are what the formulas say, and the locality checker passes it (``targets`` mode) while it
fails Lee et al.'s gradient step at the top and a target that keeps its gradient."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import (
    blobs_accuracy,
    check_trains_from_the_command_line_and_the_classifier,
    make_blobs,
    tiny_method,
)
from noprop.locality import check_locality
from noprop.methods import METHODS
from noprop.methods.dtp import DifferenceTargetPropagation

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**settings) -> DifferenceTargetPropagation:
    return tiny_method(DifferenceTargetPropagation, **{"num_layers": 3, "layer_width": 32, **settings})


def test_dtp_is_registered_and_claims_target_locality():
    assert METHODS["dtp"] is DifferenceTargetPropagation
    assert DifferenceTargetPropagation.locality_forward == "targets"


def test_dtp_learns_tiny_data_well_above_chance():
    accuracy = blobs_accuracy("dtp", num_layers=3, layer_width=64)  # chance is 0.25
    assert accuracy > 0.6, accuracy


def test_difference_correction_leaves_activities_as_targets_when_the_output_is_on_target():
    method = tiny(dtp_target_step=1e-30).eval()  # t_L = h_L in float32: every correction is zero
    data = make_blobs(n_train=8)
    h = method.activities(data.train_x)
    t = method.targets(h, data.train_y)
    for layer in range(1, method.depth + 1):
        assert torch.equal(t[layer], h[layer]), layer


def test_targets_follow_the_formulas():
    method = tiny(dtp_target_step=0.5).eval()
    data = make_blobs(n_train=8)
    x, y = data.train_x, data.train_y
    h = method.activities(x)
    t = method.targets(h, y)
    L = method.depth
    onehot = torch.nn.functional.one_hot(y, method.spec.num_classes).float()
    torch.testing.assert_close(t[L], h[L] - 0.5 * (h[L].softmax(1) - onehot))
    g = lambda layer, a: torch.tanh(method.inverse(layer)(a))  # noqa: E731
    torch.testing.assert_close(t[L - 1], h[L - 1] + g(L, t[L]) - g(L, h[L]))
    torch.testing.assert_close(t[1], h[1] + g(2, t[2]) - g(2, h[2]))


def test_each_layer_with_its_inverse_is_one_group_and_all_learn_in_one_unit():
    method = tiny()
    groups = method.parameter_groups()
    assert list(groups) == ["layer1", "layer2", "layer3", "layer4"]
    assert len(groups["layer1"]) == 2 and all(len(groups[g]) == 4 for g in ("layer2", "layer3", "layer4"))
    assert [u.groups for u in method.training_units()] == [tuple(groups)]
    assert len(tiny(dtp_top="gradient").parameter_groups()["layer4"]) == 2  # Lee et al.: no g_L


def test_sdtp_passes_the_locality_checker():
    report = check_locality(tiny(), make_blobs(n_train=16, n_test=8))
    assert report.passed and report.forward == "targets", report.table()


def test_checker_flags_lee_et_als_gradient_step_through_the_output_layer():
    report = check_locality(tiny(dtp_top="gradient"), make_blobs(n_train=16, n_test=8))
    assert report.flagged("gradient", "layer4"), report.table()


def test_checker_flags_a_target_that_keeps_its_gradient(monkeypatch):
    """The leak: targets computed with autograd on, so each layer's loss reaches into the layers and
    inverses above it. Every group is in the one unit, so only the gradient-path probe can see it."""
    def leaky(self, h, y):
        with torch.enable_grad():
            t = {self.depth: h[self.depth] - 0.1 * (h[self.depth].softmax(1) - 0.5)}
            for layer in range(self.depth, 1, -1):
                t[layer - 1] = h[layer - 1] + self.feedback(layer, t[layer]) - self.feedback(layer, h[layer])
        return t

    monkeypatch.setattr(DifferenceTargetPropagation, "targets", leaky)
    report = check_locality(tiny(), make_blobs(n_train=16, n_test=8))
    failed = [c for c in report.failures if c.check == "gradient"]
    assert failed and failed[0].leak == "gradient crosses blocks", report.table()


def test_dtp_trains_from_the_command_line_and_the_classifier(tmp_path: Path):
    check_trains_from_the_command_line_and_the_classifier("dtp", tmp_path, batch_size=128, num_layers=2,
                                                          layer_width=16)
