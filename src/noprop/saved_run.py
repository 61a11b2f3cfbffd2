"""A saved run: the files of a run directory, and the one reader and writer of its checkpoint.

A run directory holds::

    config.yaml      the resolved run configuration (itself a preset: --config RUN/config.yaml)
    metrics.csv      one row per epoch (training/metrics.py)
    results.json     the final measurements
    checkpoint.pt    a SavedRun: model, optimizers, progress, random states, how to prepare inputs,
                     and the temperatures of the class probabilities (fitted after the last epoch)

:class:`SavedRun` is the checkpoint, typed. The trainer writes it (:meth:`SavedRun.write`), and so
does ``Classifier.save``; every reader (``noprop evaluate``, ``predict``, ``export``, ``plot``,
``Classifier.load``, a resumed run) goes through :meth:`SavedRun.read`, which also reads an exported
``.safetensors`` model. On disk the checkpoint is one ``torch.save`` dict of tensors and plain
values (format 1), loaded with ``weights_only=True`` so that it cannot run code; entries that older
versions did not write take their defaults here, so old runs still load, resume and predict.

The resume policy lives here too (:meth:`SavedRun.check_resumable`): a resumed run may change only
:data:`RESUMABLE_CHANGES`; every other setting shaped the state saved so far.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import Tensor

from noprop._version import __version__
from noprop.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from noprop.config import ConfigError, RunConfig, model_differences
from noprop.device import cpu_has_native_bf16, peak_memory_mb, resolve_precision
from noprop.export import META_KEYS, ExportError, is_exported, read_model, write_model
from noprop.inference import Temperatures
from noprop.methods import Method, build_method
from noprop.spec import DataSpec

if TYPE_CHECKING:
    from noprop.data.base import ClassificationData

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
RUN_FILES = (CHECKPOINT, RESULTS, METRICS, CONFIG)
CHECKPOINT_FORMAT = 1

#: Run settings a resumed run takes from the command line (applied, and recorded in config.yaml);
#: every other setting must equal the checkpoint's, since the state saved so far depends on it.
RESUMABLE_CHANGES = frozenset({
    "epochs", "lr", "weight_decay", "data_dir", "device", "progress", "log_epochs", "checkpoint_minutes",
    "max_train_seconds", "skip_nonfinite", "flush_denormal", "precision", "eval_inference_steps",
    "num_threads", "tensorboard", "cuda_graphs", "channels_last", "dropout_rng",
    "eval_deterministic", "eval_seed",
})


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or from an incompatible configuration."""


