"""``noprop calibration`` (noprop.calibration_report): every way of reporting p(y | x) measured on a
tiny trained run, the held-out / reported split, determinism under a seed, the refusal of
baselines, the CLI's table, JSON and figure."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import one_error_line, train_from_the_command_line
from noprop.calibration_report import (
    RULES,
    CalibrationError,
    calibration_report,
    class_frequencies,
    sampler_outputs,
)
from noprop.cli import main
from noprop.inference import InferenceOptions, logits
from noprop.saved_run import load_run

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def test_the_passes_are_the_librarys_own_inference(dt_run) -> None:
    run_dir, data = dt_run
    method = load_run(run_dir).method
    options = InferenceOptions(seed=5, batch_size=40)
    out = sampler_outputs(method, data.test_x, options, passes=3)
    assert torch.equal(out.stochastic, logits(method, data.test_x, options))
    assert torch.equal(out.noise_free, logits(method, data.test_x, options.replace(deterministic=True)))
    third = logits(method, data.test_x, options.replace(seed=7))
    assert out.passes.shape == (3, 64, 4) and torch.equal(out.passes[2], third)
    assert torch.equal(out.passes[0], out.stochastic)
    assert out.eq16_stochastic is not None and out.gaussian is not None


def test_class_frequencies_are_smoothed_by_one_pass_spread_over_the_classes() -> None:
    passes = torch.tensor([[0, 1], [0, 1], [0, 2]])  # 3 passes, 2 examples
    p = class_frequencies(passes, classes=4)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    assert p[0].tolist() == pytest.approx([3.25 / 4, 0.25 / 4, 0.25 / 4, 0.25 / 4])
    assert p[1].tolist() == pytest.approx([0.25 / 4, 2.25 / 4, 1.25 / 4, 0.25 / 4])


def test_every_rule_is_measured_on_the_odd_examples_and_deterministic_under_a_seed(dt_run) -> None:
    run_dir, data = dt_run
    a = calibration_report(run_dir, data=data, passes=3, seed=2, train_samples=50)
    b = calibration_report(run_dir, data=data, passes=3, seed=2, train_samples=50)
    assert [r.name for r in a.rules] == list(RULES)  # DT has a head and a Gaussian at T
    assert a.samples == 64 and a.heldout == 32 and a.reported == 32 and a.train_samples == 50
    assert all(r.metrics.n == 32 for r in a.rules)
    rows = {r.name: r for r in a.rules}
    assert rows["frequency"].passes == 3 and rows["softmax_noise_free"].temperature is None
    # the saved temperature is the trainer's fit on the same training draw at the same seed
    saved = load_run(run_dir).saved.temperatures
    assert saved is not None and saved.fitted_on == "train" and saved.examples == 128
    assert rows["saved_t"].temperature == saved.mean and rows["saved_t"].passes == 3
    assert rows["saved_t_noise_free"].temperature == saved.noise_free
    a.seconds = b.seconds = 0.0
    assert a.to_dict() == b.to_dict()
    c = calibration_report(run_dir, data=data, passes=3, seed=3, train_samples=0)
    assert "softmax_noise_free_t_train" not in {r.name for r in c.rules}
    assert c.rules[0].metrics != a.rules[0].metrics  # another seed, another stochastic pass


def test_baselines_and_bad_settings_are_refused_in_one_line(tmp_path, capsys) -> None:
    train_from_the_command_line(tmp_path, "cnn", "--method", "cnn")
    capsys.readouterr()
    with pytest.raises(CalibrationError, match="cnn run"):
        calibration_report(tmp_path / "cnn")
    assert main(["calibration", str(tmp_path / "cnn")]) == 2
    assert "has no sampler" in one_error_line(capsys)
    assert main(["calibration", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_cli_prints_the_table_and_writes_json_and_figure(cli_run, capsys, tmp_path) -> None:
    _, run_dir = cli_run
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["calibration", str(run_dir), "--passes", "2", "--seed", "3", "-q", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "head softmax, noise-free pass" in printed and "ECE" in printed
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["passes"] == 2 and saved["seed"] == 3 and saved["samples"] == 8 and saved["reported"] == 4
    names = {r["name"] for r in saved["rules"]}
    assert names >= {"softmax_stochastic", "saved_t", "posterior_eq16_stochastic"}
    first = saved["rules"][0]["metrics"]
    assert {"accuracy", "ece", "nll", "brier", "mean_confidence", "reliability"} <= set(first)
    assert len(first["reliability"]["count"]) == 15 and sum(first["reliability"]["count"]) == 4
    assert (out / "calibration.png").stat().st_size > 10_000
    assert main(["calibration", str(run_dir), "--passes", "1", "--no-figure", "-q"]) == 0
    assert (run_dir / "calibration.json").is_file() and not (run_dir / "calibration.png").exists()
    assert main(["calibration", str(run_dir), "--steps", "3", "-q"]) == 2
    assert "CT and FM" in one_error_line(capsys)
