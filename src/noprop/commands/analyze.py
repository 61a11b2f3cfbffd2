"""``noprop analyze RUN``: what a NoProp run's chain of denoisers adds over its blocks
(:mod:`noprop.analysis`; docs/chain-analysis.md).

    noprop analyze runs/digits-dt                       # table; analysis.json, analysis.png in the run
    noprop analyze runs/mnist-dt --samples 2000 --runs 5 --seed 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from noprop.commands.args import UsageError, positive_int
from noprop.device import check_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="what a NoProp run's chain adds over its blocks (ablations, probes)",
                       description="On a trained NoProp run's test split: the sampler against each "
                       "block alone and the average of all blocks, z ablated at every block and one "
                       "block at a time, what z carries along the chain, and a linear probe on each "
                       "block's image features. Prints a table; writes analysis.json and analysis.png.")
    p.add_argument("path", type=Path, help="run directory or checkpoint file (dt, ct or fm)")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="data root or dataset folder (default: the run's)")
    p.add_argument("--samples", type=positive_int, default=None, metavar="N",
                   help="analyze the first N test examples (default: all)")
    p.add_argument("--runs", type=positive_int, default=5, metavar="K",
                   help="stochastic sampler passes for the mean and the majority vote (default: 5, "
                        "the paper's)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the sampler and the ablations (default: the run's eval_seed)")
    p.add_argument("--probe-samples", dest="probe_samples", type=int, default=2000, metavar="N",
                   help="training examples the linear probes are fitted on (0: no probe; default 2000)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps of a CT/FM run (default: the run's per-epoch evaluation steps)")
    p.add_argument("--device", type=check_device, default="cpu", metavar="DEVICE",
                   help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write analysis.json and analysis.png (default: the run directory)")
    p.add_argument("--no-figure", dest="figure", action="store_false", help="write no figure")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from noprop.analysis import AnalysisError, analyze
    from noprop.device import resolve_device

    if args.probe_samples < 0:
        raise UsageError(f"--probe-samples must be 0 or more, got {args.probe_samples}")
    if not args.path.exists():
        raise UsageError(f"{args.path} does not exist")
    progress = None if args.quiet else (lambda line: print(f"noprop analyze: {line}", file=sys.stderr))
    try:
        result = analyze(args.path, data_dir=args.data_dir, samples=args.samples, runs=args.runs,
                         seed=args.seed, probe_samples=args.probe_samples, steps=args.steps,
                         device=resolve_device(args.device), progress=progress)
    except AnalysisError as err:
        raise UsageError(str(err)) from None
    print(result.table())
    out = args.out or (args.path if args.path.is_dir() else args.path.parent)
    for path in result.write(out, figure=args.figure):
        print(path)
    return 0
