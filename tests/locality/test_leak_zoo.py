"""The leak zoo: one test per way of breaking locality, each injected by monkeypatching a built-in
method or the trainer, never by editing library code. The checker must flag every one, naming the
block and the kind of leak; a test that passes with its leak in place is a failing test.

NoProp-DT with T = 3 on tiny 8x8 images; each leak makes block t's training read or reach block
t-1 (here t = 3, so the culprit is block2). Distributed leaks: tests/locality/test_block_data_layout.py;
CUDA-graph leaks: tests/locality/test_graph_wiring.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from helpers import make_blobs
from noprop.locality import LocalityReport, check_locality
from noprop.methods import NoPropDT
from noprop.methods.dt_fused import StackedBlocks
from noprop.spec import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DataSpec.image(1, 8, 8, 4)
T = 3


def check(**settings) -> LocalityReport:
    data = make_blobs(n_train=16, n_test=8)
    torch.manual_seed(0)
    return check_locality(NoPropDT(SPEC, num_blocks=T, **settings), data)


def assert_flagged(report: LocalityReport, check: str, leak: str, blocks: tuple[str, ...]) -> None:
    failed = [c for c in report.failures if c.check == check and c.leak == leak]
    assert failed, f"{check} did not flag the leak ({leak}):\n{report.table()}"
    named = {b for c in failed for b in c.blocks}
    assert set(blocks) <= named, f"{check} named {named}, not {blocks}:\n{report.table()}"
    assert not report.passed


def test_the_unbroken_method_passes() -> None:
    report = check()
    assert report.passed, report.table()


def leak_into_block_input(monkeypatch, leak) -> None:
    """Wrap ``NoPropDT.block_loss`` so that the noisy input at every inner level ``0 < level < T``
    passes through ``leak(method, level, x, z)``: how each leak below reaches block t's input."""
    original = NoPropDT.block_loss

    def block_loss(self: NoPropDT, t: int, x: Tensor, y: Tensor):
        noisy = self.noisy_label

        def leaky(u: Tensor, level: int) -> Tensor:
            z = noisy(u, level)
            return leak(self, level, x, z) if 0 < level < self.num_blocks else z

        self.noisy_label = leaky  # type: ignore[method-assign]
        try:
            return original(self, t, x, y)
        finally:
            del self.noisy_label

    monkeypatch.setattr(NoPropDT, "block_loss", block_loss)


# -- forward leaks: block t's input read from block t-1, without gradient ------------------------
def leak_input(monkeypatch, earlier_output) -> None:
    """Block t's noisy input z_{t-1} gets block t-1's output added, computed by ``earlier_output``
    (method, block index, x, z) under no_grad, in eval mode: no gradient, no module hook needed."""

    def leak(self: NoPropDT, level: int, x: Tensor, z: Tensor) -> Tensor:
        self.blocks.eval()
        with torch.no_grad():
            z = z + 0.1 * F.softmax(earlier_output(self, level - 1, x, z), -1) @ self.embedding.weight
        self.blocks.train()
        return z

    leak_into_block_input(monkeypatch, leak)


def by_forward(m: NoPropDT, k: int, x: Tensor, z: Tensor) -> Tensor:
    return m.blocks[k].forward(x, z)


def by_functional_call(m: NoPropDT, k: int, x: Tensor, z: Tensor) -> Tensor:
    block = m.blocks[k]
    state = {**dict(block.named_parameters()), **dict(block.named_buffers())}
    return functional_call(block, state, (x, z))


def by_vmap(m: NoPropDT, k: int, x: Tensor, z: Tensor) -> Tensor:
    stacked = StackedBlocks(m.blocks)
    stacked.vectorize = True
    out = stacked(x, z.expand(len(m.blocks), *z.shape), in_dims=(None, 0))
    assert stacked.last_pass == "vmap", stacked.vmap_error
    return out[k]


@pytest.mark.parametrize("earlier_output", [by_forward, by_functional_call, by_vmap],
                         ids=["forward-call", "functional-call", "vmap"])
def test_forward_leak_from_an_earlier_block_in_eval_mode(monkeypatch, earlier_output) -> None:
    leak_input(monkeypatch, earlier_output)
    report = check()
    assert_flagged(report, "forward", "activation crosses blocks", ("block3", "block2"))
    assert not report.flagged("gradient"), "no gradient crosses: only the forward check can see it"


# -- gradient leaks -----------------------------------------------------------------------------
def leak_gradient(monkeypatch, straight_through: bool) -> None:
    """Block t's input takes block t-1's output with its graph: either added outright (a chain) or
    as ``z + (f - f.detach())``, which changes no value but sends block t's gradient into block t-1."""

    def leak(self: NoPropDT, level: int, x: Tensor, z: Tensor) -> Tensor:
        f = self.denoise(level, x, z)
        return z + (f - f.detach()) if straight_through else z + 0.1 * f

    leak_into_block_input(monkeypatch, leak)


