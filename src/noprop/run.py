"""A training run on disk: create or resume a run directory, train, and load a finished model back.

The CLI and the Python API both go through here, so a run started from either looks the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from noprop.config import ConfigError, RunConfig
from noprop.data import ClassificationData, load_dataset
from noprop.methods import Method, build_method
from noprop.spec import DataSpec
from noprop.training.checkpoint import CheckpointError, load_checkpoint
from noprop.training.trainer import CHECKPOINT, CONFIG, METRICS, RESULTS, Trainer

RUN_FILES = (CHECKPOINT, RESULTS, METRICS, CONFIG)


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (occupied, or nothing to resume)."""


def default_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    """``runs/<dataset>-<method>-<timestamp>``, never an existing directory."""
    stem = f"{config.dataset}-{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = root / stem, 1
    while path.exists():
        n += 1
        path = root / f"{stem}-{n}"
    return path


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory unless told to resume or overwrite."""
    occupied = [f for f in RUN_FILES if (run_dir / f).exists()]
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise RunDirError(f"nothing to resume: no {CHECKPOINT} in {run_dir}")
        return
    if occupied and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(occupied)}); "
            "pass --resume to continue it or --overwrite to replace it"
        )
    for name in occupied:
        (run_dir / name).unlink()


def saved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunDirError(f"no {CONFIG} in {run_dir}")
    return yaml.safe_load(path.read_text())


def build_for(config: RunConfig, data: ClassificationData) -> Method:
    """The configured method for this data, seeded and with its data-dependent initialisation."""
    torch.manual_seed(config.seed)
    method = build_method(config.method, data.spec, config.method_hyperparameters())
    method.prepare(data.train_x, data.train_y)
    return method


def train_run(
    config: RunConfig,
    run_dir: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ClassificationData | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Train ``config`` into ``run_dir`` (``None``: keep nothing on disk); return trainer and results."""
    config = config.resolved()
    if run_dir is not None:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir)
    trainer = Trainer(build_for(config, data), data, config, run_dir)
    if resume:
        trainer.resume()
    return trainer, trainer.fit()


@dataclass
class LoadedRun:
    """A trained model restored from a checkpoint, with the configuration it was trained under."""

    method: Method
    config: RunConfig
    checkpoint: dict[str, Any]


def checkpoint_path(path: Path) -> Path:
    return path / CHECKPOINT if path.is_dir() else path


def load_run(path: Path, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Load a run directory or checkpoint file into a ready-to-predict method (in eval mode)."""
    state = load_checkpoint(checkpoint_path(path), map_location=map_location)
    try:
        config = RunConfig.from_dict(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None
    method = build_method(config.method, DataSpec(**state["spec"]), config.method_hyperparameters())
    method.load_state_dict(state["model"])
    method.to(map_location).eval()
    return LoadedRun(method=method, config=config, checkpoint=state)
