"""NoProp-FM: the linear path, Euler integration, one block trained without a forward chain."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from noprop.flow import EulerSolver, LinearPath
from noprop.methods import NoPropFM, build_method
from noprop.spec import DataSpec

SPEC = DataSpec.image(channels=1, height=8, width=8, num_classes=3)


def _batch(n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *SPEC.input_shape, generator=g), torch.arange(n) % SPEC.num_classes


# -- the path ------------------------------------------------------------------------------
def test_linear_path_starts_at_noise_ends_at_label_and_has_constant_velocity() -> None:
    torch.manual_seed(0)
    z_0, z_1 = torch.randn(4, 5), torch.randn(4, 5)
    path = LinearPath()
    assert torch.equal(path.sample(z_1, torch.zeros(4), z_0).z_t, z_0)
    assert torch.equal(path.sample(z_1, torch.ones(4), z_0).z_t, z_1)
    t, h = torch.full((4,), 0.3, dtype=torch.float64), 1e-6
    z_0, z_1 = z_0.double(), z_1.double()
    numeric = (path.sample(z_1, t + h, z_0).z_t - path.sample(z_1, t - h, z_0).z_t) / (2 * h)
    torch.testing.assert_close(numeric, z_1 - z_0)
    assert torch.equal(path.sample(z_1, t, z_0).target, z_1 - z_0)


def test_path_draws_z_0_then_the_width_noise_when_not_given() -> None:
    u, t = torch.randn(3, 4), torch.rand(3)
    for sigma in (0.0, 0.2):
        torch.manual_seed(5)
        drawn = LinearPath(sigma).sample(u, t)
        torch.manual_seed(5)
        z_0 = torch.randn_like(u)
        eps = torch.randn_like(u) if sigma > 0 else None
        assert torch.equal(drawn.z_t, LinearPath(sigma).sample(u, t, z_0, eps=eps).z_t)
        assert torch.equal(drawn.target, u - z_0)


def test_path_width_sigma_adds_exactly_sigma_times_the_noise() -> None:
    z_0, z_1, eps = torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), 2.0)
    t = torch.tensor([0.25, 1.0])
    z_t = LinearPath(sigma=0.1).sample(z_1, t, z_0, eps=eps).z_t
    torch.testing.assert_close(z_t, t.unsqueeze(-1) * z_1 + 0.2)


# -- the solver ----------------------------------------------------------------------------
def test_euler_reaches_the_exact_end_of_a_constant_field() -> None:
    z_0, c = torch.randn(3, 4), torch.randn(3, 4)
    for steps in (1, 7, 100):
        torch.testing.assert_close(EulerSolver(steps).integrate(lambda z, t: c, z_0), z_0 + c)


def test_euler_on_linear_fields_gives_the_known_discrete_answer() -> None:
    z_0 = torch.randn(2, 3, dtype=torch.float64)
    n = 50
    # dz/dt = -z: Euler multiplies by (1 - 1/n) each step
    torch.testing.assert_close(EulerSolver(n).integrate(lambda z, t: -z, z_0), (1 - 1 / n) ** n * z_0)
    # dz/dt = t: Euler sums the left Riemann sum, (n - 1) / (2 n)
    out = EulerSolver(n).integrate(lambda z, t: t.expand_as(z), torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(out, torch.full((2, 3), (n - 1) / (2 * n), dtype=torch.float64))
    # and it converges to exp(-1) as the step count grows
    fine = EulerSolver(2000).integrate(lambda z, t: -z, z_0)
    torch.testing.assert_close(fine, torch.exp(torch.tensor(-1.0, dtype=torch.float64)) * z_0,
                               rtol=5e-4, atol=1e-6)


def test_euler_rejects_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        EulerSolver(0)


# -- the method ----------------------------------------------------------------------------
def test_fm_has_one_block_one_training_unit_and_is_found_by_name() -> None:
    method = build_method("fm", SPEC, {"embedding": "onehot"})
    assert isinstance(method, NoPropFM)
    assert [u.name for u in method.training_units()] == ["block"]
    blocks = [m for m in method.modules() if type(m).__name__ == "TimeBlock"]
    assert len(blocks) == 1
    assert method.default_optimizer == "adam"


def test_onehot_fm_trains_only_the_block_with_the_flow_loss() -> None:
    torch.manual_seed(0)
    method = NoPropFM(SPEC, embedding="onehot")
    assert method.classifier is None
    assert method.parameter_groups()["shared"] == []
    x, y = _batch()
    out = method.unit_loss(0, x, y)
    assert set(out.terms) == {"flow"}
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.block.parameters())


def test_learned_fm_adds_an_anchor_that_trains_classifier_and_embedding() -> None:
    torch.manual_seed(0)
    method = NoPropFM(SPEC, embedding="learned", embedding_dim=4)
    x, y = _batch()
    out = method.unit_loss(0, x, y)
    assert set(out.terms) == {"flow", "anchor_ce"}
    out.loss.backward()
    for name, params in method.parameter_groups().items():
        assert params, name
        assert all(p.grad is not None for p in params), f"group {name} got no gradient"
    assert method.classifier is not None
    assert method.classifier.weight.grad.abs().sum() > 0
    assert method.embedding.weight.grad.abs().sum() > 0


def test_flow_loss_is_the_squared_error_summed_over_dimensions() -> None:
    method = NoPropFM(SPEC, embedding="onehot").eval()
    x, y = _batch()
    torch.manual_seed(5)
    out = method.unit_loss(0, x, y)
    torch.manual_seed(5)
    t = torch.rand(len(y))
    z_0 = torch.randn(len(y), SPEC.num_classes)
    u = torch.eye(SPEC.num_classes)[y]
    z_t = t.unsqueeze(-1) * u + (1 - t.unsqueeze(-1)) * z_0
    v = method.block(x, z_t, t)
    expected = (v - (u - z_0)).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.terms["flow"], expected.detach())


def test_sampler_with_the_exact_field_lands_on_the_label_and_predicts_it() -> None:
    """With v = (u_y - z) / (1 - t), the true conditional field, Euler ends exactly at u_y."""
    method = NoPropFM(SPEC, embedding="onehot").eval()
    x, y = _batch(9)
    u = torch.eye(SPEC.num_classes)[y]
    calls = []

    def oracle(features: Tensor, z: Tensor, t: Tensor) -> Tensor:
        calls.append(float(t))
        return (u - z) / (1 - t)  # one-hot: v = logits @ I = logits

    method.block.forward_features = oracle  # type: ignore[method-assign]
    z_1 = method.sample(x, steps=16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z_1, u)
    assert len(calls) == 16 and calls[0] == 0.0 and calls[-1] == pytest.approx(15 / 16)
    assert torch.equal(method.predict_logits(x, steps=4).argmax(-1), y)


def test_prediction_is_the_nearest_class_embedding() -> None:
    method = NoPropFM(SPEC, embedding="learned", embedding_dim=4).eval()
    x, _ = _batch(5)
    z_1 = torch.randn(5, 4)
    method.sample = lambda *a, **k: z_1  # type: ignore[method-assign]
    nearest = torch.cdist(z_1, method.embedding.weight).argmin(-1)
    assert torch.equal(method.predict_logits(x).argmax(-1), nearest)


# -- the command line ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ct", "fm"])
def test_saved_ct_fm_runs_reevaluate_at_several_step_counts_in_one_call(
    method: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from noprop.cli import main
    from noprop.config import RunConfig
    from noprop.data import load_dataset
    from noprop.run import train_run

    digits = load_dataset("digits")
    small = replace(digits, train_x=digits.train_x[:64], train_y=digits.train_y[:64])
    config = RunConfig(method=method, dataset="digits", epochs=1, batch_size=32,
                       eval_inference_steps=2, progress=False)
    _, results = train_run(config, tmp_path / "run", data=small)
    assert results["config"]["inference_steps"] == 1000  # the paper's count is kept for later
    assert main(["evaluate", str(tmp_path / "run"), "--steps", "1", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert [line.split(":")[0] for line in lines] == ["steps=1", "steps=3"]
    assert all(0.0 <= float(line.split()[-1]) <= 1.0 for line in lines)
