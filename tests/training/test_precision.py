"""``--precision``: bf16 autocast changes the arithmetic, not the method; auto follows the CPU."""

from __future__ import annotations

import pytest
import torch

from noprop import device as device_module
from noprop.config import ConfigError, RunConfig
from noprop.device import autocast_for, resolve_precision
from noprop.run import build_for, build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        RunConfig(precision="fp16")


@pytest.mark.parametrize("method", ["dt", "ct", "fm", "backprop"])
def test_a_bf16_loss_and_gradient_match_fp32_within_bf16_rounding(blobs, method) -> None:
    """Same seed, same batch: every loss term within 1 % (bf16 keeps ~3 significant digits) and
    the gradient's direction the same: cosine similarity above 0.99 for a local (one-block)
    gradient, above 0.9 for backprop, whose rounding compounds through the chain (measured 0.95
    at T = 2 on the 2026-12-01 CPU)."""
    terms, grads = {}, {}
    for precision in ("fp32", "bf16"):
        blocks = {"num_blocks": 2} if method in ("dt", "backprop") else {}
        config = RunConfig(method=method, epochs=1, batch_size=32, precision=precision, progress=False,
                           log_epochs=False, **blocks)
        model = build_for(config, blobs)
        torch.manual_seed(1)
        with autocast_for(precision, CPU):
            out = model.unit_loss(0, blobs.train_x[:32], blobs.train_y[:32])
        out.loss.float().backward()
        terms[precision] = {"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.terms.items()}}
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for name, value in terms["fp32"].items():
        assert terms["bf16"][name] == pytest.approx(value, rel=0.01, abs=1e-6), name
    floor = 0.9 if method == "backprop" else 0.99
    assert torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > floor


def test_the_trainer_steps_in_the_precision_it_resolved(blobs) -> None:
    seen = []
    config = RunConfig(num_blocks=2, epochs=1, batch_size=32, precision="bf16", progress=False,
                       log_epochs=False)
    trainer = build_trainer(config, blobs)
    original = trainer.method.unit_loss

    def spy(unit, x, y):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(unit, x, y)

    trainer.method.unit_loss = spy  # type: ignore[method-assign]
    trainer.train_step(0, blobs.train_x[:32], blobs.train_y[:32])
    assert seen == [torch.bfloat16]


def test_results_record_the_precision_that_ran(blobs) -> None:
    config = RunConfig(num_blocks=2, epochs=1, batch_size=64, precision="bf16", progress=False,
                       log_epochs=False)
    results = build_trainer(config, blobs).fit()
    assert results["precision"] == "bf16" and isinstance(results["cpu_native_bf16"], bool)
