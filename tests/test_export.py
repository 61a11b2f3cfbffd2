"""``noprop export``: a run's model as one .safetensors file that predicts exactly as the run does."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_blobs, write_npz
from noprop import Classifier
from noprop.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    data = write_npz(root / "tiny.npz", make_blobs(64, 16, classes=3))
    assert main(["train", "--dataset", str(data), "-T", "2", "--epochs", "1", "--batch-size", "16", "-q",
                 "--device", "cpu", "--run-dir", str(root / "run")]) == 0
    return root / "run", data


def test_exported_model_predicts_as_the_checkpoint(run, tmp_path, capsys) -> None:
    run_dir, data = run
    out = tmp_path / "model.safetensors"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert out.stat().st_size < (run_dir / "checkpoint.pt").stat().st_size  # no optimizer state
    x = np.load(data)["x_test"]
    assert np.array_equal(Classifier.load(out).predict(x), Classifier.load(run_dir).predict(x))
    capsys.readouterr()
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(out), str(tmp_path / "x.npy")]) == 0
    from_export = capsys.readouterr().out
    assert main(["predict", str(run_dir), str(tmp_path / "x.npy")]) == 0
    assert capsys.readouterr().out == from_export


def test_an_existing_export_is_kept_unless_overwrite_is_passed(run, tmp_path, capsys) -> None:
    run_dir, _ = run
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"someone's file")
    assert main(["export", str(run_dir), str(out)]) == 2
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"someone's file"
    assert main(["export", str(run_dir), str(out), "--overwrite"]) == 0
    assert Classifier.load(out).spec is not None


def test_a_safetensors_file_that_is_not_a_noprop_model_is_one_line(tmp_path, capsys) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    assert main(["predict", str(tmp_path / "other.safetensors"), str(tmp_path)]) == 2
    assert "not a noprop model" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert main(["predict", str(tmp_path / "junk.safetensors"), str(tmp_path)]) == 2
    assert "not a readable .safetensors file" in capsys.readouterr().err


def test_the_exported_file_gets_the_umasks_permissions_and_no_temporary_stays(run, tmp_path) -> None:
    run_dir, _ = run
    old = os.umask(0o022)
    try:
        assert main(["export", str(run_dir), str(tmp_path / "model.safetensors")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644  # a file to share
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
