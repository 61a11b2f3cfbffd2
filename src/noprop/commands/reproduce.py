"""``noprop reproduce NAME|all``: run the paper's experiments and tabulate ours beside the paper's.

    noprop reproduce --list
    noprop reproduce mnist-dt --data-dir DATA/mnist --epochs-scale 0.1
    noprop reproduce all --data-dir DATA              # the twelve experiments of v1 Table 1

Each experiment writes ``<out-dir>/<name>/seed<s>/`` (a normal run directory) and the table
``<out-dir>/reproduction.md`` / ``.json`` is updated after every experiment. Rerunning the same
command resumes unfinished runs from their checkpoints and reuses finished ones.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from noprop.commands.args import (
    UsageError,
    add_config_flags,
    config_overrides,
    positive_float,
    positive_int,
    refuse_multiprocess_flags,
)
from noprop.presets import PAPER_EXPERIMENTS, load_preset, preset_names
from noprop.reproduce import (
    EXPERIMENT_ERRORS,
    REPORT_MD,
    failed_experiment,
    markdown_table,
    plan,
    run_experiment,
    write_report,
)

#: Flags that would turn an experiment into another one; ``noprop train --config`` allows them.
FIXED_FIELDS = ("method", "dataset")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the paper's experiments from the shipped configs; table ours vs. the paper's",
        description="Run shipped experiment configs (see --list) and write a table of our test "
        "accuracy next to the paper's. Flags below --overwrite override any config field.",
    )
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="config names, 'all' (the paper's twelve), or paths to YAML files")
    p.add_argument("--list", action="store_true", help="list the shipped configs and exit")
    p.add_argument("--epochs-scale", dest="epochs_scale", type=positive_float, default=1.0, metavar="F",
                   help="multiply every config's epochs by F (at least 1 epoch); default 1")
    p.add_argument("--train-limit", dest="train_limit", type=positive_int, default=None, metavar="N",
                   help="train on N examples of a seeded shuffle (smoke runs; test set stays whole; "
                        "default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                   help="training seeds, one run each (paper: 3; default: 0)")
    p.add_argument("--inference-runs", dest="inference_runs", type=positive_int, default=1, metavar="K",
                   help="stochastic sampler passes per trained model (paper: 5; default: 1)")
    p.add_argument("--out-dir", dest="out_dir", type=Path, default=Path("runs/reproduce"), metavar="DIR",
                   help="where run directories and reproduction.md go (default runs/reproduce)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over instead of resuming runs already in --out-dir")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_config_flags(p, overrides=True)
    p.set_defaults(handler=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.list:
        print(list_configs())
        return 0
    if not args.names:
        raise UsageError("name one or more configs, or 'all' (noprop reproduce --list shows them)")
    overrides = config_overrides(args)
    refuse_multiprocess_flags(overrides, "noprop reproduce trains each run in one process")
    fixed = [name for name in FIXED_FIELDS if name in overrides]
    if fixed:
        raise UsageError(f"reproduce runs each config's own {' and '.join(fixed)}; "
                         f"use `noprop train --config NAME --{fixed[0]} ...` for another")
    if "seed" in overrides:
        raise UsageError("reproduce trains one run per --seeds value; use --seeds S [S ...], not --seed")
    if args.quiet:
        overrides["progress"] = False
    names = [n for name in args.names for n in (PAPER_EXPERIMENTS if name == "all" else (name,))]
    presets = [load_preset(name) for name in dict.fromkeys(names)]  # unknown names fail up front
    results = []
    for preset in presets:
        config = plan(preset, epochs_scale=args.epochs_scale, overrides=overrides)
        command = command_line(preset.name, args, overrides)
        print(f"reproduce {preset.name}: {config.method} on {config.dataset}, {config.epochs} epochs",
              file=sys.stderr)
        try:
            result = run_experiment(
                preset, config, args.out_dir / preset.name, seeds=args.seeds,
                inference_runs=args.inference_runs, train_limit=args.train_limit,
                overwrite=args.overwrite, command=command,
            )
        except EXPERIMENT_ERRORS as err:
            print(f"reproduce {preset.name}: not run: {err}", file=sys.stderr)
            result = failed_experiment(preset, config, err, command)
        results.append(result)
        write_report([result], args.out_dir)
    print(markdown_table(results), end="")
    print(f"table: {args.out_dir / REPORT_MD}")
    failed = [r for r in results if r.error]
    if failed:
        raise UsageError(f"{len(failed)} of {len(results)} experiment(s) did not run: "
                         + "; ".join(f"{r.name}: {r.error}" for r in failed))
    return 0


def list_configs() -> str:
    """One line per shipped config: name, paper number (one-hot), description."""
    lines = []
    for name in preset_names():
        preset = load_preset(name)
        number = preset.paper.get("onehot")
        paper = f"paper {number.mean:.2f}%" if number else "no paper number"
        lines.append(f"{name:18} {paper:18} {preset.description}")
    return "\n".join(lines)


def command_line(name: str, args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """The command that reruns experiment ``name`` exactly as this invocation ran it."""
    words = ["noprop", "reproduce", name]
    if args.epochs_scale != 1.0:
        words += ["--epochs-scale", f"{args.epochs_scale:g}"]
    if args.train_limit is not None:
        words += ["--train-limit", str(args.train_limit)]
    if args.seeds != [0]:
        words += ["--seeds", *map(str, args.seeds)]
    if args.inference_runs != 1:
        words += ["--inference-runs", str(args.inference_runs)]
    if args.out_dir != Path("runs/reproduce"):
        words += ["--out-dir", str(args.out_dir)]
    for key, value in overrides.items():
        if key == "progress":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)
