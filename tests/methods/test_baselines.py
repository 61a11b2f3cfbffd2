"""The baselines: backprop through the block chain, the plain CNN, Forward-Forward, local learning."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import make_blobs
from noprop.config import RunConfig
from noprop.inference import accuracy as evaluate_accuracy
from noprop.methods import METHODS, BackpropChain, ForwardForward, LocalLearning, PlainCNN
from noprop.methods.forward_forward import embed_label, goodness
from noprop.training.trainer import Trainer

SPEC = make_blobs().spec


def tiny(name: str):
    """Each baseline at a size that trains in a second on 2 CPU cores."""
    torch.manual_seed(0)
    return {
        "backprop": lambda: BackpropChain(SPEC, num_blocks=2),
        "cnn": lambda: PlainCNN(SPEC),
        "ff": lambda: ForwardForward(SPEC, num_layers=3, layer_width=64),
        "local": lambda: LocalLearning(SPEC),
    }[name]()


def test_baselines_are_registered_by_name():
    for name, cls in {"backprop": BackpropChain, "cnn": PlainCNN, "ff": ForwardForward,
                      "local": LocalLearning}.items():
        assert METHODS[name] is cls


#: Epochs on 128 blob images (8 steps each) at lr 1e-2, enough for each baseline to clear the bar
#: below; Forward-Forward's deeper layers, whose goodness makes the prediction, lag behind the first.
EPOCHS = {"backprop": 6, "cnn": 3, "ff": 12, "local": 3}


@pytest.mark.parametrize("name", ["backprop", "cnn", "ff", "local"])
def test_baseline_learns_tiny_data_well_above_chance(name):
    data = make_blobs(n_train=128, n_test=256)  # 4 classes: chance is 0.25
    method = tiny(name)
    config = RunConfig(method=name, dataset="blobs", epochs=EPOCHS[name], batch_size=16, lr=1e-2,
                       progress=False, block_order="interleaved")
    before = evaluate_accuracy(method, data.test_x, data.test_y)
    results = Trainer(method, data, config).fit()
    assert results["test_accuracy"] > 0.6, f"{name}: {before:.2f} -> {results['test_accuracy']:.2f}"


def test_backprop_gradient_reaches_every_block_and_mixing_weight():
    method = tiny("backprop")
    x, y = make_blobs(n_train=16).train_x, make_blobs(n_train=16).train_y
    assert len(method.training_units()) == 1
    method.unit_loss(0, x, y).loss.backward()
    for t, block in enumerate(method.blocks, start=1):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters()), t
    assert method.mix_logits.grad is not None and (method.mix_logits.grad != 0).all()


def test_backprop_has_dt_blocks_plus_one_mixing_weight_per_block():
    from noprop.methods import NoPropDT

    torch.manual_seed(0)
    dt = NoPropDT(SPEC, num_blocks=3)
    bp = BackpropChain(SPEC, num_blocks=3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(bp) == count(dt) + 3


def test_backprop_readout_is_one_prediction_per_block_and_last_is_the_prediction():
    method = tiny("backprop").eval()
    x = make_blobs(n_train=8).train_x
    outs = method.readout_logits(x, deterministic=True)
    assert len(outs) == 2
    torch.testing.assert_close(outs[-1], method.predict_logits(x, deterministic=True))


def test_forward_forward_writes_the_label_into_the_first_pixels():
    x = torch.full((2, 1, 8, 8), 5.0)
    flat = embed_label(x, torch.tensor([1, 3]), 4)
    assert flat[0, :4].tolist() == [0, 1, 0, 0] and flat[1, :4].tolist() == [0, 0, 0, 1]
    assert (flat[:, 4:] == 5.0).all()


def test_forward_forward_layer_loss_gives_no_gradient_to_earlier_layers():
    method = tiny("ff")
    x, y = make_blobs(n_train=16).train_x, make_blobs(n_train=16).train_y
    h = method.activities(x, y)
    goodness(h[2]).sum().backward()
    assert method.layers[0].weight.grad is None and method.layers[1].weight.grad is None
    assert method.layers[2].weight.grad is not None


def test_forward_forward_predicts_label_with_highest_goodness_skipping_first_layer():
    method = tiny("ff").eval()
    x = make_blobs(n_train=4).train_x
    scores = method.predict_logits(x)
    assert scores.shape == (4, SPEC.num_classes)
    for c in range(SPEC.num_classes):
        acts = method.activities(x, torch.full((4,), c))
        torch.testing.assert_close(scores[:, c], goodness(acts[1]) + goodness(acts[2]))


def test_local_units_train_only_their_own_block_and_head():
    method = tiny("local")
    x, y = make_blobs(n_train=16).train_x, make_blobs(n_train=16).train_y
    groups = method.parameter_groups()
    assert [u.groups for u in method.training_units()] == [(f"block{k}",) for k in range(1, 5)]
    method.unit_loss(2, x, y).loss.backward()
    for name, params in groups.items():
        has_grad = any(p.grad is not None for p in params)
        assert has_grad == (name == "block3"), name


def test_local_readout_gives_every_head_and_last_is_the_prediction():
    method = tiny("local").eval()
    x = make_blobs(n_train=8).train_x
    outs = method.readout_logits(x)
    assert len(outs) == 4 and all(o.shape == (8, SPEC.num_classes) for o in outs)
    torch.testing.assert_close(outs[-1], method.predict_logits(x))


def test_plain_cnn_is_one_unit_updating_all_parameters():
    method = tiny("cnn")
    unit = method.training_units()
    assert len(unit) == 1
    assert len(method.unit_parameters(0)) == len(list(method.parameters()))


@pytest.mark.parametrize("num_blocks", [1, 3])
def test_backprop_fits_a_ten_class_problem_at_the_papers_learning_rate(num_blocks, one_thread):
    """Train accuracy far above chance (0.1) after 10 epochs of 8 steps, AdamW lr 1e-3 (paper Table 3).

    Guards the starting values (docs/methods.md, "The backprop baseline"): with PyTorch's default
    classifier init and a_t = 0.5 the chain stayed near chance here (train accuracy 0.20 for T = 1,
    0.29 for T = 3), because logits of a simplex-bound z_T span ~0.6 and AdamW moves each weight
    by ~1e-3 a step.
    """
    data = make_blobs(n_train=256, n_test=64, classes=10)
    torch.manual_seed(0)
    method = BackpropChain(data.spec, num_blocks=num_blocks)
    config = RunConfig(method="backprop", dataset="blobs", epochs=10, batch_size=32, lr=1e-3,
                       progress=False)
    Trainer(method, data, config).fit()
    train_accuracy = evaluate_accuracy(method, data.train_x, data.train_y)
    assert train_accuracy > 0.8, f"T={num_blocks}: train accuracy {train_accuracy:.2f}"


def test_backprop_classifier_starts_as_the_embedding_readout():
    """logit_c(u_y) = s for c = y: W = s * I for one-hot; prototypes are read out once they are set."""
    data = make_blobs(n_train=32, classes=4)
    torch.manual_seed(0)
    onehot = BackpropChain(data.spec, num_blocks=1, classifier_scale=2.0)
    torch.testing.assert_close(onehot.classifier.weight, 2.0 * torch.eye(4))
    assert (onehot.classifier.bias == 0).all()
    assert math.isclose(torch.tanh(onehot.mix_logits).item(), 0.999, rel_tol=1e-6)
    proto = BackpropChain(data.spec, num_blocks=2, embedding="prototype")
    proto.prepare(data.train_x, data.train_y)
    logits = proto.classifier(proto.embedding.weight)
    torch.testing.assert_close(logits.diagonal(), torch.ones(4))
    assert math.isclose(torch.tanh(proto.mix_logits[0]).item(), 1 - 1e-3 ** 0.5, rel_tol=1e-6)


def test_forward_forward_hard_negatives_follow_the_networks_own_probabilities(monkeypatch):
    """``ff_negatives="hard"``: never the true label; wrong labels in proportion to p(positive)."""
    method = ForwardForward(SPEC, num_layers=2, layer_width=16, ff_negatives="hard")
    p = torch.tensor([[0.9, 0.6, 0.3, 0.1]]).repeat(4000, 1)
    monkeypatch.setattr(method, "positive_probability", lambda x: p.clone())
    y = torch.zeros(4000, dtype=torch.long)
    torch.manual_seed(0)
    wrong = method.negative_labels(torch.zeros(4000, 1, 8, 8), y)
    counts = torch.bincount(wrong, minlength=4).float() / 4000
    assert counts[0] == 0
    torch.testing.assert_close(counts[1:], torch.tensor([0.6, 0.3, 0.1]), atol=0.03, rtol=0)


def test_forward_forward_positive_probability_is_the_mean_logistic_over_voting_layers():
    torch.manual_seed(0)
    method = ForwardForward(SPEC, num_layers=3, layer_width=8).eval()
    x = make_blobs(n_train=2).train_x
    p = method.positive_probability(x)
    for c in range(SPEC.num_classes):
        acts = method.activities(x, torch.full((2,), c))
        expected = (torch.sigmoid(goodness(acts[1]) - 8) + torch.sigmoid(goodness(acts[2]) - 8)) / 2
        torch.testing.assert_close(p[:, c], expected)


def test_forward_forward_goodness_is_summed_in_float32_under_bf16_autocast():
    h = torch.full((1, 2000), 1.0 + 2 ** -7, dtype=torch.bfloat16)  # goodness 2031.3, between bf16 steps
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = goodness(h)
    assert g.dtype == torch.float32
    assert g.item() == pytest.approx(2000 * (1 + 2 ** -7) ** 2, rel=1e-6)


def test_forward_forward_with_hard_negatives_learns_tiny_data():
    data = make_blobs(n_train=128, n_test=256)
    torch.manual_seed(0)
    method = ForwardForward(SPEC, num_layers=3, layer_width=64, ff_negatives="hard")
    config = RunConfig(method="ff", dataset="blobs", epochs=EPOCHS["ff"], batch_size=16, lr=1e-2,
                       progress=False, block_order="interleaved", precision="fp32")
    results = Trainer(method, data, config).fit()
    assert results["test_accuracy"] > 0.6, results["test_accuracy"]
