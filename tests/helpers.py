"""Helpers several test modules use: tiny synthetic data, a dataset file of it (whole or damaged), a
small run config, the one line a failing command printed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from noprop.config import RunConfig
from noprop.data import ClassificationData


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


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
