"""Argument helpers shared by every command: the one-line-error parser, typed values, the
flags generated from the configuration fields, and the arguments and output of the commands that
measure a trained run and write a report (``noprop analyze``, ``noprop calibration``).

Each :func:`~noprop.settings.setting` field of :class:`~noprop.config.RunConfig` and of every
method's config becomes one flag (``num_blocks`` -> ``--num-blocks``, plus ``-T``); its help is the
field's help with its default (per method where methods differ). Flag defaults are suppressed, so
only the flags given override a config file; whether the chosen method takes them is decided by
``RunConfig`` itself, with the same message as for YAML and Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, Protocol

from noprop.config import RunConfig
from noprop.data import DATASETS, DataError, check_dataset
from noprop.device import check_device
from noprop.methods import METHODS
from noprop.settings import ConfigError, check_value, coerce, field_type, setting_fields

EXIT_USAGE = 2


class UsageError(Exception):
    """Raised by a command for a one-line error and exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line: ``noprop train: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def check_steps(steps: int | list[int] | None, config: RunConfig, what: str | Path,
                flag: str = "--steps") -> None:
    """Refuse a sampler step count (``flag``) for a run or model ``what`` whose method has none:
    DT runs its T blocks, the baselines have no sampler."""
    if steps is not None and config.sampler_steps is None:
        raise UsageError(f"{flag} sets the sampler steps of CT and FM models; {what} is a "
                         f"{config.method} model, which has none")


def refuse_negative(value: int, flag: str) -> None:
    """Refuse a count ``flag`` below 0 (0 is allowed: it switches the part off)."""
    if value < 0:
        raise UsageError(f"{flag} must be 0 or more, got {value}")


