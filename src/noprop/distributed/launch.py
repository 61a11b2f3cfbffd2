"""Starting the processes of a distributed run and training as one of them.

Two ways in, one code path (:func:`train_process`, run by every rank):

* ``torchrun --nproc-per-node N -m noprop train ...``: torchrun (one machine or many, SLURM
  included) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
  each process is a ``noprop train`` that finds them and joins the group.
* ``noprop train --nproc N``: :func:`launch` spawns N fresh processes on 127.0.0.1 with the same
  variables set (like ``torchrun --standalone``); ``--nproc 1`` runs the same code in-process.

Backend: NCCL when training on CUDA, gloo on CPU. Every collective has a timeout
(``timeout_s``): a rank that dies or hangs makes the others fail with a message naming the
operation instead of waiting forever, and the spawner stops the whole job at the first failure.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from noprop.config import ConfigError, RunConfig
from noprop.data import ClassificationData, DataError
from noprop.device import resolve_device
from noprop.distributed.comm import CommStats, Communicator, DistributedError
from noprop.distributed.layout import make_layout
from noprop.distributed.parallelism import DistributedParallelism
from noprop.methods import Method
from noprop.run import (
    RunDirError,
    build_trainer,
    clear_run_files,
    opened_run,
    prepare_run_dir,
    refuse_finished,
)
from noprop.saved_run import CheckpointError, SavedRun
from noprop.training.trainer import Trainer

#: Seconds a collective may wait for its peers. Rank 0 evaluates alone after every epoch while the
#: others wait at their next collective, so this must exceed one evaluation.
DEFAULT_TIMEOUT_S = 1800.0
#: Errors caused by the user's input: re-raised as they are, so the CLI prints one line (exit 2).
USER_ERRORS = (ConfigError, DataError, RunDirError, CheckpointError)
#: Seconds the other processes get to stop on their own after one fails (and to record why).
GRACE_S = 5.0


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    local_rank: int


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or anything that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def process_info() -> ProcessInfo:
    env = os.environ
    rank = int(env.get("RANK", 0))
    return ProcessInfo(rank, int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", rank)))


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of a rank's training noise: ranks draw different noise, reproducibly."""
    return hash((seed, rank, epoch)) % 2**63


@contextmanager
def process_group(backend: str, timeout_s: float) -> Iterator[ProcessInfo]:
    """Join the group described by the environment (``env://``) for the duration of the block."""
    info = process_info()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        backend, init_method="env://", rank=info.rank, world_size=info.world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        yield info
    finally:
        dist.destroy_process_group()


def _no_evaluation(method: Method) -> list[float]:
    """A rank other than 0 trains and syncs, but leaves evaluation (and all files) to rank 0."""
    return [float("nan")]


@dataclass
class ProcessOutcome:
    """What one rank returns: rank 0's results (``None`` elsewhere) and its communication counts."""

    rank: int
    results: dict[str, Any] | None
    communication: CommStats


def check_supported(config: RunConfig, world_size: int) -> None:
    """Refuse options whose per-process decisions would make the processes disagree."""
    if world_size > 1 and getattr(config, "max_train_seconds", None) is not None:
        raise ConfigError("--max-train-seconds is for one process: with several, each would stop at a "
                          "different step; use --epochs")


