"""The training loop. It knows the :class:`~noprop.methods.base.Method` interface and nothing else.

One optimizer per parameter group; a step on training unit ``u`` back-propagates ``u``'s local
loss and steps only the optimizers of the groups ``u`` names, then drops their gradients. Units
are visited in the order of :mod:`noprop.training.order`. After every epoch the model is
evaluated, a row goes to ``metrics.csv`` and a checkpoint (:class:`~noprop.saved_run.SavedRun`) is
written atomically. After the last epoch the temperatures of the class probabilities are fitted
(:func:`noprop.inference.fit_temperatures`) on the examples ``fit_temperature_on`` names and saved
with the model.

Surviving faults (``docs/failure-modes.md``): SIGINT/SIGTERM stop the loop at the next step with
a checkpoint of the whole state (mid-epoch too), so a resumed run ends bit for bit where an
uninterrupted one would on CPU. A NaN/inf stops the run naming the unit, step and term (or, with
``skip_nonfinite``, skips the batch); no checkpoint holding a NaN/inf is ever written.

Build a trainer for a run with :func:`noprop.run.build_trainer`; other processes, the evaluation
and the run files are behind :class:`~noprop.training.parallelism.Parallelism`,
:class:`~noprop.inference.InferenceOptions` and :mod:`noprop.saved_run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor

from noprop import device as devices
from noprop.config import RunConfig
from noprop.data.base import ClassificationData, num_batches
from noprop.dropout import dropout_rng_for, use_dropout_rng
from noprop.inference import (
    InferenceOptions,
    Temperatures,
    fit_temperatures,
    readout_accuracies,
    temperature_examples,
)
from noprop.methods.base import Method
from noprop.random_state import capture_rng_state, restore_rng_state
from noprop.saved_run import (
    CHECKPOINT,
    METRICS,
    DataInfo,
    SavedRun,
    TrainingProgress,
    metrics_row,
    run_results,
    write_config,
    write_results,
)
from noprop.training.graphs import CudaGraphRecorder, GraphedSteps, check_cuda_graphs
from noprop.training.interrupt import StopRequest, TrainingInterrupted
from noprop.training.metrics import MetricsLog
from noprop.training.nonfinite import Fault, FaultWatch, describe_values, step_values
from noprop.training.optimizers import (
    make_optimizers,
    optimizer_state,
    plain_lrs,
    restore_optimizers,
    set_lr,
    step_lr,
)
from noprop.training.order import epoch_batches
from noprop.training.parallelism import Parallelism
from noprop.training.progress import EpochProgress, budget_warnings, model_summary, position, say

#: How the trainer scores the model after an epoch: accuracy read out after each inference step
#: (the last is the final prediction's). Default: the test split with the run's InferenceOptions.
Evaluation = Callable[[Method], list[float]]
#: Where the class probabilities' temperatures are fitted: ``"train"``, a seeded draw of at most
#: ``TEMPERATURE_EXAMPLES`` training examples (``noprop train``, whose held-out split is the test
#: split it reports on); ``"validation"``, the split the trainer evaluates on when that split is a
#: validation split (``Classifier.fit``); ``None``, not at all (a distributed follower).
TEMPERATURE_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class EpochSummary:
    """What one epoch (or the rest of a resumed one) took: its metrics row's timing columns."""

    seconds: float
    #: below 1 when the wall-clock budget cut the epoch short
    fraction: float
    skipped: int


