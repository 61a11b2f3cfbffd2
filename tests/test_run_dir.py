"""Run directories: a failed start leaves nothing, files get normal permissions, a resumed run
applies (and records) what it may change, refuses what it may not, and says when it is finished."""

from __future__ import annotations

import os
import stat

import pytest
import torch
import yaml

from helpers import make_blobs, one_error_line, write_npz
from noprop.cli import main
from noprop.saved_run import CHECKPOINT, CONFIG, METRICS, RESULTS, SavedRun

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_run_files_are_readable_by_others_under_umask_022(umask_022, cli_run) -> None:
    _, run_dir = cli_run
    for name in (CHECKPOINT, RESULTS, METRICS, CONFIG):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("problem", ["missing data", "no gpu"])
def test_a_failed_start_leaves_no_run_directory_behind(tmp_path, capsys, problem) -> None:
    if problem == "no gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    dataset = tmp_path / "absent.npz" if problem == "missing data" else write_npz(
        tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    device = "cuda" if problem == "no gpu" else "cpu"
    run_dir = tmp_path / "new-run"
    code = main(["train", "--dataset", str(dataset), "-T", "2", "--epochs", "1", "--device", device, "-q",
                 "--run-dir", str(run_dir)])
    assert code == 2 and one_error_line(capsys)
    assert not run_dir.exists()


def test_a_failed_resume_keeps_the_run_as_it_was(cli_run, capsys) -> None:
    flags, run_dir = cli_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["train", *flags, "--resume", "--epochs", "2", "--batch-size", "8"]) == 2
    assert "cannot change batch_size" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


@pytest.mark.parametrize("problem", ["no gpu", "images too small"])
def test_an_overwrite_that_fails_to_start_keeps_the_old_run(cli_run, capsys, problem) -> None:
    if problem == "no gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    flags, run_dir = cli_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"}
    bad = ["--device", "cuda"] if problem == "no gpu" else ["--conv-padding", "valid"]
    assert main(["train", *flags, "--overwrite", *bad]) == 2
    one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"} == before


@pytest.mark.parametrize(("text", "expected"), [
    ("lr: [1, 2\n", "config.yaml is not valid YAML"),
    ("", "config.yaml must hold a mapping of configuration fields"),
    ("- lr\n", "config.yaml must hold a mapping of configuration fields"),
    ("lr: -1\n", "config.yaml: lr must be positive, got -1.0"),
])
def test_a_hand_broken_config_yaml_on_resume_is_one_line_naming_it(cli_run, capsys, text, expected) -> None:
    flags, run_dir = cli_run
    (run_dir / CONFIG).write_text(text)
    assert main(["train", *flags, "--resume", "--epochs", "2"]) == 2
    assert expected in one_error_line(capsys)


def test_a_changed_lr_on_resume_is_applied_and_recorded(cli_run) -> None:
    flags, run_dir = cli_run
    assert main(["train", *flags, "--resume", "--epochs", "2", "--lr", "0.01"]) == 0
    assert yaml.safe_load((run_dir / CONFIG).read_text())["lr"] == 0.01
    state = SavedRun.read(run_dir)
    lrs = {g["lr"] for opt in state.optimizers.values() for g in opt["param_groups"]}
    assert lrs == {0.01}


def test_resuming_a_finished_run_says_so_and_rewrites_nothing(cli_run, capsys) -> None:
    flags, run_dir = cli_run

    def files() -> dict[str, tuple[bytes, int]]:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
                for p in run_dir.iterdir() if p.name != ".lock"}

    before = files()
    assert main(["train", *flags, "--resume"]) == 0
    assert "already trained 1 of 1 epochs" in capsys.readouterr().err
    assert files() == before


def test_resume_and_overwrite_together_is_an_error(cli_run, capsys) -> None:
    flags, _ = cli_run
    assert main(["train", *flags, "--resume", "--overwrite"]) == 2
    assert "give one of them" in one_error_line(capsys)


def test_a_resumed_run_says_where_it_resumes(cli_run, capsys) -> None:
    flags, _ = cli_run
    flags = [f for f in flags if f != "-q"]
    assert main(["train", *flags, "--resume", "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert "at the end of epoch 1 (of 2 epochs)" in captured.out + captured.err


def test_piped_output_is_one_line_per_epoch_and_quiet_keeps_those_lines(tmp_path, capsys) -> None:
    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    for quiet in ([], ["-q"]):
        assert main(["train", "--dataset", str(dataset), "-T", "2", "--epochs", "2", "--device", "cpu",
                     *quiet, "--run-dir", str(tmp_path / f"run{len(quiet)}")]) == 0
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert "\r" not in text  # no progress bar when not on a terminal
        assert [line.split(":")[0] for line in text.splitlines() if line.startswith("epoch ")] == [
            "epoch 1", "epoch 2"]


def test_a_time_budget_that_leaves_blocks_untrained_says_which(tmp_path, capsys) -> None:
    import json

    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(64, 8, classes=3))
    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset), "-T", "3", "--epochs", "1", "--batch-size", "8",
                 "--max-train-seconds", "1e-6", "--device", "cpu", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "model NoPropDT: block1..block3" in out and "total" in out
    assert "units took a step (block2, block3)" in out
    assert json.loads((run_dir / RESULTS).read_text())["untrained_units"] == ["block2", "block3"]


@pytest.mark.parametrize("case", ["npz of 1x30 images", "mnist config on the 8x8 digits"])
def test_images_too_small_for_the_block_are_one_line_and_leave_nothing(tmp_path, capsys, case) -> None:
    import numpy as np

    run_dir = tmp_path / "run"
    if case.startswith("npz"):
        np.savez(tmp_path / "flat.npz", x=np.random.rand(40, 1, 1, 30).astype("float32"), y=np.arange(40) % 2)
        argv = ["--dataset", str(tmp_path / "flat.npz")]
        expected = "1x30 images are too small for the paper's block"
    else:
        argv = ["--config", "mnist-dt", "--dataset", "digits"]
        expected = "8x8 images are too small for the paper's block with valid (unpadded) convolutions"
    assert main(["train", *argv, "--epochs", "1", "-q", "--device", "cpu", "--run-dir", str(run_dir)]) == 2
    assert expected in one_error_line(capsys)
    assert not run_dir.exists()
