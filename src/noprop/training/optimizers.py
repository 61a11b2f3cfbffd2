"""One optimizer per parameter group, and the learning rate each step runs at.

A group that is not being trained never moves: it has its own optimizer, which only a step on a
unit that names the group steps (no momentum, no weight decay in between). The lr of a step is the
configured lr times :func:`noprop.lr_schedule.lr_factor` at the position of that step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from noprop.config import RunConfig
from noprop.lr_schedule import lr_factor
from noprop.methods.base import Method

OPTIMIZER_CLASSES = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def make_optimizers(method: Method, config: RunConfig, *, capturable: bool = False
                    ) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per non-empty parameter group, named as the group.

    ``capturable``: their step can be recorded in a CUDA graph (:mod:`noprop.training.graphs`).
    """
    kind = OPTIMIZER_CLASSES[config.optimizer]
    return {
        name: kind(params, lr=config.lr, weight_decay=config.weight_decay, fused=True, capturable=capturable)
        for name, params in method.parameter_groups().items()
        if params
    }


def optimizer_state(optimizers: Iterable[torch.optim.Optimizer]) -> list[Tensor]:
    """Every tensor of the optimizers' state (Adam's moments and step counts)."""
    return [v for opt in optimizers for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]


def set_lr(param_group: dict[str, Any], lr: float) -> None:
    """Set one optimizer param group's lr. A tensor lr (CUDA graphs read it by its address,
    :mod:`noprop.training.graphs`) is written in place, without a host sync."""
    current = param_group["lr"]
    if isinstance(current, Tensor):
        current.fill_(lr)
    else:
        param_group["lr"] = lr


def plain_lrs(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer ``state_dict`` with tensor lrs as floats, so a checkpoint written with CUDA
    graphs loads into any optimizer."""
    groups = [{**g, "lr": float(g["lr"])} if isinstance(g["lr"], Tensor) else g
              for g in optimizer_state["param_groups"]]
    return {**optimizer_state, "param_groups": groups}


def restore_optimizers(optimizers: dict[str, torch.optim.Optimizer], saved: dict[str, dict[str, Any]],
                       config: RunConfig) -> None:
    """Load each optimizer's saved state; the lr and weight decay given now apply from here on,
    and whether steps are recorded in CUDA graphs stays this run's choice."""
    for name, opt in optimizers.items():
        made_capturable = [group["capturable"] for group in opt.param_groups]
        opt.load_state_dict(saved[name])
        for group, capturable in zip(opt.param_groups, made_capturable, strict=True):
            set_lr(group, config.lr)
            group["weight_decay"], group["capturable"] = config.weight_decay, capturable


def step_lr(config: RunConfig, epoch: int, step: int, steps_per_epoch: int, units: int) -> float:
    """The lr of step ``step`` (0-based) of epoch ``epoch + 1``. In the sequential order each of the
    ``units`` passes is its unit's own epoch, so every block warms up and decays alike."""
    if config.block_order == "sequential":
        per_unit = steps_per_epoch // units
        within = (step % per_unit + 1) / per_unit
    else:
        within = (step + 1) / steps_per_epoch
    return config.lr * lr_factor(config.lr_schedule, epoch + within, config.epochs, config.warmup_epochs)
