"""Local learning with a prediction loss plus similarity matching ("predsim").

Nøkland & Eidnes, "Training Neural Networks with Local Error Signals", ICML 2019. Each block is
trained only by its own loss

    L_k = (1 - beta) * L_pred + beta * L_sim

* ``L_pred``: cross-entropy of a small local linear classifier on the block's output (conv blocks:
  average-pooled to 2x2 first, as in ``local``);
* ``L_sim``: the mean squared difference between the similarity matrix of the block's activations
  (after a local 3x3 conv on conv blocks) and the similarity matrix of the one-hot labels, over the
  batch. A similarity matrix is the cosine similarity of the row-centred, flattened vectors.

The network is ``local``'s: the paper's conv stack cut into four blocks, so the two compare
learning rules on one architecture. Block k trains on block k-1's *detached* output
(``locality_forward = "chained"``); the prediction is the last block's local classifier.

Choices the paper leaves open for this network (ours):

* the network: the paper trains VGG-like nets with one loss per conv layer; we keep ``local``'s
  four blocks (conv / conv / conv / FC(256)-BN-ReLU) and their dropout;
* the classifier's input: 2x2 average pooling of conv outputs (the paper pools to a fixed feature
  count), the FC block's output as is;
* the similarity features of conv blocks: a 3x3 conv (same channels, padding 1) on the block's
  output, each channel summarised by its standard deviation over positions (as in the authors'
  public code); the FC block uses its output directly;
* ``beta = 0.99`` (the paper's), optimiser and learning rate: the run's (AdamW by default; the
  paper used Adam with a schedule and no label smoothing here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.methods.base import LossOutput
from noprop.methods.config import ConvPaddingConfig
from noprop.methods.local import LocalLearning
from noprop.settings import ConfigError, setting
from noprop.spec import DataSpec


@dataclass(frozen=True)
class PredSimConfig(ConvPaddingConfig):
    predsim_beta: float = setting(0.99, "predsim: weight of the similarity-matching loss, in [0, 1] "
                                  "(1 - beta weighs the local classifier's cross-entropy)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= float(self.predsim_beta) <= 1.0:
            raise ConfigError(f"predsim_beta must be in [0, 1]; got {self.predsim_beta}")


def similarity_matrix(h: Tensor) -> Tensor:
    """Cosine similarity between the row-centred rows of ``h`` (conv maps: per-channel std first)."""
    if h.dim() == 4:
        h = h.flatten(2).std(dim=2) if h.shape[2] * h.shape[3] > 1 else h.flatten(1)
    h = h.flatten(1)
    h = h - h.mean(dim=1, keepdim=True)
    h = h / (h.norm(dim=1, keepdim=True) + 1e-8)
    return (h @ h.T).clamp(-1, 1)


class PredSim(LocalLearning):
    """``local``'s four blocks, each trained by its classifier's loss plus similarity matching."""

    name = "predsim"
    config_class = PredSimConfig

    def __init__(self, spec: DataSpec, config: PredSimConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        # the similarity branch of each conv block; the FC block's output is used directly
        self.sim_convs = nn.ModuleList([
            nn.Conv2d(c, c, 3, padding=1) for c in (32, 64, 128)
        ] + [nn.Identity()])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().parameter_groups()
        for k, conv in enumerate(self.sim_convs, start=1):
            groups[f"block{k}"].extend(conv.parameters())
        return groups

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        with torch.no_grad():  # earlier blocks only provide the input; they get no gradient
            for block in self.blocks[:unit]:
                x = block(x)
        h = self.blocks[unit](x)
        pred = F.cross_entropy(self.heads[unit](h), y)
        target = similarity_matrix(F.one_hot(y, self.spec.num_classes).to(h.dtype))
        sim = F.mse_loss(similarity_matrix(self.sim_convs[unit](h)), target)
        beta = float(self.config.predsim_beta)
        loss = (1 - beta) * pred + beta * sim
        return LossOutput(loss=loss, terms={"ce": pred.detach(), "sim": sim.detach()})
