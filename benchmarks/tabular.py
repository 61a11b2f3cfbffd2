"""Tables: NoProp-DT, -CT and -FM with the MLP encoder against backprop on the same MLP.

    OMP_NUM_THREADS=1 nice python benchmarks/tabular.py        # bench (where not done), docs table
    python benchmarks/tabular.py --report-only                  # re-render docs from the bench.json files

For each table, one ``noprop bench`` in which every method gets the same data, epochs and seeds
(``--encoder mlp``: ``[Linear(256) - BN (DT blocks, backprop's DT blocks, the plain MLP) - ReLU] x 2``):

* ``dt``, ``ct``, ``fm``: NoProp with an MLP encoder in each block;
* ``backprop``: NoProp-DT's blocks (the same MLP encoders) chained and trained end to end;
* ``cnn``: the encoder alone with a linear classifier, trained by backprop (the everyday MLP).

The section between the markers of its run card (docs/results/2026-12-01-cpu/tabular/README.md;
summary in docs/benchmarks.md, "Tables") is rewritten from the results,
ratios to backprop taken within each bench (same machine, same minutes).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from doc_section import write_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results" / "2026-12-01-cpu" / "tabular" / "README.md"
START, END = "<!-- tabular:start -->", "<!-- tabular:end -->"
METHODS = ["dt", "ct", "fm", "backprop", "cnn"]
#: (dataset, epochs): the embedded scikit-learn tables and the shipped synthetic one.
TABLES = [
    ("breast-cancer", 40),
    ("wine", 60),
    ("tests/fixtures/synthetic-table.csv", 10),
]
LABELS = {"dt": "NoProp-DT", "ct": "NoProp-CT", "fm": "NoProp-FM",
          "backprop": "Backprop (same blocks)", "cnn": "Plain MLP (backprop)"}


def bench_args(dataset: str, epochs: int, repeats: int) -> list[str]:
    return ["--methods", *METHODS, "--dataset", dataset, "--encoder", "mlp", "--epochs", str(epochs),
            "--repeats", str(repeats), "--seed", "0", "--batch-size", "64"]


def out_dir(root: Path, dataset: str) -> Path:
    return root / Path(dataset).stem


def run_bench(dataset: str, epochs: int, repeats: int, out: Path) -> None:
    cmd = [sys.executable, "-m", "noprop", "bench", *bench_args(dataset, epochs, repeats), "--out", str(out)]
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=False, cwd=ROOT)  # a failed method is recorded in bench.json


def rows(dataset: str, bench: dict) -> list[str]:
    out = []
    for row in bench["summary"]:
        m = row["method"]
        if not row["runs"]:
            state = "failed" if row.get("failed") else "not run yet (bench stopped)"
            out.append(f"| {dataset} | {LABELS.get(m, m)} | {state} | – | – | – |")
            continue
        ratios = row.get("ratios", {})
        t = ratios.get("train_seconds")
        out.append(f"| {dataset} | {LABELS.get(m, m)} | {100 * row['test_accuracy']:.1f} ± "
                   f"{100 * row['test_accuracy_std']:.1f} | {row['train_seconds']:.1f} | "
                   f"{f'{t:.2f}' if t is not None else '–'} | {row['num_parameters'] / 1e3:.0f} k |")
    return out


def render(benches: list[tuple[str, int, dict]], repeats: int) -> str:
    machine = benches[0][2]["machine"]
    dates = {Path(d).stem: b["machine"]["date_utc"] for d, _, b in benches}
    when = (next(iter(dates.values())) if len(set(dates.values())) == 1
            else ", ".join(f"{date} ({table})" for table, date in dates.items()))
    lines = [
        START,
        f"Measured {when} on {machine['cpu_count']} CPU cores ({machine['processor']}), "
        f"torch {machine['torch_version']}, {machine['torch_threads']} intra-op thread(s); {repeats} seeds "
        "per method (mean ± std of the last epoch's test accuracy). Command: "
        "`OMP_NUM_THREADS=1 python benchmarks/tabular.py`, which runs, per table:",
        "",
        "```",
        *(f"noprop bench {shlex.join(bench_args(d, e, repeats))} --out OUT/{Path(d).stem}"
          for d, e, _ in benches),
        "```",
        "",
        "| table | method | test acc. (%) | train s | ×backprop | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, _, bench in benches:
        lines += rows(Path(dataset).stem, bench)
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "bench-tabular")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    benches = []
    for dataset, epochs in TABLES:
        out = out_dir(args.out, dataset)
        if not args.report_only and not (out / "bench.json").is_file():
            run_bench(dataset, epochs, args.repeats, out)
        if (out / "bench.json").is_file():
            benches.append((dataset, epochs, json.loads((out / "bench.json").read_text())))
    if not benches:
        raise SystemExit("no bench.json to report")
    write_section(DOC, START, END, render(benches, args.repeats))
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
