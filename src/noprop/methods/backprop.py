"""Back-propagation baselines: the paper's end-to-end chain of NoProp-DT blocks, and a plain CNN.

``backprop`` (paper Sec. 4, Eqs. 17-19) is NoProp-DT's architecture trained the ordinary way:
the same T :class:`~noprop.blocks.DTBlock` s, linear classifier and class embedding, run as one
deep network and trained end to end::

    z_0 ~ N(0, I)
    z_t = (1 - a_t) * z_{t-1} + a_t * u_hat_t(z_{t-1}, x),   a_t = tanh(w_t), w_t learnable
    u_hat_t(z, x) = softmax(block_t(x, z)) @ W_embed
    loss = CE(classifier(z_T), y)

The paper does not state the loss; cross-entropy on the classifier's output is the only one its
description admits (NOPROP-DETAILS.md Sec. 1.9). One :class:`TrainingUnit` updates everything, so
the gradient of the loss flows back through all T blocks: the activations of every block are
alive at once, which is what NoProp-DT avoids.

``cnn`` is the everyday reference: the block's image branch (conv stack, FC(256), BatchNorm)
then ReLU and a linear classifier, trained with back-propagation. The ReLU is our addition: without
it FC(256)-BN-Linear would be one linear map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.blocks import HIDDEN, DTBlock, ImageBranch, resolve_padding
from noprop.embeddings import ClassEmbedding, embedding_dim_for
from noprop.methods.base import LossOutput, Method, TrainingUnit
from noprop.methods.config import ConvConfig, EmbeddingConfig
from noprop.settings import setting
from noprop.spec import DataSpec

#: Initial mixing weight a_t = tanh(w_t) of the backprop chain. The paper does not give one;
#: 0.5 lets each block start as an even blend of its input and its own estimate.
INITIAL_MIX = 0.5


@dataclass(frozen=True)
class BackpropConfig(EmbeddingConfig):
    """The chain's hyperparameters: NoProp-DT's architecture settings."""

    num_blocks: int = setting(10, "number of chained blocks T", positive=True, shape=True, flags=("-T",))


class BackpropChain(Method):
    """NoProp-DT's blocks chained as ``z_t = (1 - a_t) z_{t-1} + a_t u_hat_t`` and trained end to end."""

    name = "backprop"
    default_optimizer = "adamw"
    config_class = BackpropConfig

    def __init__(self, spec: DataSpec, config: BackpropConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        num_blocks, embedding = self.config.num_blocks, self.config.embedding
        dim = embedding_dim_for(embedding, spec, self.config.embedding_dim)
        padding = resolve_padding(self.config.conv_padding, spec)
        self.num_blocks = num_blocks
        self.embedding = ClassEmbedding(embedding, spec.num_classes, dim)
        self.blocks = nn.ModuleList(DTBlock(spec, dim, padding=padding) for _ in range(num_blocks))
        self.classifier = nn.Linear(dim, spec.num_classes)
        self.mix_logits = nn.Parameter(torch.full((num_blocks,), math.atanh(INITIAL_MIX)))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {f"block{t}": list(b.parameters()) for t, b in enumerate(self.blocks, start=1)}
        groups["shared"] = [*self.classifier.parameters(), *self.embedding.parameters(), self.mix_logits]
        return groups

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("all", tuple(self.parameter_groups()))]

    def prepare(self, train_x: Tensor, train_y: Tensor) -> None:
        if self.embedding.kind == "prototype":
            self.embedding.init_prototypes(train_x, train_y)

    def chain(self, x: Tensor, *, deterministic: bool = False,
              generator: torch.Generator | None = None) -> list[Tensor]:
        """``[z_1, ..., z_T]``; ``z_0`` is standard normal noise (zeros if ``deterministic``)."""
        shape = (x.shape[0], self.embedding.dim)
        if deterministic:
            z = torch.zeros(shape, device=x.device)
        else:
            z = torch.randn(shape, device=x.device, generator=generator)
        mix = torch.tanh(self.mix_logits)
        out = []
        for t, block in enumerate(self.blocks):
            u_hat = F.softmax(block(x, z), dim=-1) @ self.embedding.weight
            z = (1 - mix[t]) * z + mix[t] * u_hat
            out.append(z)
        return out

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        ce = F.cross_entropy(self.classifier(self.chain(x)[-1]), y)
        return LossOutput(loss=ce, terms={"ce": ce.detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.classifier(self.chain(x, deterministic=deterministic, generator=generator)[-1])

    def readout_logits(self, x, *, steps=None, deterministic=False, generator=None) -> list[Tensor]:
        return [self.classifier(z) for z in self.chain(x, deterministic=deterministic, generator=generator)]


class PlainCNN(Method):
    """The block's image branch, ReLU and a linear classifier, trained with back-propagation."""

    name = "cnn"
    default_optimizer = "adamw"
    config_class = ConvConfig

    def __init__(self, spec: DataSpec, config: ConvConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        padding = resolve_padding(self.config.conv_padding, spec)
        self.features = ImageBranch(spec, padding=padding, batch_norm=True)
        self.classifier = nn.Linear(HIDDEN, spec.num_classes)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("model", ("model",))]

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        ce = F.cross_entropy(self.predict_logits(x), y)
        return LossOutput(loss=ce, terms={"ce": ce.detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.classifier(F.relu(self.features(x)))
