"""What a training run tells the person watching it: the model line, the progress bar, positions.

The bar is for terminals: piped to a file, the per-epoch lines alone are written.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from noprop.methods.base import Method


def progress_bar(*, total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    """A bar over an epoch's steps, shown only when ``enabled`` and stderr is a terminal."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not (enabled and _is_terminal()),
                leave=False, dynamic_ncols=True, mininterval=1.0)


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