def test_straight_through_gradient_leak_that_changes_no_value(monkeypatch) -> None:
    leak_gradient(monkeypatch, straight_through=True)
    report = check()
    assert_flagged(report, "gradient", "gradient crosses blocks", ("block3", "block2"))


def test_chained_input_with_gradient(monkeypatch) -> None:
    leak_gradient(monkeypatch, straight_through=False)
    report = check()
    assert_flagged(report, "gradient", "gradient crosses blocks", ("block3", "block2"))
    assert_flagged(report, "forward", "activation crosses blocks", ("block3", "block2"))


def test_fused_step_whose_blocks_read_the_previous_block(monkeypatch) -> None:
    """Fused DT has one unit over all blocks: the leak is inside it, found per block."""
    original = StackedBlocks._loop

    def chained_loop(self, args, in_dims, submodule):
        outs = original(self, args, in_dims, submodule)
        return torch.stack([outs[0], *(o + outs[k].detach() for k, o in enumerate(outs[1:]))])

    monkeypatch.setattr(StackedBlocks, "_loop", chained_loop)
    report = check(fused=True)
    assert_flagged(report, "gradient", "activation crosses blocks", ("block2", "block1"))


def test_fused_step_with_a_gradient_path_between_blocks(monkeypatch) -> None:
    original = StackedBlocks._loop

    def chained_loop(self, args, in_dims, submodule):
        outs = original(self, args, in_dims, submodule)
        return torch.stack([outs[0], *(o + outs[k] for k, o in enumerate(outs[1:]))])

    monkeypatch.setattr(StackedBlocks, "_loop", chained_loop)
    report = check(fused=True)
    assert_flagged(report, "gradient", "gradient crosses blocks", ("block1", "block2"))


def test_trainable_parameter_shared_between_blocks(monkeypatch) -> None:
    """Tied after construction (the encoder factory refuses a shared trainable layer)."""
    torch.manual_seed(0)
    method = NoPropDT(SPEC, num_blocks=T)
    head1 = next(m for m in method.blocks[1].modules() if isinstance(m, nn.Linear))
    head2 = next(m for m in method.blocks[2].modules() if isinstance(m, nn.Linear))
    monkeypatch.setattr(head2, "weight", head1.weight)
    report = check_locality(method, make_blobs(n_train=16, n_test=8))
    assert_flagged(report, "groups", "a trainable parameter shared between blocks", ("block2", "block3"))


# -- optimizer leaks ----------------------------------------------------------------------------
def test_one_global_optimizer(monkeypatch) -> None:
    """The trainer's per-group optimizers replaced by one AdamW over everything, under every name."""
    import noprop.training.trainer as trainer_module

    def global_optimizer(method, config, *, capturable=False):
        opt = torch.optim.AdamW(method.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return {name: opt for name in method.parameter_groups()}

    monkeypatch.setattr(trainer_module, "make_optimizers", global_optimizer)
    report = check()
    assert_flagged(report, "optimizer", "global optimizer", ("block1", "block2", "block3"))


def test_a_step_that_steps_every_groups_optimizer(monkeypatch) -> None:
    """Each group keeps its own optimizer, but the step loop steps all of them and zeroes gradients
    instead of dropping them: momentum and weight decay move the idle blocks."""
    import noprop.training.trainer as trainer_module

    def every_optimizer(self, unit: int) -> None:
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=False)

    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", every_optimizer)
    report = check()
    assert_flagged(report, "optimizer", "optimizer state crosses blocks", ("block1", "block2", "block3"))


# -- what Eq. 8 says about the terms ------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True])
def test_dt_blocks_get_gradient_from_the_denoising_term_only(fused: bool) -> None:
    """Block t's parameters receive gradient only from the L2 (denoising) term of Eq. 8: with the
    term's weights zeroed, every block's gradient is exactly zero, while the classifier (CE term)
    and a learned embedding (CE and KL) still get theirs, unchanged for the classifier."""
    data = make_blobs(n_train=16, n_test=8)
    x, y = data.train_x, data.train_y
    torch.manual_seed(0)
    method = NoPropDT(SPEC, num_blocks=T, embedding="learned", embedding_dim=6, fused=fused)

    def grads() -> dict[str, Tensor | None]:
        method.zero_grad(set_to_none=True)
        for u in range(len(method.training_units())):
            torch.manual_seed(u)
            method.unit_loss(u, x, y).loss.backward()
        return {n: None if p.grad is None else p.grad.clone() for n, p in method.named_parameters()}

    with_term = grads()
    method.weights.zero_()
    without = grads()
    blocks = [n for n in without if n.startswith("blocks.")]
    assert blocks and all(with_term[n] is not None and with_term[n].abs().sum() > 0 for n in blocks)
    assert all(without[n] is None or torch.count_nonzero(without[n]) == 0 for n in blocks), \
        "a block got gradient from the CE or KL term"
    for n in ("classifier.weight", "classifier.bias"):
        assert torch.equal(with_term[n], without[n]), f"{n} got gradient from the denoising term"
    assert without["embedding.weight"].abs().sum() > 0
