"""NoProp-DT: T blocks, each trained alone to denoise a noisy label embedding (paper Sec. 2.2, Eq. 8).

Training step for block t (one :class:`TrainingUnit`), on a batch ``(x, y)``::

    u_y     = W_embed[y]
    z_{t-1} ~ q(z_{t-1} | y) = N(sqrt(ab_{t-1}) u_y, (1 - ab_{t-1}) I)     # Eq. 8, not Alg. 1's z_t
    u_hat   = softmax(block_t(x, z_{t-1})) @ W_embed
    z_T     ~ q(z_T | y)
    loss    = CE(classifier(z_T), y)                                       # trains the classifier
            + KL(q(z_0 | y) || N(0, I))                                    # keeps W_embed bounded
            + T * eta / 2 * (SNR(t) - SNR(t-1)) * |u_hat - u_y|^2          # summed over d

Block t's graph contains only block t, the classifier and the embedding: nothing links two
blocks, and the trainer steps only the optimizers of ``block{t}`` and ``shared``.

Inference (Eq. 3) runs the blocks in order from ``z_0 ~ N(0, I)``::

    z_t = a_t * u_hat_t(z_{t-1}, x) + b_t * z_{t-1} + sqrt(c_t) * eps      (eps = 0 if deterministic)

and classifies ``z_T`` with the linear classifier.

How the blocks run is a strategy, ``method.block_runner``: :class:`OneBlockAtATime` (the paper's)
or :class:`~noprop.methods.dt_fused.AllBlocksFused`. Fused (``fused=True``): the method presents ONE
training unit, ``blocks``, whose loss is ``sum_t loss_t`` computed for all T blocks in one pass (a
vmap on CUDA, a loop on CPU), each block on its own noisy target; one step updates every group. Block t's
gradient is still that of its own loss_t alone (no gradient crosses blocks) and each block keeps
its own optimizer, so block updates match the one-block-at-a-time step. The shared group
(classifier, embedding) differs: unfused interleaved, it takes T steps per batch, one on each
loss_t; fused, it takes one step on the sum, ``T`` times Eq. 8 with the expectation over t
computed exactly. The block order (sequential / interleaved) has no effect with one unit. The
sampler then runs the image path of all blocks in one pass before the chain (same result as
unfused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.blocks import DTBlock
from noprop.encoders import check_unshared, trainable
from noprop.methods.base import LossOutput, TrainingUnit
from noprop.methods.config import EmbeddingConfig
from noprop.methods.dt_fused import AllBlocksFused, StackedBlocks
from noprop.methods.label_embedding import LabelEmbeddingMethod
from noprop.sampler import posterior_chain
from noprop.schedules import CosineSchedule, gaussian_prior_kl
from noprop.settings import ConfigError, setting
from noprop.spec import DataSpec


@dataclass(frozen=True)
class DTConfig(EmbeddingConfig):
    """NoProp-DT's hyperparameters (paper v1 Table 3: T = 10, eta = 0.1)."""

    num_blocks: int = setting(10, "number of blocks = diffusion steps T", positive=True, shape=True,
                              flags=("-T",))
    eta: float = setting(0.1, "denoising loss weight eta (DT: T*eta/2*(SNR(t)-SNR(t-1)) per block)",
                         minimum=0)
    schedule_clip: float = setting(1e-4, "clip of the cosine alpha_bar to [c, 1 - c] (docs/design.md A1)",
                                   positive=True)
    fused: bool = setting(False, "all T blocks of a step in one batched pass (same block updates; "
                          "vmap on CUDA, loop on CPU)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.schedule_clip < 0.5:  # alpha_bar is clipped to [c, 1 - c]
            raise ConfigError(f"schedule_clip must lie in (0, 0.5), got {self.schedule_clip}")


class OneBlockAtATime:
    """The paper's way to run the blocks: one training unit per block, the sampler block by block."""

    def training_units(self, m: NoPropDT) -> list[TrainingUnit]:
        return [TrainingUnit(f"block{t}", (f"block{t}", "shared")) for t in range(1, m.num_blocks + 1)]

    def unit_loss(self, m: NoPropDT, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        return m.block_loss(unit + 1, x, y)

    def sample_chain(self, m: NoPropDT, x: Tensor, *, deterministic: bool,
                     generator: torch.Generator | None,
                     denoiser_input: Callable[[int, Tensor], Tensor] | None = None) -> list[Tensor]:
        return posterior_chain(
            lambda k, z: m.denoise(k + 1, x, z), lambda k: m.schedule.step_into(k + 1),
            steps=m.num_blocks, shape=(x.shape[0], m.embedding.dim), device=x.device,
            deterministic=deterministic, generator=generator, denoiser_input=denoiser_input,
        )


class NoPropDT(LabelEmbeddingMethod):
    """Discrete-time NoProp with ``num_blocks`` independently trained blocks."""

    name = "dt"
    default_optimizer = "adamw"
    config_class = DTConfig
    config: DTConfig
    classifier: nn.Linear

    def __init__(self, spec: DataSpec, config: DTConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        c = self.config
        self.num_blocks = c.num_blocks
        self.eta = c.eta
        self.schedule = CosineSchedule(c.num_blocks, clip=c.schedule_clip)
        dim = self.add_embedding()
        encoders = c.encoder_factory(spec, batch_norm=True)
        self.blocks = nn.ModuleList(DTBlock(encoders, dim) for _ in range(c.num_blocks))
        check_unshared(self.blocks, c.encoder)
        self.add_classifier()
        self.register_buffer("weights", self.schedule.denoising_weights(c.eta), persistent=False)
        #: all blocks as one stacked module (no parameters of its own; see dt_fused)
        self.stacked = StackedBlocks(self.blocks)
        #: how a training step and the sampler run the blocks: one at a time, or fused
        self.block_runner: OneBlockAtATime | AllBlocksFused = (AllBlocksFused() if c.fused
                                                                else OneBlockAtATime())

    @property
    def fused(self) -> bool:
        """Whether the blocks run fused (``AllBlocksFused``); settable, e.g. to time both samplers."""
        return isinstance(self.block_runner, AllBlocksFused)

    @fused.setter
    def fused(self, on: bool) -> None:
        self.block_runner = AllBlocksFused() if on else OneBlockAtATime()

    def describe(self) -> dict[str, Any]:
        if not self.fused:
            return {}
        return {"fused_pass": self.stacked.last_pass, "fused_vmap_error": self.stacked.vmap_error}

    # -- training -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {f"block{t}": trainable(b.parameters()) for t, b in enumerate(self.blocks, start=1)}
        groups["shared"] = self.readout_parameters()
        return groups

    def training_units(self) -> list[TrainingUnit]:
        return self.block_runner.training_units(self)

    def noisy_label(self, u: Tensor, level: int) -> Tensor:
        """A sample of ``q(z_level | y) = N(sqrt(ab) u_y, (1 - ab) I)`` (the schedule's ``sample``)."""
        return self.schedule.sample(u, level).z_t

    def denoise(self, t: int, x: Tensor, z: Tensor) -> Tensor:
        """Block t's estimate of the clean label: ``softmax(block_t(x, z)) @ W_embed``."""
        return self.label_estimate(self.blocks[t - 1](x, z))

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        return self.block_runner.unit_loss(self, unit, x, y)

    def block_loss(self, t: int, x: Tensor, y: Tensor) -> LossOutput:
        """Block t's loss (Eq. 8 at fixed t): all that one training step of block t computes."""
        u = self.embedding(y)
        u_hat = self.denoise(t, x, self.noisy_label(u, t - 1))
        sq_error = (u_hat - u).pow(2).sum(-1).mean()
        denoise = self.weights[t - 1] * sq_error
        ce = F.cross_entropy(self.classifier(self.noisy_label(u, self.num_blocks)), y)
        kl = gaussian_prior_kl(u, self.schedule.alpha_bar(0)).mean()
        return LossOutput(
            loss=ce + kl + denoise,
            terms={"ce": ce.detach(), "kl": kl.detach(), "denoise": denoise.detach(),
                   "sq_error": sq_error.detach()},
        )

    # -- inference ------------------------------------------------------------------------
    def sample_chain(
        self, x: Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None,
        denoiser_input: Callable[[int, Tensor], Tensor] | None = None,
    ) -> list[Tensor]:
        """``[z_0, z_1, ..., z_T]`` from the posterior sampler (Eq. 3).

        ``denoiser_input(k, z_k)``: what block ``k + 1`` is given in place of ``z_k``, for analysis
        (:func:`noprop.sampler.posterior_chain`; ``noprop analyze`` zeroes, shuffles or replaces it).
        """
        return self.block_runner.sample_chain(self, x, deterministic=deterministic, generator=generator,
                                       denoiser_input=denoiser_input)

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.classifier(self.sample_chain(x, deterministic=deterministic, generator=generator)[-1])

    def readout_logits(self, x, *, steps=None, deterministic=False, generator=None) -> list[Tensor]:
        chain = self.sample_chain(x, deterministic=deterministic, generator=generator)
        return [self.classifier(z) for z in chain[1:]]
