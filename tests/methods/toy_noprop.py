"""A new NoProp variant written by reusing the shared pieces instead of copying them: NoProp-DT's
discrete cosine schedule, but ONE time-conditioned block for all T levels (told which level it
steps into), trained at a random level per example.

What it reuses, and so does not write: the noising ``q(z_t | y)``, the SNR weights and the posterior
steps (:class:`~noprop.schedules.CosineSchedule`: ``sample``, ``snr_derivative``, ``step_into``),
the Eq. 3 sampler (``posterior_chain``), the class embedding, the classifier on z, prototype
initialisation and ``u_hat = softmax(logits) @ W_embed``
(:class:`~noprop.methods.label_embedding.LabelEmbeddingMethod`), and the block (``TimeBlock``).
Registered with one line, ``METHODS["onedt"] = OneBlockDT`` (see test_adding_a_method.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.blocks import TimeBlock
from noprop.methods.base import LossOutput, TrainingUnit
from noprop.methods.config import EmbeddingConfig
from noprop.methods.label_embedding import LabelEmbeddingMethod
from noprop.sampler import posterior_chain
from noprop.schedules import CosineSchedule, gaussian_prior_kl
from noprop.settings import setting
from noprop.spec import DataSpec


@dataclass(frozen=True)
class OneBlockConfig(EmbeddingConfig):
    """The embedding and encoder settings every NoProp method has, plus the two of this variant."""

    levels: int = setting(4, "noise levels T of the cosine schedule", positive=True, shape=True)
    eta: float = setting(0.1, "denoising loss weight eta (T*eta/2*(SNR(t)-SNR(t-1)))", minimum=0)


class OneBlockDT(LabelEmbeddingMethod):
    """NoProp-DT with one block shared by every level."""

    name = "onedt"
    default_optimizer = "adam"
    config_class = OneBlockConfig
    config: OneBlockConfig
    classifier: nn.Linear

    def __init__(self, spec: DataSpec, config: OneBlockConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        self.schedule = CosineSchedule(self.config.levels)       # q(z_t | y), SNR, posterior steps
        dim = self.add_embedding()                               # W_embed, from the embedding settings
        self.block = TimeBlock(self.config.encoder_factory(spec, batch_norm=False), dim)
        self.add_classifier()                                    # Linear(d, C) on z

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"block": list(self.block.parameters()), "shared": self.readout_parameters()}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("block", ("block", "shared"))]

    def denoise(self, x: Tensor, z: Tensor, level: Tensor) -> Tensor:
        """``u_hat`` for the step from ``z = z_{level-1}`` into ``level`` (one level per example)."""
        return self.label_estimate(self.block(x, z, level / self.schedule.num_steps))

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        T, u = self.schedule.num_steps, self.embedding(y)
        t = torch.randint(1, T + 1, (len(y),), device=u.device)
        sq_error = (self.denoise(x, self.schedule.sample(u, t - 1).z_t, t) - u).pow(2).sum(-1)
        denoise = (T * self.config.eta / 2 * self.schedule.snr_derivative(t) * sq_error).mean()
        ce = F.cross_entropy(self.classifier(self.schedule.sample(u, T).z_t), y)
        kl = gaussian_prior_kl(u, self.schedule.alpha_bar(0)).mean()
        return LossOutput(loss=ce + kl + denoise, terms={"ce": ce.detach(), "denoise": denoise.detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        levels = self.schedule.levels
        chain = posterior_chain(
            lambda k, z: self.denoise(x, z, levels[k + 1].expand(len(x))),
            lambda k: self.schedule.step_into(k + 1), steps=self.schedule.num_steps,
            shape=(len(x), self.embedding.dim), device=x.device, deterministic=deterministic,
            generator=generator, keep_chain=False,
        )
        return self.classifier(chain[-1])
