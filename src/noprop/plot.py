"""``noprop plot``: PNG figures of a run directory or a benchmark directory (matplotlib, Agg).

Run directory (``metrics.csv``, from ``noprop train``):

* ``training_curves.png`` - training loss and test accuracy per epoch;
* ``readout.png`` - test accuracy of the prediction read out after each block / step of the
  inference chain (how the denoising chain converges). Taken from ``bench_run.json`` when the run
  came from ``noprop bench``, otherwise computed from the checkpoint on ``readout_samples`` test
  images.

Several run directories (``noprop plot RUN RUN ... --out DIR``):

* ``comparison.png`` - test accuracy per epoch and against cumulative training seconds, one
  line per run, labelled by its method and dataset (with the directory's name where two runs
  would share a label: a sweep or an ablation side by side).

Benchmark directory (``bench.json``, from ``noprop bench``):

* ``accuracy_vs_time.png`` - test accuracy against cumulative training seconds, every run;
* ``peak_memory.png`` - training peak memory per method (mean, range over repeats);
* ``readout.png`` - per-step readout accuracy of every method whose prediction is a chain;
* ``training_curves.png`` - training loss against training seconds, one panel per method.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from noprop.training.metrics import MetricsLog

METRICS = "metrics.csv"
BENCH_JSON = "bench.json"
RUN_JSON = "bench_run.json"
DPI = 120
#: methods whose training times differ by more than this factor share a log time axis
TIME_SPREAD_FOR_LOG_AXIS = 10.0


class PlotError(ValueError):
    """A path that holds nothing to plot."""


def plot_path(path: Path, out_dir: Path | None = None, *, readout_samples: int = 2000) -> list[Path]:
    """Plot a benchmark directory or a run directory; return the PNG files written."""
    out_dir = out_dir or path
    if (path / BENCH_JSON).is_file():
        return plot_bench(path, out_dir)
    if (path / METRICS).is_file():
        return plot_run(path, out_dir, readout_samples=readout_samples)
    raise PlotError(f"{path} holds neither {BENCH_JSON} (noprop bench) nor {METRICS} (noprop train)")


# -- one run ----------------------------------------------------------------------------------


def plot_run(run_dir: Path, out_dir: Path, *, readout_samples: int = 2000) -> list[Path]:
    rows = MetricsLog.read(run_dir / METRICS)
    if not rows:
        raise PlotError(f"{run_dir / METRICS} has no rows yet")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_label(run_dir)
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    loss_keys = [k for k in rows[0] if k.startswith("train_") and isinstance(rows[0][k], (int, float))]
    for label, values in _loss_curves(rows, loss_keys).items():
        ax_loss.plot(epochs, values, marker="o", label=label)
    ax_loss.set(title=f"{name}: training loss terms", xlabel="epoch", ylabel="mean over the epoch")
    _log_scale_if_positive(ax_loss, [r.get(k) for r in rows for k in loss_keys])
    ax_loss.legend(fontsize="small")
    ax_acc.plot(epochs, [100 * r["test_accuracy"] for r in rows], marker="o", color="tab:green")
    ax_acc.set(title=f"{name}: test accuracy", xlabel="epoch", ylabel="test accuracy (%)")
    for ax in (ax_loss, ax_acc):
        _epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
    written = [_save(fig, out_dir / "training_curves.png")]
    readouts = run_readouts(run_dir, readout_samples)
    if readouts and len(readouts) > 1:
        written.append(_plot_readouts({name: [readouts]}, out_dir / "readout.png", legend="run"))
    elif readouts:
        print(f"noprop plot: no readout figure for {run_dir}: its method reads out one prediction, not one "
              f"per step (noprop analyze {run_dir} shows what each step of a NoProp chain carries)",
              file=sys.stderr)
    return written


def _loss_curves(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, list[Any]]:
    """One curve per loss term; a term equal to the total at every epoch (FM's flow loss when it is
    the whole objective) is drawn once, labelled ``loss = flow``, instead of hiding under it."""
    curves = {k.removeprefix("train_"): [r.get(k) for r in rows] for k in keys}
    total = curves.get("loss")
    same = [k for k, v in curves.items() if k != "loss" and v == total]
    if total is not None and same:
        curves = {(" = ".join(["loss", *same]) if k == "loss" else k): v for k, v in curves.items()
                  if k not in same}
    return curves


def _log_scale_if_positive(ax, values: Sequence[Any]) -> None:
    """Losses span decades (NoProp-DT's weighted terms above all): a log axis shows every term."""
    numbers = [v for v in values if isinstance(v, int | float)]
    if numbers and min(numbers) > 0:
        ax.set_yscale("log")


def _epoch_axis(ax, epochs: Sequence[float]) -> None:
    """Whole epochs as ticks, from 0 or 1, so a run of one or two epochs is not labelled 0.96..1.04."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    last = max(epochs) if epochs else 1
    ax.set_xlim(0.5, max(last, 1) + 0.5)


def run_label(run_dir: Path) -> str:
    """``dt on mnist``, from the run's config.yaml; the folder's name when that cannot be read."""
    from noprop.saved_run import read_config
    from noprop.settings import ConfigError

    try:
        config = read_config(run_dir)
    except (ValueError, ConfigError):
        return run_dir.name
    return f"{config['method']} on {config['dataset']}"


def run_readouts(run_dir: Path, samples: int) -> list[float] | None:
    """Per-step readout accuracies: from the bench record, or computed from the checkpoint."""
    if (run_dir / RUN_JSON).is_file():
        return json.loads((run_dir / RUN_JSON).read_text()).get("readout_accuracies")
    if not (run_dir / "checkpoint.pt").is_file() or samples <= 0:
        return None
    from noprop.data import DataError, load_dataset
    from noprop.inference import InferenceOptions, readout_accuracies
    from noprop.run import RunDirError
    from noprop.saved_run import CheckpointError, load_run
    from noprop.settings import ConfigError

    try:
        run = load_run(run_dir)
        data = load_dataset(run.config.dataset, run.config.data_dir, label_column=run.config.label_column)
    except (CheckpointError, RunDirError, ConfigError, DataError) as err:
        # the curves come from metrics.csv alone; only this extra figure needs the model and data
        print(f"noprop plot: no readout figure for {run_dir}: {err}", file=sys.stderr)
        return None
    options = InferenceOptions.of_run(run.config, next(run.method.parameters()).device,
                                      steps=run.config.sampler_steps)
    return readout_accuracies(run.method, data.test_x[:samples], data.test_y[:samples], options)


# -- several runs ----------------------------------------------------------------------------


def plot_runs(run_dirs: Sequence[Path], out_dir: Path, *, title: str | None = None) -> Path:
    """``comparison.png``: every run's test accuracy per epoch and against training seconds."""
    for run_dir in run_dirs:
        if not (run_dir / METRICS).is_file():
            raise PlotError(f"{run_dir} holds no {METRICS} (noprop train)")
    curves = {name: MetricsLog.read(d / METRICS)
              for name, d in zip(comparison_labels(run_dirs), run_dirs, strict=True)}
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (ax_epoch, ax_time) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for name, rows in curves.items():
        accuracy = [100 * r["test_accuracy"] for r in rows]
        (line,) = ax_epoch.plot([r["epoch"] for r in rows], accuracy, marker=".", label=name)
        ax_time.plot(_cumulative_seconds(rows), accuracy, marker=".", color=line.get_color())
    ax_epoch.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax_time.set(xlabel="training seconds (cumulative, evaluation excluded)")
    _epoch_axis(ax_epoch, [r["epoch"] for rows in curves.values() for r in rows])
    ax_time.set_xlim(left=0)
    for ax in (ax_epoch, ax_time):
        ax.grid(alpha=0.3)
    ax_epoch.legend(fontsize="small")
    fig.suptitle(title or "Test accuracy of each run")
    return _save(fig, out_dir / "comparison.png")


def comparison_labels(run_dirs: Sequence[Path]) -> list[str]:
    """``method on dataset`` per run; the directory's name is added where labels would repeat."""
    labels = [run_label(d) for d in run_dirs]
    return [label if labels.count(label) == 1 or label == d.name else f"{label} ({d.name})"
            for label, d in zip(labels, run_dirs, strict=True)]


# -- a benchmark ------------------------------------------------------------------------------


def method_colors(methods: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A distinct colour per method: matplotlib's ten default colours, or twenty (``tab20``,
    strong shades first) when a bench has more methods, so no two lines share one."""
    if len(methods) <= 10:
        return {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    cmap = plt.get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten strong shades, then their light pairs
    return {m: cmap(order[i % 20]) for i, m in enumerate(methods)}


def plot_bench(bench_dir: Path, out_dir: Path) -> list[Path]:
    bench = json.loads((bench_dir / BENCH_JSON).read_text())
    runs = [r for r in bench["runs"] if not r.get("failed")]
    if not runs:
        raise PlotError(f"{bench_dir}: every run failed; nothing to plot")
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in bench["plan"]["methods"] if any(r["method"] == m for r in runs)]
    colors = method_colors(methods)
    dataset = runs[0].get("dataset") or bench["plan"]["config"].get("dataset", "")
    curves = {id(r): _run_rows(bench_dir, r) for r in runs}
    written = [
        _plot_accuracy_vs_time(runs, curves, methods, colors, dataset, out_dir / "accuracy_vs_time.png"),
        _plot_memory(bench["summary"], runs, colors, bench, out_dir / "peak_memory.png"),
        _plot_loss_vs_time(runs, curves, methods, colors, dataset, out_dir / "training_curves.png"),
    ]
    chains = {m: [r["readout_accuracies"] for r in runs if r["method"] == m] for m in methods}
    chains = {m: v for m, v in chains.items() if v and len(v[0]) > 1}
    if chains:
        written.append(_plot_readouts(chains, out_dir / "readout.png", colors=colors))
    return written


def _run_rows(bench_dir: Path, run: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(run["run_dir"])
    if not path.is_absolute() or not path.exists():  # the bench directory was moved
        path = bench_dir / "runs" / path.name
    return MetricsLog.read(path / METRICS) if (path / METRICS).is_file() else []


def _cumulative_seconds(rows: list[dict[str, Any]]) -> list[float]:
    total, out = 0.0, []
    for r in rows:
        total += float(r["epoch_seconds"])
        out.append(total)
    return out


def _plot_accuracy_vs_time(runs, curves, methods, colors, dataset, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    labelled: set[str] = set()
    for r in runs:
        rows = curves[id(r)]
        if not rows:
            continue
        m = r["method"]
        ax.plot(_cumulative_seconds(rows), [100 * x["test_accuracy"] for x in rows],
                marker="o", color=colors[m], alpha=0.85, label=None if m in labelled else m)
        labelled.add(m)
    ax.set(title=f"Test accuracy against training time ({dataset})", xlabel="training seconds (cumulative)",
           ylabel="test accuracy (%)")
    totals = [_cumulative_seconds(curves[id(r)])[-1] for r in runs if curves[id(r)]]
    if totals and min(totals) > 0 and max(totals) / min(totals) > TIME_SPREAD_FOR_LOG_AXIS:
        ax.set_xscale("log")  # a 30 s and a 1,400 s method on one axis: both curves readable
    ax.grid(alpha=0.3, which="both")
    # outside the axes: with a dozen methods a legend inside covers some of their curves
    ax.legend(title="method (one line per repeat)", fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def _plot_loss_vs_time(runs, curves, methods, colors, dataset, path: Path) -> Path:
    n = len(methods)
    cols = min(n, 4)
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.0 * rows_n), squeeze=False)
    for ax, m in zip(axes.flat, methods, strict=False):
        for r in (r for r in runs if r["method"] == m):
            rows = curves[id(r)]
            if rows:
                ax.plot(_cumulative_seconds(rows), [x["train_loss"] for x in rows], marker="o",
                        color=colors[m], label=f"seed {r['seed']}")
        ax.set(title=m, xlabel="training seconds", ylabel="training loss")
        _log_scale_if_positive(ax, [x["train_loss"] for r in runs if r["method"] == m for x in curves[id(r)]])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Training loss (each method's own loss) - {dataset}")
    return _save(fig, path)


def _plot_memory(summary, runs, colors, bench, path: Path) -> Path:
    rows = [s for s in summary if s["runs"]]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows) + 2), 4.5))
    names = [s["method"] for s in rows]
    means = [s["train_peak_mb"] for s in rows]
    each = {n: [r["train_peak_mb"] for r in runs if r["method"] == n] for n in names}
    lows = [mean - min(each[n]) for n, mean in zip(names, means, strict=True)]
    highs = [max(each[n]) - mean for n, mean in zip(names, means, strict=True)]
    bars = ax.bar(names, means, yerr=[lows, highs], capsize=4, color=[colors[n] for n in names])
    ax.bar_label(bars, labels=[f"{v:.0f}" for v in means], padding=3, fontsize="small")
    kind = rows[0].get("memory_kind", "") if rows else ""
    what = {"cuda_max_allocated": "CUDA peak allocated (MB)"}.get(kind, "RSS rise during training (MB)")
    ax.set(title=f"Peak training memory per method ({bench['machine'].get('gpu') or 'CPU'})",
           ylabel=what, xlabel="method")
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    return _save(fig, path)


def _plot_readouts(chains: dict[str, Sequence[Sequence[float]]], path: Path, colors=None,
                   legend: str = "method (mean over repeats)") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, repeats in chains.items():
        steps = range(1, len(repeats[0]) + 1)
        mean = [100 * sum(r[i] for r in repeats) / len(repeats) for i in range(len(repeats[0]))]
        ax.plot(steps, mean, marker="o", label=m, color=(colors or {}).get(m))
    ax.set(title="Accuracy of the prediction read out after each block / step",
           xlabel="block (DT, backprop: z_t after block t; local: head t) or sampler step",
           ylabel="test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(title=legend, fontsize="small")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
