"""Run the paper's experiments from their shipped configurations and set our numbers beside the paper's.

    preset = load_preset("mnist-dt")
    config = plan(preset, epochs_scale=0.1)                 # 10 of the paper's 100 epochs
    result = run_experiment(preset, config, Path("runs/reproduce/mnist-dt"))
    write_report([result], Path("runs/reproduce"))          # reproduction.md and reproduction.json

An experiment trains one run per seed (``<out>/<name>/seed<s>``) and evaluates each final model
with ``inference_runs`` independently seeded passes of its stochastic sampler; the accuracy we report
is the mean and standard error over all of them, as the paper does (3 seeds x 5 inference runs).

A run directory that already holds a checkpoint is resumed, or reused as it is when it has reached
the planned epochs: a long reproduction can be stopped and restarted with the same command.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from noprop._version import __version__
from noprop.atomic import write_report_files
from noprop.config import ConfigError, RunConfig
from noprop.data import ClassificationData, DataError, load_dataset
from noprop.inference import accuracy, standard_error
from noprop.presets import PAPER_EXPERIMENTS, PaperNumber, Preset
from noprop.run import RunDirError, train_run
from noprop.saved_run import CHECKPOINT, CheckpointError
from noprop.training.trainer import Trainer

REPORT_MD = "reproduction.md"
REPORT_JSON = "reproduction.json"
#: Failures that are the user's data or directories, not bugs: recorded in the table, run goes on.
EXPERIMENT_ERRORS = (ConfigError, DataError, RunDirError, CheckpointError)


def scaled_epochs(epochs: int, scale: float) -> int:
    """``epochs * scale`` rounded, and never below one epoch."""
    return max(1, round(epochs * scale))


def plan(preset: Preset, *, epochs_scale: float = 1.0, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset's configuration with its epochs scaled; explicit ``overrides`` win over both."""
    base = preset.run_config()
    epochs = base.epochs if base.epochs is not None else base.resolved().epochs
    assert epochs is not None
    return preset.run_config({"epochs": scaled_epochs(epochs, epochs_scale), **(overrides or {})})


def limit_train(data: ClassificationData, n: int | None, seed: int = 0) -> ClassificationData:
    """The first ``n`` training examples of a seeded shuffle (the test set is kept whole)."""
    if n is None or n >= len(data.train_x):
        return data
    keep = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:n]
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])


@dataclass
class ExperimentResult:
    """Our measurement of one experiment next to the paper's number (accuracies in %)."""

    name: str
    method: str
    dataset: str
    embedding: str
    paper: PaperNumber | None
    paper_epochs: int | None
    epochs: int | None = None
    train_examples: int | None = None
    seeds: list[int] = field(default_factory=list)
    inference_runs: int = 1
    accuracies: list[float] = field(default_factory=list)
    device: str | None = None
    train_seconds: float | None = None
    run_dirs: list[str] = field(default_factory=list)
    command: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    #: Settings that differ from the shipped experiment's (epochs aside, shown on their own):
    #: a row measured with e.g. ``-T 2`` says so in the table.
    changes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))

    @property
    def measured(self) -> bool:
        return bool(self.accuracies) and self.error is None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def stderr(self) -> float | None:
        """Standard error of the mean over seeds x inference runs (``None`` from one value)."""
        return standard_error(self.accuracies)

    @property
    def gap(self) -> float | None:
        """Ours minus the paper's, in percentage points."""
        if self.paper is None or self.mean is None:
            return None
        return self.mean - self.paper.mean

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(mean=self.mean, stderr=self.stderr, gap=self.gap)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentResult:
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        if kept.get("paper"):
            kept["paper"] = PaperNumber(**kept["paper"])
        return cls(**kept)


def run_experiment(
    preset: Preset,
    config: RunConfig,
    out_dir: Path,
    *,
    seeds: tuple[int, ...] | list[int] = (0,),
    inference_runs: int = 1,
    train_limit: int | None = None,
    data: ClassificationData | None = None,
    overwrite: bool = False,
    command: str = "",
) -> ExperimentResult:
    """Train ``config`` once per seed into ``out_dir/seed<s>`` (resuming what is there) and evaluate."""
    base = preset.run_config()
    result = ExperimentResult(
        name=preset.name,
        method=config.method,
        dataset=config.dataset,
        embedding=getattr(config.method_config, "embedding", "onehot"),
        paper=preset.paper_number(config),
        paper_epochs=base.epochs,
        seeds=list(seeds),
        inference_runs=inference_runs,
        command=command,
    )
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, label_column=config.label_column)
    data = limit_train(data, train_limit)
    result.train_examples = len(data.train_x)
    train_seconds = 0.0
    for seed in seeds:
        run_dir = out_dir / f"seed{seed}"
        resume = not overwrite and (run_dir / CHECKPOINT).is_file()
        trainer, results = train_run(config.replace(seed=seed), run_dir, resume=resume,
                                     overwrite=overwrite, data=data, reuse_finished=True)
        result.accuracies += [100.0 * a for a in final_accuracies(trainer, results, inference_runs)]
        result.run_dirs.append(str(run_dir))
        result.epochs = results["epochs"]
        result.device = results["device"]
        result.config = results["config"]
        result.changes = experiment_changes(preset, result.config)
        train_seconds += results["train_seconds"]
    result.train_seconds = round(train_seconds, 1)
    return result