class Trainer:
    """Fits a method on in-memory data, writing metrics, checkpoints and results to ``run_dir``."""

    def __init__(self, method: Method, data: ClassificationData, config: RunConfig,
                 run_dir: Path | None = None, parallelism: Parallelism | None = None,
                 evaluation: Evaluation | None = None, fit_temperature_on: str | None = "train") -> None:
        #: The line saying how the budget was sized by steps (None: the run or dataset gave it).
        self.budget_note = config.budget_note(len(data.train_x))
        self.config = config = config.resolved(train_rows=len(data.train_x))
        self.device = devices.resolve_device(config.device)
        #: ``fp32`` or ``bf16``: the precision ``config.precision`` resolves to on this machine.
        self.precision = devices.resolve_precision(config.precision, self.device)
        #: whether a step hands the model its images channels-last (``config.channels_last``)
        self.channels_last = devices.channels_last_for(config.channels_last, self.precision, self.device)
        self.method = method.to(self.device)
        #: ``exact`` or ``fast``: how this run's dropout layers draw their masks (``config.dropout_rng``)
        self.dropout_rng = dropout_rng_for(config.dropout_rng, self.precision, self.device)
        use_dropout_rng(self.method, self.dropout_rng)
        if self.device.type == "cpu":  # else every step page-faults its activations in afresh
            devices.retain_freed_memory()
        data.check_trainable(augment=config.augment)
        self.data = data
        # a training set that fits is copied to the GPU once: no host-to-device copy in the step
        self._train_x, self._train_y = devices.resident(data.train_x, data.train_y, device=self.device)
        self.run_dir = run_dir
        self.parallelism = parallelism or Parallelism()
        check_cuda_graphs(config, self.device, self.parallelism)
        self.optimizers = make_optimizers(method, config, capturable=config.cuda_graphs)
        self.units = method.training_units()
        #: The units this process trains (all of them unless block parallel).
        self.trained_units = self.parallelism.units(len(self.units))
        #: How the per-epoch evaluation runs its sampler (the run's eval_* settings).
        self.inference = InferenceOptions.of_run(config, self.device)
        self.evaluation = evaluation or self.test_readouts
        if fit_temperature_on not in (*TEMPERATURE_SPLITS, None):
            raise ValueError(f"fit_temperature_on must be one of {TEMPERATURE_SPLITS} or None, "
                             f"got {fit_temperature_on!r}")
        self.fit_temperature_on = fit_temperature_on
        #: The class probabilities' temperatures (``None`` until fitted after the last epoch).
        self.temperatures: Temperatures | None = None
        self.metrics = MetricsLog(run_dir / METRICS if run_dir else None, tensorboard=config.tensorboard)
        self.progress = TrainingProgress(unit_steps=[0] * len(self.units))
        self.last_epoch = EpochSummary(0.0, 1.0, 0)
        #: Whether denormals were flushed to zero on the CPU during fit() (results.json).
        self.denormals_flushed = False
        # fault handling: a requested stop, NaN/inf checks, when the last checkpoint was written
        self._stop = StopRequest()
        self.faults = FaultWatch(run_dir)
        self._last_save = time.monotonic()
        self._steps_run = 0
        self._epoch_clock = time.perf_counter()
        #: Recorded steps replayed per batch (``cuda_graphs``); ``None`` runs every step eagerly.
        self.graphs = (GraphedSteps(self._step_body, self._step_state, list(self.optimizers.values()),
                                    CudaGraphRecorder(self.device), scheduled_lr=self.scheduled_lr,
                                    batch_rows=config.batch_size)
                       if config.cuda_graphs else None)

    @property
    def epoch(self) -> int:
        """Finished epochs."""
        return self.progress.epoch

    @property
    def finished(self) -> bool:
        """Whether every configured epoch has been trained (nothing is left for fit())."""
        return self.epoch >= self.config.epochs and self.progress.step == 0

    @property
    def scheduled_lr(self) -> bool:
        """Whether the lr changes during the run (a schedule or a warm-up)."""
        return self.config.lr_schedule != "constant" or bool(self.config.warmup_epochs)

    def steps_per_epoch(self) -> int:
        return len(self.trained_units) * num_batches(len(self.data.train_x), self.config.batch_size)

    # -- the saved run ------------------------------------------------------------------------
    def saved_run(self) -> SavedRun:
        """Everything a resumed run needs to continue exactly: at an epoch end or mid-epoch."""
        running = time.perf_counter() - self._epoch_clock if self.progress.step else 0.0
        return SavedRun(
            config=self.config.to_dict(), spec=self.data.spec, model=self.method.state_dict(),
            data_info=DataInfo.of(self.data),
            optimizers={k: plain_lrs(opt.state_dict()) for k, opt in self.optimizers.items()},
            progress=self.progress.copy(torch.device("cpu"), epoch_seconds=running,
                                        metrics=list(self.metrics.rows)),
            rng=capture_rng_state(), temperatures=self.temperatures,
        )

    def restore(self, saved: SavedRun) -> None:
        """Continue from ``saved``; a checkpoint of another model or run raises, naming the difference."""
        saved.check_resumable(self.config, self.data.spec, set(self.optimizers))
        self.method.load_state_dict(saved.model)
        restore_optimizers(self.optimizers, saved.optimizers, self.config)
        p = saved.progress
        self.progress = p.copy(self.device, metrics=None, unit_steps=p.unit_steps or self.progress.unit_steps)
        if p.metrics is not None:
            self.metrics.restore([r for r in p.metrics if int(r["epoch"]) <= p.epoch])
        restore_rng_state(saved.rng)
        self.temperatures = saved.temperatures
        self.faults.saved_at = (p.epoch, p.step)

    def resume(self, saved: SavedRun | None = None) -> None:
        """Continue from ``run_dir``'s checkpoint (or ``saved``, read from it already); for older
        checkpoints without their metrics, from metrics.csv."""
        assert self.run_dir is not None
        saved = saved or SavedRun.read(self.run_dir / CHECKPOINT, map_location=self.device)
        self.restore(saved)
        if saved.progress.metrics is None and (self.run_dir / METRICS).is_file():
            rows = MetricsLog.read(self.run_dir / METRICS)
            self.metrics.restore([r for r in rows if int(r["epoch"]) <= self.epoch])
        if self.config.log_epochs and not self.finished:
            where = position(self.epoch, self.progress.step, self.steps_per_epoch())
            say(f"resuming {self.run_dir} at {where} (of {self.config.epochs} epochs)")

    def save_checkpoint(self) -> None:
        """Write the state to ``run_dir`` atomically, unless it holds a NaN/inf (then raise)."""
        assert self.run_dir is not None
        steps = self.steps_per_epoch()
        self.faults.check_pending(steps)
        at = position(self.epoch, self.progress.step, steps)
        self.faults.check_model(self.method.state_dict(), at, steps)
        self.saved_run().write(self.run_dir / CHECKPOINT)
        self.faults.saved_at = (self.epoch, self.progress.step)
        self._last_save = time.monotonic()

    # -- one step -----------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(unit, x, y) triples of one epoch in the configured order; shuffles are seeded."""
        return epoch_batches(self._train_x, self._train_y, self.config, epoch, self.trained_units,
                             self.data.train_transform if self.config.augment else None)

    def train_step(self, unit: int, x: Tensor, y: Tensor) -> dict[str, Tensor] | None:
        """One local step: backward on unit's loss, step only the groups it owns.

        Returns the loss terms, or ``None`` when ``skip_nonfinite`` dropped a batch whose loss or
        gradient is NaN/inf: no optimizer step, and the buffers (BatchNorm statistics) as before.
        """
        terms = self.graphs(unit, x, y) if self.graphs is not None else None
        if terms is not None:  # replayed from a CUDA graph (one process, stop mode)
            self.faults.pending.add(self._where(unit), *step_values(terms, x))
        else:
            buffers = list(self.method.buffers())
            snapshot = [b.clone() for b in buffers] if self.config.skip_nonfinite else None
            terms = self._forward_backward(unit, x, y)
            if snapshot is None:  # stop mode: checked in bulk later, without a sync here
                self.faults.pending.add(self._where(unit), *step_values(terms, x))
            else:
                params = self.method.unit_parameters(unit)
                what = describe_values(*step_values(terms, x, (p.grad for p in params)))
                if what is not None:
                    self.faults.skip(params, buffers, snapshot, Fault(*self._where(unit), what=what))
                    self.progress.epoch_skipped += 1
                    self.parallelism.after_step(self.method)
                    return None
            self._optimizer_step(unit)
        self.progress.unit_steps[unit] += 1
        self.parallelism.after_step(self.method)
        return terms

    def _forward_backward(self, unit: int, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Unit's loss and its gradients (all-reduced across processes if data parallel)."""
        with devices.autocast_for(self.precision, self.device):
            out = self.method.unit_loss(unit, devices.step_layout(x, self.channels_last), y)
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
        return [*self.method.parameters(), *self.method.buffers(), *optimizer_state(self.optimizers.values())]

    def _set_step_lr(self, unit: int, steps_per_epoch: int) -> None:
        """Set the lr of ``unit``'s optimizers for the coming step (noprop/lr_schedule.py)."""
        if self.scheduled_lr:
            units = len(self.trained_units)
            lr = step_lr(self.config, self.epoch, self.progress.step, steps_per_epoch, units)
            for group in self.units[unit].groups:
                if group in self.optimizers:
                    for param_group in self.optimizers[group].param_groups:
                        set_lr(param_group, lr)

    # -- faults --------------------------------------------------------------------------------
    def _where(self, unit: int) -> tuple[str, int, int, int]:
        """(unit name, epoch, step, steps per epoch) of the step being taken, 1-based."""
        return self.units[unit].name, self.epoch + 1, self.progress.step + 1, self.steps_per_epoch()

    def _can_save_mid_epoch(self) -> bool:
        """Mid-epoch state is whole only where this process trains every unit (not block parallel)."""
        return self.run_dir is not None and len(self.trained_units) == len(self.units)

    def _between_steps(self) -> None:
        """Before each step: a requested stop, the NaN check, the timed checkpoint."""
        if self._stop.requested:
            self._interrupt()
        if self.faults.due:
            self.faults.check_pending(self.steps_per_epoch())
        minutes = self.config.checkpoint_minutes
        if (minutes and self.progress.step and self._can_save_mid_epoch()
                and time.monotonic() - self._last_save >= 60 * minutes):
            self.save_checkpoint()

    def _interrupt(self) -> NoReturn:
        """Checkpoint where the loop stands (if the state there is whole) and stop."""
        assert self._stop.signum is not None
        if self.run_dir is None:
            raise TrainingInterrupted(self._stop.signum, None, None)
        step = self.progress.step
        if self.faults.saved_at != (self.epoch, step) and (step == 0 or self._can_save_mid_epoch()):
            self.save_checkpoint()
        self.faults.check_pending(self.steps_per_epoch())
        saved_at = self.faults.saved_at
        where = position(*saved_at, self.steps_per_epoch()) if saved_at else None
        raise TrainingInterrupted(self._stop.signum, self.run_dir, where)

    # -- epochs ------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """The rest of the current epoch (all of it unless resumed mid-epoch); mean loss terms.
        Sets :attr:`last_epoch` for the epoch's metrics."""
        self.method.train()
        self.parallelism.begin_epoch(self.method)
        p, total = self.progress, self.steps_per_epoch()
        self._epoch_clock = time.perf_counter() - p.epoch_seconds
        bar = EpochProgress(epoch=p.epoch + 1, epochs=self.config.epochs, total=total, initial=p.step,
                            rows=len(self.data.train_x), enabled=self.config.progress)
        for index, (unit, xb, yb) in enumerate(self._epoch_batches(p.epoch)):
            if index < p.step:
                continue  # finished before an interruption: same order replayed, step skipped
            self._between_steps()
            xb, yb = self.parallelism.shard(xb, yb)
            self._set_step_lr(unit, total)
            terms = self.train_step(unit, xb.to(self.device), yb.to(self.device))
            p.step += 1
            self._steps_run += 1
            bar.update(1)
            if terms is None:  # skipped non-finite batch, counted by train_step
                continue
            for k, v in terms.items():
                p.epoch_sums[k] = p.epoch_sums.get(k, 0.0) + v
            if bar.wants_loss(p.step):  # the only host sync progress costs, when a line is due
                bar.show_loss(p.step, float(terms["loss"]), self.units[unit].name)
            if self.out_of_time():
                break
        bar.close()
        self.faults.check_pending(self.steps_per_epoch())
        self.parallelism.end_epoch(self.method, self.optimizers)
        taken = max(p.step - p.epoch_skipped, 1)
        means = {k: float(v) / taken for k, v in p.epoch_sums.items()}
        seconds = time.perf_counter() - self._epoch_clock
        self.last_epoch = EpochSummary(seconds, p.step / total, p.epoch_skipped)
        p.step, p.epoch_sums, p.epoch_skipped, p.epoch_seconds = 0, {}, 0, 0.0
        return means

    def fit(self) -> dict[str, Any]:
        """Train up to ``config.epochs`` (continuing from ``self.epoch``) and write the results.

        Raises :class:`TrainingInterrupted` after checkpointing on SIGINT/SIGTERM, and
        ``NonFiniteError`` on a NaN/inf (the last good checkpoint stays as it was).
        """
        config = self.config
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_config(self.run_dir, config)
        devices.reset_peak_memory(self.device)
        if config.log_epochs:
            if self.budget_note and not self.epoch:
                say(self.budget_note)
            say(model_summary(self.method))
        with self._stop, devices.flushed_denormals(config.flush_denormal) as self.denormals_flushed:
            self._last_save = time.monotonic()
            while self.epoch < config.epochs and not self.out_of_time():
                if self._stop.requested:
                    self._interrupt()
                terms = self.train_epoch()
                self.progress.train_seconds += self.last_epoch.seconds
                self.progress.epoch += 1
                accuracy = self.evaluation(self.method)[-1]
                last = self.last_epoch
                self.metrics.log(metrics_row(self.config, self.epoch, terms, accuracy, last.seconds,
                                             last.fraction, last.skipped, len(self.data.train_x)))
                if config.log_epochs:
                    say(f"epoch {self.epoch}: loss {terms['loss']:.4f}  test accuracy {accuracy:.4f}")
                final = self.epoch >= config.epochs or self.out_of_time()
                if final and self.fit_temperature_on is not None:  # into the last epoch's checkpoint
                    self.temperatures = self.fitted_temperatures()
                if self.run_dir is not None:
                    self.save_checkpoint()
        if config.log_epochs:
            steps = self.progress.unit_steps or []
            for line in budget_warnings({self.units[u].name: steps[u] for u in self.trained_units},
                                        self.method.steps_to_learn):
                say(line)
        results = self.results(float(self.metrics.rows[-1]["test_accuracy"]) if self.metrics.rows
                               else float("nan"))
        if self.run_dir is not None:
            write_results(self.run_dir, results)
        return results

    def untrained_units(self) -> list[str]:
        """Units this process trains that have not taken a single step (a cut sequential epoch)."""
        steps = self.progress.unit_steps or []
        return [self.units[u].name for u in self.trained_units if not steps[u]]

    def out_of_time(self) -> bool:
        """Whether the wall-clock budget ``max_train_seconds`` is spent (evaluation not counted)."""
        budget = self.config.max_train_seconds
        if budget is None:
            return False
        running = time.perf_counter() - self._epoch_clock if self.progress.step else 0.0
        return self.progress.train_seconds + running >= budget

    def fitted_temperatures(self) -> Temperatures:
        """The temperatures fitted on ``fit_temperature_on``'s examples, with the sampler settings
        a prediction uses (the method's own steps, the run's precision and ``eval_seed``)."""
        if self.fit_temperature_on == "validation":
            x, y = self.data.test_x, self.data.test_y
        else:
            pick = temperature_examples(len(self.data.train_x), self.config.seed)
            x, y = self.data.train_x[pick], self.data.train_y[pick]
        assert self.fit_temperature_on is not None
        options = self.inference.replace(steps=None)
        return fit_temperatures(self.method, x, y, options, self.fit_temperature_on)

    def test_readouts(self, method: Method) -> list[float]:
        """Test accuracy read out after each step of the method's inference chain (last: final)."""
        return readout_accuracies(method, self.data.test_x, self.data.test_y, self.inference)

    def results(self, accuracy: float) -> dict[str, Any]:
        """What ``results.json`` records (:func:`noprop.saved_run.run_results`)."""
        p, units = self.progress, len(self.units)
        seen = len(self.data.train_x) * (self.epoch - 1 + self.last_epoch.fraction) if self.epoch else 0
        return run_results(self.config, self.method, dataset=self.data.name, epochs=self.epoch,
                           accuracy=accuracy, train_seconds=p.train_seconds, samples_seen=seen,
                           device=self.device, precision=self.precision,
                           flush_denormal=self.denormals_flushed, channels_last=self.channels_last,
                           dropout_rng=self.dropout_rng,
                           units=units, untrained_units=self.untrained_units(),
                           **({"temperatures": self.temperatures.to_dict()} if self.temperatures else {}),
                           **(self.graphs.describe() if self.graphs is not None else {}),
                           **self.parallelism.describe())
