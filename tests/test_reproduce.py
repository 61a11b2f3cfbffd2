"""``noprop reproduce``: scaled budgets, resumable runs, and a table of ours beside the paper's."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from noprop import cli
from noprop.data import ClassificationData
from noprop.presets import load_preset
from noprop.reproduce import (
    REPORT_JSON,
    REPORT_MD,
    ExperimentResult,
    limit_train,
    markdown_table,
    merge_results,
    plan,
    run_experiment,
    scaled_epochs,
    write_report,
)

TINY = {"batch_size": 64, "num_blocks": 2, "device": "cpu", "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def mnist_shaped(n_train: int = 128, n_test: int = 64) -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    return ClassificationData(
        "mnist",
        torch.randn(n_train, 1, 28, 28, generator=g), torch.arange(n_train) % 10,
        torch.randn(n_test, 1, 28, 28, generator=g), torch.arange(n_test) % 10,
        num_classes=10,
    )


def digits_config(tmp_path, epochs: int = 10):
    """A DT config file for the embedded digits (8x8 images need padded convolutions)."""
    path = tmp_path / "digits-dt.yaml"
    fields = {**load_preset("mnist-dt").fields, "dataset": "digits", "conv_padding": "same",
              "num_blocks": 2, "epochs": epochs, "batch_size": 512}
    path.write_text(yaml.safe_dump({"description": "digits", "config": fields}))
    return path


def test_scaled_epochs_rounds_and_never_drops_below_one():
    assert scaled_epochs(100, 0.1) == 10
    assert scaled_epochs(150, 0.01) == 2
    assert scaled_epochs(100, 0.001) == 1
    assert scaled_epochs(100, 2.0) == 200


def test_plan_scales_the_paper_epochs_and_explicit_flags_win():
    preset = load_preset("cifar-10-ct")
    assert plan(preset, epochs_scale=0.1).epochs == 50
    config = plan(preset, epochs_scale=0.1, overrides={"epochs": 3, "lr": 0.01})
    assert (config.epochs, config.lr, config.optimizer) == (3, 0.01, "adam")


def test_limit_train_subsamples_training_set_only():
    data = mnist_shaped()
    small = limit_train(data, 32)
    assert len(small.train_x) == 32 and len(small.test_x) == len(data.test_x)
    assert torch.equal(small.train_x, limit_train(data, 32).train_x)  # seeded: the same subset
    assert limit_train(data, 10_000) is data


def test_experiment_reports_mean_and_stderr_over_seeds_and_inference_runs(tmp_path):
    preset = load_preset("mnist-dt")
    config = plan(preset, overrides={**TINY, "epochs": 1})
    result = run_experiment(preset, config, tmp_path / "mnist-dt", seeds=[0, 1], inference_runs=2,
                            data=mnist_shaped())
    assert len(result.accuracies) == 4 and result.stderr is not None
    assert result.paper.mean == 99.47 and result.gap == pytest.approx(result.mean - 99.47)
    assert result.run_dirs == [str(tmp_path / "mnist-dt" / "seed0"), str(tmp_path / "mnist-dt" / "seed1")]
    assert (result.epochs, result.paper_epochs, result.train_examples) == (1, 100, 128)
    for seed in (0, 1):
        saved = yaml.safe_load((tmp_path / "mnist-dt" / f"seed{seed}" / "config.yaml").read_text())
        assert saved["seed"] == seed


def test_rerun_reuses_a_finished_run_and_resumes_to_a_larger_budget(tmp_path):
    preset = load_preset("mnist-dt")
    data = mnist_shaped()
    first = run_experiment(preset, plan(preset, overrides={**TINY, "epochs": 1}), tmp_path, data=data)
    again = run_experiment(preset, plan(preset, overrides={**TINY, "epochs": 1}), tmp_path, data=data)
    assert again.accuracies == first.accuracies and again.train_seconds == first.train_seconds
    assert first.changes.get("num_blocks") == TINY["num_blocks"]  # the table says T was changed
    assert f"num_blocks={TINY['num_blocks']}" in markdown_table([first])
    longer = run_experiment(preset, plan(preset, overrides={**TINY, "epochs": 2}), tmp_path, data=data)
    rows = (tmp_path / "seed0" / "metrics.csv").read_text().strip().splitlines()
    assert longer.epochs == 2 and len(rows) == 1 + 2  # header + epoch 1 (kept) + epoch 2 (new)


def test_report_sets_ours_beside_the_paper_and_keeps_other_rows(tmp_path):
    def row(name, acc, paper=None):
        return ExperimentResult(name=name, method="dt", dataset="mnist", embedding="onehot",
                                paper=paper, paper_epochs=100, epochs=3, seeds=[0],
                                accuracies=[acc], device="cpu", train_seconds=12.0,
                                command=f"noprop reproduce {name}")

    preset = load_preset("mnist-dt")
    paper = preset.paper_number(preset.run_config())
    write_report([row("mnist-dt", 98.0, paper)], tmp_path)
    rows = write_report([row("fashion-mnist-dt", 88.5)], tmp_path)
    assert [r.name for r in rows] == ["mnist-dt", "fashion-mnist-dt"]
    table = (tmp_path / REPORT_MD).read_text()
    assert "| mnist-dt | 99.47 ± 0.05 | 98.00 | -1.47 | 3 / 100 | – | – |" in table
    assert "| fashion-mnist-dt | no published number | 88.50 |" in table
    data = json.loads((tmp_path / REPORT_JSON).read_text())
    assert data["experiments"][0]["gap"] == pytest.approx(-1.47)
    assert merge_results(rows, [row("mnist-dt", 99.0, paper)])[0].mean == 99.0


def test_cli_reproduce_runs_a_config_file_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", str(digits_config(tmp_path)), "--epochs-scale", "0.1", "--train-limit", "300",
            "--out-dir", str(out), "-q"]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| digits-dt | no published number |" in stdout
    (row,) = json.loads((out / REPORT_JSON).read_text())["experiments"]
    assert (row["epochs"], row["train_examples"]) == (1, 300)
    assert row["command"].startswith("noprop reproduce ") and "--epochs-scale 0.1" in row["command"]
    assert (out / "digits-dt" / "seed0" / "checkpoint.pt").is_file()


def test_cli_reproduce_records_missing_data_and_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "mnist-dt", "--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(out), "-q"]
    assert cli.main(argv) == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("noprop: error")]
    assert len(err_lines) == 1 and "mnist-dt" in err_lines[0]
    assert "| mnist-dt | 99.47 ± 0.05 | not measured:" in (out / REPORT_MD).read_text()


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "mnist-dt", "--method", "fm"], "own method"),
    (["reproduce"], "name one or more configs"),
    (["reproduce", "mnist-dtt"], "unknown config"),
    (["reproduce", "mnist-dt", "--seed", "3"], "--seeds"),
])
def test_cli_reproduce_rejects_bad_requests_in_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cli_reproduce_lists_the_configs(capsys):
    assert cli.main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "mnist-dt" in listing and "99.47" in listing and "fashion-mnist-fm" in listing


def test_reproduce_help_names_the_configs_values_not_trains_digits_defaults(capsys) -> None:
    from noprop.cli import main

    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS passes over the data" in text and "(default: the config's)" in text
    assert "15 on digits" not in text and "64 on digits" not in text
