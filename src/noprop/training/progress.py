"""What a training run tells the person watching it: the model line, the progress bar, positions.

The bar is for terminals. Piped to a file, a plain line now and then stands in for it (a first
MNIST epoch is ten minutes of silence otherwise): ``epoch 1: step 200/938 (21%), loss 1.234, 410
samples/s``, once ``PLAIN_EVERY_SECONDS`` and ``PLAIN_EVERY_FRACTION`` of the epoch have passed
since the last one. The loss is read (a host sync on a GPU) only when a line is due.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from noprop.config import FEW_STEPS_FRACTION
from noprop.methods.base import Method

PLAIN_EVERY_SECONDS = 60.0
PLAIN_EVERY_FRACTION = 0.1
#: On a terminal the bar's loss is refreshed every this many steps.
BAR_LOSS_EVERY = 50


def progress_bar(*, total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    """A bar over an epoch's steps, shown only when ``enabled`` and stderr is a terminal."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not (enabled and _is_terminal()),
                leave=False, dynamic_ncols=True, mininterval=1.0)


class EpochProgress:
    """An epoch's progress: the bar on a terminal, else a plain line now and then; nothing when
    not ``enabled`` (``-q``, ``progress: false``)."""

    def __init__(self, *, epoch: int, epochs: int, total: int, initial: int, rows: int,
                 enabled: bool) -> None:
        self.epoch, self.total, self.rows = epoch, total, rows
        self.terminal = enabled and _is_terminal()
        self.plain = enabled and not self.terminal
        self.bar = progress_bar(total=total, initial=initial, desc=f"epoch {epoch}/{epochs}",
                                enabled=self.terminal)
        self.start_step, self.start = initial, time.monotonic()
        self.last_step, self.last = initial, self.start

    def update(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def wants_loss(self, step: int) -> bool:
        """Whether a line (or the bar's loss) is due after ``step`` steps of the epoch."""
        if self.terminal:
            return step % BAR_LOSS_EVERY == 0
        if not self.plain:
            return False
        return (step - self.last_step >= PLAIN_EVERY_FRACTION * self.total
                and time.monotonic() - self.last >= PLAIN_EVERY_SECONDS)

    def show_loss(self, step: int, loss: float, unit: str) -> None:
        if self.terminal:
            self.bar.set_postfix(unit=unit, loss=f"{loss:.3f}")
            return
        now = time.monotonic()
        rate = self.rows * (step - self.start_step) / self.total / max(now - self.start, 1e-9)
        say(f"epoch {self.epoch}: step {step}/{self.total} ({100 * step // self.total}%), "
            f"loss {loss:.3f}, {rate:.0f} samples/s")
        self.last_step, self.last = step, now

    def close(self) -> None:
        self.bar.close()


def position(epoch: int, step: int, steps_per_epoch: int) -> str:
    """Where training stands, for messages: ``epoch`` finished epochs plus ``step`` steps."""
    if step:
        return f"epoch {epoch + 1}, step {step} of {steps_per_epoch}"
    return f"the end of epoch {epoch}" if epoch else "the start"


def model_summary(method: Method) -> str:
    """One line: parameters per group (equal-sized consecutive groups folded) and the total."""
    counts = [(name, sum(p.numel() for p in params)) for name, params in method.parameter_groups().items()]
    parts: list[str] = []
    i = 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1][1] == counts[i][1]:
            j += 1
        name, n = counts[i]
        parts.append(f"{name}..{counts[j][0]} {n:,} each" if j > i else f"{name} {n:,}")
        i = j + 1
    total = sum(p.numel() for p in method.parameters())
    return f"model {type(method).__name__}: {'; '.join(parts)}; total {total:,} parameters"


def say(line: str) -> None:
    """One line for the person watching, without breaking a progress bar."""
    tqdm.write(line)


def warn(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def _is_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def budget_warnings(unit_steps: dict[str, int], steps_to_learn: int) -> list[str]:
    """End-of-run lines for units that took no step (a time budget cut a sequential epoch) or far
    fewer than the method needs to learn (``FEW_STEPS_FRACTION`` of its ``steps_to_learn``)."""
    lines = []
    untrained = [name for name, n in unit_steps.items() if not n]
    if untrained:
        lines.append(f"warning: the time budget ended before {len(untrained)} of {len(unit_steps)} units "
                     f"took a step ({', '.join(untrained)}), so predictions are poor; with "
                     "--max-train-seconds use --block-order interleaved (every block steps on every batch)")
    fewest = min(unit_steps.values(), default=0)
    few = int(FEW_STEPS_FRACTION * steps_to_learn)
    if 0 < fewest < few:
        lines.append(f"warning: each training unit took only {fewest} optimizer steps (this method needs "
                     f"~{steps_to_learn:,} to learn; {few} at the very least), so predictions are "
                     "likely poor; train longer with --epochs (or a smaller --batch-size)")
    return lines