@dataclass(frozen=True)
class DataInfo:
    """How new inputs are prepared as the training data was, and what the classes are called."""

    name: str | None = None
    class_names: list[str] | None = None
    #: per-channel (per-feature for tables) ``[means, stds]`` of the training split
    normalization: list[list[float]] | None = None
    #: a table's columns, which a table given to ``noprop predict`` must repeat
    feature_names: list[str] | None = None

    @classmethod
    def of(cls, data: ClassificationData) -> DataInfo:
        return cls(
            name=data.name,
            class_names=list(data.class_names) if data.class_names else None,
            normalization=[list(v) for v in data.normalization] if data.normalization else None,
            feature_names=list(data.feature_names) if data.feature_names else None,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DataInfo:
        d = d or {}
        return cls(**{k: d.get(k) for k in ("name", "class_names", "normalization", "feature_names")})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "class_names": self.class_names, "normalization": self.normalization,
                "feature_names": self.feature_names}

    @property
    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``normalization`` as the ``(means, stds)`` tuples :func:`noprop.data.base.standardise` takes."""
        if not self.normalization:
            return None
        return tuple(self.normalization[0]), tuple(self.normalization[1])


@dataclass
class TrainingProgress:
    """Where training stands: enough to continue exactly, at an epoch end or mid-epoch."""

    #: finished epochs
    epoch: int = 0
    #: steps taken in the current epoch (0 at an epoch end)
    step: int = 0
    #: the current epoch's running sums of the loss terms, and its skipped steps and seconds so far
    epoch_sums: dict[str, Tensor] = field(default_factory=dict)
    epoch_skipped: int = 0
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0
    #: optimizer steps taken on each training unit over the whole run (``None``: not recorded)
    unit_steps: list[int] | None = None
    #: the rows of metrics.csv so far (``None`` in checkpoints older than this field)
    metrics: list[dict[str, Any]] | None = None

    def copy(self, device: torch.device, **changes: Any) -> TrainingProgress:
        """A copy with the running sums as tensors on ``device`` (and ``changes`` applied)."""
        sums = {k: torch.as_tensor(v).detach().to(device) for k, v in self.epoch_sums.items()}
        copied = {"epoch_sums": sums, "unit_steps": list(self.unit_steps or []), **changes}
        return dataclasses.replace(self, **copied)


@dataclass
class SavedRun:
    """A checkpoint, typed: the model and everything around it that a reader or a resumed run needs."""

    #: the resolved run configuration, flat, as in config.yaml
    config: dict[str, Any]
    spec: DataSpec
    model: dict[str, Tensor]
    data_info: DataInfo = field(default_factory=DataInfo)
    #: each parameter group's optimizer ``state_dict`` (empty in an exported model)
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: TrainingProgress = field(default_factory=TrainingProgress)
    #: the process's random states (:func:`noprop.random_state.capture_rng_state`)
    rng: Any = None
    noprop_version: str = __version__
    #: the class probabilities' temperatures, fitted after the last epoch (``None``: not yet, or a
    #: checkpoint written before they existed; readers then use T = 1, :meth:`LoadedRun.temperatures`)
    temperatures: Temperatures | None = None

    # -- reading and writing ----------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, map_location: str | torch.device = "cpu") -> SavedRun:
        """A run directory, its ``checkpoint.pt``, or an exported ``.safetensors`` model."""
        path = Path(path)
        if is_exported(path):
            try:
                return cls.from_dict(read_model(path), str(path))
            except ExportError as err:
                raise CheckpointError(str(err)) from None
        return cls.from_dict(_load(checkpoint_path(path), map_location), str(path))

    def write(self, path: Path) -> None:
        """Write the checkpoint to ``path`` atomically: a reader sees the old one or the new one."""
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, **self.to_dict()}, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def export(self, out: Path) -> Path:
        """Write the model alone, with what rebuilds it, as a ``.safetensors`` file (noprop export)."""
        entries = self.to_dict()
        return write_model(self.model, {k: entries[k] for k in META_KEYS}, out)

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: str) -> SavedRun:
        try:
            spec = DataSpec.from_dict(state["spec"])
            config, model = state["config"], state["model"]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source} is not a complete noprop checkpoint ({err})") from None
        progress = TrainingProgress(
            epoch=int(state.get("epoch", 0)), step=int(state.get("step", 0)),
            epoch_sums=dict(state.get("epoch_sums", {})), epoch_skipped=int(state.get("epoch_skipped", 0)),
            epoch_seconds=float(state.get("epoch_seconds", 0.0)),
            train_seconds=float(state.get("train_seconds", 0.0)),
            unit_steps=list(state["unit_steps"]) if "unit_steps" in state else None,
            metrics=list(state["metrics"]) if "metrics" in state else None,
        )
        return cls(config=config, spec=spec, model=model,
                   data_info=DataInfo.from_dict(state.get("data_info")),
                   optimizers=state.get("optimizers", {}), progress=progress, rng=state.get("rng"),
                   noprop_version=state.get("noprop_version", "?"),
                   temperatures=Temperatures.from_dict(state.get("temperatures")))

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's entries as written to disk (format 1)."""
        p = self.progress
        return {
            "noprop_version": self.noprop_version,
            "config": self.config,
            "spec": self.spec.to_dict(),
            "data_info": self.data_info.to_dict(),
            "model": self.model,
            "optimizers": self.optimizers,
            "epoch": p.epoch,
            "step": p.step,
            "epoch_sums": p.epoch_sums,
            "epoch_skipped": p.epoch_skipped,
            "epoch_seconds": p.epoch_seconds,
            "train_seconds": p.train_seconds,
            "metrics": p.metrics if p.metrics is not None else [],
            "rng": self.rng,
            "unit_steps": p.unit_steps if p.unit_steps is not None else [],
            "temperatures": self.temperatures.to_dict() if self.temperatures is not None else None,
        }

    # -- what a reader does with it ----------------------------------------------------------
    def run_config(self, source: str = "checkpoint") -> RunConfig:
        try:
            return RunConfig.from_dict(self.config)
        except ConfigError as err:
            raise CheckpointError(f"{source}: {err}") from None

    def build_method(self, source: str = "checkpoint") -> Method:
        """The model this run trained, rebuilt from its configuration, with the saved weights."""
        config = self.run_config(source)
        try:
            method = build_method(config.method, self.spec, config.method_config)
        except ConfigError as err:  # e.g. a user's encoder that cannot be imported here
            raise CheckpointError(f"{source}: cannot rebuild the model: {err}") from None
        load_model_state(method, self.model, source)
        return method

    def check_resumable(self, config: RunConfig, spec: DataSpec, groups: set[str]) -> None:
        """Refuse, in one line naming each difference, to continue this run with another model,
        other data, or a setting outside :data:`RESUMABLE_CHANGES` changed."""
        diffs, old = model_differences(self.config, config), self.spec
        if old.input_shape != spec.input_shape:
            diffs.append(f"input shape: checkpoint has {old.describe()}, this run has {spec.describe()}")
        if old.num_classes != spec.num_classes:
            diffs.append(f"num_classes: checkpoint has {old.num_classes}, this run has {spec.num_classes}")
        missing = sorted(groups - set(self.optimizers))
        if missing and not diffs:
            diffs.append(f"parameter groups: checkpoint lacks {', '.join(missing)}")
        if diffs:
            raise CheckpointError(f"checkpoint (noprop {self.noprop_version}) is from a different "
                                  "configuration: " + "; ".join(diffs))
        now = config.to_dict()
        changed = [k for k, v in now.items()
                   if k in self.config and k not in RESUMABLE_CHANGES and self.config[k] != v]
        if changed:
            shown = "; ".join(f"{k}: checkpoint has {self.config[k]!r}, given {now[k]!r}" for k in changed)
            raise CheckpointError(f"a resumed run cannot change {', '.join(changed)} ({shown}); "
                                  "start a new run instead")


