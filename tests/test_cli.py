"""The ``noprop`` command line: a tiny run end to end, its files, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import one_error_line
from noprop.cli import main

TINY = ["-T", "2", "--epochs", "1", "--batch-size", "128", "--quiet"]
RESULT_KEYS = {"method", "dataset", "epochs", "test_accuracy", "train_seconds", "samples_per_second",
               "peak_memory_mb", "device", "torch_version", "seed"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_train_writes_results_metrics_config_and_checkpoint(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    assert set(results) >= RESULT_KEYS
    assert results["dataset"] == "digits" and results["method"] == "dt" and results["epochs"] == 1
    assert results["block_order"] == "sequential"
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["train_seconds"] > 0 and results["samples_per_second"] > 0
    lines = (tiny_run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 2
    assert (tiny_run / "checkpoint.pt").is_file() and (tiny_run / "config.yaml").is_file()


def test_evaluate_reproduces_the_reported_accuracy(tiny_run: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run)]) == 0
    reported = json.loads((tiny_run / "results.json").read_text())["test_accuracy"]
    assert f"test_accuracy {reported:.4f}" in capsys.readouterr().out


def test_evaluate_uses_the_runs_precision_so_a_bf16_run_comes_back(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "bf16"  # bf16 autocast, as `auto` gives on a CPU with native bf16
    assert main(["train", *TINY, "--precision", "bf16", "--run-dir", str(run_dir)]) == 0
    reported = json.loads((run_dir / "results.json").read_text())["test_accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    assert main(["evaluate", str(run_dir), "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"test_accuracy {reported:.4f}" in out and f"({reported:.4f} " in out
    assert main(["evaluate", str(run_dir), "--precision", "fp32"]) == 0  # an override is taken


def test_evaluate_runs_the_papers_protocol_and_reports_the_vote(tiny_run: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run), "--runs", "3"]) == 0
    reported = json.loads((tiny_run / "results.json").read_text())["test_accuracy"]
    out = capsys.readouterr().out
    assert "over 3 sampler runs" in out and "majority vote" in out
    assert f"({reported:.4f} " in out       # the first run is the trainer's own evaluation


def test_resume_continues_from_the_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    assert main(["train", "--run-dir", str(run_dir), "--resume", "--epochs", "2", "--quiet"]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 2
    assert [r.split(",")[0] for r in (run_dir / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_occupied_run_dir_is_refused_and_left_untouched(tiny_run: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()}
    assert main(["train", *TINY, "--run-dir", str(tiny_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and "--resume" in err and "\n" not in err
    assert before == {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "imagenet-42"], "imagenet-42"),
        (["train", "--method", "magic"], "magic"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "-3"], "--batch-size"),
        (["train", "-T", "0"], "num-blocks"),
        (["train", "--embedding", "sparse"], "sparse"),
        (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (["train", "--resume"], "--run-dir"),
        (["evaluate", "/nonexistent/run"], "/nonexistent/run"),
        (["evaluate", "/nonexistent/run", "--runs", "0"], "--runs"),
        (["predict", "/nonexistent/run", "x.png", "--steps", "-1"], "--steps"),
        (["train", "--method", "ct", "--schedule-gamma", "0"], "--schedule-gamma"),
        (["train", "--eval-inference-steps", "5"], "this run is a dt model, which has none"),
        pytest.param(["train", "--device", "cuda"], "no CUDA GPU",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_code_2(argv: list[str], message: str, tmp_path: Path
                                                        ) -> None:
    proc = subprocess.run([sys.executable, "-m", "noprop", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("results.json"))


def test_a_dataset_path_is_saved_absolute_and_names_the_run_dir(tmp_path: Path, monkeypatch) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 8, 8)).astype("uint8")
    np.savez(tmp_path / "mine.npz", x=x, y=rng.integers(0, 3, 60))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "mine.npz", *TINY]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("mine-dt-")
    assert f"dataset: {tmp_path / 'mine.npz'}" in (run_dir / "config.yaml").read_text()


def test_several_runs_of_the_noise_free_sampler_are_refused(tiny_run: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run), "--runs", "2", "--deterministic"]) == 2
    assert "--runs needs the stochastic sampler" in one_error_line(capsys)


@pytest.mark.parametrize(("dataset", "message"), [
    ("wine", "dataset wine has inputs of 13 features, but the model takes 1x8x8"),
    ("twelve.npz", "has 12 classes, but the model knows only 10"),
])
def test_evaluate_on_data_the_model_cannot_score_is_one_line(tiny_run: Path, tmp_path: Path, capsys,
                                                             dataset: str, message: str) -> None:
    import numpy as np

    if dataset.endswith(".npz"):
        rng = np.random.default_rng(0)
        x = rng.integers(0, 17, (60, 1, 8, 8)).astype("uint8")
        np.savez(tmp_path / dataset, x=x, y=np.arange(60) % 12)
        dataset = str(tmp_path / dataset)
    assert main(["evaluate", str(tiny_run), "--dataset", dataset]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--parallel", "blocks"], "--parallel split the work between processes; this run has one"),
    (["train", "--shared-sync-every", "4"], "add --nproc N"),
    (["bench", "--methods", "dt", "--epochs", "1", "--out", "b", "--parallel", "blocks"], "bench trains"),
    (["reproduce", "mnist-dt", "--parallel", "data"], "reproduce trains each run in one process"),
    (["train", "--data-dir", "DATA"], "--data-dir does not apply to digits, which is embedded"),
    (["train", "--dataset", "wine", "--data-dir", "DATA"], "wine, which is embedded"),
    (["train", "--dataset", "mine.npz", "--data-dir", "DATA"], "mine.npz, which is read from its path"),
    (["bench", "--methods", "dt", "--epochs", "1", "--out", "b", "--data-dir", "DATA"], "apply to digits"),
])
def test_a_flag_that_would_do_nothing_here_is_refused(argv: list[str], message: str, capsys,
                                                     tmp_path: Path, monkeypatch) -> None:
    """--parallel where one process runs; --data-dir for a dataset not looked for under one."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in one_error_line(capsys)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_evaluate_refuses_a_data_dir_for_an_embedded_dataset(tiny_run: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run), "--data-dir", "DATA"]) == 2
    assert "--data-dir does not apply to digits" in one_error_line(capsys)


def test_eval_inference_steps_is_taken_by_methods_with_a_step_count() -> None:
    from noprop.cli import build_parser
    from noprop.commands.train import run_config

    args = build_parser().parse_args(["train", "--method", "ct", "--eval-inference-steps", "5"])
    assert run_config(args).eval_inference_steps == 5


def test_evaluate_steps_of_a_model_without_a_step_count_is_refused(tiny_run: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run), "--steps", "5"]) == 2  # DT: its T blocks, no choice
    assert "--steps sets the sampler steps of CT and FM models" in one_error_line(capsys)
