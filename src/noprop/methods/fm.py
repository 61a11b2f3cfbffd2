"""NoProp-FM: one time-conditioned block trained by flow matching (paper Sec. 2.2.3, Eqs. 10-13, Alg. 3).

The path runs from Gaussian noise at ``t = 0`` to the class embedding at ``t = 1``::

    z_0 ~ N(0, I),   z_1 = u_y,   z_t = t * u_y + (1 - t) * z_0 + sigma * eps   (LinearPath.sample)

and its velocity is ``d z_t / dt = u_y - z_0``. Training step (the only :class:`TrainingUnit`),
with ``t ~ U[0, 1]`` per example::

    v     = block(x, z_t, t) @ W_embed                       # logits as unrestricted weights
    loss  = |v - (u_y - z_0)|^2                              # summed over d, mean over batch
          + CE(classifier(z_t + (1 - t) v), y)               # anchor, only if W_embed is learned

The block sees one point of the path drawn straight from the data: it is never run on its own
output during training. Inference integrates ``dz/dt = v(x, z, t)`` from ``z_0 ~ N(0, I)`` with
``steps`` Euler steps (noprop.flow.EulerSolver) and predicts the class whose embedding is nearest to ``z_1``.
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
from noprop.flow import EulerSolver, LinearPath
from noprop.methods.base import LossOutput, TrainingUnit
from noprop.methods.config import EmbeddingConfig
from noprop.methods.label_embedding import LabelEmbeddingMethod
from noprop.settings import setting
from noprop.spec import DataSpec


@dataclass(frozen=True)
class FMConfig(EmbeddingConfig):
    """NoProp-FM's hyperparameters (paper v1 Table 3: 1000 Euler steps)."""

    inference_steps: int = setting(1000, "Euler steps of the learned flow from t = 0 to 1", positive=True)
    fm_sigma: float = setting(0.0, "width sigma of the flow-matching path (0: the straight line)",
                              minimum=0)


class NoPropFM(LabelEmbeddingMethod):
    """Flow-matching NoProp: a single block predicts the velocity toward the label embedding."""

    name = "fm"
    default_optimizer = "adam"
    #: Per-epoch checks on the digits with 20 Euler steps (0.978; 1000 steps: 0.975, measured in
    #: docs/benchmarks.md); noprop evaluate uses the full 1000.
    default_budgets: ClassVar[dict[str, dict[str, Any]]] = {"digits": {"eval_inference_steps": 20}}
    config_class = FMConfig
    config: FMConfig

    def __init__(self, spec: DataSpec, config: FMConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        c = self.config
        self.inference_steps = c.inference_steps
        self.path = LinearPath(c.fm_sigma)
        dim = self.add_embedding()
        self.block = TimeBlock(c.encoder_factory(spec, batch_norm=False), dim)
        # The anchor classifier exists only with learned embeddings (Alg. 3): with one-hot ones
        # the flow loss is the whole objective and prediction never uses a classifier.
        self.classifier = None
        if self.embedding.trainable:
            self.add_classifier()

    # -- training -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # embedding before classifier (DT/CT's readout_parameters() has the other order): kept, as
        # the optimizer state of saved runs is indexed by position in the group
        shared = list(self.embedding.parameters())
        if self.classifier is not None:
            shared += list(self.classifier.parameters())
        return {"block": trainable(self.block.parameters()), "shared": shared}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("block", ("block", "shared"))]

    def velocity(self, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """``v = block(x, z, t) @ W_embed``: logits as unrestricted weights on the embeddings."""
        return self.block(x, z, t) @ self.embedding.weight

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        u = self.embedding(y)
        t = torch.rand(len(y), device=u.device)
        path = self.path.sample(u, t)  # draws z_0 (then eps, if sigma > 0)
        v = self.velocity(x, path.z_t, t)
        flow = (v - path.target).pow(2).sum(-1).mean()
        terms = {"flow": flow.detach()}
        loss = flow
        if self.classifier is not None:
            z_1_guess = path.z_t + (1.0 - t).unsqueeze(-1) * v
            anchor = F.cross_entropy(self.classifier(z_1_guess), y)
            terms["anchor_ce"] = anchor.detach()
            loss = loss + anchor
        return LossOutput(loss=loss, terms=terms)

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
        """``z_1`` by Euler integration of the learned field; ``deterministic`` is moot (an ODE).

        ``denoiser_input(k, z_k)``: what the block is given at Euler step ``k`` in place of ``z_k``,
        for analysis (:meth:`noprop.flow.EulerSolver.integrate`)."""
        features = self.block.image_features(x)
        weight = self.embedding.weight

        def field(z: Tensor, t: Tensor) -> Tensor:
            return self.block.forward_features(features, z, t) @ weight

        z_0 = torch.randn((x.shape[0], self.embedding.dim), device=x.device, generator=generator)
        return EulerSolver(steps or self.inference_steps).integrate(field, z_0, field_input=denoiser_input)

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        """Negative squared distances from ``z_1`` to each class embedding: argmax = nearest."""
        z_1 = self.sample(x, steps=steps, deterministic=deterministic, generator=generator)
        return -torch.cdist(z_1, self.embedding.weight).pow(2)
