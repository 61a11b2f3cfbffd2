"""NoProp-CT: one block, Eq. 9's loss, jointly trained schedule, the posterior sampler."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from noprop.methods import NoPropCT, NoPropFM, build_method
from noprop.spec import DataSpec

SPEC = DataSpec.image(channels=1, height=8, width=8, num_classes=3)


def _batch(n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *SPEC.input_shape, generator=g), torch.arange(n) % SPEC.num_classes


def test_ct_has_one_block_one_training_unit_and_the_paper_defaults() -> None:
    method = build_method("ct", SPEC, {})
    assert isinstance(method, NoPropCT)
    assert [u.name for u in method.training_units()] == ["block"]
    assert len([m for m in method.modules() if type(m).__name__ == "TimeBlock"]) == 1
    assert method.eta == 1.0 and method.inference_steps == 1000
    assert method.default_optimizer == "adam"


@pytest.mark.parametrize("gamma", [3.0, 7.0])
def test_schedule_gamma_sets_the_learned_schedules_starting_end_points(gamma: float) -> None:
    schedule = NoPropCT(SPEC, schedule_gamma=gamma).schedule
    with torch.no_grad():
        ab = schedule.alpha_bar(torch.tensor([0.0, 1.0]))
    expected = torch.sigmoid(torch.tensor([-gamma, gamma]))
    torch.testing.assert_close(ab, expected)


def test_parameter_groups_cover_every_parameter_exactly_once() -> None:
    method = NoPropCT(SPEC, embedding="learned", embedding_dim=4)
    grouped = [id(p) for params in method.parameter_groups().values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in method.parameters())
    schedule = {id(p) for p in method.schedule.parameters()}
    assert schedule <= {id(p) for p in method.parameter_groups()["shared"]}


@pytest.mark.parametrize("cls", [NoPropCT, NoPropFM])
def test_training_never_feeds_the_block_its_own_output(cls: type) -> None:
    """CT and FM alike: one block evaluation per step, on an input that does not depend on it."""
    torch.manual_seed(0)
    method = cls(SPEC, embedding="learned", embedding_dim=4)
    calls: list[Tensor] = []
    method.block.label.register_forward_hook(lambda mod, inp, out: calls.append(inp[0]))
    x, y = _batch()
    method.unit_loss(0, x, y)
    assert len(calls) == 1, "one block evaluation per training step: no chain through time"
    grads = torch.autograd.grad(calls[0].sum(), list(method.block.parameters()), allow_unused=True)
    assert all(g is None for g in grads), "the block's input must not depend on the block"


@pytest.mark.parametrize("embedding", ["onehot", "learned", "prototype"])
def test_gradients_reach_block_classifier_schedule_and_learned_embedding(embedding: str) -> None:
    torch.manual_seed(0)
    method = NoPropCT(SPEC, embedding=embedding, embedding_dim=4)
    x, y = _batch()
    method.prepare(x, y)
    method.unit_loss(0, x, y).loss.backward()
    trained = [method.block, method.classifier, method.schedule]
    if embedding != "onehot":
        trained.append(method.embedding)
    for module in trained:
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert list(method.embedding.parameters()) == ([] if embedding == "onehot" else [method.embedding.weight])


def test_the_block_learns_only_from_the_denoising_term() -> None:
    """Eq. 9: CE trains the classifier (and W_embed, schedule), never the block."""
    torch.manual_seed(0)
    method = NoPropCT(SPEC, embedding="learned", embedding_dim=4)
    x, y = _batch()
    terms = method.loss_terms(x, y)
    block = list(method.block.parameters())
    for name in ("ce", "kl"):
        grads = torch.autograd.grad(terms[name], block, retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads), f"{name} must not reach the block"
    grads = torch.autograd.grad(terms["denoise"], block, allow_unused=True)
    assert all(g is not None for g in grads)


def test_denoising_term_is_eta_half_snr_prime_times_summed_squared_error() -> None:
    method = NoPropCT(SPEC, eta=0.5).eval()
    x, y = _batch()
    torch.manual_seed(3)
    out = method.unit_loss(0, x, y)
    torch.manual_seed(3)
    t = torch.rand(len(y))
    u = torch.eye(SPEC.num_classes)[y]
    z_t = method.noisy_label(u, t)
    u_hat = method.denoise(x, z_t, t)
    expected = (0.25 * method.schedule.snr_derivative(t) * (u_hat - u).pow(2).sum(-1)).mean()
    torch.testing.assert_close(out.terms["denoise"], expected.detach())


def test_posterior_sampler_with_a_perfect_denoiser_reproduces_q_z1() -> None:
    """If u_hat = u_y at every step, Eq. 3 must carry N(0, I) to q(z_1 | y) for any step count."""
    torch.manual_seed(0)
    method = NoPropCT(SPEC).eval()
    n = 4000
    y = torch.arange(n) % SPEC.num_classes
    x = torch.zeros(n, *SPEC.input_shape)
    u = torch.eye(SPEC.num_classes)[y]
    method.block.forward_features = lambda f, z, t: 50.0 * u[: len(f)]  # type: ignore[method-assign]
    with torch.no_grad():
        ab1 = method.schedule.alpha_bar(torch.tensor(1.0))
    for steps in (5, 200):
        z_1 = method.sample(x, steps=steps, generator=torch.Generator().manual_seed(steps))
        residual = z_1 - ab1.sqrt() * u
        assert residual.mean().abs() < 0.01
        assert residual.var().item() == pytest.approx(float(1 - ab1), rel=0.1)
    assert method.predict_logits(x[:30], steps=5).shape == (30, SPEC.num_classes)


def test_sampler_runs_the_block_once_per_step_and_is_reproducible() -> None:
    method = NoPropCT(SPEC).eval()
    x, _ = _batch(4)
    calls = []
    original = method.block.forward_features

    def counting(*args: Tensor) -> Tensor:
        calls.append(1)
        return original(*args)

    method.block.forward_features = counting  # type: ignore[method-assign]
    a = method.predict_logits(x, steps=7, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 7
    b = method.predict_logits(x, steps=7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
