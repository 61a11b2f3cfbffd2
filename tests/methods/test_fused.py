"""The fused NoProp-DT step (methods/dt_fused.py) computes what the one-block-at-a-time step does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from noprop.cli import build_parser
from noprop.commands.args import config_overrides
from noprop.config import RunConfig
from noprop.methods import build_method
from noprop.methods.dt import NoPropDT
from noprop.methods.dt_fused import StackedBlocks, fused_loss
from noprop.spec import DataSpec
from noprop.training.optimizers import make_optimizers
from noprop.training.trainer import Trainer

SPEC = DataSpec.image(channels=1, height=8, width=8, num_classes=4)
T = 3
BATCH = 16


@pytest.fixture(autouse=True, params=[True, False], ids=["vmap", "loop"])
def vectorize(request, monkeypatch) -> bool:
    """Every test runs on both fused paths: the vmap (CUDA's default) and the loop (CPU's)."""
    monkeypatch.setattr(StackedBlocks, "vectorize", request.param)
    return request.param


def make_model(embedding: str = "onehot", *, seed: int = 0, dtype: torch.dtype = torch.float32) -> NoPropDT:
    torch.manual_seed(seed)
    return NoPropDT(SPEC, num_blocks=T, embedding=embedding, embedding_dim=6).to(dtype)


def batch(seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, *SPEC.input_shape, generator=g, dtype=dtype)
    return x, torch.randint(0, 4, (BATCH,), generator=g)


def noise(method: NoPropDT, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dtype = method.classifier.weight.dtype
    return tuple(torch.randn(2, T, BATCH, method.embedding.dim, generator=g, dtype=dtype).unbind(0))


def without_dropout(method: NoPropDT) -> NoPropDT:
    """Train mode (BatchNorm uses batch statistics) with dropout off, so both paths are deterministic."""
    method.train()
    for m in method.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return method


def feed_noise(method: NoPropDT, eps_prev: torch.Tensor, eps_T: torch.Tensor) -> dict[str, int]:
    """Make ``unit_loss`` draw the given noise; set the returned ``["unit"]`` before each call."""
    state = {"unit": 0}

    def noisy_label(u: torch.Tensor, level: int) -> torch.Tensor:
        eps = eps_prev[level] if level < method.num_blocks else eps_T[state["unit"]]
        return method.schedule.sample(u, level, eps).z_t

    method.noisy_label = noisy_label  # type: ignore[method-assign]
    return state


def block_grads(method: NoPropDT, t: int) -> list[torch.Tensor]:
    return [p.grad.clone() for p in method.blocks[t].parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("embedding", ["onehot", "learned"])
def test_fused_loss_gives_each_block_the_gradient_of_its_own_loss_alone(embedding: str, dtype) -> None:
    """Up to rounding: float32 sums in another order, so the tolerance is set by the block's
    largest gradient (biases in front of a BatchNorm have a true gradient of zero, plus noise)."""
    method = without_dropout(make_model(embedding, dtype=dtype))
    x, y = batch(dtype=dtype)
    scale = 1e-5 if dtype == torch.float32 else 1e-12
    eps = noise(method)
    fused = fused_loss(method, x, y, noise=eps)
    fused.loss.backward()
    from_fused = [block_grads(method, t) for t in range(T)]

    state = feed_noise(method, *eps)
    own_total = 0.0
    for t in range(T):
        method.zero_grad(set_to_none=True)
        state["unit"] = t
        own = method.unit_loss(t, x, y)
        own.loss.backward()
        own_total += float(own.loss.detach())
        grads = block_grads(method, t)
        atol = scale * max(float(g.abs().max()) for g in grads)
        for g_fused, g_own in zip(from_fused[t], grads, strict=True):
            torch.testing.assert_close(g_fused, g_own, rtol=scale, atol=atol)
        # no gradient crosses blocks: block t's loss leaves every other block without a gradient
        others = [p.grad for s, b in enumerate(method.blocks) if s != t for p in b.parameters()]
        assert all(g is None for g in others)
    assert float(fused.loss.detach()) == pytest.approx(own_total, rel=1e-5)


@pytest.mark.parametrize("embedding", ["onehot", "learned"])
def test_fused_step_matches_one_block_at_a_time(embedding: str) -> None:
    """Blocks and BatchNorm statistics equal the unfused step's after one step. Shared group:
    the reference sums the T units' shared gradients and steps once (the fused definition).
    In float64: AdamW's first step is ``lr * g / (|g| + eps)``, which turns float32 rounding noise on
    a zero gradient (biases in front of a BatchNorm) into a full ``lr`` step either way."""
    fused = without_dropout(make_model(embedding, dtype=torch.float64))
    single = without_dropout(copy.deepcopy(fused))
    x, y = batch(dtype=torch.float64)
    eps = noise(fused)
    config = RunConfig(method="dt")

    opts = make_optimizers(fused, config)
    fused_loss(fused, x, y, noise=eps).loss.backward()
    for opt in opts.values():
        opt.step()

    opts = make_optimizers(single, config)
    state = feed_noise(single, *eps)
    for t in range(T):
        state["unit"] = t
        single.unit_loss(t, x, y).loss.backward()
        opts[f"block{t + 1}"].step()
    opts["shared"].step()

    before = make_model(embedding, dtype=torch.float64)
    trained = {"embedding.weight"} if embedding == "learned" else set()
    for (name, a), b, b0 in zip(fused.state_dict().items(), single.state_dict().values(),
                                before.state_dict().values(), strict=True):
        # 1e-4 of one AdamW step (lr = 1e-3): Adam's normalisation magnifies rounding where |g| ~ eps
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-7), f"{name}: {(a - b).abs().max()}"
        if name in trained or (name.startswith("blocks") and name.endswith(("weight", "running_mean"))):
            assert not torch.equal(a, b0), f"{name} did not change"


def test_fused_method_presents_one_unit_updating_every_group() -> None:
    config = RunConfig(method="dt", fused=True, num_blocks=T)
    method = build_method("dt", SPEC, config.method_config)
    (unit,) = method.training_units()
    assert set(unit.groups) == set(method.parameter_groups()) == {"block1", "block2", "block3", "shared"}


def test_fused_flag_reaches_the_config_from_the_command_line() -> None:
    args = build_parser().parse_args(["train", "--fused"])
    assert RunConfig.from_dict(config_overrides(args)).method_config.fused is True
    plain = build_parser().parse_args(["train"])
    assert RunConfig.from_dict(config_overrides(plain)).method_config.fused is False


def test_fused_dropout_draws_a_different_mask_for_each_block() -> None:
    method = make_model()
    for block in method.blocks[1:]:
        block.load_state_dict(method.blocks[0].state_dict())
    x, _ = batch()
    z = torch.randn(1, BATCH, method.embedding.dim).expand(T, -1, -1)
    method.train()
    out = method.stacked(x, z, in_dims=(None, 0))
    assert not torch.allclose(out[0], out[1])
    without_dropout(method)
    out = method.stacked(x, z, in_dims=(None, 0))
    torch.testing.assert_close(out[0], out[1])


def test_fused_trained_model_predicts_in_eval_mode_like_the_unfused_sampler(blobs) -> None:
    """The budget of test_dt's learning test. Fused reaches ~0.8 there (unfused ~0.98): its shared
    classifier takes one step per batch instead of T, which shows in so short a run."""
    torch.manual_seed(0)
    config = RunConfig(method="dt", dataset="blobs", num_blocks=3, fused=True, epochs=4, lr=1e-2,
                       batch_size=32, progress=False, device="cpu")
    method = build_method("dt", blobs.spec, config.method_config)
    results = Trainer(method, blobs, config).fit()
    for block in method.blocks:  # BatchNorm statistics were learned and written back to each block
        assert int(block.image.out.num_batches_tracked) == 4 * 8
        assert block.image.out.running_var.sub(1).abs().max() > 0.05
    assert results["test_accuracy"] > 0.7  # 4 classes: chance is 0.25
    assert results["block_order"] is None  # one unit: there is no order between blocks to report
    method.eval()
    with torch.inference_mode():
        chains = []
        for fused in (True, False):
            method.fused = fused
            chains.append(method.sample_chain(blobs.test_x, generator=torch.Generator().manual_seed(3)))
    for a, b in zip(*chains, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
