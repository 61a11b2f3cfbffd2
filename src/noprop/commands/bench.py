"""``noprop bench``: methods side by side on one dataset, one budget, one seed, in fresh processes.

    noprop bench --methods dt backprop cnn ff local --dataset mnist --data-dir DATA/mnist \\
        --max-train-seconds 240 --repeats 2 --out runs/bench-mnist
    noprop plot runs/bench-mnist

Writes ``bench.json`` and ``bench.md`` (test accuracy mean ± std over repeats, train seconds,
samples per second, training peak memory, parameter count, ratios to ``--baseline``) in ``--out``.
Every other flag sets that RunConfig field for every method (e.g. ``-T 10 --batch-size 128``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.bench import BenchError, BenchPlan, run_bench
from noprop.commands.args import (
    UsageError,
    add_config_flags,
    config_overrides,
    positive_int,
    refuse_multiprocess_flags,
)
from noprop.config import RunConfig
from noprop.data import check_data_dir
from noprop.methods import METHODS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark several methods on one dataset and budget (bench.json, bench.md)",
        description="Train each method (times --repeats) in its own process on the same data and budget; "
        "tabulate accuracy, time, throughput, peak training memory and ratios to the baseline.",
    )
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD",
                   help=f"methods to compare ({', '.join(sorted(METHODS))})")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="runs per method, seeds seed..seed+N-1 (default: 1)")
    p.add_argument("--baseline", default="backprop", help="method the ratios are taken to (default backprop)")
    p.add_argument("--train-subset", dest="train_subset", type=positive_int, default=None,
                   help="train on a fixed random N examples (the same for every method; "
                        "default: all)")
    p.add_argument("--test-subset", dest="test_subset", type=positive_int, default=None,
                   help="evaluate on a fixed random N test examples (default: all)")
    p.add_argument("--out", type=Path, required=True,
                   help="bench directory to write; run again, it keeps finished runs and resumes a "
                        "stopped one")
    p.add_argument("--overwrite", action="store_true",
                   help="replace runs in --out whose settings differ from this bench's (default: refuse)")
    p.add_argument("--for", dest="method_settings", nargs="+", action="append", default=[],
                   metavar="METHOD SETTING=VALUE",
                   help="settings for one method only, over the shared flags: --for fg lr=0.01 "
                        "--for ct optimizer=adam (repeatable; default: none)")
    add_config_flags(p, method_flag=False)
    p.add_argument("--method", dest="single_method", default=None, help=argparse.SUPPRESS)  # to refuse it
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.single_method is not None:
        raise UsageError("noprop bench takes --methods (several), not --method")
    overrides = config_overrides(args)
    refuse_multiprocess_flags(overrides, "noprop bench trains each run in one process")
    check_data_dir(overrides.get("dataset", RunConfig.dataset), overrides.get("data_dir"))
    if "epochs" not in overrides and "max_train_seconds" not in overrides:
        raise UsageError("give a budget: --epochs N and/or --max-train-seconds S")
    if args.baseline not in args.methods:
        print(f"note: baseline {args.baseline!r} is not among --methods; no ratios will be computed")
    plan = BenchPlan(methods=args.methods, config=overrides, repeats=args.repeats,
                     train_subset=args.train_subset, test_subset=args.test_subset, baseline=args.baseline,
                     method_settings=method_settings(args.method_settings))
    try:
        bench = run_bench(plan, args.out, overwrite=args.overwrite)
    except BenchError as err:
        raise UsageError(str(err)) from None
    print((args.out / "bench.md").read_text(), end="")
    print(f"bench directory: {args.out}")
    return 0 if all(not r.get("failed") for r in bench["runs"]) else 1


def method_settings(groups: list[list[str]]) -> dict[str, dict[str, str]]:
    """``--for METHOD SETTING=VALUE ...`` groups as ``{method: {setting: value}}`` (values are
    converted and checked where the method's configuration is built)."""
    settings: dict[str, dict[str, str]] = {}
    for method, *pairs in groups:
        if not pairs or any("=" not in pair for pair in pairs):
            raise UsageError(f"--for {method} takes SETTING=VALUE pairs after the method "
                             "(e.g. --for fg lr=0.01)")
        for pair in pairs:
            name, value = pair.split("=", 1)
            settings.setdefault(method, {})[name.strip().lstrip("-").replace("-", "_")] = value
    return settings
