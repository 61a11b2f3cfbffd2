"""Pause a training run at a known step so a test can send it a real signal there.

The library has no test hook: this module wraps ``Trainer._between_steps`` (in this process, or in
a child started as ``python tests/pausing.py STEPS READY_FILE train ...``, which then runs
``noprop`` with the rest of the arguments). After ``STEPS`` training steps the trainer writes
``READY_FILE`` and waits, up to :data:`LIMIT_S`, until the signal it is sent has been received.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

LIMIT_S = 300.0


def pause_after(steps: int, ready: Path) -> None:
    """Make every Trainer in this process stop after ``steps`` steps and wait for a signal."""
    from noprop.training.trainer import Trainer

    original = Trainer._between_steps

    def between_steps(self: Trainer) -> None:
        if self._steps_run == steps and not ready.exists():
            ready.write_text(str(os.getpid()))
            deadline = time.monotonic() + LIMIT_S
            while not self._stop.requested and time.monotonic() < deadline:
                time.sleep(0.01)
        original(self)

    Trainer._between_steps = between_steps  # type: ignore[method-assign]


if __name__ == "__main__":
    pause_after(int(sys.argv[1]), Path(sys.argv[2]))
    from noprop.cli import main

    sys.exit(main(sys.argv[3:]))
