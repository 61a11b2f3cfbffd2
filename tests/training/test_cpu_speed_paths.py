"""The CPU step's speed paths (docs/benchmarks.md, "Where a CPU step's time goes") keep the method:
the faster dropout draws PyTorch's masks bit for bit, and channels-last bf16 steps stay within
bf16's rounding of float32, with the same dropout masks."""

from __future__ import annotations

import resource
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers import make_blobs
from noprop import device as devices
from noprop.config import RunConfig
from noprop.dropout import Dropout, rand_draws_bernoulli
from noprop.run import build_for, build_trainer
from noprop.settings import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dropout_is_torchs_dropout_bit_for_bit(dtype, channels_last) -> None:
    x = torch.rand(8, 16, 7, 5, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layer = Dropout(0.2).train()
    torch.manual_seed(3)
    ours, after_ours = layer(x), torch.randn(4)
    torch.manual_seed(3)
    theirs, after_theirs = F.dropout(x.contiguous(), 0.2, training=True), torch.randn(4)
    assert torch.equal(ours, theirs)  # same mask at every logical position, whatever the layout
    assert torch.equal(after_ours, after_theirs)  # and the generator where F.dropout leaves it
    assert ours.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    g_ours, g_theirs = torch.ones_like(x), torch.ones_like(x)
    xa, xb = x.clone().requires_grad_(), x.contiguous().requires_grad_()
    torch.manual_seed(4)
    (layer(xa) * g_ours).sum().backward()
    torch.manual_seed(4)
    (F.dropout(xb, 0.2, training=True) * g_theirs).sum().backward()
    assert torch.equal(xa.grad, xb.grad)


def test_dropout_outside_training_is_the_identity_and_the_fast_draw_applies_here() -> None:
    x = torch.rand(4, 3, 5, 5)
    assert torch.equal(Dropout(0.2).eval()(x), x)
    assert isinstance(Dropout(0.2), nn.Dropout)
    # the portable bernoulli kernel (every non-Intel CPU, and Intel without MKL) is rand < p;
    # where it is not, Dropout is F.dropout and the test above still holds
    assert isinstance(rand_draws_bernoulli(), bool)


def _layouts_seen(monkeypatch, data, **settings) -> dict[str, bool]:
    """Whether the trainer's step handed the model channels-last images, per precision."""
    seen = {}
    for precision in ("fp32", "bf16"):
        config = RunConfig(num_blocks=2, epochs=1, batch_size=32, precision=precision, progress=False,
                           log_epochs=False, **settings)
        trainer = build_trainer(config, data)
        original = trainer.method.unit_loss

        def spy(unit, x, y, precision=precision, original=original):
            seen[precision] = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            return original(unit, x, y)

        monkeypatch.setattr(trainer.method, "unit_loss", spy)
        trainer.train_step(0, data.train_x[:32], data.train_y[:32])
    return seen


def test_channels_last_is_a_run_setting_auto_for_bf16_only(monkeypatch) -> None:
    data = make_blobs(shape=(3, 16, 16))
    assert _layouts_seen(monkeypatch, data) == {"fp32": False, "bf16": True}
    assert _layouts_seen(monkeypatch, data, channels_last="on") == {"fp32": True, "bf16": True}
    assert _layouts_seen(monkeypatch, data, channels_last="off") == {"fp32": False, "bf16": False}
    assert not hasattr(devices, "CHANNELS_LAST")  # a setting of the run, not of the process


def test_channels_last_round_trips_and_old_configs_load_as_auto(tmp_path) -> None:
    import yaml

    config = RunConfig(num_blocks=2, channels_last="on")
    assert RunConfig.from_dict(config.to_dict()).channels_last == "on"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(RunConfig(channels_last="off").to_dict()))
    assert RunConfig.from_dict(yaml.safe_load(path.read_text())).channels_last == "off"
    # a hand-written YAML "channels_last: off" reads as a boolean: taken as the word
    assert RunConfig.from_dict(yaml.safe_load("channels_last: off\nnum_blocks: 2")).channels_last == "off"
    old = {k: v for k, v in config.to_dict().items() if k != "channels_last"}
    assert RunConfig.from_dict(old).channels_last == "auto"


