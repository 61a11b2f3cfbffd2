"""NaN and infinity detection for the training loop: which unit, which step, which loss term.

Two modes, chosen by ``RunConfig.skip_nonfinite``:

* stop (default): each step's loss terms are kept on the device and checked in one host sync
  every :data:`CHECK_EVERY` steps and before every checkpoint, so the GPU is never stalled once
  per step. The first bad step is reported exactly; the few steps after it are thrown away with
  the run, and the checkpoint on disk (the last good one) is left as it was.
* skip: the step's loss terms *and* gradient are checked before the optimizer steps (one sync per
  step); a bad batch takes no step and the trainer counts it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from noprop.training.progress import position, warn

#: Steps between two host-side checks in stop mode.
CHECK_EVERY = 50
GRADIENT = "gradient"
INPUT = "input"


class NonFiniteError(RuntimeError):
    """A NaN or infinite loss term, gradient or parameter stopped the run."""


@dataclass(frozen=True)
class Fault:
    """Where a non-finite value appeared: unit name, epoch and step (1-based), and what."""

    unit: str
    epoch: int
    step: int
    steps_in_epoch: int
    what: str

    def describe(self) -> str:
        return (f"non-finite value in training unit {self.unit} at epoch {self.epoch}, "
                f"step {self.step} of {self.steps_in_epoch}: {self.what}")


def step_values(
    terms: Mapping[str, Tensor], x: Tensor, grads: Iterable[Tensor | None] = ()
) -> tuple[list[str], Tensor]:
    """Names and a flat float tensor (on ``x``'s device) of what one step must keep finite.

    The loss terms, ``input`` (NaN if the batch ``x`` holds a NaN/inf, else 0) and, when
    ``grads`` are given, ``gradient`` (the largest absolute entry). No host sync.
    """
    raw = [torch.as_tensor(v, device=x.device).detach() for v in terms.values()]
    if all(v.dim() == 0 for v in raw):
        values = [torch.stack(raw).float()] if raw else []
    else:
        values = [v.float().reshape(-1)[:1] for v in raw]
    names = [*terms, INPUT]
    values.append(torch.where(torch.isfinite(x).all(), 0.0, math.nan).reshape(1).to(x.device))
    present = [g.detach() for g in grads if g is not None]
    if present:
        names.append(GRADIENT)
        norms = torch.stack([torch.linalg.vector_norm(g, math.inf).float() for g in present])
        values.append(norms.max().reshape(1))
    return names, torch.cat(values)


def describe_values(names: list[str], values: Tensor) -> str | None:
    """``None`` if every value is finite, else which: the loss terms first, then the gradient."""
    vals = values.tolist()
    bad = [(n, v) for n, v in zip(names, vals, strict=True) if not math.isfinite(v)]
    if not bad:
        return None
    # name the loss term that went bad (not the total) when there is one, then the gradient
    order = [b for b in bad if b[0] not in ("loss", INPUT, GRADIENT)]
    order += [b for b in bad if b[0] == "loss"] + [b for b in bad if b[0] == GRADIENT]
    if not order:
        return "the input batch holds NaN/inf"
    name, value = order[0]
    text = ("the gradient's largest entry is" if name == GRADIENT else f"loss term {name!r} is") + f" {value}"
    if any(n == INPUT for n, _ in bad):
        text += "; the input batch itself holds NaN/inf"
    others = [n for n, _ in order[1:]]
    return text + (f" (also non-finite: {', '.join(others)})" if others else "")


class PendingChecks:
    """Stop mode: loss values of recent steps, checked together in one host sync."""

    def __init__(self) -> None:
        self._pending: list[tuple[tuple[str, int, int, int], list[str], Tensor]] = []

    def add(self, where: tuple[str, int, int, int], names: list[str], values: Tensor) -> None:
        """Record one step; ``where`` is (unit, epoch, step, steps_in_epoch), all 1-based."""
        self._pending.append((where, names, values))

    def __len__(self) -> int:
        return len(self._pending)

    def first_fault(self) -> Fault | None:
        """The first recorded step with a non-finite value, or ``None``; empties the record."""
        pending, self._pending = self._pending, []
        if not pending or bool(torch.isfinite(torch.cat([v for _, _, v in pending])).all()):
            return None
        for where, names, values in pending:
            what = describe_values(names, values)
            if what is not None:
                return Fault(*where, what=what)
        return None


def nonfinite_tensors(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of floating-point tensors holding a NaN or infinity (one host sync when all are fine)."""
    items = [(n, t) for n, t in named if t.is_floating_point() and t.numel()]
    if not items:
        return []
    ok = torch.stack([torch.isfinite(t).all() for _, t in items])
    if bool(ok.all()):
        return []
    return [n for (n, _), good in zip(items, ok.tolist(), strict=True) if not good]


class FaultWatch:
    """The trainer's NaN/inf handling: steps checked in bulk (stop mode) or one by one (skip mode),
    and every report naming the unit, step and term, and where the last good checkpoint is."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.pending = PendingChecks()
        #: (epoch, step) of the last checkpoint written, ``None`` before the first
        self.saved_at: tuple[int, int] | None = None

    def check_pending(self, steps_per_epoch: int) -> None:
        """Raise :class:`NonFiniteError` for the first recorded bad step (one host sync)."""
        fault = self.pending.first_fault()
        if fault is not None:
            raise NonFiniteError(self.message(fault.describe(), steps_per_epoch))

    @property
    def due(self) -> bool:
        """Whether enough steps wait for the bulk check (stop mode)."""
        return len(self.pending) >= CHECK_EVERY

    def check_model(self, state: Mapping[str, Tensor], at: str, steps_per_epoch: int) -> None:
        """Raise before a checkpoint holding a NaN/inf is written, naming the tensors."""
        bad = nonfinite_tensors(state.items())
        if bad:
            shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            raise NonFiniteError(self.message(f"NaN/inf in the model at {at}: {shown}", steps_per_epoch))

    def message(self, text: str, steps_per_epoch: int) -> str:
        if self.run_dir is None:
            return f"{text}; no run directory, nothing was saved"
        if self.saved_at is None:
            return f"{text}; no checkpoint had been written yet"
        at = position(*self.saved_at, steps_per_epoch)
        return (f"{text}; the last good checkpoint (at {at}) is kept in {self.run_dir}: fix the cause "
                "and resume with --resume, or add --skip-nonfinite to skip such batches")

    @staticmethod
    def skip(params: Iterable[Tensor], buffers: list[Tensor], snapshot: list[Tensor], fault: Fault) -> None:
        """Skip mode: drop the batch's gradients and put the buffers (BatchNorm) back as they were."""
        for p in params:
            p.grad = None
        with torch.no_grad():
            for buffer, saved in zip(buffers, snapshot, strict=True):
                buffer.copy_(saved)
        warn(f"noprop: skipped a batch: {fault.describe()}")
