"""Shared fixtures: tiny synthetic data so unit tests run in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_blobs, torch_threads, train_from_the_command_line, train_tiny_run
from noprop.data import ClassificationData

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def one_thread():
    """One torch thread: on a small shared CPU, two threads contend and run several times slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One torch thread for a whole module (its module-scoped runs train under it too)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def dt_run(tmp_path_factory, one_thread_per_module):
    """A tiny trained NoProp-DT run (3 blocks; :func:`helpers.train_tiny_run`), one per module: (run
    dir, data)."""
    return train_tiny_run(tmp_path_factory.mktemp("dt") / "run", "dt", num_blocks=3)


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
    return train_from_the_command_line(tmp_path, "run", "-T", "2")
