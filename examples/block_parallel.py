"""Block-parallel NoProp-DT on two processes: each process trains its own blocks on all the data,
and no gradient or activation travels between them (docs/distributed.md).

    python examples/block_parallel.py
    python examples/block_parallel.py --tiny

The same from the shell:

    noprop train --nproc 2 --parallel blocks --block-order interleaved --run-dir runs/digits-2proc
"""

import argparse
import sys
import tempfile
from pathlib import Path

from noprop.cli import main as noprop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (seconds), to check that it runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        budget = ["--epochs", "1", "-T", "2", "--num-threads", "1"] if args.tiny else []
        return noprop(["train", "--nproc", "2", "--parallel", "blocks", "--block-order", "interleaved",
                      "--run-dir", str(Path(tmp) / "run"), "-q", *budget])


if __name__ == "__main__":
    sys.exit(main())
