"""Learning-rate schedules: a factor on the configured lr as a function of training progress.

Progress ``p`` is counted in epochs of the unit being stepped: in the sequential order
(Algorithm 1) every block has a pass of its own per epoch, so block T warms up and decays just
as block 1 does. With ``E`` epochs and ``w`` warm-up epochs:

* warm-up: ``factor = p / w`` for ``p < w`` (linear from 0; the first step uses ``1 / (w * steps)``);
* ``constant``: 1 afterwards; ``cosine``: ``(1 + cos(pi (p - w) / (E - w))) / 2``, from 1 to 0.

The factor is a pure function of the position in training, so a resumed run continues exactly.
The paper trains at a constant lr (v1 Table 3): ``constant`` without warm-up is the default.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, progress: float, epochs: int, warmup_epochs: float = 0.0) -> float:
    """The multiplier of the base lr after ``progress`` epochs of ``epochs`` (see module docstring)."""
    if warmup_epochs > 0 and progress < warmup_epochs:
        return progress / warmup_epochs
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = epochs - warmup_epochs
        done = min(max((progress - warmup_epochs) / span, 0.0), 1.0) if span > 0 else 1.0
        return 0.5 * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
