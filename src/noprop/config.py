"""The configuration of a run: one flat dataclass, saved beside every checkpoint and checked on load.

A field left at ``None`` means "the method's own default" (e.g. ``eta`` is 0.1 for NoProp-DT and
1.0 for NoProp-CT); :meth:`RunConfig.method_hyperparameters` resolves them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from noprop.training.lr_schedule import LR_SCHEDULES

BLOCK_ORDERS = ("sequential", "interleaved")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adamw", "adam")
PARALLEL_MODES = ("data", "blocks")

#: Fields that decide the shapes and meaning of the saved parameters: a checkpoint only loads
#: into a configuration that agrees on all of them.
MODEL_FIELDS = ("method", "num_blocks", "embedding", "embedding_dim", "conv_padding")

#: Epochs and batch size when the run does not give them. The paper's batch is 128; the tiny
#: embedded digits set (1,437 training images) learns faster per second with smaller batches.
DEFAULT_BUDGET = {"epochs": 10, "batch_size": 128}
DATASET_BUDGETS = {"digits": {"epochs": 15, "batch_size": 64}}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and how to fix it."""


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    # what to train, on what
    method: str = "dt"
    dataset: str = "digits"
    data_dir: str | None = None
    #: Apply the dataset's training augmentation (CIFAR: random crop + flip; others have none).
    #: Off by default: the paper trains without augmentation (v1 §4).
    augment: bool = False
    # optimisation (paper: batch 128, lr 1e-3, weight decay 1e-3); None: the dataset's default
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    #: ``constant`` (the paper) or ``cosine`` decay to 0, after ``warmup_epochs`` of linear
    #: warm-up; epochs count each block's own passes (training/lr_schedule.py).
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 1e-3
    optimizer: str | None = None
    #: ``sequential``: Algorithm 1, one pass over the data per block (an epoch is T passes).
    #: ``interleaved``: every block takes a step on every batch (same work per epoch).
    block_order: str = "sequential"
    # method hyperparameters (None: the method's default)
    num_blocks: int | None = None
    eta: float | None = None
    embedding: str | None = None
    embedding_dim: int | None = None
    conv_padding: str | None = None
    schedule_clip: float | None = None
    #: NoProp-CT: the learned schedule starts at gamma_0 = -g, gamma_1 = +g, i.e. alpha_bar runs
    #: from sigmoid(-g) at t = 0 to sigmoid(g) at t = 1 (the paper does not give them; docs/methods.md).
    schedule_gamma: float | None = None
    inference_steps: int | None = None
    #: NoProp-DT: train all T blocks of a step in one pass (one unit; vmap on CUDA, loop on CPU).
    #: Block updates equal the unfused step's; the shared group takes one step per batch on the sum.
    fused: bool = False
    #: FM path width sigma (paper: not given; NoProp-FM's default is 0, the straight path).
    fm_sigma: float | None = None
    #: Sampler steps for the evaluation after each epoch; None: ``inference_steps``. Lets a
    #: CT/FM run check progress cheaply and leave the paper's 1000 steps to ``noprop evaluate``.
    eval_inference_steps: int | None = None
    # evaluation: the paper's sampler is stochastic; the seed makes it repeatable
    eval_deterministic: bool = False
    eval_seed: int = 1234
    # surviving faults (docs/failure-modes.md)
    #: Skip a batch whose loss or gradient is NaN/inf (no optimizer step; counted in metrics.csv)
    #: instead of stopping the run. Costs one host sync per step.
    skip_nonfinite: bool = False
    #: Also checkpoint mid-epoch when this many minutes passed since the last checkpoint
    #: (0: only at the end of each epoch). Bounds the work a killed machine loses.
    checkpoint_minutes: float = 10.0
    #: Wall-clock budget: stop once training (evaluation excluded) has taken this many seconds,
    #: checked between steps; the last epoch is then partial (``epoch_fraction`` in metrics.csv).
    max_train_seconds: float | None = None
    # several processes (docs/distributed.md); ignored by a one-process run without --nproc
    #: ``data``: every process trains every unit on its share of each batch (gradient all-reduce).
    #: ``blocks``: each process trains its own units on all the data (no gradient traffic).
    parallel: str = "data"
    #: Block parallel: average the shared groups across processes every this many batches
    #: (interleaved order; 0: only at the end of each epoch, always the case when sequential).
    shared_sync_every: int = 1
    #: Flush denormal floats (below ~1.2e-38) to zero on the CPU while training and evaluating:
    #: weights and Adam moments that decay into that range otherwise slow a step down up to 6x.
    flush_denormal: bool = True
    #: ``fp32``, ``bf16`` (autocast for the forward passes of training and evaluation) or ``auto``:
    #: bf16 where the CPU has native bf16 instructions (AVX-512 BF16 / AMX), fp32 otherwise.
    #: results.json records what ran.
    precision: str = "auto"
    # bookkeeping
    seed: int = 0
    device: str = "auto"
    #: A progress bar while training (terminals only; ``noprop train -q`` turns it off).
    progress: bool = True
    #: One line per epoch (loss, test accuracy) and a summary of the model at the start.
    log_epochs: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = ("epochs", "batch_size", "num_blocks", "embedding_dim", "inference_steps",
                    "eval_inference_steps")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.schedule_gamma is not None and not self.schedule_gamma > 0:
            raise ConfigError(f"schedule_gamma must be positive, got {self.schedule_gamma}")
        if self.fm_sigma is not None and self.fm_sigma < 0:
            raise ConfigError(f"fm_sigma must be >= 0, got {self.fm_sigma}")
        if self.shared_sync_every < 0:
            raise ConfigError(f"shared_sync_every must be >= 0, got {self.shared_sync_every}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.checkpoint_minutes < 0:
            raise ConfigError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")
        if self.max_train_seconds is not None and not self.max_train_seconds > 0:
            raise ConfigError(f"max_train_seconds must be positive, got {self.max_train_seconds}")
        choices = {"block_order": BLOCK_ORDERS, "device": DEVICES, "optimizer": OPTIMIZERS,
                   "parallel": PARALLEL_MODES, "lr_schedule": LR_SCHEDULES,
                   "precision": ("auto", "fp32", "bf16")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

    def resolved(self) -> RunConfig:
        """A copy with every ``None`` that has a default filled in (dataset budget, method defaults)."""
        from noprop.methods import method_class

        cls = method_class(self.method)
        defaults: dict[str, Any] = {
            **DATASET_BUDGETS.get(self.dataset, DEFAULT_BUDGET),
            "optimizer": cls.default_optimizer,
            **cls.hyperparameters,
        }
        names = {f.name for f in fields(self)}
        changes = {k: v for k, v in defaults.items() if k in names and getattr(self, k) is None}
        changes.update(self._absolute_paths())
        return self.replace(**changes)

    def _absolute_paths(self) -> dict[str, str]:
        """Data paths made absolute, so a saved run resumes from any working directory."""
        from noprop.data import DATASETS, is_dataset_path

        out = {}
        if self.data_dir is not None:
            out["data_dir"] = str(Path(self.data_dir).expanduser().resolve())
        if self.dataset not in DATASETS and is_dataset_path(self.dataset):
            out["dataset"] = str(Path(self.dataset).expanduser().resolve())
        return out

    def method_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters this run's method takes, defaults filled in."""
        from noprop.methods import method_class

        resolved = self.resolved()
        return {k: getattr(resolved, k, v) for k, v in method_class(self.method).hyperparameters.items()}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def model_differences(saved: dict[str, Any], current: RunConfig) -> list[str]:
    """Human-readable differences in the fields that make two models incompatible."""
    resolved_now = {**current.resolved().to_dict(), **current.method_hyperparameters()}
    diffs = []
    for name in MODEL_FIELDS:
        if name in saved and name in resolved_now and saved[name] != resolved_now[name]:
            diffs.append(f"{name}: checkpoint has {saved[name]!r}, this run has {resolved_now[name]!r}")
    return diffs
