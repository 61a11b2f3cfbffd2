"""NoProp-DT's model: the paper's block sizes, its inference rule, and that it learns."""

from __future__ import annotations

import pytest
import torch

from noprop.blocks import DTBlock, TimeBlock
from noprop.config import RunConfig
from noprop.encoders import EncoderFactory
from noprop.inference import accuracy as evaluate_accuracy
from noprop.methods import NoPropDT
from noprop.spec import DataSpec
from noprop.training.trainer import Trainer

MNIST, CIFAR10 = DataSpec.image(1, 28, 28, 10), DataSpec.image(3, 32, 32, 10)
CIFAR100 = DataSpec.image(3, 32, 32, 100)


def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


@pytest.mark.parametrize(
    ("spec", "dim", "paper_millions"),
    [(MNIST, 10, 0.92), (MNIST, 20, 0.92), (MNIST, 784, 1.40), (CIFAR10, 10, 1.22),
     (CIFAR10, 3072, 1.99), (CIFAR100, 100, 1.25), (CIFAR100, 20, 1.23)],
)
def test_dt_block_matches_paper_parameter_count(spec: DataSpec, dim: int, paper_millions: float) -> None:
    """v2 Table 5 counts one block; only valid (unpadded) convolutions reproduce it."""
    block = DTBlock(EncoderFactory("paper", spec, batch_norm=True, conv_padding="valid"), dim)
    assert round(_params(block), 2) == paper_millions


@pytest.mark.parametrize(("spec", "dim", "paper_millions"), [(MNIST, 10, 0.87), (CIFAR10, 3072, 2.07)])
def test_time_block_matches_paper_parameter_count(spec: DataSpec, dim: int, paper_millions: float) -> None:
    block = TimeBlock(EncoderFactory("paper", spec, batch_norm=False, conv_padding="valid"), dim)
    assert round(_params(block), 2) == paper_millions


def test_small_images_fall_back_to_padded_convolutions() -> None:
    model = NoPropDT(DataSpec.image(1, 8, 8, 10), num_blocks=2)
    out = model.predict_logits(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)


def test_sampler_is_reproducible_with_a_generator_and_deterministic_mode_ignores_noise() -> None:
    model = NoPropDT(DataSpec.image(1, 8, 8, 4), num_blocks=3).eval()
    x = torch.randn(5, 1, 8, 8)

    def run(seed: int, deterministic: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.predict_logits(x, deterministic=deterministic, generator=generator)

    assert torch.equal(run(0, False), run(0, False))
    assert not torch.equal(run(0, False), run(1, False))
    # deterministic: only z_0 is random, so the same z_0 gives the same answer
    assert torch.equal(run(3, True), run(3, True))


def test_sampler_uses_posterior_coefficients_of_each_step() -> None:
    """With blocks that predict the true label exactly, the chain's mean follows the q-marginals."""
    model = NoPropDT(DataSpec.image(1, 8, 8, 4), num_blocks=5).eval()
    u = model.embedding.weight[1]
    model.denoise = lambda t, x, z: u.expand_as(z)  # a perfect denoiser
    torch.manual_seed(0)
    chain = model.sample_chain(torch.zeros(20_000, 1, 8, 8))
    for t, z in enumerate(chain):
        ab = model.schedule.alpha_bar(t)
        assert torch.allclose(z.mean(0), ab.sqrt() * u, atol=0.03), f"mean of z_{t}"
        if t > 0:
            assert torch.allclose(z.var(0), (1 - ab).expand(4), atol=0.03), f"variance of z_{t}"


def test_with_bayes_optimal_blocks_one_pass_draws_the_class_from_p_y_given_x() -> None:
    """Why a stochastic pass scores the mean probability of the true class, not the argmax accuracy.

    For an input whose p(y | x) is ``pi``, the Bayes-optimal block t returns E[u_y | x, z_{t-1}]
    (a softmax of pi times the Gaussian likelihood of z under q(z_{t-1} | y)). The stochastic chain
    must then end at each class with frequency close to pi; the noise-free chain at the mode.
    """
    pi = torch.tensor([0.6, 0.3, 0.1])
    model = NoPropDT(DataSpec(input_shape=(2,), num_classes=3), num_blocks=10, encoder="mlp").eval()
    u = model.embedding.weight                                 # one-hot rows

    def bayes_optimal(t: int, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ab = model.schedule.alpha_bar(t - 1)                   # block t reads z_{t-1}
        log_lik = -(z[:, None, :] - ab.sqrt() * u).pow(2).sum(-1) / (2 * (1 - ab))
        return torch.softmax(log_lik + pi.log(), dim=-1) @ u

    model.denoise = bayes_optimal
    x = torch.zeros(40_000, 2)
    g = torch.Generator().manual_seed(0)
    drawn = model.sample_chain(x, generator=g)[-1].argmax(-1)
    assert torch.allclose(torch.bincount(drawn, minlength=3) / len(x), pi, atol=0.04)
    mode = model.sample_chain(x, deterministic=True, generator=g)[-1].argmax(-1)
    assert (mode == 0).all()


def test_prototype_embedding_starts_at_a_class_medoid(blobs) -> None:
    model = NoPropDT(blobs.spec, num_blocks=2, embedding="prototype")
    model.prepare(blobs.train_x, blobs.train_y)
    flat = blobs.train_x.reshape(len(blobs.train_x), -1)
    for c in range(blobs.num_classes):
        row = model.embedding.weight[c]
        is_member = (flat[blobs.train_y == c] == row).all(dim=1).any()
        assert is_member, f"class {c} prototype is not one of its images"


@pytest.mark.parametrize("order", ["sequential", "interleaved"])
def test_dt_learns_blobs_well_above_chance(order: str, blobs) -> None:
    torch.manual_seed(0)
    config = RunConfig(num_blocks=3, epochs=4, batch_size=32, lr=1e-2, block_order=order, progress=False)
    model = NoPropDT(blobs.spec, num_blocks=3)
    Trainer(model, blobs, config).fit()
    assert evaluate_accuracy(model, blobs.test_x, blobs.test_y) > 0.8  # chance is 0.25