def dataset_name(text: str) -> str:
    """A known dataset name or a path (.npz file, .csv table, image folder); unknown names list the
    known ones."""
    try:
        return check_dataset(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


#: Fields whose command-line value needs more than the field's type and range.
SPECIAL_TYPES: dict[str, Callable[[str], Any]] = {"dataset": dataset_name}
#: Help that names what only this floor knows (the data catalogue).
SPECIAL_HELP = {"dataset": f"{', '.join(DATASETS)}, or a .npz file, .csv table or image folder",
                "method": "training method"}


def _value_type(owner: type, f: dataclasses.Field) -> Callable[[str], Any]:
    base, _ = field_type(owner, f.name)

    def parse(text: str) -> Any:
        try:
            value = coerce(f.name, base, text)
            check_value(f, base, value)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{f.name} ")) from None
        return value

    parse.__name__ = base.__name__  # argparse names the type in "invalid <type> value"
    return parse


def _add_flag(p: argparse.ArgumentParser, owner: type, f: dataclasses.Field, help_text: str) -> None:
    meta = f.metadata
    names = [*meta["flags"], "--" + f.name.replace("_", "-")]
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
    base, _ = field_type(owner, f.name)
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = SPECIAL_TYPES.get(f.name) or _value_type(owner, f)
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        elif f.name == "method":
            kwargs["choices"] = sorted(METHODS)  # the registry now, a method added at run time too
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
    p.add_argument(*names, **kwargs)


def _without_default(help_text: str) -> str:
    """``help_text`` without the built-in default it names (``(default: ...)``, ``; default: ...``)."""
    text = re.sub(r"\s*\(default:.*\)$", "", help_text, flags=re.S)
    return re.sub(r";\s*default:[^()]*(\([^()]*\)[^()]*)*\)", ")", text, flags=re.S)


def _with_default(help_text: str, default: Any) -> str:
    if default is None or "default" in help_text:
        return help_text
    shown = ("on" if default else "off") if isinstance(default, bool) else default
    return f"{help_text} (default: {shown})"


def method_setting_fields() -> dict[str, list[tuple[str, type, dataclasses.Field]]]:
    """Every method setting, with ``(method, config class, field)`` for each method that takes it."""
    out: dict[str, list[tuple[str, type, dataclasses.Field]]] = {}
    for name, cls in METHODS.items():
        for f in setting_fields(cls.config_class):
            out.setdefault(f.name, []).append((name, cls.config_class, f))
    return out


def _method_help(takers: list[tuple[str, type, dataclasses.Field]]) -> str:
    f = takers[0][2]
    defaults = {m: fld.default for m, _, fld in takers}
    if len(set(map(repr, defaults.values()))) == 1:
        shown = _with_default("", f.default).strip(" ()") or "default: none"
        where = f"{', '.join(defaults)}; {shown}"
    else:
        where = "default: " + ", ".join(f"{m} {d}" for m, d in defaults.items())
    return f"{f.metadata['help']} ({where})"


def add_config_flags(p: argparse.ArgumentParser, *, method_flag: bool = True,
                     overrides: bool = False) -> None:
    """Flags for every RunConfig field and every method setting; ``method_flag=False`` omits
    ``--method`` (for commands that choose methods otherwise); ``overrides``: the flags override a
    config's fields (noprop reproduce), so their help names no built-in default."""
    for f in setting_fields(RunConfig):
        if not f.metadata["cli"] or (f.name == "method" and not method_flag):
            continue
        help_text = SPECIAL_HELP.get(f.name, f.metadata["help"])
        if overrides:
            help_text = _without_default(help_text) + " (default: the config's)"
        _add_flag(p, RunConfig, f, _with_default(help_text, f.default))
    group = p.add_argument_group("method settings", "hyperparameters of the methods that take them; "
                                 "a method refuses the ones it does not take")
    for takers in method_setting_fields().values():
        _, owner, f = takers[0]
        _add_flag(group, owner, f, _method_help(takers))


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration settings given on the command line (run and method alike)."""
    names: Iterable[str] = {f.name for f in setting_fields(RunConfig)} | set(method_setting_fields())
    return {k: v for k, v in vars(args).items() if k in names}


#: Run settings that split work between processes (docs/distributed.md): with one they do nothing.
MULTIPROCESS_SETTINGS = ("parallel", "shared_sync_every")


def refuse_multiprocess_flags(overrides: dict[str, Any], how: str) -> None:
    """Refuse ``--parallel`` and ``--shared-sync-every`` where one process runs; ``how`` says
    what would run several (a flag given and ignored would read as if it had taken effect)."""
    flags = [f"--{k.replace('_', '-')}" for k in MULTIPROCESS_SETTINGS if k in overrides]
    if flags:
        raise UsageError(f"{' and '.join(flags)} split the work between processes; {how}")


# -- the commands that measure a trained run and write a report -----------------------------------


class RunReport(Protocol):
    """What such a command prints and writes (``ChainAnalysis``, ``CalibrationReport``)."""

    def table(self) -> str: ...

    def write(self, out_dir: str | Path, *, figure: bool = True) -> list[Path]: ...


def add_run_input_args(p: argparse.ArgumentParser, *, samples_help: str) -> None:
    """The run measured and its test data: ``path``, ``--data-dir``, ``--samples`` (``samples_help``)."""
    p.add_argument("path", type=Path, help="run directory or checkpoint file (dt, ct or fm)")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="data root or dataset folder (default: the run's)")
    p.add_argument("--samples", type=positive_int, default=None, metavar="N", help=samples_help)


def add_report_output_args(p: argparse.ArgumentParser, *, files: str) -> None:
    """Where it runs and what it writes: ``--device``, ``--out`` (for ``files``), ``--no-figure``,
    ``-q``."""
    p.add_argument("--device", type=check_device, default="cpu", metavar="DEVICE",
                   help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"where to write {files} (default: the run directory)")
    p.add_argument("--no-figure", dest="figure", action="store_false", help="write no figure")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def existing_run_path(args: argparse.Namespace) -> Path:
    """``args.path``, refused in one line if it does not exist."""
    if not args.path.exists():
        raise UsageError(f"{args.path} does not exist")
    return args.path


def progress_printer(args: argparse.Namespace, command: str) -> Callable[[str], None] | None:
    """Progress lines ``noprop COMMAND: ...`` on stderr, or ``None`` with ``--quiet``."""
    if args.quiet:
        return None
    return lambda line: print(f"noprop {command}: {line}", file=sys.stderr)


def print_and_write_report(report: RunReport, args: argparse.Namespace) -> int:
    """Print the report's table, write its files to ``--out`` (default: the run directory) and
    print their paths; the command's exit code."""
    print(report.table())
    out = args.out or (args.path if args.path.is_dir() else args.path.parent)
    for path in report.write(out, figure=args.figure):
        print(path)
    return 0
