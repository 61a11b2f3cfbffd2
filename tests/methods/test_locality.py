"""Locality is the method: no autograd graph links two NoProp-DT blocks during training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from noprop.config import RunConfig
from noprop.methods import NoPropDT
from noprop.spec import DataSpec
from noprop.training.trainer import Trainer

SPEC = DataSpec.image(1, 8, 8, 4)


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("embedding", ["onehot", "learned", "prototype"])
@pytest.mark.parametrize("t", [1, 2, 4])
def test_backward_of_block_loss_leaves_every_other_block_without_gradient(embedding: str, t: int) -> None:
    model = NoPropDT(SPEC, num_blocks=4, embedding=embedding, embedding_dim=6)
    x, y = _batch()
    model.unit_loss(t - 1, x, y).loss.backward()
    for s, block in enumerate(model.blocks, start=1):
        grads = [p.grad for p in block.parameters()]
        if s == t:
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads), f"block {s} got a gradient from block {t}'s loss"


@pytest.mark.parametrize("embedding", ["onehot", "learned"])
def test_training_step_of_block_leaves_other_blocks_bit_identical(embedding: str, blobs) -> None:
    config = RunConfig(num_blocks=4, embedding=embedding, embedding_dim=6, epochs=1, batch_size=16,
                       progress=False)
    model = NoPropDT(blobs.spec, num_blocks=4, embedding=embedding, embedding_dim=6)
    trainer = Trainer(model, blobs, config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = blobs.train_x[:16], blobs.train_y[:16]
    trainer.train_step(2, x, y)  # block 3
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("blocks.2.") for k in changed), "block 3 should have been updated"
    for k in changed:
        assert k.startswith(("blocks.2.", "classifier.", "embedding.")), f"{k} moved during block 3's step"
    # the optimizers of idle blocks hold no state at all: no momentum can move them later
    for name, opt in trainer.optimizers.items():
        if name.startswith("block") and name != "block3":
            assert not opt.state, f"{name}'s optimizer has state after block 3's step"


def _saved_activation_bytes(loss_fn) -> int:
    """Bytes of tensors autograd keeps for backward while building ``loss_fn()``'s graph."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not isinstance(t, nn.Parameter):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    return total


def _backprop_chain_loss(model: NoPropDT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What end-to-end backprop through the inference chain would hold in memory."""
    z = torch.randn(x.shape[0], model.embedding.dim)
    for t in range(1, model.num_blocks + 1):
        coef = model.schedule.step_into(t)
        z = coef.a * model.denoise(t, x, z) + coef.b * z
    return nn.functional.cross_entropy(model.classifier(z), y)


def test_training_memory_does_not_grow_with_T_like_a_backprop_chain() -> None:
    x, y = _batch(32)
    noprop, chain = {}, {}
    for T in (2, 8):
        torch.manual_seed(0)
        model = NoPropDT(SPEC, num_blocks=T)
        noprop[T] = max(_saved_activation_bytes(lambda m=model, t=t: m.unit_loss(t, x, y)) for t in range(T))
        chain[T] = _saved_activation_bytes(lambda m=model: _backprop_chain_loss(m, x, y))
    assert noprop[8] == noprop[2], f"one NoProp step's saved activations grew with T: {noprop}"
    assert chain[8] > 3.5 * chain[2], f"the backprop chain should hold ~T blocks of activations: {chain}"
    assert chain[8] > 6 * noprop[8]
