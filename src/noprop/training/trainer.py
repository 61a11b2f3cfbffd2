"""The training loop. It knows the :class:`~noprop.methods.base.Method` interface and nothing else.

One optimizer per parameter group; a step on training unit ``u`` back-propagates ``u``'s local
loss and steps only the optimizers of the groups ``u`` names, then drops their gradients. Units
are visited in one of two orders:

* ``sequential`` (paper Algorithm 1): for each unit, a full pass over the training data;
* ``interleaved``: for each batch, a step on every unit.

Both do the same amount of work per epoch. After every epoch the model is evaluated, a row goes to
``metrics.csv`` and a checkpoint is written atomically.

Surviving faults (``docs/failure-modes.md``): SIGINT/SIGTERM stop the loop at the next step
boundary with a checkpoint of the whole state (model, every optimizer, all RNG states, epoch, step
within the epoch, the epoch's running loss sums), so a resumed run ends bit for bit where an
uninterrupted one would on CPU: the epoch's data order is a function of (seed, epoch, unit), and
resuming mid-epoch replays it, skipping the finished steps. A NaN/inf loss term stops the run
naming the unit, step and term (or, with ``skip_nonfinite``, skips the batch); no checkpoint
holding a NaN/inf is ever written, so the last good one stays on disk.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from noprop._version import __version__
from noprop.atomic import atomic_write_json, atomic_write_text
from noprop.config import RunConfig, model_differences
from noprop.data.base import ClassificationData, DataError, batches, num_batches
from noprop.device import (
    autocast_for,
    cpu_has_native_bf16,
    flushed_denormals,
    inference_numerics,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    resolve_precision,
)
from noprop.methods.base import Method
from noprop.random_state import capture_rng_state, restore_rng_state
from noprop.settings import ConfigError
from noprop.spec import DataSpec
from noprop.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from noprop.training.graphs import CudaGraphRecorder, GraphedSteps
from noprop.training.inference_runs import seeded_pass
from noprop.training.interrupt import StopRequest, TrainingInterrupted
from noprop.training.lr_schedule import lr_factor, plain_lrs, set_lr
from noprop.training.metrics import MetricsLog
from noprop.training.nonfinite import (
    CHECK_EVERY,
    Fault,
    NonFiniteError,
    PendingChecks,
    describe_values,
    nonfinite_tensors,
    step_values,
)

#: Run settings a resumed run takes from the command line (applied, and recorded in config.yaml);
#: every other setting must equal the checkpoint's, since the state saved so far depends on it.
RESUMABLE_CHANGES = frozenset({
    "epochs", "lr", "weight_decay", "data_dir", "device", "progress", "log_epochs", "checkpoint_minutes",
    "max_train_seconds", "skip_nonfinite", "flush_denormal", "precision", "eval_inference_steps",
    "num_threads", "tensorboard", "cuda_graphs",
    "eval_deterministic", "eval_seed",
})

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
METRICS = "metrics.csv"
CONFIG = "config.yaml"


def make_optimizers(method: Method, config: RunConfig, *, capturable: bool = False
                    ) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per parameter group, so an idle group's state never changes.

    ``capturable``: their step can be recorded in a CUDA graph (:mod:`noprop.training.graphs`).
    """
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[config.optimizer]
    return {
        name: kind(params, lr=config.lr, weight_decay=config.weight_decay, fused=True, capturable=capturable)
        for name, params in method.parameter_groups().items()
        if params
    }


def optimizer_state(optimizers: Iterable[torch.optim.Optimizer]) -> list[Tensor]:
    """Every tensor of the optimizers' state (Adam's moments and step counts)."""
    return [v for opt in optimizers for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]


@torch.inference_mode()
def evaluate_accuracy(
    method: Method,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1000,
    steps: int | None = None,
    deterministic: bool = False,
    seed: int = 1234,
    flush_denormal: bool = True,
    precision: str = "fp32",
) -> float:
    """Test accuracy with the method's own inference rule; the sampler noise is seeded.
    ``precision`` (resolved: fp32 or bf16) must be the run's for the trainer's number to come back."""
    return readout_accuracies(
        method, x, y, batch_size=batch_size, steps=steps, deterministic=deterministic, seed=seed,
        flush_denormal=flush_denormal, precision=precision,
    )[-1]


