"""Back-propagation baselines: the paper's end-to-end chain of NoProp-DT blocks, and a plain CNN.

``backprop`` (paper Sec. 4, Eqs. 17-19) is NoProp-DT's architecture trained the ordinary way:
the same T :class:`~noprop.blocks.DTBlock` s, linear classifier and class embedding, run as one
deep network and trained end to end::

    z_0 ~ N(0, I)
    z_t = (1 - a_t) * z_{t-1} + a_t * u_hat_t(z_{t-1}, x),   a_t = tanh(w_t), w_t learnable
    u_hat_t(z, x) = softmax(block_t(x, z)) @ W_embed
    loss = CE(classifier(z_T), y)

The paper does not state the loss; cross-entropy on the classifier's output is the only one its
description admits (NOPROP-DETAILS.md Sec. 1.9). Nor does it give the starting a_t or the
classifier's initialisation; both decide whether the chain learns at lr 1e-3 (see
:class:`BackpropChain`; measured in docs/methods.md, "The backprop baseline").

One :class:`TrainingUnit` updates everything, so the gradient of the loss flows back through all
T blocks: the activations of every block are alive at once, which is what NoProp-DT avoids.

``cnn`` is the everyday reference: the block's encoder (the paper's: conv stack, FC(256), BatchNorm)
then ReLU and a linear classifier, trained with back-propagation. The ReLU is our addition: without
it FC(256)-BN-Linear would be one linear map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.blocks import DTBlock
from noprop.encoders import check_unshared, trainable
from noprop.methods.base import LossOutput, Method, TrainingUnit
from noprop.methods.config import EmbeddingConfig, EncoderConfig
from noprop.methods.label_embedding import LabelEmbeddingMethod
from noprop.settings import ConfigError, setting
from noprop.spec import DataSpec

#: Weight the start noise z_0 keeps in z_T when training starts: each a_t starts at
#: ``1 - NOISE_LEFT ** (1 / T)``, so that ``prod_t (1 - a_t) = NOISE_LEFT``. For the paper's T = 10
#: that is a_t = 0.50 (an even blend of input and estimate); for T = 1 it is a_1 = 0.999, where a
#: fixed 0.5 would leave half of z_1 noise (measured: docs/methods.md, "The backprop baseline").
NOISE_LEFT = 1e-3

#: How the linear classifier on z_T starts (the paper gives no initialisation).
CLASSIFIER_INITS = ("embedding", "default")


def initial_mix_for(num_blocks: int) -> float:
    """The starting a_t: ``1 - NOISE_LEFT ** (1 / T)``."""
    return 1.0 - NOISE_LEFT ** (1.0 / num_blocks)


@dataclass(frozen=True)
class BackpropConfig(EmbeddingConfig):
    """The chain's hyperparameters: NoProp-DT's architecture settings, and the two starting values
    the paper leaves open (docs/methods.md, "The backprop baseline")."""

    num_blocks: int = setting(10, "number of chained blocks T", positive=True, shape=True, flags=("-T",))
    initial_mix: float | None = setting(None, "backprop: every a_t starts here, in (-1, 1) (default: "
                                        "1 - 0.001^(1/T), 0.5 for T = 10)")
    classifier_init: str = setting("embedding", "backprop: the classifier starts as the class "
                                   "embedding's readout (W_c = s u_c / |u_c|^2) or PyTorch's default",
                                   choices=CLASSIFIER_INITS)
    classifier_scale: float = setting(1.0, "backprop: the scale s of the classifier's start",
                                      positive=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.initial_mix is not None and not -1 < self.initial_mix < 1:
            raise ConfigError(f"initial_mix must lie in (-1, 1) (a_t = tanh(w_t)), got {self.initial_mix}")


class BackpropChain(LabelEmbeddingMethod):
    """NoProp-DT's blocks chained as ``z_t = (1 - a_t) z_{t-1} + a_t u_hat_t`` and trained end to end.

    Two starting values the paper leaves open, both measured in docs/methods.md:

    * ``classifier_init="embedding"`` (default): the classifier starts as the readout of the class
      embedding, ``W_c = s * u_c / |u_c|^2`` and bias 0, so ``logit_c(u_y) = s`` for ``c = y``
      (one-hot: ``W = s * I``). ``"default"`` is PyTorch's uniform(+-1/sqrt(d)) init, times ``s``.
      z_T is a mixture of softmax-weighted embeddings, so with the default init the logits span
      about 0.6 and some classes win nowhere on the simplex; AdamW at lr 1e-3 moves each weight by
      at most ~1e-3 a step: the chain plateaued near 0.55 on the digits for hundreds of steps.
    * ``initial_mix=None`` (default): every a_t starts at ``1 - NOISE_LEFT ** (1/T)`` (0.5 for T = 10);
      a float starts every a_t there.
    """

    name = "backprop"
    default_optimizer = "adamw"
    config_class = BackpropConfig
    config: BackpropConfig
    classifier: nn.Linear

    def __init__(self, spec: DataSpec, config: BackpropConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        num_blocks = self.config.num_blocks
        encoders = self.config.encoder_factory(spec, batch_norm=True)
        self.num_blocks = num_blocks
        dim = self.add_embedding()
        self.blocks = nn.ModuleList(DTBlock(encoders, dim) for _ in range(num_blocks))
        check_unshared(self.blocks, self.config.encoder)
        self.add_classifier()
        mix = initial_mix_for(num_blocks) if self.config.initial_mix is None else self.config.initial_mix
        self.mix_logits = nn.Parameter(torch.full((num_blocks,), math.atanh(mix)))
        self._init_classifier()

    @torch.no_grad()
    def _init_classifier(self) -> None:
        """Start the classifier (see the class docstring); re-run once prototypes are set."""
        scale = self.config.classifier_scale
        if self.config.classifier_init == "embedding":
            self.init_classifier_as_readout(scale)
        else:
            self.classifier.weight.mul_(scale)
            self.classifier.bias.mul_(scale)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {f"block{t}": trainable(b.parameters()) for t, b in enumerate(self.blocks, start=1)}
        groups["shared"] = [*self.readout_parameters(), self.mix_logits]
        return groups

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("all", tuple(self.parameter_groups()))]

    def prepare(self, train_x: Tensor, train_y: Tensor) -> None:
        super().prepare(train_x, train_y)  # prototype embeddings start at the class medoids
        if self.embedding.kind == "prototype" and self.config.classifier_init == "embedding":
            self._init_classifier()

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
            u_hat = self.label_estimate(block(x, z))
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
    """The block's encoder, ReLU and a linear classifier, trained with back-propagation."""

    name = "cnn"
    default_optimizer = "adamw"
    config_class = EncoderConfig

    def __init__(self, spec: DataSpec, config: EncoderConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        encoders = self.config.encoder_factory(spec, batch_norm=True)
        self.features = encoders.build()
        self.classifier = nn.Linear(encoders.features(self.features), spec.num_classes)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": trainable(self.parameters())}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("model", ("model",))]

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        ce = F.cross_entropy(self.predict_logits(x), y)
        return LossOutput(loss=ce, terms={"ce": ce.detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.classifier(F.relu(self.features(x)))
