"""Sub-commands of ``noprop`` beyond train/evaluate, one module each.

Each module listed in :data:`COMMAND_MODULES` defines ``register(subparsers) -> None``, which adds
its parser and sets ``handler=<function(args) -> int>``. Handlers raise the library's user-error
exceptions (or :class:`noprop.cli.UsageError`) for bad input; the CLI turns those into a one-line
message and exit code 2.
"""

from __future__ import annotations

#: Module names under ``noprop.commands``; add yours here.
COMMAND_MODULES: tuple[str, ...] = ("reproduce", "data", "bench", "plot", "predict", "export")
