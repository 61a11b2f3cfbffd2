"""NoProp-DT's locality in the forward pass: block t's loss runs block t and no other block, on
``z_{t-1} ~ q(z_{t-1} | y)`` (Eq. 8), with the classifier on ``z_T``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from noprop.methods import NoPropDT
from noprop.spec import DataSpec

SPEC = DataSpec.image(1, 8, 8, 4)
T = 4


def _batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)


def blocks_run_by(model: NoPropDT, unit: int) -> list[int]:
    """The blocks (1-based) whose forward ran while computing ``unit``'s loss."""
    ran: list[int] = []
    hooks = [b.register_forward_hook(lambda *_, t=t: ran.append(t))
             for t, b in enumerate(model.blocks, start=1)]
    try:
        x, y = _batch()
        model.unit_loss(unit, x, y)
    finally:
        for h in hooks:
            h.remove()
    return ran


class ChainedInputDT(NoPropDT):
    """Broken on purpose: builds block t's input by running blocks 1..t-1 under ``no_grad``
    (no gradient crosses, but the blocks are no longer trained independently)."""

    def noisy_label(self, u: Tensor, level: int) -> Tensor:
        z = torch.randn_like(u)
        if level < self.num_blocks:
            with torch.no_grad():
                for s in range(1, level + 1):
                    z = self.denoise(s, self._x, z)
        return z

    def unit_loss(self, unit, x, y):
        self._x = x
        return super().unit_loss(unit, x, y)


@pytest.mark.parametrize("encoder", ["paper", "mlp", "user_encoders:TinyConv"])
@pytest.mark.parametrize("t", range(1, T + 1))
def test_block_t_loss_runs_block_t_forward_only(t: int, encoder: str) -> None:
    assert blocks_run_by(NoPropDT(SPEC, num_blocks=T, encoder=encoder), t - 1) == [t]


def test_the_forward_check_fails_a_variant_that_chains_earlier_blocks_without_grad() -> None:
    assert blocks_run_by(ChainedInputDT(SPEC, num_blocks=T), T - 1) == [*range(1, T), T]


@pytest.mark.parametrize("t", range(1, T + 1))
def test_block_t_is_trained_on_noise_level_t_minus_1_and_the_classifier_on_level_T(t: int,
                                                                                 monkeypatch) -> None:
    model = NoPropDT(SPEC, num_blocks=T)
    levels: list[int] = []
    original = NoPropDT.noisy_label

    def record(self, u, level):
        levels.append(level)
        return original(self, u, level)

    monkeypatch.setattr(NoPropDT, "noisy_label", record)
    x, y = _batch()
    model.unit_loss(t - 1, x, y)
    assert levels == [t - 1, T]
