"""Forward-Forward (Hinton 2022, "The Forward-Forward Algorithm: Some Preliminary Investigations").

What we follow from the paper's supervised MNIST experiment (Sec. 3.3):

* the label is part of the input: the first ``C`` values of the flattened image are replaced by
  a one-hot code of a label (MNIST's top border is blank, so no information is lost there);
* a stack of fully connected ReLU layers (the paper: 4 hidden layers of 2000 units);
* each layer's *goodness* is the sum of its squared activities, and
  ``p(positive) = sigmoid(goodness - theta)``; the layer's local loss is the logistic loss that
  pushes goodness above ``theta`` for positive data (image, true label) and below it for negative
  data (image, wrong label);
* between layers the activity vector is normalised in length, so a layer cannot read the previous
  layer's goodness and must use the orientation; no gradient crosses layers;
* prediction: run the net once per candidate label and pick the label with the highest goodness
  accumulated over all hidden layers but the first.

Choices where the paper is silent or we simplify (docs/methods.md, "Forward-Forward against
Hinton's MNIST setup"):

* negative labels: ``ff_negatives="uniform"`` (default) draws them uniformly among the wrong
  classes; ``"hard"`` draws them from the network's own opinion, in proportion to the probability
  it gives (image, wrong label) of being positive, averaged over the layers that vote;
* ``theta`` is the layer width, i.e. the mean squared activity is pushed above/below 1; the length
  normalisation rescales to unit root-mean-square (mean square 1 per input value) rather than unit
  length, which keeps inputs O(1) whatever the width; the image itself is normalised the same way;
* all layers learn simultaneously on every batch (as in the paper), so the method has ONE
  training unit whose loss is the sum of the per-layer losses; inputs are detached between
  layers, so each layer's gradient comes from its own loss only, and every layer has its own
  parameter group and optimizer;
* goodness is summed in float32 whatever the autocast: near ``theta = 2000`` a bfloat16 sum moves
  in steps of 8-16, which flattens the logistic loss around the threshold.
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

#: How the wrong label of a negative example is drawn.
NEGATIVE_LABELS = ("uniform", "hard")


@dataclass(frozen=True)
class FFConfig(layer_stack_config(num_layers=4, layer_width=2000)):
    """The network of Forward-Forward; the defaults are Hinton's MNIST net, 4 hidden layers of 2000 ReLUs."""

    ff_negatives: str = setting("uniform", "ff: negative labels uniform among the wrong classes, or hard: "
                                "drawn in proportion to the network's own probability that the pair "
                                "is positive (Hinton 2022)", choices=NEGATIVE_LABELS)


def embed_label(x: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Flattened images with their first ``num_classes`` values replaced by ``one_hot(labels)``."""
    flat = x.reshape(x.shape[0], -1).clone()
    flat[:, :num_classes] = F.one_hot(labels, num_classes).to(flat.dtype)
    return flat


def rms_normalise(h: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale each row to unit root-mean-square: only the direction of the activity vector remains."""
    return h / (h.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


def goodness(h: Tensor) -> Tensor:
    """Sum of squared activities per example, shape ``(batch,)``, in float32."""
    return h.float().pow(2).sum(dim=1)


class ForwardForward(Method):
    """A ReLU MLP trained layer by layer with Hinton's Forward-Forward local losses."""

    name = "ff"
    locality_forward = "chained"  # layer k trains on layer k-1's (detached, normalised) output
    default_optimizer = "adam"
    config_class = FFConfig
    config: FFConfig

    def __init__(self, spec: DataSpec, config: FFConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        if spec.input_size <= spec.num_classes:
            raise ValueError(
                f"Forward-Forward writes the label into the first {spec.num_classes} input values; "
                f"images of {spec.input_size} values are too small"
            )
        sizes = self.config.layer_sizes(spec.input_size)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {f"layer{i}": list(layer.parameters()) for i, layer in enumerate(self.layers, start=1)}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit("layers", tuple(self.parameter_groups()))]

    def activities(self, x: Tensor, labels: Tensor) -> list[Tensor]:
        """Each hidden layer's ReLU activity for images ``x`` shown with ``labels``.

        The input of every layer is detached: no gradient ever crosses a layer.
        """
        h = embed_label(x, labels, self.spec.num_classes)
        out = []
        for layer in self.layers:
            h = F.relu(layer(rms_normalise(h.detach())))
            out.append(h)
        return out

    def negative_labels(self, x: Tensor, y: Tensor) -> Tensor:
        """A wrong label per example: uniform, or (hard) in proportion to ``p(positive)`` of the pair."""
        classes = self.spec.num_classes
        if self.config.ff_negatives == "uniform":
            offset = torch.randint(1, classes, y.shape, device=y.device)
            return (y + offset) % classes  # uniform over the other classes
        with torch.no_grad():
            weights = self.positive_probability(x) + 1e-12  # never all zero
            weights.scatter_(1, y[:, None], 0.0)
            return torch.multinomial(weights, 1).squeeze(1)

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        wrong = self.negative_labels(x, y)
        losses = []
        for pos, neg in zip(self.activities(x, y), self.activities(x, wrong), strict=True):
            theta = pos.shape[1]
            losses.append(F.softplus(theta - goodness(pos)).mean() + F.softplus(goodness(neg) - theta).mean())
        loss = torch.stack(losses).sum()
        return LossOutput(loss=loss, terms={f"layer{i}": v.detach() for i, v in enumerate(losses, start=1)})

    def voting_activities(self, x: Tensor) -> list[Tensor]:
        """Activities of the layers that vote, for every image shown with every label: each
        ``(batch * C, width)``, image-major (the paper skips the first hidden layer)."""
        batch, classes = x.shape[0], self.spec.num_classes
        labels = torch.arange(classes, device=x.device).repeat(batch)
        acts = self.activities(x.repeat_interleave(classes, dim=0), labels)
        return acts[1:] if len(acts) > 1 else acts

    def positive_probability(self, x: Tensor) -> Tensor:
        """``sigmoid(goodness - theta)`` of (image, label) averaged over the voting layers, ``(batch, C)``."""
        acts = self.voting_activities(x)
        p = torch.stack([torch.sigmoid(goodness(h) - h.shape[1]) for h in acts]).mean(0)
        return p.reshape(x.shape[0], self.spec.num_classes)

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        """Accumulated goodness per candidate label, shape ``(batch, C)``."""
        acts = self.voting_activities(x)
        return torch.stack([goodness(h) for h in acts]).sum(0).reshape(x.shape[0], self.spec.num_classes)
