"""The ``fast`` dropout mask (noprop.dropout): keep probability ``k / 2^16`` with ``k`` the nearest
to ``(1 - p) 2^16``, exact inverted scaling, independent draws, from the seeded global generator."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import make_blobs
from noprop.config import RunConfig
from noprop.dropout import Dropout, dropout_rng_for, fast_keep_mask, fast_keep_threshold, use_dropout_rng
from noprop.random_state import capture_rng_state, restore_rng_state
from noprop.run import build_trainer
from noprop.settings import ConfigError

N = 1 << 22  # 4 M draws: one standard error of a keep rate near 0.8 is 2e-4


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9, 0.01])
def test_the_keep_rate_is_k_over_65536_within_a_few_standard_errors(p) -> None:
    torch.manual_seed(0)
    mask, kept = fast_keep_mask((N,), 1 - p)
    assert kept == fast_keep_threshold(1 - p) / 65536
    assert abs(kept - (1 - p)) <= 2**-17  # p rounded to the nearest 1/65536
    se = math.sqrt(kept * (1 - kept) / N)
    assert abs(mask.float().mean().item() - kept) < 4 * se


def test_outputs_are_x_in_expectation_and_kept_elements_scaled_by_the_exact_inverse() -> None:
    torch.manual_seed(1)
    x = torch.ones(64, 16, 64, 64)  # 4 M
    out = Dropout(0.2, rng="fast").train()(x)
    kept = fast_keep_threshold(0.8) / 65536
    assert set(out.unique().tolist()) == {0.0, torch.tensor(1 / kept).item()}
    se = math.sqrt((1 - kept) / kept / out.numel())  # sd of one output is sqrt(p / (1 - p))
    assert abs(out.mean().item() - 1) < 4 * se
    x = torch.rand(8, 4, 5, 5, requires_grad=True)
    torch.manual_seed(2)
    out = Dropout(0.2, rng="fast").train()(x)
    out.sum().backward()
    # the gradient is the same mask, scaled the same way
    assert torch.equal(x.grad, (out.detach() != 0) * torch.tensor(1 / kept))


def test_masks_are_independent_across_calls_and_within_one_word() -> None:
    """Consecutive masks agree as often as independent ones would (q^2 + (1-q)^2), and neighbours,
    which share a 64-bit draw, are uncorrelated."""
    torch.manual_seed(3)
    a, kept = fast_keep_mask((N,), 0.8)
    b, _ = fast_keep_mask((N,), 0.8)
    agree = (a == b).float().mean().item()
    expected = kept**2 + (1 - kept) ** 2
    assert abs(agree - expected) < 4 * math.sqrt(expected * (1 - expected) / N)
    for lag in (1, 2, 3, 4):  # within a word (1-3) and across words (4)
        u, v = a[:-lag].float(), a[lag:].float()
        corr = ((u - u.mean()) * (v - v.mean())).mean() / (u.std() * v.std())
        assert abs(corr.item()) < 4 / math.sqrt(N)


def test_seeded_masks_repeat_and_follow_the_checkpointed_generator() -> None:
    layer = Dropout(0.2, rng="fast").train()
    x = torch.rand(16, 8, 6, 6)
    torch.manual_seed(4)
    first = layer(x)
    state = capture_rng_state()
    second = layer(x)
    restore_rng_state(state)
    assert torch.equal(layer(x), second)  # a resumed run draws what the uninterrupted one drew
    torch.manual_seed(4)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)
    # a quarter of the generator's 64-bit draws: it ends where 16*8*6*6/4 of them leave it
    torch.manual_seed(4)
    layer(x)
    after = torch.get_rng_state()
    torch.manual_seed(4)
    torch.empty(16 * 8 * 6 * 6 // 4, dtype=torch.int64).random_(-(2**63), None)
    assert torch.equal(after, torch.get_rng_state())


def test_fast_masks_do_not_depend_on_the_memory_layout() -> None:
    x = torch.rand(8, 16, 7, 5)
    layer = Dropout(0.2, rng="fast").train()
    torch.manual_seed(5)
    plain = layer(x)
    torch.manual_seed(5)
    last = layer(x.contiguous(memory_format=torch.channels_last))
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last)


@pytest.mark.parametrize("rng", ["exact", "fast"])
def test_the_gradient_keeps_the_activations_layout_whatever_layout_it_arrives_in(rng) -> None:
    """Behind a flatten the gradient arrives channels-first; handing it on channels-last spares the
    channels-last max pooling before the dropout two copies of its input gradient. Same values as
    autograd's own product, which hands it on channels-first."""
    weights = torch.rand(16 * 5 * 5, 3)
    grads, channels_last = {}, {}
    for product in ("ours", "autograd"):
        x = torch.rand(8, 16, 5, 5, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        layer = Dropout(0.2, rng=rng).train()
        if product == "autograd":
            layer.product = torch.mul
        # as it arrives: a leaf's .grad is then laid out as the leaf is
        x.register_hook(lambda g, p=product: channels_last.__setitem__(
            p, g.is_contiguous(memory_format=torch.channels_last)))
        torch.manual_seed(7)
        (layer(x).flatten(1) @ weights).sum().backward()
        grads[product] = x.grad
    assert channels_last == {"ours": True, "autograd": False}
    assert torch.equal(grads["ours"], grads["autograd"])


def test_fast_differs_from_exact_and_eval_is_the_identity() -> None:
    x = torch.rand(8, 16, 7, 5)
    torch.manual_seed(6)
    fast = Dropout(0.2, rng="fast").train()(x)
    torch.manual_seed(6)
    exact = Dropout(0.2).train()(x)
    assert not torch.equal(fast, exact)
    assert torch.equal(Dropout(0.2, rng="fast").eval()(x), x)


def test_dropout_rng_is_a_run_setting_the_trainer_applies() -> None:
    data = make_blobs(64, 8, shape=(3, 16, 16))
    for rng in ("exact", "fast"):
        trainer = build_trainer(RunConfig(num_blocks=2, epochs=1, progress=False, log_epochs=False,
                                          dropout_rng=rng), data)
        rngs = {m.rng for m in trainer.method.modules() if isinstance(m, Dropout)}
        assert rngs == {rng}
    config = RunConfig(num_blocks=2, dropout_rng="fast")
    assert RunConfig.from_dict(config.to_dict()).dropout_rng == "fast"
    old = {k: v for k, v in config.to_dict().items() if k != "dropout_rng"}
    assert RunConfig.from_dict(old).dropout_rng == "auto"  # runs saved before the setting


def test_an_unknown_dropout_rng_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^dropout_rng must be one of auto, exact, fast; got 'philox'$"):
        RunConfig(dropout_rng="philox")
    with pytest.raises(ConfigError, match="dropout_rng must be one of exact, fast"):
        use_dropout_rng(torch.nn.Sequential(Dropout(0.2)), "quick")
    with pytest.raises(ConfigError, match="dropout_rng must be one of exact, fast"):
        Dropout(0.2, rng="auto")  # a layer draws one way; auto is the run's choice of way


def test_auto_draws_fast_masks_for_bf16_on_a_cpu_and_pytorchs_elsewhere() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dropout_rng_for("auto", "bf16", cpu) == "fast"
    assert dropout_rng_for("auto", "fp32", cpu) == "exact"
    assert dropout_rng_for("auto", "bf16", cuda) == "exact"
    assert dropout_rng_for("exact", "bf16", cpu) == "exact"
    assert dropout_rng_for("fast", "fp32", cpu) == "fast"
    data = make_blobs(64, 8, shape=(3, 16, 16))
    for precision, rng in (("fp32", "exact"), ("bf16", "fast")):
        trainer = build_trainer(RunConfig(num_blocks=2, epochs=1, progress=False, log_epochs=False,
                                          precision=precision), data)
        assert trainer.dropout_rng == rng
        assert {m.rng for m in trainer.method.modules() if isinstance(m, Dropout)} == {rng}
