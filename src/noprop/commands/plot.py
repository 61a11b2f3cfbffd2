"""``noprop plot RUN_OR_BENCH_DIR``: PNG figures (training curves, accuracy vs time, memory, readout).

    noprop plot runs/mnist-dt-20260101-120000          # a training run
    noprop plot runs/bench-mnist --out docs/figures     # a benchmark
    noprop plot runs/ct-g3 runs/ct-g7 --out figs        # runs side by side: comparison.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.commands.args import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG figures of a run or benchmark directory",
                       description="Write PNG figures for a run directory (metrics.csv) or a "
                       "benchmark directory (bench.json); several run directories are compared "
                       "in one figure.")
    p.add_argument("paths", type=Path, nargs="+", metavar="path",
                   help="run directory or benchmark directory (several: run directories to compare)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the PNGs (default: PATH; required with several paths)")
    p.add_argument("--title", default=None, help="title of the comparison figure")
    p.add_argument("--readout-samples", dest="readout_samples", type=int, default=2000,
                   help="test images for the per-block readout of a plain run (0: skip it; default 2000)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from noprop.plot import PlotError, plot_path, plot_runs

    for path in args.paths:
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory")
    if len(args.paths) > 1 and args.out is None:
        raise UsageError("several paths are compared in one figure: say where with --out DIR")
    try:
        if len(args.paths) > 1:
            written = [plot_runs(args.paths, args.out, title=args.title)]
        else:
            written = plot_path(args.paths[0], args.out, readout_samples=args.readout_samples)
    except PlotError as err:
        raise UsageError(str(err)) from None
    for path in written:
        print(path)
    return 0
