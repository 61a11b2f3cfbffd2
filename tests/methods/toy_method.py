"""A toy method written the way docs/design.md ("How to add a method") says: this one file, plus
one registry line (``METHODS["toy"] = ToyLocal``). Two linear layers, each trained greedily on
its own head; the second reads the first's output detached, so no gradient crosses units."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.methods.base import LossOutput, Method, TrainingUnit
from noprop.methods.config import MethodConfig
from noprop.settings import setting
from noprop.spec import DataSpec


@dataclass(frozen=True)
class ToyConfig(MethodConfig):
    """The toy's one hyperparameter."""

    width: int = setting(16, "hidden units per layer", positive=True, shape=True)


class ToyLocal(Method):
    """``h1 = relu(W1 x)``, ``h2 = relu(W2 sg(h1))``, each with a linear head; predict from h2."""

    name = "toy"
    config_class = ToyConfig

    def __init__(self, spec: DataSpec, config: ToyConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        w = self.config.width
        self.layers = nn.ModuleList([nn.Linear(spec.input_size, w), nn.Linear(w, w)])
        self.heads = nn.ModuleList([nn.Linear(w, spec.num_classes) for _ in range(2)])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {f"layer{i + 1}": [*self.layers[i].parameters(), *self.heads[i].parameters()]
                for i in range(2)}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit(f"layer{i + 1}", (f"layer{i + 1}",)) for i in range(2)]

    def _features(self, x: Tensor, upto: int) -> Tensor:
        h = x.flatten(1)
        for i in range(upto + 1):
            h = F.relu(self.layers[i](h.detach() if i == upto else h))
        return h

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        ce = F.cross_entropy(self.heads[unit](self._features(x, unit)), y)
        return LossOutput(loss=ce, terms={"ce": ce.detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return self.heads[1](self._features(x, 1))


__all__ = ["ToyConfig", "ToyLocal", "torch"]
