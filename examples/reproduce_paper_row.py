"""Reproduce one row of the paper's Table 1 (MNIST, NoProp-DT) and set it beside the paper's number.

    python examples/reproduce_paper_row.py --data-dir DATA            # the full 100 epochs (hours on a CPU)
    python examples/reproduce_paper_row.py --data-dir DATA --scale 0.1   # 10 of the 100 epochs
    python examples/reproduce_paper_row.py --data-dir DATA --tiny     # 1 epoch, 600 images, 2 blocks

DATA holds mnist/ with the four official .gz files (without --data-dir they are looked for under
$NOPROP_DATA, then downloaded to the per-user cache). The table is written to
runs/reproduce/reproduction.md; rerunning resumes. A run on a subset is marked as such there: it
is a smoke test, not the paper's experiment.
"""

import argparse
import sys

from noprop.cli import main as noprop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $NOPROP_DATA, then the cache)")
    parser.add_argument("--config", default="mnist-dt", help="a shipped config (noprop reproduce --list)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's epochs")
    parser.add_argument("--out-dir", default="runs/reproduce")
    parser.add_argument("--tiny", action="store_true", help="1 epoch, 600 images, 2 blocks (a smoke test)")
    args = parser.parse_args()

    argv = ["reproduce", args.config, "--out-dir", args.out_dir, "--epochs-scale", str(args.scale)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.tiny:
        argv += ["--epochs", "1", "--train-limit", "600", "-T", "2", "-q"]
    return noprop(argv)


if __name__ == "__main__":
    sys.exit(main())
