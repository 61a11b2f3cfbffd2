"""Counter-current learning ("ccl"): Kao & Hariharan, "Counter-Current Learning: A Biologically
Plausible Dual Network Approach for Deep Learning", NeurIPS 2024.

Two fully connected networks run in opposite directions. The forward network maps the flattened
input to the class logits; the feedback network mirrors it and maps the *targets* (the one-hot
class codes) down towards the input. Every layer reads its input through a stop-gradient ``sg``::

    forward    a_0 = x,     a_l = elu(W_l sg(a_{l-1})),  l < L;     a_L = W_L sg(a_{L-1})   (logits)
    feedback   b_L = e_c,   b_{l-1} = elu(V_l sg(b_l)),  l > 1;     b_0 = V_1 sg(b_1)        (c = 1..C)

Layer l of each network learns from the activity of the *other* network at the same depth (the
counter-current exchange: the information-rich bottom of the feedback network teaches the top of
the forward network, and the reverse). With ``B_l`` the feedback activities of the C classes
(a C x d_l matrix) and ``Y`` the batch's one-hot labels::

    loss = CE(a_L, y) + sum_{l=0}^{L-1} lambda * pair(a_l, B_l)
    pair = (256 / d_l) * mean((a_l B_l^T - Y)^2)    ("classes": the authors' classification loss)
    pair = mean((a_l - B_l[y])^2)                   ("examples": the difference of paired activities)

A pair's gradient reaches ``W_l`` through ``a_l`` and ``V_{l+1}`` through ``B_l``, and nothing else:
forward layer l and feedback layer l (the two weights between depths l-1 and l, as in the authors'
code) form one parameter group with its own optimizer; all learn on every batch in one training
unit. Prediction: the forward network's logits. Locality claim: ``targets`` (docs/locality.md): a
layer's loss reads values of the other network's layers above it, no gradient passes another layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.methods.base import LossOutput, Method, TrainingUnit
from noprop.methods.config import layer_stack_config
from noprop.settings import setting
from noprop.spec import DataSpec

#: How a layer's forward activity is compared with the feedback network's (see the module docstring).
PAIRINGS = ("classes", "examples")
#: The authors' reference width: their pair loss is scaled by ``REFERENCE_WIDTH / d_l``.
REFERENCE_WIDTH = 256


@dataclass(frozen=True)
class CCLConfig(layer_stack_config(num_layers=5, layer_width=256)):
    """The authors' MNIST MLP (5 x 256 ELU, no biases) and their pair weight 0.5 by default."""

    ccl_pairing: str = setting("classes", "ccl: compare a layer's activity with the feedback activities "
                               "of all classes by similarity (the authors' classification loss) or with "
                               "its own class's by squared difference", choices=PAIRINGS)
    ccl_weight: float = setting(0.5, "ccl: weight lambda of every layer pair's loss (the authors' "
                                "loss_scale_C)", minimum=0)


class CounterCurrentLearning(Method):
    """A forward and a feedback MLP, each layer trained on the other network's activity at its depth."""

    name = "ccl"
    locality_forward = "targets"
    default_optimizer = "adamw"  # as for dtp: Adam's coupled decay would shrink weakly driven layers
    config_class = CCLConfig
    config: CCLConfig

    def __init__(self, spec: DataSpec, config: CCLConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        sizes = self.config.layer_sizes(spec.input_size, spec.num_classes)
        self.forward_layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in pairwise(sizes))
        self.feedback_layers = nn.ModuleList(nn.Linear(b, a, bias=False) for a, b in pairwise(sizes))

    @property
    def depth(self) -> int:
        """``L``, the number of weight layers of each network."""
        return len(self.forward_layers)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        pairs = zip(self.forward_layers, self.feedback_layers, strict=True)
        return {f"layer{k}": [*f.parameters(), *g.parameters()] for k, (f, g) in enumerate(pairs, start=1)}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("layers", tuple(self.parameter_groups()))]

    def forward_activities(self, x: Tensor) -> list[Tensor]:
        """``[a_0, ..., a_L]``; each layer runs on the previous one's *detached* output."""
        a = [x.reshape(x.shape[0], -1)]
        for k, layer in enumerate(self.forward_layers, start=1):
            out = layer(a[-1].detach())
            a.append(out if k == self.depth else F.elu(out))
        return a

    def feedback_activities(self, device: torch.device) -> list[Tensor]:
        """``[B_0, ..., B_L]``, each ``(C, d_l)``: the feedback network run on the C class codes."""
        b = [torch.eye(self.spec.num_classes, device=device)]
        for k in range(self.depth, 0, -1):
            out = self.feedback_layers[k - 1](b[0].detach())
            b.insert(0, out if k == 1 else F.elu(out))
        return b

    def pair_loss(self, a: Tensor, b: Tensor, y: Tensor) -> Tensor:
        """The loss between one depth's forward activities ``a`` (batch) and feedback ``b`` (classes)."""
        if self.config.ccl_pairing == "examples":
            return F.mse_loss(a, b[y])
        similarity = a.float() @ b.float().T
        target = F.one_hot(y, self.spec.num_classes).float()
        return F.mse_loss(similarity, target) * (REFERENCE_WIDTH / a.shape[1])

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        a = self.forward_activities(x)
        b = self.feedback_activities(x.device)
        ce = F.cross_entropy(a[-1], y)
        pairs = torch.stack([self.pair_loss(a[k], b[k], y) for k in range(self.depth)])
        loss = ce + self.config.ccl_weight * pairs.sum()
        return LossOutput(loss=loss, terms={"ce": ce.detach(), "pairs": pairs.sum().detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.forward_activities(x)[-1]
