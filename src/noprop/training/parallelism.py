"""How one training process shares the work with others: the hooks the trainer calls.

The trainer talks to other processes only through these hooks. They speak of training units and
parameter groups, never of a method, so the loop stays method-agnostic; this default trains alone,
and :mod:`noprop.distributed.parallelism` implements data- and block-parallel training on top.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from noprop.methods.base import Method


class Parallelism:
    """How this process shares training with other processes; this default trains alone."""

    def units(self, num_units: int) -> list[int]:
        """The training units this process steps (default: all of them, in order)."""
        return list(range(num_units))

    def shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """This process's share of a global batch (default: all of it)."""
        return x, y

    def begin_epoch(self, method: Method) -> None:
        """Called when an epoch (or the rest of a resumed one) starts, before its first step."""

    def sync_gradients(self, method: Method, groups: tuple[str, ...]) -> None:
        """Called between a unit's backward and its optimizer steps (e.g. to all-reduce)."""

    def after_step(self, method: Method) -> None:
        """Called after every training step."""

    def end_epoch(self, method: Method, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Called at the end of each epoch, inside its timing: make this process's model whole."""

    def describe(self) -> dict[str, Any]:
        """Extra entries for ``results.json``."""
        return {}
