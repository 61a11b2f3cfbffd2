"""``noprop plot RUN_OR_BENCH_DIR``: PNG figures (training curves, accuracy vs time, memory, readout).

    noprop plot runs/mnist-dt-20260101-120000          # a training run
    noprop plot runs/bench-mnist --out docs/figures     # a benchmark
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG figures of a run or benchmark directory",
                       description="Write PNG figures for a run directory (metrics.csv) or a "
                       "benchmark directory (bench.json).")
    p.add_argument("path", type=Path, help="run directory or benchmark directory")
    p.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default: PATH)")
    p.add_argument("--readout-samples", dest="readout_samples", type=int, default=2000,
                   help="test images for the per-block readout of a plain run (0: skip it; default 2000)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from noprop.plot import PlotError, plot_path

    if not args.path.is_dir():
        raise UsageError(f"{args.path} is not a directory")
    try:
        written = plot_path(args.path, args.out, readout_samples=args.readout_samples)
    except PlotError as err:
        raise UsageError(str(err)) from None
    for path in written:
        print(path)
    return 0
