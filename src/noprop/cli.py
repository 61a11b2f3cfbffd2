"""The ``noprop`` command line: builds the parser from :mod:`noprop.commands` and dispatches.

Every user error (bad option value, missing data, occupied run directory, incompatible
checkpoint) ends with one line on stderr, ``noprop: error: ...``, and exit code 2; no traceback,
and nothing an earlier run wrote is touched.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from noprop._version import __version__
from noprop.commands import COMMAND_MODULES
from noprop.commands.args import EXIT_USAGE, Parser, UsageError
from noprop.data import DataError
from noprop.run import RunDirError, RunFinished
from noprop.saved_run import CheckpointError
from noprop.settings import ConfigError
from noprop.training.interrupt import TrainingInterrupted
from noprop.training.nonfinite import NonFiniteError

USER_ERRORS = (UsageError, ConfigError, DataError, RunDirError, CheckpointError)
EXIT_NONFINITE = 1  # a NaN/inf stopped training (docs/failure-modes.md)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="noprop", description="Train neural networks without back-propagation (NoProp).")
    parser.add_argument("--version", action="version", version=f"noprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"noprop.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except RunFinished as err:  # not a failure: there is nothing left to do
        print(f"noprop: {err}", file=sys.stderr)
        return 0
    except USER_ERRORS as err:
        print(f"noprop: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingInterrupted as err:  # checkpointed; 130 for SIGINT, 143 for SIGTERM
        print(f"noprop: {err}", file=sys.stderr)
        return err.exit_code
    except NonFiniteError as err:
        print(f"noprop: error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print("noprop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