@dataclass
class LoadedRun:
    """A trained model restored from a saved run, with the configuration it was trained under."""

    method: Method
    config: RunConfig
    saved: SavedRun

    @property
    def spec(self) -> DataSpec:
        return self.saved.spec

    @property
    def data_info(self) -> DataInfo:
        return self.saved.data_info

    @property
    def temperatures(self) -> Temperatures:
        """The temperatures of the class probabilities; ``T = 1`` (:attr:`temperature_note` says
        why) for a run saved before they were fitted: an older version, or a run stopped early."""
        return self.saved.temperatures or Temperatures()

    @property
    def temperature_note(self) -> str | None:
        """Why the probabilities are not temperature-scaled, if they are not; else ``None``."""
        if self.saved.temperatures is None:
            return ("the run has no fitted temperature (saved before its last epoch ended, or by an older "
                    "noprop), so its probabilities use T = 1, which leaves them poorly calibrated "
                    "(docs/calibration.md)")
        notes = self.saved.temperatures.notes
        return "; ".join(notes) if notes else None

    def precision(self, override: str | None = None) -> str:
        """fp32 or bf16: ``override`` or the run's ``precision``, resolved for the device the model
        is on. With the run's own, an evaluation gives back the trainer's number (which ``auto``
        computed under bf16 autocast on a CPU with native bf16)."""
        return resolve_precision(override or self.config.precision, next(self.method.parameters()).device)


