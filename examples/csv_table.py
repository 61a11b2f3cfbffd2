"""Train on a CSV table: one row per example, a ``label`` column, the other columns features.

    python examples/csv_table.py                 # writes wine.csv (scikit-learn's wine data), trains
    python examples/csv_table.py --csv my.csv    # your own table
    python examples/csv_table.py --tiny

The same run from the shell:

    noprop train --dataset wine.csv --encoder mlp --run-dir runs/wine
    noprop evaluate runs/wine
"""

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from sklearn.datasets import load_wine

from noprop.cli import main as noprop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, help="a table with a 'label' column (default: the wine data)")
    parser.add_argument("--tiny", action="store_true", help="a tiny budget (seconds), to check that it runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        table = args.csv
        if table is None:
            table = Path(tmp) / "wine.csv"
            wine = load_wine()
            with table.open("w", newline="") as f:
                out = csv.writer(f)
                out.writerow([*wine.feature_names, "label"])
                rows = zip(wine.data.tolist(), wine.target.tolist(), strict=True)
                out.writerows([*row, label] for row, label in rows)
        run = Path(tmp) / "run"
        budget = ["--epochs", "2", "-T", "2"] if args.tiny else []
        code = noprop(["train", "--dataset", str(table), "--encoder", "mlp", "--run-dir", str(run), "-q",
                       *budget])
        code = code or noprop(["evaluate", str(run)])
        return code


if __name__ == "__main__":
    sys.exit(main())