#: Settings that do not change what is measured: where and how a run is displayed, saved and timed.
NOT_EXPERIMENT = frozenset({"epochs", "data_dir", "device", "progress", "log_epochs", "checkpoint_minutes",
                            "seed", "num_threads", "tensorboard", "eval_inference_steps", "flush_denormal",
                            "max_train_seconds", "skip_nonfinite", "eval_seed"})


def experiment_changes(preset: Preset, config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run's (flat) ``config`` that differ from ``preset``'s experiment."""
    base = preset.run_config().resolved().to_dict()
    return {k: v for k, v in config.items()
            if k not in NOT_EXPERIMENT and k in base and base[k] != v}


def final_accuracies(trainer: Trainer, results: dict[str, Any], runs: int) -> list[float]:
    """Test accuracy of ``runs`` independently seeded sampler passes at the full inference steps.

    The trainer's own last evaluation is the first pass when it used the same steps (a run may
    check progress each epoch with fewer, ``eval_inference_steps``).
    """
    config, data, options = trainer.config, trainer.data, trainer.inference
    reuse = config.eval_inference_steps in (None, config.sampler_steps)
    first = [results["test_accuracy"]] if reuse else []
    return first + [
        accuracy(trainer.method, data.test_x, data.test_y,
                 options.replace(steps=config.sampler_steps, seed=config.eval_seed + k))
        for k in range(len(first), runs)
    ]


def failed_experiment(
    preset: Preset, config: RunConfig, error: Exception, command: str = ""
) -> ExperimentResult:
    """A table row for an experiment that could not run (missing data, incompatible checkpoint)."""
    return ExperimentResult(
        name=preset.name, method=config.method, dataset=config.dataset,
        embedding=getattr(config.method_config, "embedding", "onehot"), paper=preset.paper_number(config),
        paper_epochs=preset.run_config().epochs, command=command, error=str(error),
    )


# -- the report -----------------------------------------------------------------------------
def _row_order(name: str) -> tuple[int, str]:
    return (PAPER_EXPERIMENTS.index(name) if name in PAPER_EXPERIMENTS else len(PAPER_EXPERIMENTS), name)


def merge_results(old: list[ExperimentResult], new: list[ExperimentResult]) -> list[ExperimentResult]:
    """One row per experiment name, the newest winning, in the paper's table order."""
    rows = {r.name: r for r in old}
    rows.update({r.name: r for r in new})
    return [rows[name] for name in sorted(rows, key=_row_order)]


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(results: list[ExperimentResult]) -> str:
    """Our accuracy next to the paper's, one row per experiment, with the budget it ran with."""
    lines = [
        "| experiment | paper test acc. (%) | ours (%) | ours − paper (pp) | epochs (ours / paper) "
        "| train examples | changed from the paper | seeds × inference runs | device | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        paper = str(r.paper) if r.paper else "no published number"
        if r.measured:
            ours = _fmt(r.mean) + (f" ± {_fmt(r.stderr)}" if r.stderr is not None else "")
        else:
            ours = "not measured" + (f": {r.error}" if r.error else "")
        budget = f"{r.epochs if r.epochs is not None else '–'} / {r.paper_epochs or '–'}"
        runs = f"{len(r.seeds)} × {r.inference_runs}" if r.measured else "–"
        changed = ", ".join(f"{k}={v}" for k, v in sorted(r.changes.items())) or "–"
        lines.append(
            f"| {r.name} | {paper} | {ours} | {_fmt(r.gap, signed=True)} | {budget} "
            f"| {r.train_examples or '–'} | {changed} | {runs} | {r.device or '–'} "
            f"| {_fmt(r.train_seconds, 0)} |"
        )
    return "\n".join(lines) + "\n"


def read_report(out_dir: Path) -> list[ExperimentResult]:
    path = out_dir / REPORT_JSON
    if not path.is_file():
        return []
    return [ExperimentResult.from_dict(row) for row in json.loads(path.read_text())["experiments"]]


def write_report(results: list[ExperimentResult], out_dir: Path) -> list[ExperimentResult]:
    """Merge ``results`` into ``out_dir``'s table (markdown and JSON); return all its rows."""
    rows = merge_results(read_report(out_dir), results)
    commands = "\n".join(f"- {r.name}: `{r.command}` (started {r.date})" for r in rows if r.command)
    markdown = ("# NoProp reproduction: our test accuracy next to the paper's (v1 Table 1)\n\n"
                + markdown_table(rows)
                + f"\nnoprop {__version__}, torch {torch.__version__}. Paper: mean ± standard error over "
                "3 seeds × 5 inference runs at the full budget.\n\nCommands:\n\n" + commands + "\n")
    write_report_files(out_dir, REPORT_JSON, {
        "noprop_version": __version__,
        "torch_version": torch.__version__,
        "experiments": [r.to_dict() for r in rows],
    }, markdown=(REPORT_MD, markdown))
    return rows
