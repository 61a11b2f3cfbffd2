"""``noprop bench``: several methods on one dataset under one budget, each run in a fresh process.

The harness plans ``methods x repeats`` runs (repeat ``r`` uses seed ``seed + r``) and runs them
one after another, each in its own Python process (``python -m noprop.bench RUN_SPEC.json``), so
memory high-water marks never carry over from one method to the next. A run goes through the
public training path (:func:`noprop.run.train_run`, as ``noprop train``), with two additions:

* **training peak memory**, training steps only (the per-epoch evaluation is excluded):
  CUDA: ``torch.cuda.max_memory_allocated`` (the model, gradients, optimizer state and
  activations; the dataset stays in host memory); CPU: the rise of the process's resident set
  over its size after the data was loaded, read from the kernel's high-water mark ``VmHWM``
  (reset through ``/proc/self/clear_refs``, freed heap returned with ``malloc_trim`` first) -
  the same quantities as on CUDA, plus allocator slack. The process's overall peak RSS
  (``ru_maxrss``, dataset included) is reported beside it;
* **per-step readout accuracies** of the last evaluation (how the chain converges).

Outputs in the bench directory: ``bench.json`` (every run and the per-method summary),
``bench.md`` (the summary as a markdown table), and ``runs/<method>-r<k>/`` (each run's
metrics.csv, results.json, config.yaml, ``bench_run.json``, and the worker's ``log.txt``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from noprop.atomic import atomic_write_json, write_report_files
from noprop.config import ConfigError, RunConfig, split_settings
from noprop.data import ClassificationData, load_dataset
from noprop.device import peak_memory_mb, resolve_device
from noprop.inference import InferenceOptions, readout_accuracies
from noprop.methods import Method
from noprop.run import train_run
from noprop.saved_run import CHECKPOINT
from noprop.training.interrupt import StopRequest, TrainingInterrupted

BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
RUN_JSON = "bench_run.json"
SPEC_JSON = "bench_spec.json"
#: Epoch cap of a run whose budget is wall-clock seconds only.
UNLIMITED_EPOCHS = 1_000_000


class BenchError(ValueError):
    """A benchmark that cannot run as asked (unknown method, empty budget, ...)."""


class BenchInterrupted(TrainingInterrupted):
    """The bench stopped on SIGINT/SIGTERM after its running worker checkpointed; the same command
    again keeps the finished runs and resumes the stopped one."""

    def __init__(self, signum: int, out_dir: Path) -> None:
        self.signum, self.run_dir, self.exit_code = signum, out_dir, 128 + signum
        Exception.__init__(self, f"bench interrupted by {signal.Signals(signum).name}; finished runs are "
                           f"kept in {shlex.quote(str(out_dir))} and the stopped one resumes from its "
                           "checkpoint: run the same command again")


@dataclass
class BenchPlan:
    """What to run: methods, the shared run configuration, repeats and optional data subsets.

    ``method_settings``: settings for one method only, over the shared ones (``{"fg": {"lr": 0.01}}``),
    so that each baseline can run as its own paper has it in the same bench."""

    methods: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1
    train_subset: int | None = None
    test_subset: int | None = None
    baseline: str = "backprop"
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run_configs(self) -> list[tuple[str, int, RunConfig]]:
        """``(method, repeat, config)`` for every run, in execution order."""
        from noprop.methods import METHODS

        if not self.methods:
            raise BenchError("no methods to benchmark")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise BenchError(f"unknown method(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(sorted(METHODS))}")
        if self.repeats < 1:
            raise BenchError(f"repeats must be >= 1, got {self.repeats}")
        base = dict(self.config)
        if base.get("max_train_seconds") and "epochs" not in base:
            base["epochs"] = UNLIMITED_EPOCHS
        base["progress"] = base["log_epochs"] = False
        seed = int(base.pop("seed", 0))
        # a method setting goes to the methods that take it; one that none of them takes is refused
        run, shared = split_settings("", base)
        takers = {m: set(METHODS[m].config_class.names()) for m in self.methods}
        unused = sorted(k for k in shared if not any(k in names for names in takers.values()))
        if unused:
            raise BenchError(f"no method among {', '.join(self.methods)} takes {', '.join(unused)}")
        strays = sorted(set(self.method_settings) - set(self.methods))
        if strays:
            raise BenchError(f"settings given for {', '.join(strays)}, which this bench does not run")
        configs = {}
        for method in self.methods:
            own = self.method_settings.get(method, {})
            try:
                configs[method] = RunConfig.from_dict({**run, **_taken(shared, takers[method]), **own,
                                                       "method": method, "seed": seed})
            except ConfigError as err:
                raise BenchError(f"{method}: {err}" if own else str(err)) from None
        # repeat-major: a bench stopped early has every method once before any twice
        return [(method, r, configs[method].replace(seed=seed + r))
                for r in range(self.repeats) for method in self.methods]


def _taken(settings: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k in names}


# -- memory ----------------------------------------------------------------------------------


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_peak_rss_mb() -> float:
    """Peak resident set of this process since it started (``ru_maxrss``)."""
    return peak_memory_mb(torch.device("cpu"))


class TrainingMemory:
    """Peak memory of the training steps, with pauses around evaluation (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline_mb = 0.0
        self.peak_mb = 0.0
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_rise"

    def _release(self) -> None:
        gc.collect()
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._release()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self.kind = "cpu_maxrss_rise"  # no reset: the process peak, evaluation included

    def _current_peak(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _proc_status_mb("VmHWM")
        return hwm if hwm is not None else process_peak_rss_mb()

    def start(self) -> None:
        """Take the baseline (after the data is loaded, before the model exists)."""
        warm_up(self.device)
        self._release()
        if self.device.type != "cuda":
            self.baseline_mb = _proc_status_mb("VmRSS") or process_peak_rss_mb()
        self._reset_peak()

    def pause(self) -> None:
        self.peak_mb = max(self.peak_mb, self._current_peak() - self.baseline_mb)

    def resume(self) -> None:
        self._reset_peak()


def warm_up(device: torch.device) -> None:
    """One training step of a throwaway conv net, so that the fixed cost of the first step (library
    code paged in, thread pools, kernel workspaces: about 90 MB of RSS on CPU) is in the baseline
    rather than in the first method's training peak."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Dropout(0.2), torch.nn.Flatten(), torch.nn.LazyLinear(10),
                              torch.nn.BatchNorm1d(10)).to(device)
    x = torch.randn(16, 1, 12, 12, device=device)
    net(x)  # materialise the lazy layer
    opt = torch.optim.AdamW(net.parameters(), fused=True)
    torch.nn.functional.cross_entropy(net(x), torch.zeros(16, dtype=torch.long, device=device)).backward()
    opt.step()
    del net, opt, x


class MeasuredEvaluation:
    """The trainer's own evaluation (the test split, the run's options), kept out of the memory
    peak; the last readouts are kept for the record."""

    def __init__(self, memory: TrainingMemory, data: ClassificationData, options: InferenceOptions) -> None:
        self.memory, self.data, self.options = memory, data, options
        self.readouts: list[float] = []

    def __call__(self, method: Method) -> list[float]:
        self.memory.pause()
        self.readouts = readout_accuracies(method, self.data.test_x, self.data.test_y, self.options)
        self.memory.resume()
        return self.readouts


# -- one run (in its own process) ------------------------------------------------------------


def subset(data: ClassificationData, train: int | None, test: int | None, seed: int = 0
           ) -> ClassificationData:
    """A fixed random subset of the training and/or test set (the same for every method)."""
    g = torch.Generator().manual_seed(seed)

    def pick(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if n is None or n >= len(x):
            return x, y
        idx = torch.randperm(len(x), generator=g)[:n]
        return x[idx].clone(), y[idx].clone()

    tx, ty = pick(data.train_x, data.train_y, train)
    vx, vy = pick(data.test_x, data.test_y, test)
    return replace(data, train_x=tx, train_y=ty, test_x=vx, test_y=vy)


def run_one(spec: dict[str, Any], *, resume: bool = False) -> dict[str, Any]:
    """Train one configuration into ``spec['run_dir']``; return (and write) its measurements.
    ``resume``: go on from the checkpoint of a run of this spec that was stopped mid-way."""
    config = RunConfig.from_dict(spec["config"]).resolved()
    run_dir = Path(spec["run_dir"])
    data = load_dataset(config.dataset, config.data_dir, label_column=config.label_column)
    data = subset(data, spec.get("train_subset"), spec.get("test_subset"))
    device = resolve_device(config.device)
    memory = TrainingMemory(device)
    memory.start()
    evaluation = MeasuredEvaluation(memory, data, InferenceOptions.of_run(config, device))
    # no temperatures: their fit after the last epoch would land in the training memory peak
    trainer, results = train_run(config, run_dir, data=data, resume=resume, overwrite=not resume,
                                 evaluation=evaluation, fit_temperature_on=None)
    memory.pause()
    record = {
        "method": config.method,
        "dataset": results["dataset"],
        "repeat": spec["repeat"],
        "seed": config.seed,
        "test_accuracy": results["test_accuracy"],
        "epochs": round(trainer.epoch - 1 + trainer.last_epoch.fraction, 4),
        "train_seconds": results["train_seconds"],
        "samples_per_second": results["samples_per_second"],
        "train_peak_mb": round(memory.peak_mb, 1),
        "memory_kind": memory.kind,
        "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
        "num_parameters": results["num_parameters"],
        "readout_accuracies": evaluation.readouts,
        "device": results["device"],
        "torch_version": torch.__version__,
        "run_dir": str(run_dir),
        "pid": os.getpid(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "resumed": resume,
    }
    atomic_write_json(run_dir / RUN_JSON, record)
    return record


# -- the harness -----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": _cpu_count(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_bench(plan: BenchPlan, out_dir: Path, *, overwrite: bool = False, log=print) -> dict[str, Any]:
    """Run every planned run in a fresh process; write ``bench.json`` and ``bench.md``.

    A rerun into the same ``out_dir`` keeps finished runs of the same settings and resumes a stopped
    one from its checkpoint. Runs there of other settings are refused before anything starts (every
    difference named), or replaced with ``overwrite``."""
    planned = []
    for method, repeat, config in plan.run_configs():
        run_dir = out_dir / "runs" / f"{method}-r{repeat}"
        spec = {"config": config.to_dict(), "run_dir": str(run_dir), "repeat": repeat,
                "train_subset": plan.train_subset, "test_subset": plan.test_subset}
        what = f"{method} repeat {repeat + 1}/{plan.repeats} (seed {config.seed})"
        planned.append((run_dir, spec, what, _changed_settings(run_dir, spec)))
    clashes = [f"{run_dir.name}: {'; '.join(changed)}" for run_dir, _, _, changed in planned if changed]
    if clashes and not overwrite:
        raise BenchError(f"{out_dir} holds runs of other settings ({' | '.join(clashes)}); pass --overwrite "
                         "to replace them, or give another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    started = time.time()
    for run_dir, spec, what, changed in planned:
        run_dir.mkdir(parents=True, exist_ok=True)
        if _finished_same_run(run_dir, spec):
            log(f"[bench] {what}: kept from an earlier run")
            record = json.loads((run_dir / RUN_JSON).read_text())
        else:
            if changed:
                log(f"[bench] {what}: replacing the run of other settings in {run_dir} "
                    f"({'; '.join(changed)})")
            record = _run_in_fresh_process(run_dir, spec, log=log, what=what)
        runs.append(record)
        bench = _write_bench(plan, runs, out_dir, time.time() - started, complete=len(runs) == len(planned))
    return bench


def _earlier_spec(run_dir: Path) -> dict[str, Any] | None:
    """The spec of the run already in ``run_dir``; ``None`` when there is none (or it is unreadable)."""
    try:
        return json.loads((run_dir / SPEC_JSON).read_text())
    except (OSError, ValueError):
        return None


def _same_spec(run_dir: Path, spec: dict[str, Any]) -> bool:
    return _earlier_spec(run_dir) == spec


def _changed_settings(run_dir: Path, spec: dict[str, Any]) -> list[str]:
    """``name: earlier → now`` for every setting in which the spec of the run already in ``run_dir``
    differs from ``spec`` (empty when there is none or it is the same). A new default shows here too."""
    earlier = _earlier_spec(run_dir)
    if earlier is None:
        return []
    flat = [{**{k: v for k, v in s.items() if k != "config"}, **s.get("config", {})} for s in (earlier, spec)]
    return [f"{key}: {flat[0].get(key, '(unset)')} → {flat[1].get(key, '(unset)')}"
            for key in sorted(flat[0].keys() | flat[1].keys()) if flat[0].get(key) != flat[1].get(key)]


def _finished_same_run(run_dir: Path, spec: dict[str, Any]) -> bool:
    return _same_spec(run_dir, spec) and (run_dir / RUN_JSON).is_file()


def _run_in_fresh_process(run_dir: Path, spec: dict[str, Any], *, log, what: str) -> dict[str, Any]:
    """``python -m noprop.bench SPEC``; the record it wrote, or a failure record with the last log line.

    A run of the same spec that was stopped mid-way (its checkpoint on disk) resumes from it; its
    training peak memory is then that of the resumed part (the record says ``resumed``)."""
    (run_dir / RUN_JSON).unlink(missing_ok=True)
    resume = _same_spec(run_dir, spec) and (run_dir / CHECKPOINT).is_file()
    atomic_write_json(run_dir / SPEC_JSON, spec)
    log(f"[bench] {what} ..." + (" (resuming from its checkpoint)" if resume else ""))
    t0 = time.time()
    argv = [sys.executable, "-m", "noprop.bench", str(run_dir / SPEC_JSON)] + (["--resume"] if resume else [])
    with (run_dir / "log.txt").open("a" if resume else "w") as out:
        returncode, signum = run_forwarding_signals(argv, out)
    if signum is not None:
        raise BenchInterrupted(signum, run_dir.parent.parent)
    if returncode == 0:
        record = json.loads((run_dir / RUN_JSON).read_text())
        log(f"[bench]   accuracy {record['test_accuracy']:.4f}  train {record['train_seconds']:.0f} s  "
            f"peak {record['train_peak_mb']:.0f} MB  ({time.time() - t0:.0f} s "
            + ("since resuming)" if resume else "with evaluation)"))
        return record
    tail = (run_dir / "log.txt").read_text().strip().splitlines()[-1:] or ["(no output)"]
    log(f"[bench]   FAILED (exit {returncode}): {tail[0]}")
    config = spec["config"]
    return {"method": config["method"], "repeat": spec["repeat"], "seed": config["seed"], "failed": True,
            "returncode": returncode, "error": tail[0], "run_dir": str(run_dir)}


def run_forwarding_signals(argv: list[str], out: Any) -> tuple[int, int | None]:
    """Run ``argv`` (output to ``out``) in a process group of its own; SIGINT/SIGTERM reaching this
    process are passed on to it once (:class:`StopRequest`), so a worker checkpoints and exits
    instead of being killed with its parent (a terminal's Ctrl-C reaches only this process: the
    worker is outside its group). Returns the exit status and the signal received (``None``: none)."""
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    with StopRequest(on_stop=proc.send_signal) as stop:
        returncode = proc.wait()
    return returncode, stop.signum


def _write_bench(plan: BenchPlan, runs: list[dict[str, Any]], out_dir: Path, seconds: float, *,
                 complete: bool) -> dict[str, Any]:
    """(Re)write bench.json and bench.md; called after every run, so a stopped bench keeps its results."""
    bench = {
        "plan": asdict(plan),
        "machine": machine_description(),
        "command": " ".join(sys.argv),
        "wall_seconds": round(seconds, 1),
        "complete": complete,
        "runs": runs,
        "summary": summarize(runs, plan.methods, plan.baseline),
    }
    write_report_files(out_dir, BENCH_JSON, bench, markdown=(BENCH_MD, markdown_report(bench)))
    return bench


SUMMARY_FIELDS = ("test_accuracy", "train_seconds", "samples_per_second", "train_peak_mb",
                  "process_peak_rss_mb", "epochs")
RATIO_FIELDS = ("train_seconds", "samples_per_second", "train_peak_mb", "num_parameters")


def summarize(runs: list[dict[str, Any]], methods: list[str], baseline: str = "backprop"
              ) -> list[dict[str, Any]]:
    """Per method: mean and standard deviation over its successful repeats, and ratios to ``baseline``."""
    rows = []
    for method in methods:
        ok = [r for r in runs if r["method"] == method and not r.get("failed")]
        row: dict[str, Any] = {"method": method, "runs": len(ok),
                               "failed": sum(1 for r in runs if r["method"] == method and r.get("failed"))}
        if ok:
            row["num_parameters"] = ok[0]["num_parameters"]
            row["memory_kind"] = ok[0]["memory_kind"]
            for key in SUMMARY_FIELDS:
                values = [float(r[key]) for r in ok]
                row[key] = statistics.fmean(values)
                row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    base = next((r for r in rows if r["method"] == baseline and r["runs"]), None)
    for row in rows:
        if base is None or not row["runs"]:
            continue
        row["ratios"] = {key: _ratio(row[key], base[key]) for key in RATIO_FIELDS}
        row["accuracy_minus_baseline"] = row["test_accuracy"] - base["test_accuracy"]
    return rows


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_report(bench: dict[str, Any]) -> str:
    """The per-method summary as a markdown table, with the budget and the machine above it."""
    plan, machine = bench["plan"], bench["machine"]
    cfg = plan["config"]
    budget = []
    if cfg.get("max_train_seconds"):
        budget.append(f"{cfg['max_train_seconds']:g} s of training per run")
    if cfg.get("epochs"):
        budget.append(f"at most {cfg['epochs']} epoch(s)")
    subsets = ", ".join(f"{k.split('_')[0]} subset {plan[k]}"
                        for k in ("train_subset", "test_subset") if plan[k])
    baseline = plan["baseline"]
    own = "; ".join(f"{method}: " + ", ".join(f"{k} {v}" for k, v in settings.items())
                    for method, settings in plan.get("method_settings", {}).items() if settings)
    lines = [
        f"Dataset {cfg.get('dataset', 'digits')}; budget: {' and '.join(budget) or 'method defaults'}; "
        f"{plan['repeats']} repeat(s) per method (seed {cfg.get('seed', 0)} + repeat)"
        + (f"; {subsets}" if subsets else "") + (f"; for one method only: {own}" if own else "") + ".",
        f"Machine: {machine.get('cpu') or machine['processor']}, {machine['cpu_count']} CPU(s)"
        + (f", {cfg['num_threads']} torch thread(s)" if cfg.get("num_threads") else "")
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + f"; torch {machine['torch_version']}; {machine['date_utc']}.",
        "",
        f"| method | test accuracy (%) | epochs | train s | samples/s | train peak MB | process peak RSS MB "
        f"| parameters | samples/s ×{baseline} | train peak ×{baseline} | params ×{baseline} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in bench["summary"]:
        if not row["runs"]:
            what = f"failed ({row['failed']} run(s))" if row["failed"] else "not run yet"
            lines.append(f"| {row['method']} | {what} |" + " – |" * 9)
            continue
        ratios = row.get("ratios", {})
        acc = f"{100 * row['test_accuracy']:.2f} ± {100 * row['test_accuracy_std']:.2f}"
        lines.append(
            f"| {row['method']} | {acc} | {row['epochs']:.2f} | {row['train_seconds']:.0f} "
            f"| {row['samples_per_second']:.0f} | {row['train_peak_mb']:.0f} "
            f"| {row['process_peak_rss_mb']:.0f} "
            f"| {row['num_parameters'] / 1e6:.2f} M | {_fmt(ratios.get('samples_per_second'), '.2f')} "
            f"| {_fmt(ratios.get('train_peak_mb'), '.2f')} | {_fmt(ratios.get('num_parameters'), '.2f')} |"
        )
    kind = next((r.get("memory_kind") for r in bench["summary"] if r.get("memory_kind")), None)
    lines += ["", "Accuracy: mean ± standard deviation over repeats. Train peak MB: "
              + MEMORY_KINDS.get(kind or "", "n/a") + "."]
    return "\n".join(lines) + "\n"


MEMORY_KINDS = {
    "cpu_rss_rise": "rise of the process's resident memory during training steps over its size "
                    "after the data was loaded (model, gradients, optimizer state, activations; "
                    "evaluation excluded)",
    "cpu_maxrss_rise": "rise of the process's peak RSS over its size after the data was loaded "
                       "(an upper bound: this system cannot reset the peak, so loading the data "
                       "and evaluation count too)",
    "cuda_max_allocated": "CUDA peak allocated memory during training steps (evaluation excluded)",
}


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m noprop.bench RUN_SPEC.json [--resume]``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[1:] not in ([], ["--resume"]):
        print("usage: python -m noprop.bench RUN_SPEC.json [--resume] (started by `noprop bench`)",
              file=sys.stderr)
        return 2
    try:
        run_one(json.loads(Path(args[0]).read_text()), resume=args[1:] == ["--resume"])
    except TrainingInterrupted as err:  # checkpointed: one line, not a traceback, in the run's log
        print(f"noprop bench: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
