"""A training run on disk: create or resume a run directory, train, and load a finished model back.

The CLI and the Python API both go through here, so a run started from either looks the same.
A training run holds an exclusive lock on its directory (``.lock``, an OS file lock that dies
with the process), so a second run pointed at the same directory refuses even with --resume or
--overwrite while the first is alive.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from noprop.config import RunConfig
from noprop.data import DATASETS, ClassificationData, load_dataset
from noprop.methods import Method, build_method
from noprop.random_state import seed_everything
from noprop.saved_run import CHECKPOINT, RESULTS, RUN_FILES, read_results
from noprop.training.parallelism import Parallelism
from noprop.training.trainer import Evaluation, Trainer

LOCK = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the occupancy check below still applies
    fcntl = None  # type: ignore[assignment]

#: Lock files this process holds, by resolved run directory.
_HELD: dict[Path, int] = {}


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (occupied, or nothing to resume)."""


class RunFinished(RunDirError):
    """``--resume`` of a run that has already trained all its epochs; nothing was rewritten."""


def default_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    """``runs/<dataset>-<method>-<timestamp>``, never an existing directory."""
    name = config.dataset if config.dataset in DATASETS else Path(config.dataset).stem
    stem = f"{name}-{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = root / stem, 1
    while path.exists():
        n += 1
        path = root / f"{stem}-{n}"
    return path


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or ``None`` if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _in_use_error(run_dir: Path) -> RunDirError:
    try:
        pid = (run_dir / LOCK).read_text().strip() or "?"
    except OSError:
        pid = "?"
    return RunDirError(f"{run_dir} is in use by a running training process (pid {pid}); "
                       "wait for it or stop it first")


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; raise :class:`RunDirError` if a live process has it."""
    key = run_dir.resolve()
    if fcntl is None or key in _HELD:
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(run_dir / LOCK)
    if fd is None:
        raise _in_use_error(run_dir)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd
    try:
        yield
    except BaseException:
        _remove_if_unused(run_dir, created)
        raise
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock; the file stays (removing it would race a new locker)


def _remove_if_unused(run_dir: Path, created: bool) -> None:
    """After a failed start: drop the lock file, and the directory if this run made it, when no
    run file was written, so a failure leaves nothing behind. Called while holding the lock."""
    if any((run_dir / f).exists() for f in RUN_FILES):
        return
    (run_dir / LOCK).unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):  # not empty: something else is in it; leave it
            run_dir.rmdir()


def _refuse_if_in_use(run_dir: Path) -> None:
    """Raise if another live process holds ``run_dir``'s lock (a probe: takes and drops it)."""
    if fcntl is None or run_dir.resolve() in _HELD or not (run_dir / LOCK).is_file():
        return
    fd = _try_lock(run_dir / LOCK)
    if fd is None:
        raise _in_use_error(run_dir)
    os.close(fd)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``.*.tmp`` files an atomic write left behind when its process was killed."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory unless told to resume or overwrite.

    A directory a live training process holds is refused whatever the flags. Nothing is deleted
    here: the run an overwrite replaces goes only in :func:`clear_run_files`.
    """
    _refuse_if_in_use(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite replaces it: give one of them")
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


def clear_run_files(run_dir: Path) -> None:
    """Delete the files of the run an overwrite replaces. Called once the new run is built (data
    loaded, model and device ready), so a start that fails leaves the old run as it was."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def build_for(config: RunConfig, data: ClassificationData) -> Method:
    """The configured method for this data, seeded and with its data-dependent initialisation."""
    seed_everything(config.seed)
    method = build_method(config.method, data.spec, config.method_config)
    method.prepare(data.train_x, data.train_y)
    return method


def build_trainer(config: RunConfig, data: ClassificationData, run_dir: Path | None = None, *,
                  parallelism: Callable[[Method], Parallelism] | None = None,
                  evaluation: Evaluation | None = None, fit_temperature_on: str | None = "train") -> Trainer:
    """The one way to build a trainer for a run (train, bench, the distributed launch, Classifier):
    the process's CPU threads set, the configured method built seeded and prepared on the data.
    ``parallelism`` makes this process's hooks for the built method (its training units);
    ``run_dir`` must already be locked and prepared (:func:`opened_run`); ``fit_temperature_on``:
    where the class probabilities' temperatures are fitted (``training.trainer.TEMPERATURE_SPLITS``)."""
    config = config.resolved()
    if config.num_threads is not None and config.num_threads != torch.get_num_threads():
        torch.set_num_threads(config.num_threads)
    method = build_for(config, data)
    hooks = parallelism(method) if parallelism is not None else None
    return Trainer(method, data, config, run_dir, parallelism=hooks, evaluation=evaluation,
                   fit_temperature_on=fit_temperature_on)


def train_run(
    config: RunConfig,
    run_dir: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ClassificationData | None = None,
    reuse_finished: bool = False,
    evaluation: Evaluation | None = None,
    fit_temperature_on: str | None = "train",
) -> tuple[Trainer, dict[str, Any]]:
    """Train ``config`` into ``run_dir`` (``None``: keep nothing on disk); return trainer and results.

    Resuming a run that has trained all its epochs raises :class:`RunFinished`, or with
    ``reuse_finished`` returns it with its saved results; either way nothing is rewritten.
    """
    config = config.resolved()
    with opened_run(config, run_dir, resume=resume, overwrite=overwrite, data=data) as data:
        trainer = build_trainer(config, data, run_dir, evaluation=evaluation,
                                fit_temperature_on=fit_temperature_on)
        if overwrite and run_dir is not None:
            clear_run_files(run_dir)
        if resume:
            trainer.resume()
            if trainer.finished and reuse_finished and run_dir is not None and (run_dir / RESULTS).is_file():
                return trainer, read_results(run_dir)
            refuse_finished(trainer, run_dir)
        return trainer, trainer.fit()


@contextlib.contextmanager
def opened_run(config: RunConfig, run_dir: Path | None, *, resume: bool, overwrite: bool,
               data: ClassificationData | None) -> Iterator[ClassificationData]:
    """What every training process does before its trainer exists (one process, or rank 0 of
    several): lock and prepare ``run_dir`` (``None``: no files), clear stale temporaries, load the
    data unless given. Yields the data; the lock is held until the block ends."""
    with run_dir_lock(run_dir) if run_dir is not None else contextlib.nullcontext():
        if run_dir is not None:
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
            remove_stale_temporaries(run_dir)
        yield data if data is not None else load_dataset(config.dataset, config.data_dir,
                                                         label_column=config.label_column)


def refuse_finished(trainer: Trainer, run_dir: Path | None) -> None:
    """A resumed run that has trained all its epochs: :class:`RunFinished`, nothing rewritten."""
    if trainer.finished:
        raise RunFinished(f"{run_dir} has already trained {trainer.epoch} of {trainer.config.epochs} "
                          "epochs; pass --epochs N with N larger to train on")
