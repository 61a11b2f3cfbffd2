"""Compare NoProp with back-propagation and other baselines under one budget with ``noprop bench``:
each method trains in a fresh process on the same data for the same wall-clock seconds.

    python examples/compare_methods.py                   # 30 s of training per method, digits
    python examples/compare_methods.py --tiny

The same from the shell:

    noprop bench --methods dt backprop local --max-train-seconds 30 --out runs/bench-digits
    noprop plot runs/bench-digits
"""

import argparse
import sys
import tempfile
from pathlib import Path

from noprop.cli import main as noprop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["dt", "backprop", "local"])
    parser.add_argument("--seconds", type=float, default=30.0, help="training seconds per method")
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (seconds), to check that it runs")
    args = parser.parse_args()

    seconds = 1.0 if args.tiny else args.seconds
    methods = args.methods[:2] if args.tiny else args.methods
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench"
        extra = ["--test-subset", "200", "--train-subset", "400", "--num-threads", "1"] if args.tiny else []
        code = noprop(["bench", "--methods", *methods, "--max-train-seconds", f"{seconds:g}",
                       "--out", str(out), *extra])
        if code == 0:
            print((out / "bench.md").read_text())
        return code


if __name__ == "__main__":
    sys.exit(main())
