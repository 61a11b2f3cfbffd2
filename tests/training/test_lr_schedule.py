"""Learning-rate schedules: the factor's shape, and a scheduled run that resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch

from noprop.config import ConfigError, RunConfig
from noprop.lr_schedule import lr_factor
from noprop.run import build_trainer


def test_cosine_with_warmup_rises_linearly_then_decays_to_zero() -> None:
    assert lr_factor("cosine", 0.5, 10, warmup_epochs=1) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0, 10, warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor("cosine", 5.5, 10, warmup_epochs=1) == pytest.approx(0.5)
    assert lr_factor("cosine", 10.0, 10, warmup_epochs=1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("constant", 7.3, 10) == 1.0
    assert lr_factor("cosine", 2.5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, cosine"):
        RunConfig(lr_schedule="step")


@pytest.mark.usefixtures("one_thread")
def test_in_sequential_order_every_block_gets_the_same_schedule_within_its_pass(blobs) -> None:
    config = RunConfig(num_blocks=3, epochs=2, batch_size=64, lr=1e-2, lr_schedule="cosine",
                       warmup_epochs=0.5, progress=False, log_epochs=False)
    trainer = build_trainer(config, blobs)
    seen: dict[str, list[float]] = {}
    original = trainer.train_step

    def spy(unit: int, x: torch.Tensor, y: torch.Tensor):
        name = trainer.units[unit].name
        seen.setdefault(name, []).append(trainer.optimizers[name].param_groups[0]["lr"])
        return original(unit, x, y)

    trainer.train_step = spy  # type: ignore[method-assign]
    trainer.fit()
    curves = list(seen.values())
    assert len(curves) == 3 and all(c == curves[0] for c in curves)
    assert curves[0][0] == pytest.approx(1e-2 * 0.25 / 0.5)  # 4 batches per pass: first step at 1/4
    assert max(curves[0]) == pytest.approx(1e-2, rel=0.05) and curves[0][-1] == pytest.approx(0.0, abs=1e-9)
