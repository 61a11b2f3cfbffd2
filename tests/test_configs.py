"""The shipped experiment configs: the paper's settings, loadable, runnable, and usable from ``train``."""

from __future__ import annotations

import pytest
import torch
import yaml

from noprop import cli
from noprop.commands import train as train_command
from noprop.config import ConfigError, RunConfig
from noprop.data import DATASETS, ClassificationData
from noprop.methods import METHODS
from noprop.presets import PAPER_EXPERIMENTS, load_preset, preset_names
from noprop.run import train_run

# v1 Table 3 (= v2 Table 4), restated here independently of the YAML files:
# (optimizer, epochs, eta, inference steps); batch 128, lr 1e-3, weight decay 1e-3 everywhere.
TABLE3 = {
    ("backprop", "mnist"): ("adamw", 100, None, None),
    ("backprop", "cifar-10"): ("adamw", 150, None, None),
    ("backprop", "cifar-100"): ("adamw", 150, None, None),
    ("dt", "mnist"): ("adamw", 100, 0.1, None),
    ("dt", "cifar-10"): ("adamw", 150, 0.1, None),
    ("dt", "cifar-100"): ("adamw", 150, 0.1, None),
    ("ct", "mnist"): ("adam", 100, 1.0, 1000),
    ("ct", "cifar-10"): ("adam", 500, 1.0, 1000),
    ("ct", "cifar-100"): ("adam", 1000, 1.0, 1000),
    ("fm", "mnist"): ("adam", 100, None, 1000),
    ("fm", "cifar-10"): ("adam", 500, None, 1000),
    ("fm", "cifar-100"): ("adam", 1000, None, 1000),
}
# v1 Table 1, one-hot rows (test %).
TABLE1_ONEHOT = {
    "mnist-backprop": 99.46, "cifar-10-backprop": 79.92, "cifar-100-backprop": 45.85,
    "mnist-dt": 99.47, "cifar-10-dt": 79.25, "cifar-100-dt": 45.93,
    "mnist-ct": 97.84, "cifar-10-ct": 73.35, "cifar-100-ct": 33.66,
    "mnist-fm": 99.21, "cifar-10-fm": 73.14, "cifar-100-fm": 6.38,
}
SHAPES = {"mnist": (1, 28, 28, 10), "fashion-mnist": (1, 28, 28, 10),
          "cifar-10": (3, 32, 32, 10), "cifar-100": (3, 32, 32, 100)}
