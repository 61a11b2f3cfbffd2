"""Local supervised learning with auxiliary classifier heads (greedy / decoupled greedy learning).

The network is the image branch of NoProp's block cut into four blocks::

    block1: conv3x3(32)-ReLU-maxpool-dropout     head1: avgpool(2x2)-flatten-linear(C)
    block2: conv3x3(64)-ReLU-dropout             head2: avgpool(2x2)-flatten-linear(C)
    block3: conv3x3(128)-ReLU-maxpool-dropout    head3: avgpool(2x2)-flatten-linear(C)
    block4: flatten-FC(256)-BN-ReLU              head4: linear(C)

Block k is trained only by the cross-entropy of its own head, on the *detached* output of block
k-1 (Belilovsky, Eickenberg & Oyallon, "Greedy layerwise learning can scale to ImageNet", 2019,
and "Decoupled greedy learning of CNNs", 2020). Each block with its head is one
:class:`TrainingUnit`, so the trainer's block orders give both variants:

* ``sequential``: per epoch, a pass over the data for block 1, then block 2, ... (greedy);
* ``interleaved``: every block steps on every batch (decoupled greedy learning, DGL).

The auxiliary heads follow DGL's spatial averaging to 2x2, reduced to a single linear layer.
The prediction is the last head's; :meth:`readout_logits` gives every head's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.encoders import HIDDEN, ImageBranch, resolve_padding
from noprop.methods.base import LossOutput, Method, TrainingUnit
from noprop.methods.config import ConvPaddingConfig
from noprop.settings import ConfigError
from noprop.spec import DataSpec


def _conv_head(channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, num_classes))


class LocalLearning(Method):
    """Four blocks, each trained greedily through its own auxiliary classifier head."""

    name = "local"
    locality_forward = "chained"  # block k trains on block k-1's (detached) output
    default_optimizer = "adamw"
    config_class = ConvPaddingConfig

    def __init__(self, spec: DataSpec, config: ConvPaddingConfig | None = None, **settings: object) -> None:
        if not spec.is_image:  # the blocks are the paper's conv branch cut in four
            raise ConfigError(f"method {self.name} trains the paper's image branch block by block; these "
                              f"inputs are {spec.describe()}, not images (channels x height x width)")
        super().__init__(spec, config, **settings)
        padding = resolve_padding(self.config.conv_padding, spec)
        branch = ImageBranch(spec, padding=padding, batch_norm=True)
        # features: conv relu pool drop | conv relu drop | conv relu pool drop | flatten
        f = list(branch.features)
        self.blocks = nn.ModuleList([
            nn.Sequential(*f[0:4]),
            nn.Sequential(*f[4:7]),
            nn.Sequential(*f[7:11]),
            nn.Sequential(f[11], branch.project, branch.out, nn.ReLU()),
        ])
        self.heads = self.make_heads()

    def make_heads(self) -> nn.ModuleList:
        """Block k's auxiliary classifier: 2x2 average pooling and a linear layer (conv blocks), a
        linear layer (the last block, whose head is the prediction)."""
        classes = self.spec.num_classes
        return nn.ModuleList([_conv_head(32, classes), _conv_head(64, classes), _conv_head(128, classes),
                              nn.Linear(HIDDEN, classes)])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            f"block{k}": [*block.parameters(), *head.parameters()]
            for k, (block, head) in enumerate(zip(self.blocks, self.heads, strict=True), start=1)
        }

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit(f"block{k}", (f"block{k}",)) for k in range(1, len(self.blocks) + 1)]

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        with torch.no_grad():  # earlier blocks only provide the input; they get no gradient
            for block in self.blocks[:unit]:
                x = block(x)
        ce = F.cross_entropy(self.heads[unit](self.blocks[unit](x)), y)
        return LossOutput(loss=ce, terms={"ce": ce.detach()})

    def readout_logits(self, x, *, steps=None, deterministic=False, generator=None) -> list[Tensor]:
        out = []
        for block, head in zip(self.blocks, self.heads, strict=True):
            x = block(x)
            out.append(head(x))
        return out

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.readout_logits(x)[-1]