def load_run(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Load a run directory, checkpoint or exported ``.safetensors`` model, ready to predict."""
    saved = SavedRun.read(path, map_location)
    method = saved.build_method(str(path))
    method.to(map_location).eval()
    return LoadedRun(method=method, config=saved.run_config(str(path)), saved=saved)


def checkpoint_path(path: Path) -> Path:
    """``path``'s checkpoint when ``path`` is a run directory, else ``path``."""
    return path / CHECKPOINT if path.is_dir() else path


def load_model_state(method: Method, model_state: dict[str, Any], source: str) -> None:
    """``method.load_state_dict``, with a one-line error when the saved tensors do not fit the model
    the config builds (a user's encoder whose code changed since the run, say)."""
    try:
        method.load_state_dict(model_state)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        encoder = getattr(method.config, "encoder", None)
        built = f" (encoder {encoder})" if encoder else ""
        raise CheckpointError(f"{source}: the saved model does not fit the one its config builds{built}: "
                              f"{first}") from None


def metrics_row(config: RunConfig, epoch: int, terms: dict[str, float], accuracy: float, seconds: float,
                fraction: float, skipped: int, train_rows: int) -> dict[str, Any]:
    """One row of ``metrics.csv``: an epoch's mean loss terms, test accuracy and cost (``fraction``:
    of the epoch trained, below 1 when the time budget cut it; ``skipped``: non-finite batches)."""
    return {
        "epoch": epoch,
        **{f"train_{k}": round(v, 6) for k, v in terms.items()},
        **({"skipped_steps": skipped} if config.skip_nonfinite else {}),
        "test_accuracy": accuracy,
        "epoch_seconds": round(seconds, 3),
        "samples_per_second": round(train_rows * fraction / seconds, 1),
        **({"epoch_fraction": round(fraction, 4)} if config.max_train_seconds else {}),
    }


def run_results(config: RunConfig, method: Method, *, dataset: str, epochs: int, accuracy: float,
                train_seconds: float, samples_seen: float, device: torch.device, precision: str,
                flush_denormal: bool, units: int, untrained_units: list[str], **extra: Any) -> dict[str, Any]:
    """What ``results.json`` records: the last epoch's accuracy, its cost, and the setting it ran in
    (``extra``: what the method, CUDA graphs and the process layout add)."""
    return {
        "method": config.method,
        "dataset": dataset,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples_seen / train_seconds, 1) if train_seconds else 0.0,
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "device": str(device),
        "flush_denormal": flush_denormal,
        "precision": precision,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch_version": torch.__version__,
        "noprop_version": __version__,
        "seed": config.seed,
        "num_parameters": sum(p.numel() for p in method.parameters()),
        # an order only exists between several units (DT unfused); None for CT, FM, fused DT
        "block_order": config.block_order if units > 1 else None,
        "untrained_units": untrained_units,
        **method.describe(),
        **extra,
        "config": config.to_dict(),
    }


def read_config(run_dir: Path) -> dict[str, Any]:
    """The fields of ``run_dir``'s ``config.yaml``, checked; a missing, damaged or hand-broken file
    is a one-line error naming it."""
    path = run_dir / CONFIG
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG} in {run_dir}")
    try:
        fields_ = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(fields_, dict):
        raise CheckpointError(f"{path} must hold a mapping of configuration fields")
    try:
        RunConfig.from_dict(fields_)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return fields_


def write_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_text(run_dir / CONFIG, yaml.safe_dump(config.to_dict()))


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / RESULTS, results)


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RESULTS).read_text())


def _load(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The raw checkpoint dict; a missing, corrupt or foreign file is a one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a noprop checkpoint (format {CHECKPOINT_FORMAT})")
    return state