def test_an_unknown_channels_last_value_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^channels_last must be one of auto, on, off; got 'nhwc'$"):
        RunConfig(channels_last="nhwc")
    with pytest.raises(ConfigError, match="channels_last must be one of auto, on, off"):
        devices.channels_last_for("yes", "bf16", CPU)


def test_channels_last_off_is_the_old_default_bit_for_bit_in_fp32() -> None:
    """``off`` (and ``auto`` in float32) is the step as it ran before the setting existed:
    channels-first images, every loss and parameter bit for bit after a few steps."""
    data = make_blobs(shape=(3, 16, 16))
    params = {}
    for setting in ("auto", "off", "on"):
        config = RunConfig(num_blocks=2, epochs=1, batch_size=32, precision="fp32", progress=False,
                           log_epochs=False, channels_last=setting)
        torch.manual_seed(0)
        trainer = build_trainer(config, data)
        torch.manual_seed(5)
        for step in range(4):
            trainer.train_step(step % 2, data.train_x[32 * step:32 * step + 32],
                               data.train_y[32 * step:32 * step + 32])
        params[setting] = torch.cat([p.detach().flatten() for p in trainer.method.parameters()])
    assert torch.equal(params["auto"], params["off"])
    assert not torch.equal(params["on"], params["off"])  # the test can tell the layouts apart
    # Adam turns a ~1e-9 gradient difference into up to one lr (1e-3) per step where gradients are ~0
    assert (params["on"] - params["off"]).abs().max() < 4 * 1e-3


@pytest.mark.parametrize("method", ["dt", "backprop"])
def test_a_channels_last_bf16_step_matches_fp32_within_bf16_rounding(method) -> None:
    """3-channel images, dropout on: the channels-last bf16 step draws the fp32 step's masks, so
    the loss terms agree within 1 % and the gradients point the same way (test_precision.py's
    tolerances), and channels-last float32 is float32 up to rounding."""
    data = make_blobs(shape=(3, 16, 16))
    x, y = data.train_x[:32], data.train_y[:32]
    terms, grads = {}, {}
    for precision, layout in (("fp32", False), ("bf16", True), ("fp32-cl", True)):
        config = RunConfig(method=method, num_blocks=2, epochs=1, batch_size=32, progress=False,
                           log_epochs=False, precision=precision.removesuffix("-cl"))
        model = build_for(config, data).train()
        torch.manual_seed(1)
        with devices.autocast_for(precision.removesuffix("-cl"), CPU):
            out = model.unit_loss(0, devices.step_layout(x, layout), y)
        out.loss.float().backward()
        terms[precision] = {"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.terms.items()}}
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for name, value in terms["fp32"].items():
        assert terms["bf16"][name] == pytest.approx(value, rel=0.01, abs=1e-6), name
        assert terms["fp32-cl"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    floor = 0.9 if method == "backprop" else 0.99
    assert F.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > floor
    assert torch.allclose(grads["fp32-cl"], grads["fp32"], rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_cpu_trainer_reuses_freed_memory_instead_of_page_faulting_every_step() -> None:
    """Without ``retain_freed_memory`` these steps (two blocks taking turns, float32, batch 128 of
    CIFAR-sized images) page-faulted ~10,000 pages each in afresh (docs/benchmarks.md, "Where a
    CPU step's time goes")."""
    data = make_blobs(128, 8, classes=10, shape=(3, 32, 32))
    trainer = build_trainer(RunConfig(num_blocks=2, epochs=1, batch_size=128, progress=False,
                                      log_epochs=False, precision="fp32"), data)
    assert devices.retain_freed_memory() and devices._allocator_tuned
    x, y = data.train_x, data.train_y
    for unit in (0, 1):  # warm: optimizer state, the allocator's pool
        trainer.train_step(unit, x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for unit in (0, 1, 0, 1):
        trainer.train_step(unit, x, y)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4 < 1000
