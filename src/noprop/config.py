"""The configuration of a run: the run's own settings, the method's name and the method's config.

A run setting (data, optimiser, order, faults, parallelism, evaluation, device, seed) is a field
here; a hyperparameter of the method lives in that method's own frozen config
(:mod:`noprop.methods.config`), ``RunConfig.method_config``. The flat spelling people write in YAML
files, on the command line and in Python is split between the two at construction, and a setting
the chosen method does not take is refused, naming the ones it takes::

    >>> RunConfig(method="dt", num_blocks=5, epochs=3).method_config.num_blocks
    5
    >>> RunConfig(method="ct", num_blocks=5)
    ConfigError: method ct does not take num_blocks; it takes: conv_padding, embedding, ...

Saved as one flat mapping (``to_dict``), the same shape as the shipped presets and as the
``config.yaml`` of runs made before the split, so those keep loading. ``epochs``, ``batch_size``
left at ``None`` mean the dataset's budget, filled in by :meth:`RunConfig.resolved` when a run
starts (the dataset may still change before then, e.g. ``Classifier`` sets ``dataset="user"``);
the method's defaults and the optimizer are filled in at construction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from noprop.device import CHANNELS_LAST_MODES, PRECISIONS, check_device
from noprop.dropout import DROPOUT_RNGS
from noprop.lr_schedule import LR_SCHEDULES
from noprop.methods import METHODS, MethodConfig, method_class
from noprop.settings import ConfigError, check_fields, setting, setting_fields

BLOCK_ORDERS = ("sequential", "interleaved")
OPTIMIZERS = ("adamw", "adam")
PARALLEL_MODES = ("data", "blocks")

#: Epochs and batch size when the run does not give them. The paper's batch is 128; the tiny
#: embedded digits set (1,437 training images) learns faster per second with smaller batches.
DEFAULT_BUDGET = {"epochs": 10, "batch_size": 128}
DATASET_BUDGETS = {"digits": {"epochs": 15, "batch_size": 64},
                   # the embedded tables (456 and 143 training rows): batch 64 and more passes
                   "breast-cancer": {"epochs": 20, "batch_size": 64},
                   "wine": {"epochs": 40, "batch_size": 64}}
#: A dataset without a budget above (a user's file or folder, ``Classifier``'s arrays) gets one
#: sized by optimizer steps: a method learns in steps, not epochs, and 10 epochs of a 150-row
#: table are 10 steps. Each training unit takes at least its method's ``steps_to_learn``
#: (``STEP_TARGET`` for most; NoProp-CT asks more), in batches of ``batch_size`` shrunk (to no
#: less than 16) so that small data has 8 or more per epoch.
STEP_TARGET = 1000
SIZED_MAX_EPOCHS = 500
#: A run whose units end with fewer than this fraction of ``steps_to_learn`` is told so.
FEW_STEPS_FRACTION = 0.1

#: Settings that take ``on``, ``off`` (and ``auto``): YAML 1.1 reads a bare on/off as a boolean.
SWITCHES = ("channels_last",)

#: Values that runs saved before the split wrote for settings their method did not take.
_LEGACY_UNSET: dict[str, Any] = {"fused": False}


@dataclass(init=False)
class RunConfig:
    """Everything that defines a training run: run settings, the method and its config."""

    method: str = setting("dt", "training method (a name in noprop.methods.METHODS)")
    #: The method's hyperparameters; built from the flat settings at construction.
    method_config: MethodConfig = dataclasses.field(default=None)  # type: ignore[assignment]
    # what to train on
    dataset: str = setting("digits", "a dataset name, or a .npz file, .csv table or image folder",
                           metavar="NAME|PATH")
    label_column: str = setting("label", "the label column of a .csv dataset (the other columns "
                                "are the features); only .csv datasets take it", metavar="NAME")
    data_dir: str | None = setting(None, "data root or dataset folder (default: $NOPROP_DATA, then "
                                   "the per-user cache)")
    #: Off by default: the paper trains without augmentation (v1 §4).
    augment: bool = setting(False, "the dataset's training augmentation (CIFAR: random crop + flip; "
                            "off in the paper)")
    # optimisation (paper: batch 128, lr 1e-3, weight decay 1e-3); None: the dataset's default
    epochs: int | None = setting(None, "passes over the data (NoProp-DT sequential: T passes each; "
                                 "default: 15 on digits (ct 60), 10 on other named datasets; your "
                                 "own data: enough for 1000 steps per unit)", positive=True)
    batch_size: int | None = setting(None, "batch size (default: 64 on digits and the tables, 128 (the "
                                     "paper's) on other named datasets; your own data: 128 halved to "
                                     "8+ batches, min 16)", positive=True)
    lr: float = setting(1e-3, "learning rate (the paper's 1e-3)", positive=True)
    lr_schedule: str = setting("constant", "constant (the paper) or cosine decay to 0; epochs count each "
                               "block's own passes (noprop/lr_schedule.py)", choices=LR_SCHEDULES)
    warmup_epochs: float = setting(0.0, "linear lr warm-up over this many epochs", minimum=0,
                                   metavar="EPOCHS")
    weight_decay: float = setting(1e-3, "weight decay (the paper's 1e-3)", minimum=0)
    optimizer: str | None = setting(None, "one optimizer per parameter group (default: the method's: "
                                    + ", ".join(f"{n} {c.default_optimizer}" for n, c in METHODS.items())
                                    + ")", choices=OPTIMIZERS)
    block_order: str = setting("sequential", "sequential: Algorithm 1, a pass over the data per block; "
                               "interleaved: all blocks per batch", choices=BLOCK_ORDERS)
    # evaluation: the paper's sampler is stochastic; the seed makes it repeatable
    eval_inference_steps: int | None = setting(
        None, "sampler steps for the per-epoch evaluation (default: the method's inference_steps)",
        positive=True)
    eval_deterministic: bool = setting(False, "evaluate with the noise-free sampler")
    eval_seed: int = setting(1234, "seed of the evaluation sampler's noise")
    # surviving faults (docs/failure-modes.md)
    skip_nonfinite: bool = setting(False, "skip a batch whose loss or gradient is NaN/inf (counted in "
                                   "metrics.csv) instead of stopping; docs/failure-modes.md")
    checkpoint_minutes: float = setting(10.0, "also checkpoint mid-epoch this often (0: only after "
                                        "each epoch)", minimum=0)
    max_train_seconds: float | None = setting(None, "stop training after this many seconds "
                                              "(evaluation excluded; default: no limit)", positive=True,
                                              metavar="SECONDS")
    # several processes (docs/distributed.md); ignored by a one-process run without --nproc
    parallel: str = setting("data", "with --nproc/torchrun: data (every process, a share of each "
                            "batch) or blocks (each process its own blocks, all the data); "
                            "docs/distributed.md", choices=PARALLEL_MODES)
    shared_sync_every: int = setting(1, "block parallel: average shared parts every this many batches "
                                     "(0: per epoch)", minimum=0, metavar="BATCHES")
    #: Weights and Adam moments that decay below ~1.2e-38 otherwise slow a CPU step down up to 6x.
    flush_denormal: bool = setting(True, "flush denormal floats to zero on the CPU, which keeps long "
                                   "runs from slowing down (docs/benchmarks.md)")
    precision: str = setting("auto", "bf16: autocast the forward passes of training and evaluation; "
                             "auto: bf16 where the CPU has native bf16 (AVX-512 BF16 / AMX), else fp32; "
                             "results.json records what ran", choices=PRECISIONS)
    channels_last: str = setting("auto", "hand training steps their images channels-last (NHWC): auto: "
                                 "for bf16 on a CPU (faster there); on: always (fp32 then rounds "
                                 "differently, ~1e-9); off: never (docs/benchmarks.md)",
                                 choices=CHANNELS_LAST_MODES)
    dropout_rng: str = setting("auto", "how a CPU step draws dropout masks: exact: PyTorch's masks, bit "
                               "for bit; fast: 4x fewer generator draws, keep probability rounded "
                               "to 1/65536; auto: fast for bf16 on a CPU, else exact "
                               "(docs/benchmarks.md)", choices=DROPOUT_RNGS)
    cuda_graphs: bool = setting(False, "CUDA only: record each training step once as a CUDA graph and "
                                "replay it per batch (same steps, fewer launches; docs/benchmarks.md)")
    # bookkeeping
    seed: int = setting(0, "seed of initialisation, shuffling and training noise")
    device: str = setting("auto", "auto (CUDA when available), cpu, cuda or cuda:N", metavar="DEVICE")
    num_threads: int | None = setting(None, "torch CPU threads (default: torch's choice, one per core)",
                                      positive=True, metavar="N")
    tensorboard: bool = setting(False, "also write TensorBoard event files to RUN/tensorboard "
                                "(needs pip install 'noprop[tensorboard]')")
    progress: bool = setting(True, "progress bar (terminals only; -q turns it off)", cli=False)
    log_epochs: bool = setting(True, "one line per epoch and a model summary at the start", cli=False)

    def __init__(self, method: str = "dt", method_config: MethodConfig | None = None,
                 **settings: Any) -> None:
        """``settings``: run fields by name, and the method's settings (or a ``method_config``)."""
        run_names = {f.name for f in fields(RunConfig)} - {"method", "method_config"}
        for f in fields(RunConfig):
            if f.name in run_names:
                setattr(self, f.name, settings.pop(f.name, f.default))
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(sorted(METHODS))}; got {method!r}")
        self.method = method
        unknown = sorted(set(settings) - all_method_settings())
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        cls = method_class(method)
        if method_config is None:
            method_config = cls.config_class.build(method, settings)
        elif not isinstance(method_config, cls.config_class):
            raise ConfigError(f"method {method} takes a {cls.config_class.__name__}, "
                              f"got {type(method_config).__name__}")
        elif settings:
            method_config = cls.config_class.build(method, {**method_config.to_dict(), **settings})
        self.method_config = method_config
        if self.optimizer is None:
            self.optimizer = cls.default_optimizer
        self._read_yaml_switches()
        check_fields(self)
        check_device(self.device)
        self._check_label_column()

    def _read_yaml_switches(self) -> None:
        """``on``/``off`` of a three-way setting, which YAML reads as ``True``/``False``, as written."""
        for name in SWITCHES:
            value = getattr(self, name)
            if isinstance(value, bool):
                setattr(self, name, "on" if value else "off")

    def _check_label_column(self) -> None:
        """A label column other than the default names a .csv column: refused for other datasets,
        whose labels are not a column (an image set, an .npz's ``y``)."""
        from noprop.data import is_table_file

        default = next(f.default for f in fields(RunConfig) if f.name == "label_column")
        if self.label_column != default and not is_table_file(self.dataset):
            raise ConfigError(f"label_column applies to .csv datasets only; dataset {self.dataset} "
                              f"is not one (leave label_column at {default!r})")
        if not self.label_column.strip():
            raise ConfigError("label_column must name a column, got an empty name")

    def resolved(self, train_rows: int | None = None) -> RunConfig:
        """A copy with the dataset's budget (and the method's own on that dataset, where it has one)
        filled in and data paths made absolute (at run start).

        A dataset without a shipped budget is sized by steps (:func:`sized_budget`) once
        ``train_rows`` is known; until then its ``epochs`` and ``batch_size`` stay ``None``."""
        if self.has_shipped_budget():
            budget = {**DATASET_BUDGETS.get(self.dataset, DEFAULT_BUDGET),
                      **method_class(self.method).default_budgets.get(self.dataset, {})}
        elif train_rows is not None:
            budget = {k: v for k, v in self._sized(train_rows).items() if k != "steps"}
        else:
            budget = {}
        changes: dict[str, Any] = {k: v for k, v in budget.items() if getattr(self, k) is None}
        changes.update(self._absolute_paths())
        return self.replace(**changes) if changes else self

    def has_shipped_budget(self) -> bool:
        """Whether the dataset is one the package knows (its budget is in this module)."""
        from noprop.data import DATASETS

        return self.dataset in DATASETS

    def budget_note(self, train_rows: int) -> str | None:
        """The line a run starts with when its epochs were sized by steps (None otherwise)."""
        if self.epochs is not None or self.has_shipped_budget():
            return None
        budget = self._sized(train_rows)
        return (f"epochs: {budget['epochs']}, batch {budget['batch_size']} (sized for "
                f"{budget['steps']:,} steps on {train_rows:,} training rows; --epochs to change)")

    def _sized(self, train_rows: int) -> dict[str, int]:
        return sized_budget(train_rows, self.batch_size, method_class(self.method).steps_to_learn)

    def _absolute_paths(self) -> dict[str, str]:
        """Data paths made absolute, so a saved run resumes from any working directory."""
        from noprop.data import DATASETS, is_dataset_path

        out = {}
        if self.data_dir is not None:
            out["data_dir"] = str(Path(self.data_dir).expanduser().resolve())
        if self.dataset not in DATASETS and is_dataset_path(self.dataset):
            out["dataset"] = str(Path(self.dataset).expanduser().resolve())
        return out

    @property
    def sampler_steps(self) -> int | None:
        """The method's ``inference_steps`` (CT, FM), ``None`` for methods without a choice."""
        return getattr(self.method_config, "inference_steps", None)

    def run_settings(self) -> dict[str, Any]:
        """The run's own settings (no method, no method config)."""
        return {f.name: getattr(self, f.name) for f in setting_fields(RunConfig) if f.name != "method"}

    def to_dict(self) -> dict[str, Any]:
        """One flat mapping: ``method``, the run settings and the method's settings (a preset's shape)."""
        return {"method": self.method, **self.run_settings(), **self.method_config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """From a flat mapping (presets, ``config.yaml``, old checkpoints); refuses unknown settings.

        A mapping saved before the split also names the other methods' settings, as ``None`` (or
        ``fused: false``): those are dropped.
        """
        data = dict(data)
        method = data.pop("method", "dt")
        nested = data.pop("method_config", None) or {}
        mine = set(method_class(method).config_class.names()) if method in METHODS else set()
        data = {k: v for k, v in data.items()
                if k in mine or k in RUN_FIELDS or not (v is None or _LEGACY_UNSET.get(k, ...) == v)}
        return cls(method, **{**nested, **data})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (flat, as for the constructor); a new method starts from its defaults."""
        if changes.get("method", self.method) != self.method:
            default_optimizer = method_class(self.method).default_optimizer
            base = {k: v for k, v in self.run_settings().items()
                    if not (k == "optimizer" and v == default_optimizer)}
            return RunConfig(**{**base, **changes})
        mine = {k: changes.pop(k) for k in list(changes) if k not in RUN_FIELDS and k != "method"}
        config = self.method_config
        if mine:
            config = method_class(self.method).config_class.build(self.method, {**config.to_dict(), **mine})
        return dataclasses.replace(self, method_config=config, **changes)


def sized_budget(train_rows: int, batch_size: int | None = None, steps: int = STEP_TARGET) -> dict[str, int]:
    """Epochs and batch size giving each unit about ``steps`` steps on ``train_rows`` rows (at
    least the default 10 epochs, so large data keeps them; at most ``SIZED_MAX_EPOCHS``), and the
    ``steps`` that makes."""
    from noprop.data.base import num_batches

    if batch_size is None:
        batch_size = DEFAULT_BUDGET["batch_size"]
        while batch_size > 16 and train_rows < 8 * batch_size:
            batch_size //= 2
    per_epoch = num_batches(max(train_rows, 1), batch_size)
    epochs = min(max(DEFAULT_BUDGET["epochs"], -(-steps // per_epoch)), SIZED_MAX_EPOCHS)
    return {"epochs": epochs, "batch_size": batch_size, "steps": epochs * per_epoch}


#: The run's own settings, by name.
RUN_FIELDS = frozenset(f.name for f in setting_fields(RunConfig)) - {"method"}


def split_settings(method: str, flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(run settings, settings of some method)`` from a flat mapping."""
    run = {k: v for k, v in flat.items() if k in RUN_FIELDS or k == "method"}
    return run, {k: v for k, v in flat.items() if k not in run}


def all_method_settings() -> set[str]:
    """Every setting some registered method takes."""
    return {name for cls in METHODS.values() for name in cls.config_class.names()}


def model_differences(saved: dict[str, Any], current: RunConfig) -> list[str]:
    """Human-readable differences in the settings that fix the model's shapes (and the method)."""
    now = current.to_dict()
    names = ["method", *current.method_config.shape_names()]
    return [f"{name}: checkpoint has {saved[name]!r}, this run has {now[name]!r}"
            for name in names if name in saved and saved[name] != now[name]]
