"""Ctrl-C and SIGTERM during training: turn the signal into a request the loop honours at a step boundary.

Stopping between two steps (never inside one) lets the trainer checkpoint a consistent state, so
``--resume`` continues exactly where the run stopped. A second signal while the first is still
pending raises :class:`KeyboardInterrupt` at once: the user insists, and the checkpoint on disk
is still whole because every write is atomic.
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after checkpointing; ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, signum: int, run_dir: Path | None, where: str | None) -> None:
        """``where``: the position of the checkpoint left in ``run_dir`` (``None``: there is none)."""
        self.signum = signum
        self.run_dir = run_dir
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if run_dir is None:
            super().__init__(f"interrupted by {name}; no run directory, nothing was saved")
        elif where is None:
            super().__init__(f"interrupted by {name} before the first checkpoint; nothing to resume")
        else:
            super().__init__(f"interrupted by {name}; checkpoint at {where}; resume with: "
                             f"noprop train --run-dir {shlex.quote(str(run_dir))} --resume")


class StopRequest:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`signum` instead of killing the process.

    Only the main thread may install signal handlers; elsewhere (a worker thread, a notebook
    runner) this is a no-op and signals behave as usual.
    """

    def __init__(self, on_stop: Callable[[int], object] | None = None) -> None:
        """``on_stop``: called with the signal number on the first signal (e.g. to pass it on)."""
        self.signum: int | None = None
        self._on_stop = on_stop
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self._on_stop is not None:
            self._on_stop(signum)
