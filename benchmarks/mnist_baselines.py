"""MNIST: NoProp against backprop and earlier backprop-free methods (docs/benchmarks.md; the table
lives in its run card, docs/results/2026-11-26-cpu/README.md).

    nice -n 10 python benchmarks/mnist_baselines.py            # bench (if not done), plot, docs
    python benchmarks/mnist_baselines.py --report-only          # re-render docs from bench.json

Steps: ``noprop bench`` with :data:`BENCH_ARGS` into ``--out`` (skipped when its bench.json
exists), ``noprop plot`` into ``docs/figures/mnist-baselines/``, then the table between the
markers of the section "MNIST against the baselines at 180 s per method" of that run card
is rewritten from bench.json, beside the paper's published numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from doc_section import write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist"
FIGURES = ROOT / "docs" / "figures" / "mnist-baselines"
DOC = ROOT / "docs" / "results" / "2026-11-26-cpu" / "README.md"
START, END = "<!-- mnist-baselines:start -->", "<!-- mnist-baselines:end -->"

METHODS = ["dt", "backprop", "cnn", "ff", "local", "ct", "fm"]
#: One budget for every method: wall-clock training seconds per run; the test subset keeps the
#: evaluation of the slow samplers affordable on 2 shared cores; interleaved order so every
#: NoProp-DT block trains from the first second (sequential order would spend a 60 s budget on
#: block 1 alone), which for ``local`` is decoupled greedy learning.
def bench_args(seconds: float, repeats: int) -> list[str]:
    return [
        "--methods", *METHODS,
        "--dataset", "mnist", "--data-dir", str(DATA),
        "--max-train-seconds", f"{seconds:g}", "--repeats", str(repeats), "--seed", "0",
        "--block-order", "interleaved", "--test-subset", "1000",
        "--eval-inference-steps", "10",
    ]

#: v1 Table 1 (one-hot embeddings where the method has one) and v1 Table 2 (GPU memory, GB).
PAPER_ACCURACY = {"dt": 99.47, "backprop": 99.46, "ct": 97.84, "fm": 99.21, "ff": 98.63}
PAPER_MEMORY_GB = {"dt": 0.49, "backprop": 0.87, "ct": 1.05, "fm": 1.06}
LABELS = {
    "dt": "NoProp-DT", "ct": "NoProp-CT", "fm": "NoProp-FM", "backprop": "Backprop (same blocks)",
    "cnn": "Plain CNN (backprop)", "ff": "Forward-Forward", "local": "Local learning (DGL)",
}


def noprop(*args: str, check: bool = True) -> None:
    cmd = [sys.executable, "-m", "noprop", *args]
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=check, cwd=ROOT)


def _ratio_text(ratios: dict):
    return lambda key: f"{ratios[key]:.2f}" if ratios.get(key) is not None else "–"


def table(bench: dict) -> str:
    """Our measurements beside the paper's, one row per method."""
    lines = [
        "| method | ours: test acc. (%) | paper (%) | epochs done | samples/s | ×backprop | "
        "train peak MB | ×backprop | paper GPU GB | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in bench["summary"]:
        m = row["method"]
        if not row["runs"]:
            lines.append(f"| {LABELS.get(m, m)} | failed | {PAPER_ACCURACY.get(m, '–')} |" + " – |" * 7)
            continue
        ratio = _ratio_text(row.get("ratios", {}))
        lines.append(
            f"| {LABELS.get(m, m)} | {100 * row['test_accuracy']:.2f} ± {100 * row['test_accuracy_std']:.2f} "
            f"| {PAPER_ACCURACY.get(m, '–')} | {row['epochs']:.2f} | {row['samples_per_second']:.0f} "
            f"| {ratio('samples_per_second')} | {row['train_peak_mb']:.0f} | {ratio('train_peak_mb')} "
            f"| {PAPER_MEMORY_GB.get(m, '–')} | {row['num_parameters'] / 1e6:.2f} M |"
        )
    return "\n".join(lines)


def render(bench: dict, out: Path) -> str:
    machine = bench["machine"]
    figs = sorted(p.name for p in FIGURES.glob("*.png"))
    rel = Path(os.path.relpath(FIGURES, DOC.parent)).as_posix()
    seconds = bench["plan"]["config"]["max_train_seconds"]
    loads = [r["load_average"][0] for r in bench["runs"] if r.get("load_average")]
    load = f"1-minute load average {min(loads):.0f}–{max(loads):.0f} at the end of the runs" if loads else ""
    done = {r["repeat"] for r in bench["runs"]}
    planned = bench["plan"]["repeats"]
    partial = "" if bench.get("complete", True) else (
        f" The bench was stopped before its last runs: {len(bench['runs'])} of "
        f"{planned * len(bench['plan']['methods'])} planned runs are in the table "
        f"(repeats done: {len(done)} of {planned} for some methods; see the runs column of bench.md).")
    return "\n".join([
        START,
        f"Runs finished {machine['date_utc']} ({bench['wall_seconds'] / 60:.0f} minutes of bench, the last "
        f"part if it was resumed) on {machine['cpu_count']} CPU cores ({machine['processor']}); "
        f"{load}; torch {machine['torch_version']} ({machine['torch_threads']} intra-op thread(s)). "
        "Command (`benchmarks/mnist_baselines.py`):",
        "",
        "```",
        "noprop bench " + shlex.join(bench_args(seconds, planned)).replace(str(DATA), "DATA/mnist")
        + f" --out {out.name}",
        "```",
        "",
        f"Budget: {seconds:g} s of training per run (evaluation excluded), batch 128, lr 1e-3, "
        "interleaved block order, the paper's optimizers (AdamW; Adam for CT, FM and FF); "
        "evaluation on a fixed random 1,000 "
        "of the 10,000 test images (CT/FM with 10 sampler steps instead of the paper's 1000). "
        "\"epochs done\" is the fraction of one pass over the 60,000 training images that fitted in the "
        "budget. Accuracy: mean ± standard deviation over repeats (± 0.00: one repeat). Train peak: see "
        "\"How memory is measured\"." + partial,
        "",
        table(bench),
        "",
        *[f"![{name}]({rel}/{name})" for name in figs],
        END,
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-mnist-baselines")
    p.add_argument("--report-only", action="store_true", help="only plot and rewrite the docs table")
    p.add_argument("--bench-only", action="store_true", help="only run the benchmark")
    p.add_argument("--seconds", type=float, default=60.0, help="training seconds per run")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if not args.report_only and not (args.out / "bench.json").is_file():
        # failures are recorded in the table
        noprop("bench", *bench_args(args.seconds, args.repeats), "--out", str(args.out), check=False)
    if args.bench_only:
        return 0
    noprop("plot", str(args.out), "--out", str(FIGURES))
    write_section(DOC, START, END, render(json.loads((args.out / "bench.json").read_text()), args.out))
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
