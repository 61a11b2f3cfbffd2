"""The one interface every training method implements: NoProp-DT/CT/FM and every baseline.

The trainer, the benchmark harness, the distributed code and the CLI only ever talk to this
interface, so they never branch on which method they run. A method is an ``nn.Module`` that

* splits its parameters into named *groups*, each of which gets its own optimizer (so an idle
  group never moves through momentum or weight decay);
* lists its *training units*: a local loss plus the groups that loss updates. NoProp-DT has one
  unit per block (``block3`` updates the groups ``block3`` and ``shared``); backprop has a single
  unit that updates everything;
* computes a unit's loss on a batch, and predicts class scores for new inputs.

Its hyperparameters are its own frozen :class:`~noprop.methods.config.MethodConfig`
(``config_class``), kept as ``method.config``: ``NoPropDT(spec, DTConfig(num_blocks=4))``, or
``NoPropDT(spec, num_blocks=4)`` for short.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from noprop.methods.config import MethodConfig
from noprop.spec import DataSpec


@dataclass(frozen=True)
class TrainingUnit:
    """A local loss and the parameter groups one optimisation step on it updates."""

    name: str
    groups: tuple[str, ...]


@dataclass
class LossOutput:
    """A unit's scalar loss (to call ``backward`` on) and its named terms, detached, for logging."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module, ABC):
    """A way to train a classifier: parameter groups, local training units, prediction."""

    #: Short name used on the command line and in results (``dt``, ``backprop``, ...).
    name: ClassVar[str]
    #: The paper's optimizer for this method (``adamw`` or ``adam``).
    default_optimizer: ClassVar[str] = "adamw"
    #: The dataclass of this method's hyperparameters.
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: Run settings this method needs on a dataset when the run leaves them unset, on top of the
    #: dataset's budget (``RunConfig.resolved``): e.g. NoProp-CT trains one block per batch and
    #: needs more epochs on the tiny digits than NoProp-DT's T blocks per batch.
    default_budgets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Optimizer steps per training unit that a budget sized for a user's data aims at
    #: (``config.sized_budget``), and below which a finished run is told it may not have learned.
    steps_to_learn: ClassVar[int] = 1000
    #: What the method claims to be local in (``noprop check-locality``, docs/locality.md):
    #: ``isolated``, a unit's loss reads no other block (NoProp); ``chained``, block k trains on
    #: block k-1's output but no gradient crosses blocks (layer-wise learning); ``targets``, block k's
    #: loss reads values of any block (its input, a target from above) but no gradient crosses
    #: blocks (target propagation, counter-current learning).
    locality_forward: ClassVar[str] = "isolated"
    #: Groups every unit may train (a head, an embedding); ``None``: the group called ``shared`` and
    #: every group that two or more units name.
    locality_shared_groups: ClassVar[tuple[str, ...] | None] = None
    #: Whether ``predict_logits`` draws noise from its ``generator`` (a sampler): then a pass is one
    #: draw, and class probabilities average several (``noprop.inference.probability_passes``).
    stochastic_prediction: ClassVar[bool] = False

    def __init__(self, spec: DataSpec, config: MethodConfig | None = None, **settings: Any) -> None:
        super().__init__()
        self.spec = spec
        self.config = self.make_config(config, settings)

    @classmethod
    def make_config(cls, config: MethodConfig | None, settings: dict[str, Any]) -> MethodConfig:
        """``config`` (default: the config class's defaults) with ``settings`` applied, checked."""
        if config is None:
            return cls.config_class.build(cls.name, settings)
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__} takes a {cls.config_class.__name__}, "
                            f"got {type(config).__name__}")
        return cls.config_class.build(cls.name, {**config.to_dict(), **settings}) if settings else config

    @abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Disjoint named groups of trainable parameters; each gets its own optimizer."""

    @abstractmethod
    def training_units(self) -> list[TrainingUnit]:
        """The local losses this method trains, in their natural (paper) order."""

    @abstractmethod
    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        """Loss of training unit ``unit`` (an index into :meth:`training_units`) on one batch."""

    @abstractmethod
    def predict_logits(
        self,
        x: Tensor,
        *,
        steps: int | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Class scores, shape ``(batch, C)``; the predicted class is their argmax.

        ``steps`` sets the number of sampler steps where the method has a choice (CT, FM);
        ``deterministic`` drops the sampler's noise; ``generator`` makes the noise reproducible.
        """

    def describe(self) -> dict[str, Any]:
        """Facts about how this method ran, for ``results.json`` (e.g. how fused DT ran its blocks)."""
        return {}

    def prepare(self, train_x: Tensor, train_y: Tensor) -> None:
        """Data-dependent initialisation before training starts (e.g. prototype embeddings)."""

    def readout_logits(
        self,
        x: Tensor,
        *,
        steps: int | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        """Class scores read out after each step of the inference chain (last = prediction).

        Methods without a chain return just the final prediction.
        """
        return [
            self.predict_logits(x, steps=steps, deterministic=deterministic, generator=generator)
        ]

    def unit_parameters(self, unit: int) -> list[nn.Parameter]:
        """All parameters a step on ``unit`` may update."""
        groups = self.parameter_groups()
        return [p for g in self.training_units()[unit].groups for p in groups[g]]
