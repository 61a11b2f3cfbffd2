"""Helpers several test modules use: tiny synthetic data, a dataset file of it (whole or damaged), a
small run config, tiny trained runs, the checks every fully connected baseline passes, the one line
a failing command printed."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from noprop.config import RunConfig
from noprop.data import ClassificationData
from noprop.methods.base import Method


def make_blobs(n_train: int = 256, n_test: int = 128, *, classes: int = 4, shape=(1, 8, 8), seed: int = 0,
               nan_at: int | None = None) -> ClassificationData:
    """Images that are a class-specific pattern plus noise: learnable in a few steps (``nan_at``: that
    training image is NaN)."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, *shape, generator=g)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        return patterns[y] + 0.5 * torch.randn(n, *shape, generator=g), y

    (tx, ty), (vx, vy) = split(n_train), split(n_test)
    if nan_at is not None:
        tx[nan_at] = float("nan")
    return ClassificationData("blobs", tx, ty, vx, vy, num_classes=classes)


def tiny_config(**changes) -> RunConfig:
    base = {"num_blocks": 2, "epochs": 2, "batch_size": 16, "progress": False, "device": "cpu"}
    return RunConfig(**{**base, **changes})


def write_npz(path: Path, data: ClassificationData) -> Path:
    """A user dataset file (``--dataset path.npz``) holding ``data``'s train and test splits."""
    np.savez(path, x=data.train_x.numpy(), y=data.train_y.numpy(),
             x_test=data.test_x.numpy(), y_test=data.test_y.numpy())
    return path


def write_damaged_npz(path: Path, damage: str) -> Path:
    """An ``.npz`` whose zip is whole but whose ``x`` cannot be read: ``damage`` is ``"array header"``
    (an unclosed header dict) or ``"deflate"`` (a compressed stream that does not decode)."""
    if damage == "array header":
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, "
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("x.npy", bytes(4096))
        data = bytearray(path.read_bytes())
        start = 30 + len("x.npy")  # after the member's local header: its deflate stream
        data[start:start + 4] = b"\xff" * 4
        path.write_bytes(bytes(data))
    return path


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``n`` torch threads inside the block (on a small shared CPU, two threads contend and run
    several times slower than one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- tiny trained runs ---------------------------------------------------------------------------


def train_tiny_run(run_dir: Path, method: str = "dt", **settings) -> tuple[Path, ClassificationData]:
    """A two-epoch ``method`` run on 4-class blobs (128 + 64 examples) in ``run_dir``, with a small
    MLP encoder (what analyze and calibration measure does not depend on the encoder): (run dir,
    data)."""
    from noprop.run import train_run

    data = make_blobs(128, 64, classes=4)
    train_run(RunConfig(method=method, epochs=2, batch_size=16, progress=False, device="cpu", encoder="mlp",
                        encoder_width=32, **settings), run_dir, data=data)
    return run_dir, data


def train_from_the_command_line(tmp_path: Path, name: str, *flags: str) -> tuple[list[str], Path]:
    """``noprop train FLAGS`` for one epoch on a tiny 3-class ``.npz`` dataset into ``tmp_path / name``:
    (every flag it ran with, the run directory)."""
    from noprop.cli import main

    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    flags = (*flags, "--dataset", str(dataset), "--epochs", "1", "--batch-size", "16", "--device", "cpu",
             "-q", "--run-dir", str(tmp_path / name))
    assert main(["train", *flags]) == 0
    return list(flags), tmp_path / name


# -- what every small baseline is checked for ----------------------------------------------------


def tiny_method(cls: type[Method], **settings) -> Method:
    """``cls`` on the blobs' shape with ``settings``, its parameters drawn after ``manual_seed(0)``."""
    torch.manual_seed(0)
    return cls(make_blobs().spec, **settings)


def blobs_accuracy(method: str, *, epochs: int = 4, **settings) -> float:
    """Test accuracy of ``method`` trained ``epochs`` epochs (batch 16, lr 1e-2, fp32, seed 0) on
    4-class blobs, 128 training and 256 test examples: chance is 0.25."""
    from noprop.run import train_run

    data = make_blobs(n_train=128, n_test=256)
    torch.manual_seed(0)
    config = RunConfig(method=method, dataset="blobs", epochs=epochs, batch_size=16, lr=1e-2, progress=False,
                       log_epochs=False, precision="fp32", device="cpu", **settings)
    _, results = train_run(config, None, data=data)
    return results["test_accuracy"]


def check_trains_from_the_command_line_and_the_classifier(method: str, tmp_path: Path, *, batch_size: int,
                                                          **settings) -> dict:
    """``noprop train --method METHOD`` for one epoch (``settings`` as flags) finishes with an accuracy
    in [0, 1], and ``Classifier(method=METHOD, **settings)`` fits blobs and predicts one class per
    example; the run's ``results.json``."""
    from noprop.api import Classifier
    from noprop.cli import main

    run_dir = tmp_path / method
    flags = [item for k, v in settings.items() for item in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["train", "--method", method, "--epochs", "1", "--batch-size", str(batch_size), "--quiet",
                 "--device", "cpu", *flags, "--run-dir", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == method and 0.0 <= results["test_accuracy"] <= 1.0
    data = make_blobs(n_train=64, n_test=32)
    clf = Classifier(method=method, epochs=1, batch_size=16, device="cpu", **settings)
    clf.fit(data.train_x.numpy(), data.train_y.numpy())
    assert clf.predict(data.test_x.numpy()).shape == (32,)
    return results


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