#: Shrinks any config to seconds on a CPU; fields a method does not have are ignored by it.
TINY = {"epochs": 1, "batch_size": 64, "eval_inference_steps": 2, "device": "cpu", "progress": False}
#: The tiny setting of each method hyperparameter, given to the methods that take it.
TINY_METHOD = {"num_blocks": 2, "inference_steps": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(dataset: str, n_train: int = 128, n_test: int = 64) -> ClassificationData:
    """Random images of ``dataset``'s shape and class count (stands in for files we cannot have)."""
    c, h, w, classes = SHAPES[dataset]
    g = torch.Generator().manual_seed(0)
    return ClassificationData(
        dataset,
        torch.randn(n_train, c, h, w, generator=g), torch.arange(n_train) % classes,
        torch.randn(n_test, c, h, w, generator=g), torch.arange(n_test) % classes,
        num_classes=classes,
    )


def tiny_overrides(method: str) -> dict:
    takes = METHODS[method].config_class.names()
    return {**TINY, **{k: v for k, v in TINY_METHOD.items() if k in takes}}


def test_the_twelve_paper_experiments_ship_as_configs():
    assert len(PAPER_EXPERIMENTS) == 12
    assert set(PAPER_EXPERIMENTS) <= set(preset_names())
    for name in ("fashion-mnist-dt", "fashion-mnist-ct", "fashion-mnist-fm"):
        assert name in preset_names()


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_config_carries_table3_hyperparameters(name):
    preset = load_preset(name)
    config = preset.run_config()
    optimizer, epochs, eta, steps = TABLE3[(config.method, config.dataset)]
    assert (config.optimizer, config.epochs, config.batch_size) == (optimizer, epochs, 128)
    assert (config.lr, config.weight_decay) == (1e-3, 1e-3)
    method = config.method_config.to_dict()
    assert method["embedding"] == "onehot" and method["embedding_dim"] == 20
    assert method["conv_padding"] == "valid"
    assert method.get("eta") == eta
    assert method.get("inference_steps") == steps
    if config.method == "dt":
        assert (method["num_blocks"], config.block_order) == (10, "sequential")
    if config.method == "backprop":
        assert method["num_blocks"] == 10  # the same ten blocks as NoProp-DT


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_config_carries_table1_number(name):
    preset = load_preset(name)
    assert preset.paper_number(preset.run_config()).mean == TABLE1_ONEHOT[name]


def test_fashion_mnist_configs_have_no_paper_number_and_mnist_settings():
    for method in ("dt", "ct", "fm"):
        fashion, mnist = load_preset(f"fashion-mnist-{method}"), load_preset(f"mnist-{method}")
        assert fashion.paper_number(fashion.run_config()) is None
        assert {**fashion.fields, "dataset": "mnist"} == mnist.fields


def test_paper_number_follows_the_embedding_variant():
    preset = load_preset("mnist-dt")
    assert preset.paper_number(preset.run_config({"embedding": "learned"})).mean == 99.49
    assert preset.paper_number(preset.run_config({"embedding": "prototype"})).mean == 99.54
    assert preset.paper_number(preset.run_config({"embedding": "learned", "embedding_dim": 32})) is None
    assert preset.paper_number(preset.run_config({"dataset": "fashion-mnist"})) is None


@pytest.mark.parametrize("name", sorted(preset_names()))
def test_config_trains_at_a_tiny_budget_on_data_of_its_shape(name, tmp_path):
    preset = load_preset(name)
    assert preset.method in METHODS, f"preset {name} names unknown method {preset.method!r}"
    assert preset.dataset in DATASETS, f"preset {name} names unknown dataset {preset.dataset!r}"
    config = preset.run_config(tiny_overrides(preset.method))
    _, results = train_run(config, tmp_path / "run", data=synthetic(preset.dataset))
    assert results["epochs"] == 1
    assert 0.0 <= results["test_accuracy"] <= 1.0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    for key in ("method", "dataset", "optimizer", "lr", "weight_decay", "embedding", "conv_padding"):
        assert saved[key] == preset.fields[key], key


def test_unknown_config_name_is_a_one_line_error_listing_the_names(capsys):
    assert cli.main(["train", "--config", "mnist-dtt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "mnist-dtt" in err and "mnist-dt," in err and "cifar-100-fm" in err


def test_config_file_with_an_unknown_field_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("config:\n  method: dt\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_preset(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_preset(tmp_path / "missing.yaml")


def test_train_config_flags_override_its_fields(monkeypatch, tmp_path):
    seen = {}

    def fake_train_run(config, run_dir, **kwargs):
        seen["config"] = config
        return None, {"method": config.method, "dataset": config.dataset, "epochs": config.epochs,
                      "test_accuracy": 0.5, "train_seconds": 0.0, "samples_per_second": 0.0,
                      "peak_memory_mb": 0.0, "device": "cpu"}

    monkeypatch.setattr(train_command, "train_run", fake_train_run)
    args = ["train", "--config", "mnist-dt", "--epochs", "3", "--lr", "0.01", "--run-dir", str(tmp_path)]
    assert cli.main(args) == 0
    config = seen["config"]
    assert (config.epochs, config.lr) == (3, 0.01)                         # the flags
    assert (config.dataset, config.optimizer) == ("mnist", "adamw")          # the file
    assert config.method_config.num_blocks == 10


def test_train_from_a_yaml_file_saves_the_resolved_config(tmp_path):
    path = tmp_path / "digits-dt.yaml"
    fields = {**load_preset("mnist-dt").fields, "dataset": "digits", "conv_padding": "same",
              "num_blocks": 2, "epochs": 5, "batch_size": 512}
    path.write_text(yaml.safe_dump({"description": "test", "config": fields}))
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(path), "--epochs", "1", "--run-dir", str(run_dir), "-q"]
    assert cli.main(argv) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["num_blocks"] == 2 and saved["optimizer"] == "adamw"
    # the saved config.yaml is itself a config file: it reproduces the run's settings
    assert load_preset(run_dir / "config.yaml").run_config().to_dict() == RunConfig.from_dict(saved).to_dict()


def test_config_and_resume_do_not_mix(tmp_path, capsys):
    argv = ["train", "--config", "mnist-dt", "--resume", "--run-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "--config" in capsys.readouterr().err

