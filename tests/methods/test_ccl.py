"""Counter-current learning (``ccl``, Kao & Hariharan 2024): a forward and a feedback network, each
layer trained on the other network's activity at its depth. It learns a tiny problem, each pair's
gradient reaches exactly the two layers the docstring names, and it passes the locality checker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from helpers import (
    blobs_accuracy,
    check_trains_from_the_command_line_and_the_classifier,
    make_blobs,
    tiny_method,
)
from noprop.locality import check_locality
from noprop.methods import METHODS
from noprop.methods.ccl import CounterCurrentLearning

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**settings) -> CounterCurrentLearning:
    return tiny_method(CounterCurrentLearning, **{"num_layers": 3, "layer_width": 32, **settings})


def test_ccl_is_registered_and_claims_target_locality():
    assert METHODS["ccl"] is CounterCurrentLearning
    assert CounterCurrentLearning.locality_forward == "targets"


def test_ccl_learns_tiny_data_well_above_chance():
    accuracy = blobs_accuracy("ccl", num_layers=3, layer_width=64)  # chance is 0.25
    assert accuracy > 0.6, accuracy


def test_feedback_network_maps_the_class_codes_down_to_input_space():
    method = tiny()
    b = method.feedback_activities(torch.device("cpu"))
    assert torch.equal(b[-1], torch.eye(4))
    assert [t.shape for t in b] == [(4, 64), (4, 32), (4, 32), (4, 32), (4, 4)]
    torch.testing.assert_close(b[0], method.feedback_layers[0](b[1]))  # the bottom is linear
    torch.testing.assert_close(b[2], F.elu(method.feedback_layers[2](b[3])))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_a_pair_trains_forward_layer_l_and_feedback_layer_l_plus_1_only(depth):
    method = tiny()
    data = make_blobs(n_train=8)
    a = method.forward_activities(data.train_x)
    b = method.feedback_activities(torch.device("cpu"))
    method.pair_loss(a[depth], b[depth], data.train_y).backward()
    reached = {name for name, p in method.named_parameters() if p.grad is not None}
    forward = {f"forward_layers.{depth - 1}.weight"} if depth else set()  # a_0 = x has no layer
    expected = {f"feedback_layers.{depth}.weight"} | forward
    assert reached == expected


def test_classes_pairing_compares_similarities_with_the_labels():
    method = tiny()
    a, b = torch.randn(5, 32), torch.randn(4, 32)
    y = torch.tensor([0, 3, 1, 1, 2])
    expected = ((a @ b.T - F.one_hot(y, 4).float()) ** 2).mean() * 256 / 32
    torch.testing.assert_close(method.pair_loss(a, b, y), expected)
    examples = tiny(ccl_pairing="examples")
    torch.testing.assert_close(examples.pair_loss(a, b, y), ((a - b[y]) ** 2).mean())


def test_ccl_passes_the_locality_checker():
    report = check_locality(tiny(), make_blobs(n_train=16, n_test=8))
    assert report.passed and report.forward == "targets", report.table()


def test_ccl_trains_from_the_command_line_and_the_classifier(tmp_path: Path):
    check_trains_from_the_command_line_and_the_classifier("ccl", tmp_path, batch_size=128, num_layers=2,
                                                          layer_width=16)
