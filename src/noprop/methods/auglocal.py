"""Local learning with augmented auxiliary networks ("auglocal").

Ma, Wu, Si & Tan, "Scaling Supervised Local Learning with Augmented Auxiliary Networks", ICLR 2024.
As in ``local``, block k is trained only by the cross-entropy of its own auxiliary network, on block
k-1's *detached* output. AugLocal's change is what that auxiliary network is: instead of a small
fixed head, block k's is built from a subset of the layers *after* it in the network, uniformly
sampled, each a fresh copy of that layer's architecture with its own parameters (no weight is
shared with the primary network), followed by a linear classifier. The aim is to make block k
learn features the later layers can use, without any gradient from them.

With L blocks, block k < L gets ``d_k`` auxiliary layers (the "pyramidal" depth, shrinking linearly
with k from ``d`` by the coefficient ``gamma``), sampled from blocks k+1..L::

    d_k     = max(1, round(d (1 - (k-1) gamma / (L-2)) + (k-1) gamma / (L-2)))
    blocks  = k+1..L                                       if d_k >= L - k
            = round(k + (L - k) i / d_k),  i = 1..d_k      otherwise (always ending at block L)

(``round`` is Python's, as in the authors' code.) The network is ``local``'s: the paper's conv stack
cut into four blocks (conv32-pool / conv64 / conv128-pool / FC256-BN-ReLU), so ``local``,
``predsim``, ``fg`` and ``auglocal`` differ only in the learning rule; the last block's head is the
network's classifier and gives the prediction.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from noprop.encoders import HIDDEN
from noprop.methods.config import ConvPaddingConfig
from noprop.methods.local import LocalLearning
from noprop.settings import ConfigError, setting


@dataclass(frozen=True)
class AugLocalConfig(ConvPaddingConfig):
    """The auxiliary networks' depth rule (the paper's ResNet-32 on CIFAR-10: d = 2, gamma = 0.5)."""

    auglocal_depth: int = setting(2, "auglocal: layers sampled from the later blocks for the first "
                                  "block's auxiliary network", positive=True, shape=True)
    auglocal_pyramid: float = setting(0.5, "auglocal: how fast the auxiliary depth shrinks with the "
                                      "block's depth, in [0, 1] (0: every block gets auglocal_depth)",
                                      minimum=0, shape=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if float(self.auglocal_pyramid) > 1:
            raise ConfigError(f"auglocal_pyramid must be in [0, 1]; got {self.auglocal_pyramid}")


def pyramid_depths(depth: int, gamma: float, blocks: int) -> list[int]:
    """``d_k`` for blocks k = 1..L-1 (the last block's head is the network's classifier)."""
    span = max(blocks - 2, 1)
    return [max(1, round(depth * (1 - i * gamma / span) + i * gamma / span)) for i in range(blocks - 1)]


def sampled_blocks(k: int, depth: int, blocks: int) -> list[int]:
    """The later blocks (1-based) whose architecture block k's auxiliary network copies."""
    if depth >= blocks - k:
        return list(range(k + 1, blocks + 1))
    return [round(k + (blocks - k) * i / depth) for i in range(1, depth + 1)]


def fresh_like(block: nn.Sequential, in_shape: torch.Size) -> nn.Sequential:
    """``block``'s layers with new parameters, its first conv or linear layer resized to take inputs
    of shape ``in_shape`` (no batch dimension)."""
    layers: list[nn.Module] = []
    resized = False
    for layer in block:
        if isinstance(layer, nn.Conv2d) and not resized:
            layer = nn.Conv2d(in_shape[0], layer.out_channels, layer.kernel_size, padding=layer.padding)
            resized = True
        elif isinstance(layer, nn.Linear) and not resized:
            layer = nn.Linear(math.prod(in_shape), layer.out_features)
            resized = True
        else:
            layer = copy.deepcopy(layer)
            for module in layer.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        layers.append(layer)
    return nn.Sequential(*layers)


class AugLocal(LocalLearning):
    """``local``'s four blocks, each trained through an auxiliary network made of later layers."""

    name = "auglocal"
    config_class = AugLocalConfig
    config: AugLocalConfig

    @torch.no_grad()
    def output_shapes(self) -> list[torch.Size]:
        """The shape of each block's output for one input (no batch dimension)."""
        was_training = self.blocks.training
        self.blocks.eval()  # BatchNorm takes a batch of one, dropout draws nothing
        x, shapes = torch.zeros(1, *self.spec.input_shape), []
        for block in self.blocks:
            x = block(x)
            shapes.append(x.shape[1:])
        self.blocks.train(was_training)
        return shapes

    def make_heads(self) -> nn.ModuleList:
        blocks, classes = len(self.blocks), self.spec.num_classes
        depths = pyramid_depths(self.config.auglocal_depth, self.config.auglocal_pyramid, blocks)
        shapes = self.output_shapes()
        heads = []
        for k in range(1, blocks):
            layers, shape = [], shapes[k - 1]
            for j in sampled_blocks(k, depths[k - 1], blocks):
                layer = fresh_like(self.blocks[j - 1], shape)
                with torch.no_grad():
                    shape = layer.eval()(torch.zeros(1, *shape)).shape[1:]
                layers.append(layer.train())
            heads.append(nn.Sequential(*layers, nn.Linear(shape.numel(), classes)))
        heads.append(nn.Linear(HIDDEN, classes))  # the network's own classifier
        return nn.ModuleList(heads)

    def describe(self) -> dict[str, object]:
        depths = pyramid_depths(self.config.auglocal_depth, self.config.auglocal_pyramid, len(self.blocks))
        return {"auxiliary_blocks": [sampled_blocks(k, d, len(self.blocks)) for k, d in enumerate(depths, 1)]}