def rank_trainer(
    config: RunConfig,
    data: ClassificationData,
    run_dir: Path | None,
    info: ProcessInfo,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Trainer:
    """This rank's trainer, hooked to the others; only rank 0's writes ``run_dir`` and evaluates.

    The process group must already exist. Every rank builds the same seeded model, then reseeds
    its training noise with :func:`rank_seed`.
    """
    config = config.resolved()
    check_supported(config, info.world_size)
    comm = Communicator(info.rank, timedelta(seconds=timeout_s))

    def hooks(method: Method) -> DistributedParallelism:
        return DistributedParallelism(
            make_layout(config.parallel, info.rank, info.world_size, method.training_units()), comm,
            parallel=config.parallel, block_order=config.block_order,
            shared_sync_every=config.shared_sync_every, gather_optimizer_state=run_dir is not None,
        )

    # the model is built seeded: every rank starts from the same one
    if info.rank == 0:
        trainer = build_trainer(config, data, run_dir, parallelism=hooks)
    else:
        trainer = build_trainer(config.replace(progress=False, log_epochs=False), data, None,
                                parallelism=hooks, evaluation=_no_evaluation, fit_temperature_on=None)
    torch.manual_seed(rank_seed(config.seed, info.rank, 0))
    return trainer


def train_rank(
    config: RunConfig,
    run_dir: Path | None,
    info: ProcessInfo,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ClassificationData | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProcessOutcome:
    """Train as rank ``info.rank`` of an existing process group; rank 0 writes ``run_dir``."""
    config = config.resolved()
    writes = run_dir if info.rank == 0 else None  # only rank 0 touches the run directory
    with opened_run(config, writes, resume=resume, overwrite=overwrite, data=data) as data:
        trainer = rank_trainer(config, data, run_dir, info, timeout_s=timeout_s)
        if overwrite and writes is not None:
            clear_run_files(writes)
        hooks = trainer.parallelism
        assert isinstance(hooks, DistributedParallelism)
        if resume:
            _resume(trainer, run_dir, hooks.comm, info)
            refuse_finished(trainer, run_dir)  # every rank holds rank 0's epoch: all stop alike
            torch.manual_seed(rank_seed(config.seed, info.rank, trainer.epoch))
        results = trainer.fit()
        hooks.comm.barrier("final_barrier")  # followers wait for rank 0's last evaluation and files
    return ProcessOutcome(info.rank, results if info.rank == 0 else None, hooks.comm.stats)


def train_process(
    config: RunConfig,
    run_dir: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: ClassificationData | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProcessOutcome:
    """Join the group the environment describes (torchrun's variables) and train as one rank."""
    backend = "nccl" if resolve_device(config.resolved().device).type == "cuda" else "gloo"
    with process_group(backend, timeout_s) as info:
        return train_rank(config, run_dir, info, resume=resume, overwrite=overwrite, data=data,
                          timeout_s=timeout_s)


def _resume(trainer: Trainer, run_dir: Path | None, comm: Communicator, info: ProcessInfo) -> None:
    """Rank 0 reads the checkpoint and sends it to the others (no shared file system needed)."""
    if run_dir is None:
        raise ConfigError("resuming needs a run directory")
    saved = None
    if info.rank == 0:
        saved = SavedRun.read(run_dir)
        trainer.resume(saved)
    saved = comm.broadcast_object("resume_broadcast", saved, info.world_size)
    if info.rank != 0:
        trainer.restore(saved)


# -- spawning local processes ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(local_rank: int, fn: Callable[..., Any], args: tuple, kwargs: dict, nproc: int,
           port: int, threads: int | None, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(nproc), LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(nproc))
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        value = fn(*args, **kwargs)
    except Exception as err:
        _save(Path(out_dir) / f"error{local_rank}.pt", err)
        raise
    _save(Path(out_dir) / f"value{local_rank}.pt", value)


def _save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    try:
        torch.save(obj, buffer)
    except Exception:  # an unpicklable exception: its text is in the traceback the parent gets
        return
    path.write_bytes(buffer.getvalue())


def _load(path: Path) -> Any:
    return torch.load(path, weights_only=False) if path.is_file() else None


def spawn(
    fn: Callable[..., Any],
    nproc: int,
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    threads: int | None = None,
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` in ``nproc`` fresh local processes; their return values by rank.

    Each process gets torchrun's variables (rank, world size, a free port on 127.0.0.1) and
    ``threads`` intra-op threads. ``fn`` must be importable (a module-level function). When a
    process fails, the others get :data:`GRACE_S` seconds to stop on their own, then are
    terminated, and a :class:`DistributedError` names the rank whose error caused it (not a
    peer that only lost its connection). The user's errors (bad config, data, run directory)
    are re-raised as they are.
    """
    kwargs = kwargs or {}
    with tempfile.TemporaryDirectory(prefix="noprop-spawn-") as out_dir:
        context = mp.start_processes(_child, (fn, args, kwargs, nproc, free_port(), threads, out_dir),
                                     nprocs=nproc, join=False, start_method="spawn")
        procs = context.processes
        try:
            while True:
                failed = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                alive = [p for p in procs if p.exitcode is None]
                if failed or not alive:
                    break
                mp_connection.wait([p.sentinel for p in alive], timeout=1.0)
        except BaseException:  # Ctrl-C in the launcher: the processes checkpoint (SIGINT) and stop
            _stop(procs)
            raise
        if failed:
            _stop(procs)
            errors = {r: _load(Path(out_dir) / f"error{r}.pt") for r in range(nproc)}
            raise _root_cause(errors, failed[0], procs[failed[0]].exitcode, nproc)
        return [_load(Path(out_dir) / f"value{r}.pt") for r in range(nproc)]


def _stop(procs: list[Any]) -> None:
    """Wait :data:`GRACE_S` for the processes to exit, then SIGTERM them, then SIGKILL.

    On SIGTERM the trainer checkpoints and stops at its next step; a process stuck elsewhere
    (in a collective, until its timeout) is killed after another grace period.
    """
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for signal in ("terminate", "kill"):
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            getattr(p, signal)()
        deadline = time.monotonic() + GRACE_S
        for p in alive:
            p.join(timeout=max(0.0, deadline - time.monotonic()))


def _is_lost_peer(err: BaseException) -> bool:
    """A communication failure, which is usually the echo of another rank's error."""
    return isinstance(err, (DistributedError, dist.DistError)) or (
        isinstance(err, RuntimeError) and any(w in str(err) for w in ("gloo", "NCCL", "Connection"))
    )


def _root_cause(errors: dict[int, Any], first: int, exitcode: int | None, nproc: int) -> Exception:
    for err in errors.values():
        if isinstance(err, USER_ERRORS):
            return err
    ranked = [r for r, e in errors.items() if e is not None and not _is_lost_peer(e)]
    ranked += [r for r, e in errors.items() if e is not None and r not in ranked]
    if not ranked:
        return DistributedError(f"rank {first} of {nproc} died (exit code {exitcode})")
    rank = ranked[0]
    return DistributedError(f"rank {rank} of {nproc} failed: {type(errors[rank]).__name__}: {errors[rank]}")


@contextmanager
def _single_process_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(
    config: RunConfig,
    run_dir: Path | None,
    *,
    nproc: int,
    resume: bool = False,
    overwrite: bool = False,
    data: ClassificationData | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads: int | None = None,
) -> list[ProcessOutcome]:
    """``noprop train --nproc N``: train with N local processes; every rank's outcome, by rank.

    ``threads`` per process defaults to the CPU count divided by ``nproc`` (at least 1).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    config = config.resolved()
    check_supported(config, nproc)
    if run_dir is not None:  # fail here, with one line, before any process starts
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    kwargs = {"resume": resume, "overwrite": overwrite, "data": data, "timeout_s": timeout_s}
    if nproc == 1:
        with _single_process_env():
            return [train_process(config, run_dir, **kwargs)]
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    return spawn(train_process, nproc, (config, run_dir), kwargs, threads=threads)


def train_distributed(
    config: RunConfig,
    run_dir: Path | None,
    *,
    nproc: int | None,
    resume: bool = False,
    overwrite: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any] | None:
    """The CLI's entry: join torchrun's group, or spawn ``nproc`` processes; rank 0's results.

    Returns ``None`` in a torchrun process other than rank 0.
    """
    if launched_by_torchrun():
        if nproc is not None:
            raise ConfigError("--nproc starts its own processes; under torchrun leave it out")
        return train_process(config, run_dir, resume=resume, overwrite=overwrite, timeout_s=timeout_s).results
    return launch(config, run_dir, nproc=nproc or 1, resume=resume, overwrite=overwrite,
                  timeout_s=timeout_s)[0].results
