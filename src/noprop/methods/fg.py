"""Forward gradient with local losses, activity-perturbed ("fg", LG-FG-A).

Ren, Kornblith, Liao & Hinton, "Scaling Forward Gradient With Local Losses", ICLR 2023. Each block
has a local loss, the cross-entropy of a local linear classifier on its (pooled) output z. The
block's weights are updated with the *activity-perturbed forward gradient*:

1. sample a random tangent u ~ N(0, I) on the block's output activations z;
2. get the directional derivative of the local loss along u in forward mode
   (:func:`torch.func.jvp` through the local classifier; no backward pass), one per example
   (the loss is a sum of per-example terms, so example i's derivative is ``dL_i/dz_i . u_i``);
3. estimate the activations' gradient as ``g_z = (dL/dz . u) u`` (unbiased: E[u u^T] = I);
4. propagate it to the block's own weights with one local vector-Jacobian product of the block
   (``z.backward(g_z)`` on the block's own graph only).

The local classifier uses its exact gradient (as in the paper). No gradient crosses blocks: block k
reads block k-1's *detached* output (``locality_forward = "chained"``). The network is ``local``'s
(the paper's conv stack in four blocks), so ``local``, ``predsim`` and ``fg`` differ only in the
learning rule; the prediction is the last block's classifier.

The trainer calls ``backward`` on the returned loss, so :meth:`ForwardGradient.unit_loss` returns a
surrogate whose value is the local cross-entropy and whose gradient is exactly the estimate above:
``ce(head(z.detach())) + <z, g_z> - <z, g_z>.detach()``.

What differs from the paper: one local loss per block and no local losses on spatial patches, no
feature groups, no stop-gradient inside a block (a block of several layers gets the exact VJP of
its whole graph from ``g_z``), one tangent per example per step, a linear head on 2x2 pooled
features (the paper's heads pool and use a small MLP), and the run's optimiser (AdamW by default).
The tangent is on the block's output after its ReLU, pooling and dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.nn import functional as F

from noprop.methods.base import LossOutput
from noprop.methods.config import ConvPaddingConfig
from noprop.methods.local import LocalLearning
from noprop.settings import setting


@dataclass(frozen=True)
class FGConfig(ConvPaddingConfig):
    fg_tangents: int = setting(1, "fg: random tangents per example and step whose forward-gradient "
                               "estimates are averaged (the paper: 1)", positive=True)


def activity_forward_gradient(head: nn.Module, z: Tensor, y: Tensor, tangent: Tensor) -> Tensor:
    """``g_z = (dL_i/dz_i . u_i) u_i`` for the mean cross-entropy ``L`` of ``head`` on ``z``.

    The directional derivatives come from one forward-mode JVP of the per-example losses, with
    ``head``'s parameters held fixed; nothing is back-propagated.
    """
    params = {name: p.detach() for name, p in head.named_parameters()}
    buffers = dict(head.named_buffers())
    batch = z.shape[0]

    def per_example(activations: Tensor) -> Tensor:
        logits = functional_call(head, (params, buffers), (activations,))
        return F.cross_entropy(logits, y, reduction="none") / batch

    _, directional = jvp(per_example, (z.detach(),), (tangent,))
    return directional.detach().reshape(batch, *([1] * (z.dim() - 1))) * tangent


class ForwardGradient(LocalLearning):
    """``local``'s four blocks, each updated by the activity-perturbed forward gradient of its loss."""

    name = "fg"
    config_class = FGConfig

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        with torch.no_grad():  # earlier blocks only provide the input; they get no gradient
            for block in self.blocks[:unit]:
                x = block(x)
        z = self.blocks[unit](x)
        head = self.heads[unit]
        ce = F.cross_entropy(head(z.detach()), y)  # the head's exact gradient
        tangents = self.config.fg_tangents
        g = sum(activity_forward_gradient(head, z.float(), y, torch.randn_like(z, dtype=torch.float32))
                for _ in range(tangents)) / tangents
        inner = (z.float() * g).sum()  # its gradient wrt the block is the VJP of g through the block
        loss = ce + (inner - inner.detach())
        return LossOutput(loss=loss, terms={"ce": ce.detach()})
