"""Interrupted and resumed runs end with exactly the parameters of uninterrupted ones (CPU).

The subprocess test is the real thing: ``noprop train`` in its own process, a SIGTERM sent from
outside while it is mid-epoch, ``--resume``, and every parameter compared with ``torch.equal``.
To hit a known step instead of racing the loop, ``tests/pausing.py`` wraps the trainer's
between-steps check so that the child announces itself through a file and waits for the signal
(the library itself has no test hook).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from helpers import make_blobs, tiny_config, write_npz
from noprop.config import RunConfig
from noprop.data import ClassificationData
from noprop.run import RunDirError, prepare_run_dir, train_run
from noprop.saved_run import CHECKPOINT, METRICS, SavedRun
from noprop.training.interrupt import TrainingInterrupted
from noprop.training.metrics import MetricsLog
from noprop.training.trainer import Trainer
from pausing import pause_after

TIMING = ("epoch_seconds", "samples_per_second")


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ after resume: {different[:5]}"


def assert_same_metrics(dir_a: Path, dir_b: Path) -> None:
    rows_a, rows_b = MetricsLog.read(dir_a / METRICS), MetricsLog.read(dir_b / METRICS)
    strip = [[{k: v for k, v in r.items() if k not in TIMING} for r in rows] for rows in (rows_a, rows_b)]
    assert strip[0] == strip[1]


def interrupt_in_process(config: RunConfig, run_dir: Path, data: ClassificationData, *, after: int,
                         signum: int, monkeypatch: pytest.MonkeyPatch) -> TrainingInterrupted:
    """Train until ``after`` steps, deliver a real ``signum`` to this process, return the exception."""
    ready = run_dir.parent / f"{run_dir.name}.ready"
    monkeypatch.setattr(Trainer, "_between_steps", Trainer._between_steps)  # restored afterwards
    pause_after(after, ready)

    def send() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signum)

    threading.Thread(target=send, daemon=True).start()
    with pytest.raises(TrainingInterrupted) as info:
        train_run(config, run_dir, data=data)
    return info.value


def test_same_seed_gives_identical_parameters_on_cpu():
    data = make_blobs(32, 8, classes=3)
    first, _ = train_run(tiny_config(epochs=1), None, data=data)
    second, _ = train_run(tiny_config(epochs=1), None, data=data)
    assert_same_parameters(first.method.state_dict(), second.method.state_dict())
    other, _ = train_run(tiny_config(epochs=1, seed=1), None, data=data)
    assert not torch.equal(first.method.state_dict()["classifier.weight"],
                           other.method.state_dict()["classifier.weight"])


@pytest.mark.parametrize(("block_order", "signum", "skip_nonfinite", "dropout_rng"), [
    ("sequential", signal.SIGINT, False, "exact"),
    ("interleaved", signal.SIGTERM, True, "exact"),
    ("interleaved", signal.SIGTERM, False, "fast"),
])
def test_signal_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, monkeypatch, block_order, signum,
                                                                skip_nonfinite, dropout_rng):
    data = make_blobs(32, 8, classes=3)
    config = tiny_config(block_order=block_order, skip_nonfinite=skip_nonfinite, dropout_rng=dropout_rng)
    whole, _ = train_run(config, tmp_path / "whole", data=data)

    handler_before = signal.getsignal(signum)
    stopped = interrupt_in_process(config, tmp_path / "cut", data, after=3, signum=signum,
                                   monkeypatch=monkeypatch)
    assert stopped.exit_code == 128 + signum
    assert f"resume with: noprop train --run-dir {tmp_path / 'cut'} --resume" in str(stopped)
    state = SavedRun.read(tmp_path / "cut").progress
    assert (state.epoch, state.step) == (0, 3)  # mid-epoch: 4 steps per epoch
    assert signal.getsignal(signum) is handler_before  # the trainer put the old handler back

    resumed, _ = train_run(config, tmp_path / "cut", data=data, resume=True)
    assert_same_parameters(whole.method.state_dict(), resumed.method.state_dict())
    for name, opt in whole.optimizers.items():
        mine, theirs = opt.state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        for p, q in zip(mine.values(), theirs.values(), strict=True):
            assert all(torch.equal(p[k], q[k]) for k in p)
    assert_same_metrics(tmp_path / "whole", tmp_path / "cut")


def test_signal_at_epoch_boundary_resumes_from_that_epoch(tmp_path, monkeypatch):
    data = make_blobs(32, 8, classes=3)
    config = tiny_config()
    whole, _ = train_run(config, tmp_path / "whole", data=data)
    interrupt_in_process(config, tmp_path / "cut", data, after=4, signum=signal.SIGTERM,
                         monkeypatch=monkeypatch)
    assert SavedRun.read(tmp_path / "cut").progress.step == 0
    resumed, _ = train_run(config, tmp_path / "cut", data=data, resume=True)
    assert_same_parameters(whole.method.state_dict(), resumed.method.state_dict())


def _noprop(*args: str, pause: tuple[int, Path] | None = None) -> subprocess.Popen:
    """``noprop train ARGS`` in a child process (``pause``: through tests/pausing.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if pause is None:
        command = [sys.executable, "-m", "noprop", "train", *args]
    else:
        command = [sys.executable, str(Path(__file__).parents[1] / "pausing.py"), str(pause[0]),
                   str(pause[1]), "train", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_to_noprop_train_then_resume_ends_with_uninterrupted_parameters(tmp_path):
    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    flags = ["--dataset", str(dataset), "-T", "2", "--epochs", "2", "--batch-size", "16",
             "--device", "cpu", "-q"]
    ready = tmp_path / "ready"
    whole = _noprop(*flags, "--run-dir", str(tmp_path / "whole"))
    cut = _noprop(*flags, "--run-dir", str(tmp_path / "cut"), pause=(3, ready))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert cut.poll() is None, cut.communicate()
            assert time.monotonic() < deadline, "the child never reached step 3"
            time.sleep(0.02)
        # while it runs, the directory is locked against a second run, whatever the flags
        for flags_ in ({"resume": True, "overwrite": False}, {"resume": False, "overwrite": True}):
            with pytest.raises(RunDirError, match="in use by a running training process"):
                prepare_run_dir(tmp_path / "cut", **flags_)
        cut.send_signal(signal.SIGTERM)
        _, err = cut.communicate(timeout=120)
    finally:
        cut.kill()
    assert cut.returncode == 143, err
    assert f"resume with: noprop train --run-dir {tmp_path / 'cut'} --resume" in err
    assert "Traceback" not in err

    resume = _noprop("--run-dir", str(tmp_path / "cut"), "--resume", "-q")
    err = resume.communicate(timeout=300)[1]
    assert resume.returncode == 0, err
    err = whole.communicate(timeout=300)[1]
    assert whole.returncode == 0, err

    a, b = SavedRun.read(tmp_path / "whole"), SavedRun.read(tmp_path / "cut")
    assert (a.progress.epoch, b.progress.epoch) == (2, 2)
    assert_same_parameters(a.model, b.model)
    assert_same_metrics(tmp_path / "whole", tmp_path / "cut")


def test_timed_mid_epoch_checkpoint_survives_a_killed_process(tmp_path, monkeypatch):
    """``checkpoint_minutes``: a run killed (no signal handler can run) after a timed mid-epoch
    checkpoint resumes from it and still ends with the uninterrupted run's parameters."""
    data = make_blobs(32, 8, classes=3)
    whole, _ = train_run(tiny_config(), tmp_path / "whole", data=data)

    saves: list[tuple[int, int]] = []
    crash_copy = tmp_path / "at-crash.pt"
    real_save = Trainer.save_checkpoint

    def save_and_record(self):
        real_save(self)
        saves.append((self.epoch, self.progress.step))
        if (self.epoch, self.progress.step) == (1, 2):  # the machine dies right after this write
            crash_copy.write_bytes((self.run_dir / CHECKPOINT).read_bytes())

    monkeypatch.setattr(Trainer, "save_checkpoint", save_and_record)
    train_run(tiny_config(checkpoint_minutes=1e-9), tmp_path / "cut", data=data)
    assert saves == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0)]
    monkeypatch.undo()

    (tmp_path / "cut" / CHECKPOINT).write_bytes(crash_copy.read_bytes())
    resumed, _ = train_run(tiny_config(), tmp_path / "cut", data=data, resume=True)
    assert_same_parameters(whole.method.state_dict(), resumed.method.state_dict())
    assert_same_metrics(tmp_path / "whole", tmp_path / "cut")
