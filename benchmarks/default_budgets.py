"""Tables trained on every default: does `noprop train --dataset TABLE --method M` learn?

    OMP_NUM_THREADS=1 python benchmarks/default_budgets.py --out runs/default-budgets
    OMP_NUM_THREADS=1 python benchmarks/default_budgets.py --methods backprop --tables iris wine \
        --out runs/default-budgets-backprop

For each table and method, one ``noprop train --dataset TABLE --method M --run-dir ...`` with no
other flag: the encoder (``auto``: an MLP on feature vectors), the batch and the epochs are the
library's defaults (a user's table is sized by optimizer steps, ``config.sized_budget``; the
embedded tables keep their shipped budgets). Tables: iris (150 rows, written from scikit-learn's
copy to a CSV, as a user's file), the shipped 6,000-row ``tests/fixtures/synthetic-table.csv``,
and the embedded ``breast-cancer`` and ``wine``. Prints a table and writes ``default_budgets.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["dt", "ct", "fm", "backprop"]
TABLES = ["iris", "synthetic-table", "breast-cancer", "wine"]


def write_iris(path: Path) -> Path:
    """scikit-learn's iris as a user's CSV: four feature columns and a ``label`` column of names."""
    from sklearn.datasets import load_iris

    data = load_iris()
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in data.feature_names]
    lines = [",".join([*names, "label"])]
    lines += [",".join([*map(str, x), str(data.target_names[y])])
              for x, y in zip(data.data, data.target, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def train(dataset: str, method: str, run_dir: Path) -> dict:
    """One run on the defaults; its results.json plus the wall time and the budget it chose."""
    cmd = [sys.executable, "-m", "noprop", "train", "--dataset", dataset, "--method", method,
           "--run-dir", str(run_dir), "--overwrite", "-q"]
    print("+", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        return {"dataset": dataset, "method": method, "error": done.stderr.strip().splitlines()[-1:]}
    results = json.loads((run_dir / "results.json").read_text())
    cfg = results["config"]
    return {"dataset": results["dataset"], "method": method, "test_accuracy": results["test_accuracy"],
            "epochs": cfg["epochs"], "batch_size": cfg["batch_size"],
            "train_seconds": results["train_seconds"],
            "wall_seconds": round(wall, 1), "precision": results["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "default-budgets")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=TABLES)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {"iris": lambda: str(write_iris(args.out / "iris.csv")),
             "synthetic-table": lambda: str(ROOT / "tests/fixtures/synthetic-table.csv")}
    tables = [paths[t]() if t in paths else t for t in args.tables]
    rows = [train(t, m, args.out / f"{Path(t).stem}-{m}") for t in tables for m in args.methods]
    (args.out / "default_budgets.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| table | method | test accuracy | epochs | batch | train s |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['dataset']} | {r['method']} | error: {' '.join(r['error'])} | | | |")
        else:
            print(f"| {r['dataset']} | {r['method']} | {r['test_accuracy']:.4f} | {r['epochs']} | "
                  f"{r['batch_size']} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
