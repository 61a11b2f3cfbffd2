"""Shared fixtures: tiny synthetic data so unit tests run in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import make_blobs
from noprop.data import ClassificationData

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def one_thread():
    """One torch thread: on a small shared CPU, two threads contend and run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def blobs() -> ClassificationData:
    return make_blobs()


@pytest.fixture
def mnist_dir() -> Path:
    path = SHARED_DATA / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found at {path}")
    return path


@pytest.fixture
def cli_run(tmp_path) -> tuple[list[str], Path]:
    """A finished one-epoch ``noprop train`` run on a tiny .npz dataset: (its flags, its run dir)."""
    from helpers import make_blobs, write_npz
    from noprop.cli import main

    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    flags = ["--dataset", str(dataset), "-T", "2", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
             "-q", "--run-dir", str(tmp_path / "run")]
    assert main(["train", *flags]) == 0
    return flags, tmp_path / "run"
