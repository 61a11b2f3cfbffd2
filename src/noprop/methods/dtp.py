"""Difference target propagation ("dtp"), simplified as in Bartunov et al. 2018 (SDTP).

Lee, Zhang, Fischer & Bengio, "Difference Target Propagation", ECML-PKDD 2015; Bartunov, Santoro,
Richards, Marris, Hinton & Lillicrap, "Assessing the Scalability of Biologically-Motivated Deep
Learning Algorithms and Architectures", NeurIPS 2018. A fully connected network on the flattened
input, ``h_0 = x``::

    forward      h_l = f_l(h_{l-1}) = tanh(W_l h_{l-1} + b_l),  l < L;    h_L = W_L h_{L-1} + b_L (logits)
    feedback     g_l(h_l) = tanh(V_l h_l + c_l),  from layer l's space back to layer l-1's,  l >= 2

Instead of gradients, *targets* travel down. On a batch ``(x, y)``, with ``sg`` a stop-gradient:

    output target   t_L = h_L - eta * (softmax(h_L) - onehot(y))       (a step on CE_i, per example)
    hidden targets  t_{l-1} = h_{l-1} + g_l(t_l) - g_l(h_l),   l = L .. 2      (difference correction)
    layer losses    |f_l(sg h_{l-1}) - sg t_l|^2  (l < L);   CE(f_L(sg h_{L-1}), y)  (the output layer)
    inverse losses  |g_l(sg f_l(n)) - n|^2,   n = sg h_{l-1} + eps,  eps ~ N(0, sigma^2 I),  l >= 2

(squares summed over units, mean over the batch). The difference correction makes ``t_{l-1} = h_{l-1}``
whenever ``t_l = h_l``, however imperfect the inverse ``g_l``; the inverses learn from noise-corrupted
reconstruction, in parallel with the forward weights (Bartunov et al.'s schedule; Lee et al.
alternate whole epochs). SDTP's change to DTP is the penultimate target: Lee et al. take
``t_{L-1} = h_{L-1} - eta dCE_i/dh_{L-1}``, one step of back-propagation through the output layer
(``dtp_top="gradient"``); SDTP uses the learned inverse ``g_L`` there too (``dtp_top="inverse"``, the
default), so no gradient crosses a layer anywhere.

Every layer's weight update uses only its own input, output and target: the layer and its inverse
form one parameter group with its own optimizer, and the method's one training unit is the sum of
the per-layer losses (all layers learn on every batch, as in both papers). Locality claim:
``targets`` (docs/locality.md): a layer's loss reads values of the layers above (its target), no
gradient passes another layer.
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

#: Where the last hidden layer's target comes from: SDTP's inverse, or Lee et al.'s gradient step.
TOP_TARGETS = ("inverse", "gradient")


@dataclass(frozen=True)
class DTPConfig(layer_stack_config(num_layers=7, layer_width=240)):
    """Lee et al.'s MNIST network (7 x 240 tanh) by default; the step and noise are the run's choices
    where the papers tuned theirs (docs/methods.md)."""

    dtp_target_step: float = setting(0.1, "dtp: step eta of the output target t_L = h_L - eta dCE_i/dh_L",
                                     positive=True)
    dtp_noise: float = setting(0.36, "dtp: std of the noise the inverses learn to undo", minimum=0)
    dtp_top: str = setting("inverse", "dtp: the last hidden layer's target from the learned inverse of the "
                           "output layer (SDTP) or a gradient step through it (Lee et al.'s DTP)",
                           choices=TOP_TARGETS, shape=True)


def squared_error(a: Tensor, b: Tensor) -> Tensor:
    """``|a - b|^2`` summed over units, mean over the batch (Lee et al.'s ``mse``)."""
    return (a - b).pow(2).sum(dim=1).mean()


class DifferenceTargetPropagation(Method):
    """A tanh MLP whose layers learn from targets propagated down through learned inverses."""

    name = "dtp"
    locality_forward = "targets"
    #: AdamW, not Adam: Adam's coupled weight decay is normalised like a gradient, so a layer whose
    #: target loss is small shrinks at ~lr per step (measured: docs/methods.md).
    default_optimizer = "adamw"
    config_class = DTPConfig
    config: DTPConfig

    def __init__(self, spec: DataSpec, config: DTPConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        sizes = self.config.layer_sizes(spec.input_size, spec.num_classes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        # inverses[k] is g_{k+2}: layer k+2's space back to layer k+1's (none for the input)
        inverse_of = range(2, len(sizes)) if self.config.dtp_top == "inverse" else range(2, len(sizes) - 1)
        self.inverses = nn.ModuleList(nn.Linear(sizes[k], sizes[k - 1]) for k in inverse_of)
        for linear in (*self.layers, *self.inverses):  # Lee et al.: orthogonal weights, zero biases
            nn.init.orthogonal_(linear.weight)
            nn.init.zeros_(linear.bias)

    @property
    def depth(self) -> int:
        """``L``, the number of weight layers (hidden layers plus the output layer)."""
        return len(self.layers)

    def inverse(self, layer: int) -> nn.Linear | None:
        """The linear map of ``g_layer`` (1-based, as in the formulas); ``None`` where there is none."""
        return self.inverses[layer - 2] if 2 <= layer < len(self.inverses) + 2 else None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {}
        for k, layer in enumerate(self.layers, start=1):
            g = self.inverse(k)
            groups[f"layer{k}"] = [*layer.parameters(), *(g.parameters() if g is not None else ())]
        return groups

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("layers", tuple(self.parameter_groups()))]

    def forward_layer(self, k: int, h: Tensor) -> Tensor:
        """``f_l(h)``: tanh for hidden layers, the logits for the output layer."""
        out = self.layers[k - 1](h)
        return out if k == self.depth else torch.tanh(out)

    def feedback(self, k: int, h: Tensor) -> Tensor:
        """``g_l(h) = tanh(V_l h + c_l)``."""
        g = self.inverse(k)
        assert g is not None, f"layer {k} has no inverse"
        return torch.tanh(g(h))

    def activities(self, x: Tensor) -> list[Tensor]:
        """``[h_0, ..., h_L]``; each layer runs on the previous one's *detached* output."""
        h = [x.reshape(x.shape[0], -1)]
        for k in range(1, self.depth + 1):
            h.append(self.forward_layer(k, h[-1].detach()))
        return h

    def output_gradient(self, h: Tensor, y: Tensor) -> Tensor:
        """``dCE_i/dh`` per example at the last hidden layer, by back-propagation through the output
        layer: Lee et al.'s penultimate target (``dtp_top="gradient"``), not local."""
        with torch.enable_grad():
            leaf = h.detach().requires_grad_()
            ce = F.cross_entropy(self.forward_layer(self.depth, leaf), y, reduction="sum")
            return torch.autograd.grad(ce, leaf)[0]

    def targets(self, h: list[Tensor], y: Tensor) -> dict[int, Tensor]:
        """``{l: t_l}`` for l = 1..L, values only (no gradient), in float32 outside autocast: in bf16,
        ``h + g(t) - g(h)`` would add rounding noise of about 2^-8 |g| where the correction is zero."""
        L, eta = self.depth, self.config.dtp_target_step
        with torch.no_grad(), torch.autocast(h[0].device.type, enabled=False):
            h = [a.float() for a in h]
            t = {L: h[L] - eta * (F.softmax(h[L], dim=1) - F.one_hot(y, self.spec.num_classes))}
            if self.config.dtp_top == "gradient":
                t[L - 1] = h[L - 1] - eta * self.output_gradient(h[L - 1], y)
            for k in range(L if self.config.dtp_top == "inverse" else L - 1, 1, -1):
                t[k - 1] = h[k - 1] + (self.feedback(k, t[k]) - self.feedback(k, h[k]))
        return t

    def inverse_loss(self, k: int, h_below: Tensor) -> Tensor:
        """Reconstruction of noise-corrupted ``h_{l-1}`` through ``f_l`` (fixed) and ``g_l``."""
        with torch.no_grad():
            noisy = h_below + self.config.dtp_noise * torch.randn_like(h_below)
            up = self.forward_layer(k, noisy)
        return squared_error(self.feedback(k, up), noisy)

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        h = self.activities(x)
        t = self.targets(h, y)
        L = self.depth
        ce = F.cross_entropy(h[L], y)
        target = sum(squared_error(h[k], t[k]) for k in range(1, L))
        inverse = sum(self.inverse_loss(k, h[k - 1].detach()) for k in range(2, L + 1)
                      if self.inverse(k) is not None)
        loss = ce + target + inverse
        return LossOutput(loss=loss, terms={"ce": ce.detach(), "target": torch.as_tensor(target).detach(),
                                            "inverse": torch.as_tensor(inverse).detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.activities(x)[-1]