@torch.inference_mode()
def readout_accuracies(
    method: Method,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1000,
    steps: int | None = None,
    deterministic: bool = False,
    seed: int = 1234,
    flush_denormal: bool = True,
    precision: str = "fp32",
) -> list[float]:
    """Accuracy of the prediction read out after each inference step (the last is the final one)."""
    device = next(method.parameters()).device
    with inference_numerics(precision, device, flush_denormal):
        return _readout_accuracies(method, x, y, batch_size, steps, deterministic, seed)


def _readout_accuracies(method: Method, x: Tensor, y: Tensor, batch_size: int, steps: int | None,
                        deterministic: bool, seed: int) -> list[float]:
    correct: Tensor | None = None
    with seeded_pass(method, seed) as (device, generator):
        for xb, yb in batches(x, y, batch_size):
            xb, yb = xb.to(device), yb.to(device)
            outs = method.readout_logits(xb, steps=steps, deterministic=deterministic,
                                         generator=generator)
            hits = torch.stack([(o.argmax(-1) == yb).sum() for o in outs])
            correct = hits if correct is None else correct + hits
    assert correct is not None, "cannot evaluate on an empty set"
    return (correct.double() / len(x)).tolist()


class Parallelism:
    """How this process shares training with other processes; this default trains alone.

    :mod:`noprop.distributed` overrides these hooks for data- and block-parallel training. They
    speak only of training units and parameter groups, so the loop stays method-agnostic.
    """

    def units(self, num_units: int) -> list[int]:
        """The training units this process steps (default: all of them, in order)."""
        return list(range(num_units))

    def shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """This process's share of a global batch (default: all of it)."""
        return x, y

    def begin_epoch(self, method: Method) -> None:
        """Called when an epoch (or the rest of a resumed one) starts, before its first step."""

    def sync_gradients(self, method: Method, groups: tuple[str, ...]) -> None:
        """Called between a unit's backward and its optimizer steps (e.g. to all-reduce)."""

    def after_step(self, method: Method) -> None:
        """Called after every training step."""

    def end_epoch(self, method: Method, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Called at the end of each epoch, inside its timing: make this process's model whole."""

    def describe(self) -> dict[str, Any]:
        """Extra entries for ``results.json``."""
        return {}


def position(epoch: int, step: int, steps_per_epoch: int) -> str:
    """Where training stands, for messages: ``epoch`` finished epochs plus ``step`` steps."""
    if step:
        return f"epoch {epoch + 1}, step {step} of {steps_per_epoch}"
    return f"the end of epoch {epoch}" if epoch else "the start"


class Trainer:
    """Fits a method on in-memory data, writing metrics, checkpoints and results to ``run_dir``."""

    def __init__(
        self,
        method: Method,
        data: ClassificationData,
        config: RunConfig,
        run_dir: Path | None = None,
        parallelism: Parallelism | None = None,
    ) -> None:
        self.config = config = config.resolved()
        if config.num_threads is not None and config.num_threads != torch.get_num_threads():
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        #: ``fp32`` or ``bf16``: the precision ``config.precision`` resolves to on this machine.
        self.precision = resolve_precision(config.precision, self.device)
        self.method = method.to(self.device)
        if len(data.train_x) < 2:  # BatchNorm cannot train on one example
            raise DataError(f"{data.name}: the training split holds {len(data.train_x)} example(s); "
                            "training needs at least 2")
        if config.augment and data.train_transform is None:
            raise ConfigError(f"augment applies to datasets with a training augmentation (CIFAR); "
                              f"{data.name} has none")
        self.data = data
        self._train_x, self._train_y = self._training_tensors()
        self.run_dir = run_dir
        self.parallelism = parallelism or Parallelism()
        check_cuda_graphs(config, self.device, self.parallelism)
        self.optimizers = make_optimizers(method, config, capturable=config.cuda_graphs)
        self.units = method.training_units()
        #: The units this process trains (all of them unless block parallel).
        self.trained_units = self.parallelism.units(len(self.units))
        self.metrics = MetricsLog(run_dir / METRICS if run_dir else None, tensorboard=config.tensorboard)
        self.epoch = 0
        self.train_seconds = 0.0
        # progress inside the current epoch, checkpointed so a run can resume mid-epoch
        self.step = 0
        self._sums: dict[str, Tensor] = {}
        self._skipped = 0
        self._epoch_seconds = 0.0
        self._epoch_clock = time.perf_counter()
        self.last_epoch_skipped = 0
        self.last_epoch_fraction = 1.0  # below 1 when the wall-clock budget cut the epoch short
        # fault handling
        self._stop = StopRequest()
        self._pending = PendingChecks()
        self._unit_params = [method.unit_parameters(u) for u in range(len(self.units))]
        self._buffers = list(method.buffers())
        self._saved_at: tuple[int, int] | None = None
        self._last_save = time.monotonic()
        self._steps_run = 0
        #: Whether denormals were flushed to zero on the CPU during fit() (results.json).
        self.denormals_flushed = False
        #: Optimizer steps taken on each unit over the whole run (checkpointed).
        self.unit_steps = [0] * len(self.units)
        #: Recorded steps replayed per batch (``cuda_graphs``); ``None`` runs every step eagerly.
        self.graphs = (GraphedSteps(self._step_body, self._step_state, list(self.optimizers.values()),
                                    CudaGraphRecorder(self.device), scheduled_lr=self.scheduled_lr,
                                    batch_rows=config.batch_size)
                       if config.cuda_graphs else None)

    # -- state ----------------------------------------------------------------------------
    def resolved_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: at an epoch end or mid-epoch."""
        return {
            "noprop_version": __version__,
            "config": self.resolved_config(),
            "spec": self.data.spec.to_dict(),
            # how to prepare new inputs and name the classes (noprop predict)
            "data_info": {
                "name": self.data.name,
                "class_names": list(self.data.class_names) if self.data.class_names else None,
                "normalization": ([list(v) for v in self.data.normalization]
                                  if self.data.normalization else None),
                # a table's columns, which a table given to noprop predict must repeat
                "feature_names": list(self.data.feature_names) if self.data.feature_names else None,
            },
            "model": self.method.state_dict(),
            "optimizers": {k: plain_lrs(opt.state_dict()) for k, opt in self.optimizers.items()},
            "epoch": self.epoch,
            "step": self.step,
            "epoch_sums": {k: torch.as_tensor(v).detach().cpu() for k, v in self._sums.items()},
            "epoch_skipped": self._skipped,
            "epoch_seconds": time.perf_counter() - self._epoch_clock if self.step else 0.0,
            "train_seconds": self.train_seconds,
            "metrics": list(self.metrics.rows),
            "rng": capture_rng_state(),
            "unit_steps": list(self.unit_steps),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another model raises, naming the difference."""
        diffs = model_differences(state["config"], self.config)
        saved, now = DataSpec.from_dict(state["spec"]), self.data.spec
        if saved.input_shape != now.input_shape:
            diffs.append(f"input shape: checkpoint has {saved.describe()}, this run has {now.describe()}")
        if saved.num_classes != now.num_classes:
            diffs.append(f"num_classes: checkpoint has {saved.num_classes}, this run has {now.num_classes}")
        missing = sorted(set(self.optimizers) - set(state["optimizers"]))
        if missing and not diffs:
            diffs.append(f"parameter groups: checkpoint lacks {', '.join(missing)}")
        if diffs:
            version = state.get("noprop_version", "?")
            raise CheckpointError(f"checkpoint (noprop {version}) is from a different configuration: "
                                  + "; ".join(diffs))
        _refuse_fixed_changes(state["config"], self.resolved_config())
        self.method.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            made_capturable = [group["capturable"] for group in opt.param_groups]
            opt.load_state_dict(state["optimizers"][name])
            for group, capturable in zip(opt.param_groups, made_capturable, strict=True):
                # a changed lr / weight decay applies from here on; CUDA graphs are this run's choice
                set_lr(group, self.config.lr)
                group["weight_decay"], group["capturable"] = self.config.weight_decay, capturable
        self.epoch = int(state["epoch"])
        self.step = int(state.get("step", 0))
        self._sums = {k: v.to(self.device) for k, v in state.get("epoch_sums", {}).items()}
        self._skipped = int(state.get("epoch_skipped", 0))
        self._epoch_seconds = float(state.get("epoch_seconds", 0.0))
        self.train_seconds = float(state["train_seconds"])
        if "metrics" in state:
            self.metrics.restore([r for r in state["metrics"] if int(r["epoch"]) <= self.epoch])
        restore_rng_state(state["rng"])
        self.unit_steps = list(state.get("unit_steps", self.unit_steps))
        self._saved_at = (self.epoch, self.step)

    def resume(self) -> None:
        """Continue from ``run_dir``'s checkpoint (and, for older checkpoints, its metrics.csv)."""
        assert self.run_dir is not None
        state = load_checkpoint(self.run_dir / CHECKPOINT, map_location=self.device)
        self.load_state_dict(state)
        if "metrics" not in state and (self.run_dir / METRICS).is_file():
            rows = MetricsLog.read(self.run_dir / METRICS)
            self.metrics.restore([r for r in rows if int(r["epoch"]) <= self.epoch])
        if self.config.log_epochs and not self.finished:
            where = position(self.epoch, self.step, self.steps_per_epoch())
            tqdm.write(f"resuming {self.run_dir} at {where} (of {self.config.epochs} epochs)")

    @property
    def finished(self) -> bool:
        """Whether every configured epoch has been trained (nothing is left for fit())."""
        return self.epoch >= self.config.epochs and self.step == 0

    def save_checkpoint(self) -> None:
        """Write the state to ``run_dir`` atomically, unless it holds a NaN/inf (then raise)."""
        assert self.run_dir is not None
        self._raise_pending_fault()
        bad = nonfinite_tensors(self.method.state_dict().items())
        if bad:
            shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            at = position(self.epoch, self.step, self.steps_per_epoch())
            raise NonFiniteError(self._fault_message(f"NaN/inf in the model at {at}: {shown}"))
        save_checkpoint(self.run_dir / CHECKPOINT, self.state_dict())
        self._saved_at = (self.epoch, self.step)
        self._last_save = time.monotonic()

    # -- training -------------------------------------------------------------------------
    def _training_tensors(self) -> tuple[Tensor, Tensor]:
        """The training set, copied to the GPU once when it fits in a quarter of the free memory:
        batches are then gathered on the device and no host-to-device copy sits in the step."""
        x, y = self.data.train_x, self.data.train_y
        if self.device.type == "cuda" and x.nbytes < torch.cuda.mem_get_info(self.device)[0] // 4:
            return x.to(self.device), y.to(self.device)
        return x, y

    def _schedule(self, epoch: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(unit, x, y) triples of one epoch in the configured order; shuffles are seeded."""
        x, y, bs = self._train_x, self._train_y, self.config.batch_size
        # the dataset's training augmentation if the run asks for it; seeded by the shuffle's generator
        aug = self.data.train_transform if self.config.augment else None

        def gen(*salt: int) -> torch.Generator:
            return torch.Generator().manual_seed(hash((self.config.seed, epoch, *salt)) % 2**63)

        if self.config.block_order == "sequential":
            for unit in self.trained_units:
                for xb, yb in batches(x, y, bs, shuffle=True, generator=gen(unit), transform=aug):
                    yield unit, xb, yb
        else:
            for xb, yb in batches(x, y, bs, shuffle=True, generator=gen(), transform=aug):
                for unit in self.trained_units:
                    yield unit, xb, yb

    def train_step(self, unit: int, x: Tensor, y: Tensor) -> dict[str, Tensor] | None:
        """One local step: backward on unit's loss, step only the groups it owns.

        Returns the loss terms, or ``None`` when ``skip_nonfinite`` dropped a batch whose loss or
        gradient is NaN/inf: no optimizer step, and the buffers (BatchNorm statistics) as before.
        """
        terms = self.graphs(unit, x, y) if self.graphs is not None else None
        if terms is not None:  # replayed from a CUDA graph (one process, stop mode)
            self._pending.add(self._where(unit), *step_values(terms, x))
        else:
            snapshot = [b.clone() for b in self._buffers] if self.config.skip_nonfinite else None
            terms = self._forward_backward(unit, x, y)
            if snapshot is None:  # stop mode: checked in bulk later, without a sync here
                self._pending.add(self._where(unit), *step_values(terms, x))
            else:
                what = describe_values(*step_values(terms, x, (p.grad for p in self._unit_params[unit])))
                if what is not None:
                    self._skip_batch(unit, snapshot, Fault(*self._where(unit), what=what))
                    self.parallelism.after_step(self.method)
                    return None
            self._optimizer_step(unit)
        self.unit_steps[unit] += 1
        self.parallelism.after_step(self.method)
        return terms

    def _forward_backward(self, unit: int, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Unit's loss and its gradients (all-reduced across processes if data parallel)."""
        with autocast_for(self.precision, self.device):
            out = self.method.unit_loss(unit, x, y)
        out.loss.float().backward()
        self.parallelism.sync_gradients(self.method, self.units[unit].groups)
        return {"loss": out.loss.detach(), **out.terms}

    def _optimizer_step(self, unit: int) -> None:
        """Step only the optimizers of the groups ``unit`` owns, then drop their gradients."""
        for group in self.units[unit].groups:
            if group in self.optimizers:
                self.optimizers[group].step()
                self.optimizers[group].zero_grad(set_to_none=True)

    def _step_body(self, unit: int, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """What a CUDA graph records: a step without its checks."""
        terms = self._forward_backward(unit, x, y)
        self._optimizer_step(unit)
        return terms

    def _step_state(self) -> list[Tensor]:
        """Every tensor a step may change: parameters, buffers, optimizer state."""
        return [*self.method.parameters(), *self._buffers, *optimizer_state(self.optimizers.values())]

    def _where(self, unit: int) -> tuple[str, int, int, int]:
        """(unit name, epoch, step, steps per epoch) of the step being taken, 1-based."""
        return self.units[unit].name, self.epoch + 1, self.step + 1, self.steps_per_epoch()

    def _skip_batch(self, unit: int, snapshot: list[Tensor], fault: Fault) -> None:
        for p in self._unit_params[unit]:
            p.grad = None
        with torch.no_grad():
            for buffer, saved in zip(self._buffers, snapshot, strict=True):
                buffer.copy_(saved)
        self._skipped += 1
        tqdm.write(f"noprop: skipped a batch: {fault.describe()}", file=sys.stderr)

    def steps_per_epoch(self) -> int:
        return len(self.trained_units) * num_batches(len(self.data.train_x), self.config.batch_size)

    def _raise_pending_fault(self) -> None:
        fault = self._pending.first_fault()
        if fault is not None:
            raise NonFiniteError(self._fault_message(fault.describe()))

    def _fault_message(self, text: str) -> str:
        if self.run_dir is None:
            return f"{text}; no run directory, nothing was saved"
        if self._saved_at is None:
            return f"{text}; no checkpoint had been written yet"
        at = position(*self._saved_at, self.steps_per_epoch())
        return (f"{text}; the last good checkpoint (at {at}) is kept in {self.run_dir}: fix the cause "
                "and resume with --resume, or add --skip-nonfinite to skip such batches")

    def _can_save_mid_epoch(self) -> bool:
        """Mid-epoch state is whole only where this process trains every unit (not block parallel)."""
        return self.run_dir is not None and len(self.trained_units) == len(self.units)

    def _between_steps(self) -> None:
        """Before each step: a requested stop, the NaN check, the timed checkpoint."""
        if self._stop.requested:
            self._interrupt()
        if len(self._pending) >= CHECK_EVERY:
            self._raise_pending_fault()
        minutes = self.config.checkpoint_minutes
        if (minutes and self.step and self._can_save_mid_epoch()
                and time.monotonic() - self._last_save >= 60 * minutes):
            self.save_checkpoint()

    def _interrupt(self) -> NoReturn:
        """Checkpoint where the loop stands (if the state there is whole) and stop."""
        assert self._stop.signum is not None
        if self.run_dir is None:
            raise TrainingInterrupted(self._stop.signum, None, None)
        already_saved = self._saved_at == (self.epoch, self.step)
        if not already_saved and (self.step == 0 or self._can_save_mid_epoch()):
            self.save_checkpoint()
        self._raise_pending_fault()
        where = position(*self._saved_at, self.steps_per_epoch()) if self._saved_at else None
        raise TrainingInterrupted(self._stop.signum, self.run_dir, where)

    @property
    def scheduled_lr(self) -> bool:
        """Whether the lr changes during the run (a schedule or a warm-up)."""
        return self.config.lr_schedule != "constant" or bool(self.config.warmup_epochs)

    def _schedule_lr(self, unit: int, steps_per_epoch: int) -> None:
        """Set the lr of ``unit``'s optimizers for the coming step (training/lr_schedule.py)."""
        config = self.config
        if not self.scheduled_lr:
            return
        if config.block_order == "sequential":  # each unit's own pass is its epoch
            per_unit = steps_per_epoch // len(self.trained_units)
            within = (self.step % per_unit + 1) / per_unit
        else:
            within = (self.step + 1) / steps_per_epoch
        progress = self.epoch + within
        lr = config.lr * lr_factor(config.lr_schedule, progress, config.epochs, config.warmup_epochs)
        for group in self.units[unit].groups:
            if group in self.optimizers:
                for param_group in self.optimizers[group].param_groups:
                    set_lr(param_group, lr)

    def train_epoch(self) -> dict[str, float]:
        """The rest of the current epoch (all of it unless resumed mid-epoch); mean loss terms.

        Sets :attr:`last_epoch_seconds` and :attr:`last_epoch_skipped` for the epoch's metrics.
        """
        self.method.train()
        self.parallelism.begin_epoch(self.method)
        total = self.steps_per_epoch()
        self._epoch_clock = time.perf_counter() - self._epoch_seconds
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            # the bar is for terminals: piped to a file, the per-epoch lines alone are written
            disable=not (self.config.progress and _is_terminal()),
            leave=False,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        for index, (unit, xb, yb) in enumerate(self._schedule(self.epoch)):
            if index < self.step:
                continue  # finished before an interruption: same order replayed, step skipped
            self._between_steps()
            xb, yb = self.parallelism.shard(xb, yb)
            self._schedule_lr(unit, total)
            terms = self.train_step(unit, xb.to(self.device), yb.to(self.device))
            self.step += 1
            self._steps_run += 1
            bar.update(1)
            if terms is None:  # skipped non-finite batch, counted by train_step
                continue
            for k, v in terms.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            if self.config.progress and self.step % 50 == 0:
                bar.set_postfix(unit=self.units[unit].name, loss=f"{float(terms['loss']):.3f}")
            if self.out_of_time():
                break
        bar.close()
        self._raise_pending_fault()
        self.parallelism.end_epoch(self.method, self.optimizers)
        taken = max(self.step - self._skipped, 1)
        means = {k: float(v) / taken for k, v in self._sums.items()}
        self.last_epoch_seconds = time.perf_counter() - self._epoch_clock
        self.last_epoch_fraction = self.step / total
        self.last_epoch_skipped = self._skipped
        self.step, self._sums, self._skipped, self._epoch_seconds = 0, {}, 0, 0.0
        return means

    def fit(self) -> dict[str, Any]:
        """Train up to ``config.epochs`` (continuing from ``self.epoch``) and write the results.

        Raises :class:`TrainingInterrupted` after checkpointing on SIGINT/SIGTERM, and
        :class:`NonFiniteError` on a NaN/inf (the last good checkpoint stays as it was).
        """
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / CONFIG, yaml.safe_dump(self.resolved_config()))
        reset_peak_memory(self.device)
        if self.config.log_epochs:
            tqdm.write(model_summary(self.method))
        accuracy = float("nan")
        with self._stop, flushed_denormals(self.config.flush_denormal) as self.denormals_flushed:
            self._last_save = time.monotonic()
            while self.epoch < self.config.epochs and not self.out_of_time():
                if self._stop.requested:
                    self._interrupt()
                terms = self.train_epoch()
                seconds = self.last_epoch_seconds
                self.train_seconds += seconds
                self.epoch += 1
                accuracy = self.evaluate()
                skipped = {"skipped_steps": self.last_epoch_skipped} if self.config.skip_nonfinite else {}
                self.metrics.log({
                    "epoch": self.epoch,
                    **{f"train_{k}": round(v, 6) for k, v in terms.items()},
                    **skipped,
                    "test_accuracy": accuracy,
                    "epoch_seconds": round(seconds, 3),
                    "samples_per_second": round(
                        len(self.data.train_x) * self.last_epoch_fraction / seconds, 1),
                    **({"epoch_fraction": round(self.last_epoch_fraction, 4)}
                       if self.config.max_train_seconds else {}),
                })
                if self.config.log_epochs:
                    tqdm.write(f"epoch {self.epoch}: loss {terms['loss']:.4f}  test accuracy {accuracy:.4f}")
                if self.run_dir is not None:
                    self.save_checkpoint()
        if self.metrics.rows:
            accuracy = float(self.metrics.rows[-1]["test_accuracy"])
        untrained = self.untrained_units()
        if untrained and self.config.log_epochs:
            tqdm.write(f"warning: the time budget ended before {len(untrained)} of {len(self.units)} units "
                       f"took a step ({', '.join(untrained)}), so predictions are poor; with "
                       "--max-train-seconds use --block-order interleaved (every block steps on every batch)")
        return self._write_results(accuracy)

    def untrained_units(self) -> list[str]:
        """Units this process trains that have not taken a single step (a cut sequential epoch)."""
        return [self.units[u].name for u in self.trained_units if not self.unit_steps[u]]

    def out_of_time(self) -> bool:
        """Whether the wall-clock budget ``max_train_seconds`` is spent (evaluation not counted)."""
        budget = self.config.max_train_seconds
        if budget is None:
            return False
        running = time.perf_counter() - self._epoch_clock if self.step else 0.0
        return self.train_seconds + running >= budget

    def evaluate(self) -> float:
        return self.evaluate_readouts()[-1]

    def evaluate_readouts(self) -> list[float]:
        """Test accuracy read out after each step of the method's inference chain (last: final)."""
        return readout_accuracies(
            self.method,
            self.data.test_x,
            self.data.test_y,
            steps=self.config.eval_inference_steps or self.config.sampler_steps,
            deterministic=self.config.eval_deterministic,
            seed=self.config.eval_seed,
            flush_denormal=self.config.flush_denormal,
            precision=self.precision,
        )

    def _write_results(self, accuracy: float) -> dict[str, Any]:
        n_seen = len(self.data.train_x) * (self.epoch - 1 + self.last_epoch_fraction) if self.epoch else 0
        results = {
            "method": self.config.method,
            "dataset": self.data.name,
            "epochs": self.epoch,
            "test_accuracy": accuracy,
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_second": round(n_seen / self.train_seconds, 1) if self.train_seconds else 0.0,
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "device": str(self.device),
            "flush_denormal": self.denormals_flushed,
            "precision": self.precision,
            "cpu_native_bf16": cpu_has_native_bf16(),
            "torch_version": torch.__version__,
            "noprop_version": __version__,
            "seed": self.config.seed,
            "num_parameters": sum(p.numel() for p in self.method.parameters()),
            # an order only exists between several units (DT unfused); None for CT, FM, fused DT
            "block_order": self.config.block_order if len(self.units) > 1 else None,
            "untrained_units": self.untrained_units(),
            **self.method.describe(),
            **(self.graphs.describe() if self.graphs is not None else {}),
            **self.parallelism.describe(),
            "config": self.resolved_config(),
        }
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / RESULTS, results)
        return results


def check_cuda_graphs(config: RunConfig, device: torch.device, parallelism: Parallelism) -> None:
    """``cuda_graphs`` applies to one process on a CUDA device, in stop mode; else one line."""
    if not config.cuda_graphs:
        return
    if device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device; this run is on {device.type}")
    if config.skip_nonfinite:
        raise ConfigError("cuda_graphs cannot be used with skip_nonfinite (a recorded step cannot "
                          "look at its gradients before the optimizer step)")
    if type(parallelism) is not Parallelism:
        raise ConfigError("cuda_graphs trains in one process; it is not available with --nproc/torchrun")


def model_summary(method: Method) -> str:
    """One line: parameters per group (equal-sized consecutive groups folded) and the total."""
    counts = [(name, sum(p.numel() for p in params)) for name, params in method.parameter_groups().items()]
    parts: list[str] = []
    i = 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1][1] == counts[i][1]:
            j += 1
        name, n = counts[i]
        parts.append(f"{name}..{counts[j][0]} {n:,} each" if j > i else f"{name} {n:,}")
        i = j + 1
    total = sum(p.numel() for p in method.parameters())
    return f"model {type(method).__name__}: {'; '.join(parts)}; total {total:,} parameters"


def _is_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _refuse_fixed_changes(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """A resumed run may change only :data:`RESUMABLE_CHANGES`; anything else is one clear error."""
    changed = [k for k, v in now.items()
               if k in saved and k not in RESUMABLE_CHANGES and saved[k] != v]
    if changed:
        shown = "; ".join(f"{k}: checkpoint has {saved[k]!r}, given {now[k]!r}" for k in changed)
        raise CheckpointError(f"a resumed run cannot change {', '.join(changed)} ({shown}); "
                              "start a new run instead")

