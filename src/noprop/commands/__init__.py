"""Sub-commands of ``noprop``, one module each; shared argument helpers in :mod:`noprop.commands.args`.

Each module listed in :data:`COMMAND_MODULES` defines ``register(subparsers) -> None``, which adds
its parser and sets ``handler=<function(args) -> int>``. Handlers raise the library's user-error
exceptions (or :class:`noprop.commands.args.UsageError`) for bad input; the CLI turns those into a one-line
message and exit code 2.
"""

from __future__ import annotations

#: Module names under ``noprop.commands``; add yours here.
COMMAND_MODULES: tuple[str, ...] = (
    "train", "evaluate", "reproduce", "data", "bench", "plot", "predict", "export", "check_locality",
    "analyze", "calibration",
)
