"""Forward gradient with local losses, activity-perturbed ("fg", LG-FG-A).

Ren, Kornblith, Liao & Hinton, "Scaling Forward Gradient With Local Losses", ICLR 2023. Each block
has a local loss, the cross-entropy of a local linear classifier on its (pooled) output z. The
block's weights are updated with the *activity-perturbed forward gradient*:

1. sample a random tangent u ~ N(0, I) on the block's output activations z, zero where z is zero
   (the paper perturbs before the ReLU: an inactive or dropped unit passes no gradient back, so
   its tangent would only add variance);
2. get the directional derivatives of the local loss along u in forward mode
   (:func:`torch.func.jvp` through the local classifier; no backward pass), one per example and
   per *part* of z: ``fg_groups`` channel groups times, with ``fg_patches``, the conv heads' 2x2
   pooling cells. This is the paper's local losses on feature groups and spatial patches with its
   stop-gradient arrangement: part k's loss is the block's loss with every other part detached, so
   its gradient on part k is the block loss's, and each part's ``(dL/dz_k . u_k) u_k`` is unbiased
   with a variance that grows with the part's size, not the block's;
3. estimate the activations' gradient as ``g_z = sum_k (dL/dz_k . u_k) u_k`` (E[u u^T] = I);
4. propagate it to the block's own weights with one local vector-Jacobian product of the block
   (``z.backward(g_z)`` on the block's own graph only).

The local classifier uses its exact gradient (as in the paper). No gradient crosses blocks: block k
reads block k-1's *detached* output (``locality_forward = "chained"``). The network is ``local``'s
(the paper's conv stack in four blocks), so ``local``, ``predsim`` and ``fg`` differ only in the
learning rule; the prediction is the last block's classifier.

The trainer calls ``backward`` on the returned loss, so :meth:`ForwardGradient.unit_loss` returns a
surrogate whose value is the local cross-entropy and whose gradient is exactly the estimate above:
``ce(head(z.detach())) + <z, g_z> - <z, g_z>.detach()``.

Why the parts matter (docs/results/2026-12-03-cpu/comparators/README.md): with one derivative
for a whole block output of n = 256-1024 activations the estimate's variance is about n times the
gradient's square, and AdamW, which scales every weight's step to about lr whatever its noise,
turns that noise into a random walk that wrecks the wide blocks' features (worse than leaving
them at their initialisation).

What differs from the paper: patches are the heads' 2x2 pooling cells, not every position; the
classifier of every part is the block's one head (the paper's too share one, on pooled features);
a block of several layers gets the exact VJP of ``g_z`` through its whole graph (ours have one
weight layer each, so no stop-gradient inside a block is needed); a linear head on 2x2 pooled
features; the run's optimiser (AdamW; the paper: SGD with momentum and a cosine schedule).
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
from noprop.settings import ConfigError, setting


@dataclass(frozen=True)
class FGConfig(ConvPaddingConfig):
    fg_tangents: int = setting(1, "fg: random tangents per example and step whose forward-gradient "
                               "estimates are averaged (the paper: 1)", positive=True)
    fg_groups: int = setting(32, "fg: feature groups of a block's output, each with its own directional "
                             "derivative (the paper's local losses on groups; 1: one for the whole output)",
                             positive=True)
    fg_patches: bool = setting(True, "fg: each of the conv heads' 2x2 pooling cells is its own patch "
                               "with its own directional derivative (the paper's spatial local losses)")
    fg_active_only: bool = setting(True, "fg: tangent only on a block's non-zero outputs (the paper's "
                                   "tangent before the ReLU: the same expectation, less variance)")


def activity_forward_gradient(head: nn.Module, z: Tensor, y: Tensor, tangent: Tensor,
                              partition: Tensor | None = None) -> Tensor:
    """``g_z = sum_k (dL_i/dz_ik . u_ik) u_ik`` for the mean cross-entropy ``L`` of ``head`` on ``z``.

    ``partition`` (integer ids 0..K-1 shaped like one example's ``z``; ``None``: one part) splits
    the activations into K parts, each with its own directional derivative: every part's estimate
    is unbiased, and the variance of ``(g . u) u`` grows with the number of elements it spans
    (E||(g.u)u - g||^2 = (n + 1)||g||^2 for u ~ N(0, I_n)), so K parts divide it by about K.
    """
    if partition is None:
        partition = torch.zeros(z.shape[1:], dtype=torch.long, device=z.device)
    derivatives = part_derivatives(head, z.detach(), y, tangent, partition)
    return derivatives[:, partition] * tangent


def part_derivatives(head: nn.Module, z: Tensor, y: Tensor, tangent: Tensor, partition: Tensor) -> Tensor:
    """``d[i, k] = dL_i/dz_ik . u_ik``, by one forward-mode JVP of the per-example losses (``L_i`` the
    cross-entropy of example i over the batch size), with ``head``'s parameters held fixed.

    The K parts' tangents ``mask_k * u`` are stacked along the batch (the head acts on each example
    alone), so the JVP costs K forward passes of the head. A head that opens with an average
    pooling (ours: 2x2) first takes its JVP on its own: the pooling is linear, so its JVP along
    ``mask_k * u`` is ``pooling(mask_k * u)``, and :func:`pooled_part_tangents` gets all K of those
    from a few poolings of ``u``; the stacked JVP then runs on pooled activations, H*W/4 times less
    work for the same derivatives. Nothing is back-propagated either way.
    """
    batch, parts = z.shape[0], int(partition.max()) + 1
    pooling = head[0] if isinstance(head, nn.Sequential) and len(head) > 1 else None
    if isinstance(pooling, nn.AdaptiveAvgPool2d | nn.AvgPool2d) and z.dim() == 4:
        head, tangents = head[1:], pooled_part_tangents(pooling, tangent, partition, parts)
        z = pooling(z)
    else:
        masks = F.one_hot(partition, parts).movedim(-1, 0).unsqueeze(1).to(tangent.dtype)  # (K, 1, *shape)
        tangents = masks * tangent
    shape = z.shape[1:]
    params = {name: p.detach() for name, p in head.named_parameters()}
    buffers = dict(head.named_buffers())
    labels = y.repeat(parts)

    def per_example(activations: Tensor) -> Tensor:
        logits = functional_call(head, (params, buffers), (activations,))
        return F.cross_entropy(logits, labels, reduction="none") / batch

    stacked = z.expand(parts, *z.shape).reshape(parts * batch, *shape)
    _, directional = jvp(per_example, (stacked,), (tangents.reshape(parts * batch, *shape),))
    return directional.detach().reshape(parts, batch).T  # part k of example i: dL_i/dz_ik . u_ik


def pooled_part_tangents(pooling: nn.Module, tangent: Tensor, partition: Tensor, parts: int) -> Tensor:
    """``pooling(mask_k * u)`` for every part k, stacked ``(K, batch, C, h, w)``.

    An average pooling acts on each channel alone, so in channel c only the parts present in c
    matter: with L of them per channel (the 2x2 cells: L = 4), L poolings of ``u`` masked to a
    channel's first, second, ... part give every (channel, part) slice, which land at part k.
    """
    channels, size = partition.shape[0], partition[0].numel()
    flat = partition.reshape(channels, size)
    ordered, order = flat.sort(dim=1)  # rank of each element's part among its channel's parts
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = torch.empty_like(flat).scatter_(1, order, new.long().cumsum(1) - 1)
    per_channel = int(rank.max()) + 1
    part_of = torch.zeros(channels, per_channel, dtype=torch.long, device=flat.device).scatter_(1, rank, flat)
    ranks = rank.reshape(partition.shape)
    pooled = torch.stack([pooling(tangent * (ranks == r)) for r in range(per_channel)])  # (L, B, C, h, w)
    out = pooled.new_zeros(parts, *pooled.shape[1:])  # (K, B, C, h, w)
    channel = torch.arange(channels, device=flat.device)[:, None].expand(channels, per_channel)
    present = torch.arange(per_channel, device=flat.device) <= rank.amax(dim=1, keepdim=True)
    out[part_of[present], :, channel[present]] = pooled.permute(2, 0, 1, 3, 4)[present]  # (C, L, B, h, w)
    return out


def output_partition(shape: torch.Size, groups: int, patches: bool, device: torch.device) -> Tensor:
    """Part ids of one example's block output: ``groups`` contiguous feature (channel) groups, times
    the 2x2 spatial cells of a conv output when ``patches`` (the heads pool to 2x2)."""
    features = shape[0]
    if groups > features:
        raise ConfigError(f"fg_groups is {groups}, more than a block's {features} output features")
    group = torch.arange(features, device=device) * groups // features
    if len(shape) == 1:
        return group
    height, width = shape[1], shape[2]
    if not patches:
        return group[:, None, None].expand(features, height, width)
    cell = (torch.arange(height, device=device)[:, None] * 2 // height * 2
            + torch.arange(width, device=device)[None, :] * 2 // width)
    return group[:, None, None] * 4 + cell[None]


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
        config = self.config
        zf = z.detach().float()
        partition = output_partition(zf.shape[1:], config.fg_groups, config.fg_patches, zf.device)
        g = torch.zeros_like(zf)
        for _ in range(config.fg_tangents):
            tangent = torch.randn_like(zf)
            if config.fg_active_only:  # a zero output (ReLU off, dropped) passes no gradient back
                tangent = tangent * (zf != 0)
            g += activity_forward_gradient(head, zf, y, tangent, partition)
        g /= config.fg_tangents
        inner = (z.float() * g).sum()  # its gradient wrt the block is the VJP of g through the block
        loss = ce + (inner - inner.detach())
        return LossOutput(loss=loss, terms={"ce": ce.detach()})
