"""Write the synthetic table shipped as a test fixture: ``python benchmarks/make_table.py [PATH]``.

6,000 rows of 20 features in 4 classes from scikit-learn's ``make_classification`` (seed 0):
8 informative features, 4 redundant ones (linear combinations of the informative), 8 of noise,
two clusters per class, 1 % of the labels flipped. Written as ``tests/fixtures/synthetic-table.csv``
(the default PATH): a header ``x0,...,x19,label``, features rounded to 4 decimals, labels 0..3.
``tests/data/test_data_tabular.py`` checks that the shipped file is exactly what this script writes
(the file was written with scikit-learn 1.9.1; another version may draw other numbers).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

ROWS, FEATURES, CLASSES, SEED = 6000, 20, 4, 0
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthetic-table.csv"


def table_text() -> str:
    """The CSV text of the table (deterministic for a given scikit-learn version)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=ROWS, n_features=FEATURES, n_informative=8, n_redundant=4,
                               n_classes=CLASSES, n_clusters_per_class=2, flip_y=0.01, random_state=SEED)
    out = io.StringIO()
    out.write(",".join([*(f"x{i}" for i in range(FEATURES)), "label"]) + "\n")
    for row, label in zip(x, y, strict=True):
        # "+ 0.0" turns a rounded -0.0 into 0.0
        out.write(",".join(f"{round(float(v), 4) + 0.0:.4f}" for v in row) + f",{int(label)}\n")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, nargs="?", default=DEFAULT_PATH)
    args = parser.parse_args()
    args.path.write_text(table_text(), newline="")
    print(f"wrote {args.path} ({args.path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
