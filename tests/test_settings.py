"""Settings are checked in one place: YAML strings become numbers, a setting the method does not
take is refused in one line (CLI, YAML, Python alike), and every flag's help shows its default."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from noprop import Classifier
from noprop.cli import build_parser
from noprop.config import ConfigError, RunConfig
from noprop.presets import load_preset


def test_a_number_written_as_yaml_reads_it_is_accepted(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("method: dt\nlr: 1e-3\nweight_decay: 0\nnum_blocks: 4.0\n")  # PyYAML: "1e-3"
    config = load_preset(path).run_config()
    assert (config.lr, config.weight_decay, config.method_config.num_blocks) == (0.001, 0.0, 4)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr", "fast", "lr must be a number, got 'fast'"),
    ("epochs", "1.5", "epochs must be an integer"),
    ("eta", -1, "eta must be >= 0"),
    ("augment", "maybe", "augment must be true or false"),
    ("weight_decay", float("nan"), "weight_decay must be a finite number, got nan"),  # NaN passes >= 0
    ("warmup_epochs", "nan", "warmup_epochs must be a finite number, got nan"),
    ("lr", "inf", "lr must be a finite number, got inf"),
    ("schedule_clip", 0.6, r"schedule_clip must lie in \(0, 0.5\), got 0.6"),
])
def test_a_value_that_is_not_of_the_fields_type_is_one_named_error(field, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({field: value})


def test_a_non_finite_number_on_the_command_line_is_a_one_line_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--weight-decay", "nan"])
    assert exit_info.value.code == 2
    assert "argument --weight-decay: must be a finite number, got nan" in capsys.readouterr().err


def test_a_setting_the_method_does_not_take_is_refused_naming_what_it_takes() -> None:
    with pytest.raises(ConfigError, match="method ct does not take num_blocks; it takes: conv_padding, "
                                          "embedding, embedding_dim, encoder, encoder_depth, encoder_width, "
                                          "eta, inference_steps, schedule_gamma"):
        RunConfig(method="ct", num_blocks=5)
    with pytest.raises(ConfigError, match="method cnn does not take eta"):
        Classifier(method="cnn", eta=0.5)
    with pytest.raises(ConfigError, match="unknown configuration field"):
        RunConfig(colour="blue")


def test_the_command_line_refuses_a_setting_the_method_does_not_take(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "noprop", "train", "--method", "ct", "-T", "5"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "noprop: error: method ct does not take num_blocks; it takes: conv_padding, embedding, "
        "embedding_dim, encoder, encoder_depth, encoder_width, eta, inference_steps, schedule_gamma"]
    assert not (tmp_path / "runs").exists()


def test_embedding_dim_is_a_setting_of_every_embedding_method_and_kept_with_onehot() -> None:
    config = RunConfig(method="fm", embedding="onehot", embedding_dim=20)  # as the presets write it
    assert config.method_config.embedding_dim == 20
    with pytest.raises(ConfigError, match="method local does not take embedding_dim"):
        RunConfig(method="local", embedding_dim=20)


def test_a_flat_config_saved_before_the_split_still_loads() -> None:
    old = {"method": "ct", "num_blocks": None, "fused": False, "fm_sigma": None, "eta": 1.0,
           "inference_steps": 1000, "schedule_clip": None, "lr": 0.001}
    config = RunConfig.from_dict(old)
    assert config.method_config.eta == 1.0 and "num_blocks" not in config.to_dict()


def test_a_config_round_trips_through_its_flat_mapping() -> None:
    config = RunConfig(method="dt", num_blocks=3, embedding="learned", lr=0.01)
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.replace(method="ct").method_config == RunConfig(method="ct").method_config
    assert config.replace(method="ct").optimizer == "adam"  # the new method's default


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["train", "bench", "reproduce", "evaluate"])
def test_every_option_with_a_value_shows_its_default_in_help(command: str) -> None:
    for action in _subparser(command)._actions:
        hidden = action.help == argparse.SUPPRESS
        if not action.option_strings or action.nargs == 0 or action.required or hidden:
            continue  # -h, on/off switches (off unless given), required and hidden options
        assert "default" in (action.help or ""), f"{command} {action.option_strings[-1]}: {action.help}"


def test_bench_offers_methods_not_method() -> None:
    actions = _subparser("bench")._actions
    offered = {s for a in actions if a.help != argparse.SUPPRESS for s in a.option_strings}
    assert "--methods" in offered and "--method" not in offered  # --method is there only to refuse it


def test_a_method_brings_its_own_budget_on_a_dataset_and_explicit_settings_win() -> None:
    ct = RunConfig(method="ct").resolved()
    assert (ct.epochs, ct.batch_size, ct.eval_inference_steps) == (60, 64, 20)
    assert RunConfig(method="dt").resolved().epochs == 15
    assert RunConfig(method="ct", dataset="mnist").resolved().epochs == 10
    assert RunConfig(method="ct", epochs=3, eval_inference_steps=5).resolved().eval_inference_steps == 5


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a whole default run: two took over 600 s on a loaded 2-core CPU (2026-12-01)
@pytest.mark.parametrize("method", ["dt", "ct", "fm", "backprop"])
def test_every_variants_default_run_on_the_digits_reaches_095(method, tmp_path) -> None:
    import json

    from noprop.cli import main

    assert main(["train", "--method", method, "-q", "--run-dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test_accuracy"] >= 0.95
