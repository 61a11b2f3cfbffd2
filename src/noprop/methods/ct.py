"""NoProp-CT: one time-conditioned block and a learned noise schedule (paper Sec. 2.2.2, Eq. 9, Alg. 2).

Training step (the only :class:`TrainingUnit`), on a batch ``(x, y)``, with ``t ~ U[0, 1]`` drawn
per example::

    u_y     = W_embed[y]
    z_t     ~ q(z_t | y) = N(sqrt(ab(t)) u_y, (1 - ab(t)) I)           # ab(t) from the learned schedule
    u_hat   = softmax(block(x, z_t, t)) @ W_embed
    z_1     ~ q(z_1 | y)
    loss    = CE(classifier(z_1), y)                                 # trains the classifier
            + KL(q(z_0 | y) || N(0, I))                              # keeps W_embed and ab(0) honest
            + eta / 2 * SNR'(t) * |u_hat - u_y|^2                    # summed over d, mean over batch

The block sees one noisy label drawn straight from ``q(z_t | y)``: it is never run on its own
output during training, so there is no forward chain through time. The schedule's parameters
(``gamma_0``, ``gamma_1`` and the monotone network) are trained jointly with the block, the
classifier and ``W_embed`` by the same loss (Alg. 2 updates all four together).

Inference (Eq. 3 on a grid ``0 = t_0 < ... < t_N = 1``, ``N = steps``) starts from
``z_0 ~ N(0, I)``::

    z_k = a_k * u_hat(x, z_{k-1}, t_{k-1}) + b_k * z_{k-1} + sqrt(c_k) * eps

with ``(a_k, b_k, c_k)`` the posterior coefficients from ``ab(t_{k-1})`` to ``ab(t_k)``; the
prediction is the classifier on ``z_N = z_1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.blocks import TimeBlock
from noprop.encoders import trainable
from noprop.methods.base import LossOutput, TrainingUnit
from noprop.methods.config import EmbeddingConfig
from noprop.methods.label_embedding import LabelEmbeddingMethod
from noprop.sampler import posterior_chain
from noprop.schedules import LearnedSchedule, PosteriorCoefficients, gaussian_prior_kl
from noprop.settings import setting
from noprop.spec import DataSpec


@dataclass(frozen=True)
class CTConfig(EmbeddingConfig):
    """NoProp-CT's hyperparameters (paper v1 Table 3: eta = 1, 1000 inference steps)."""

    eta: float = setting(1.0, "denoising loss weight eta (CT: eta/2*SNR'(t))", minimum=0)
    inference_steps: int = setting(1000, "sampler steps T on a uniform grid of [0, 1]", positive=True)
    schedule_gamma: float = setting(3.0, "the learned alpha_bar starts from sigmoid(-G) to sigmoid(G)",
                                    positive=True, metavar="G")


class NoPropCT(LabelEmbeddingMethod):
    """Continuous-time NoProp: a single block ``u_hat(z_t, x, t)`` trained at random times."""

    name = "ct"
    default_optimizer = "adam"
    #: One block step per batch: on the 1,437 digits, 60 epochs (~0.97 on a 2-core CPU) cost about
    #: what DT's 15 do; per-epoch checks with 20 sampler steps (noprop evaluate: the full 1000).
    default_budgets: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": {"epochs": 60, "eval_inference_steps": 20},
        "breast-cancer": {"epochs": 140, "batch_size": 16},  # ~4,000 steps, as steps_to_learn
        "wine": {"epochs": 450, "batch_size": 16},
    }
    #: Its one network learns every time t from one random t per example: on the 150-row iris,
    #: 1,000 steps give 0.87 and 4,000 give 0.9+ (benchmarks/default_budgets.py).
    steps_to_learn: ClassVar[int] = 4000
    config_class = CTConfig
    config: CTConfig
    classifier: nn.Linear

    def __init__(self, spec: DataSpec, config: CTConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        c = self.config
        self.eta = c.eta
        self.inference_steps = c.inference_steps
        self.schedule = LearnedSchedule(gamma_0=-c.schedule_gamma, gamma_1=c.schedule_gamma)
        dim = self.add_embedding()
        self.block = TimeBlock(c.encoder_factory(spec, batch_norm=False), dim)
        self.add_classifier()

    # -- training -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # The schedule sits with the classifier and W_embed in "shared": like them it defines the
        # noising process and the read-out, not the block's function. CT has a single unit, so
        # the split changes nothing in training; it keeps "block" = the network that is run T times.
        shared = [*self.readout_parameters(), *self.schedule.parameters()]
        return {"block": trainable(self.block.parameters()), "shared": shared}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("block", ("block", "shared"))]

    def noisy_label(self, u: Tensor, t: Tensor) -> Tensor:
        """A sample of ``q(z_t | y)`` at per-example times ``t`` (``(batch,)``): the schedule's ``sample``."""
        return self.schedule.sample(u, t).z_t

    def denoise(self, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """The block's estimate of the clean label: ``softmax(block(x, z, t)) @ W_embed``."""
        return self.label_estimate(self.block(x, z, t))

    def loss_terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The three terms of Eq. 9 (with their graphs) and, for logging, the mean squared error."""
        u = self.embedding(y)
        t = torch.rand(len(y), device=u.device)
        u_hat = self.denoise(x, self.noisy_label(u, t), t)
        sq_error = (u_hat - u).pow(2).sum(-1)
        ends = torch.arange(2.0, device=u.device)  # t = 0 and 1, made on the device (no host copy)
        return {
            "ce": F.cross_entropy(self.classifier(self.noisy_label(u, ends[1].expand(len(y)))), y),
            "kl": gaussian_prior_kl(u, self.schedule.alpha_bar(ends[0])).mean(),
            "denoise": (self.eta / 2.0 * self.schedule.snr_derivative(t) * sq_error).mean(),
            "sq_error": sq_error.mean(),
        }

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        terms = self.loss_terms(x, y)
        loss = terms["ce"] + terms["kl"] + terms["denoise"]
        return LossOutput(loss=loss, terms={k: v.detach() for k, v in terms.items()})

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        x: Tensor,
        *,
        steps: int | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        denoiser_input: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """``z_1`` from ``steps`` posterior updates (Eq. 3) on a uniform grid of [0, 1].

        ``denoiser_input(k, z_k)``: what the block is given at step ``k`` (time ``t_k``) in place of
        ``z_k``, for analysis (:func:`noprop.sampler.posterior_chain`)."""
        steps = steps or self.inference_steps
        grid = torch.linspace(0.0, 1.0, steps + 1, device=x.device)
        coef = self.schedule.posterior_coefficients(grid[:-1], grid[1:])
        features = self.block.image_features(x)

        def denoise(k: int, z: Tensor) -> Tensor:
            return self.label_estimate(self.block.forward_features(features, z, grid[k]))

        return posterior_chain(
            denoise, lambda k: PosteriorCoefficients(a=coef.a[k], b=coef.b[k], c=coef.c[k]), steps=steps,
            shape=(x.shape[0], self.embedding.dim), device=x.device, deterministic=deterministic,
            generator=generator, keep_chain=False, denoiser_input=denoiser_input,
        )[0]

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        z_1 = self.sample(x, steps=steps, deterministic=deterministic, generator=generator)
        return self.classifier(z_1)
