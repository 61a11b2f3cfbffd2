"""docs/design.md's "How to add a method", done: one file (toy_method.py) plus one registry line,
and the method trains, saves and reloads, takes its own flag, and refuses settings it lacks."""

from __future__ import annotations

import pytest
from toy_method import ToyLocal

from noprop.cli import build_parser
from noprop.commands.args import config_overrides
from noprop.config import ConfigError, RunConfig
from noprop.methods import METHODS
from noprop.run import load_run, train_run


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", ToyLocal)  # the one registry line


def test_a_method_in_one_file_and_one_registry_line_trains_saves_and_reloads(toy_registered, blobs,
                                                                          tmp_path) -> None:
    config = RunConfig(method="toy", width=8, epochs=5, batch_size=32, lr=0.02, progress=False,
                       device="cpu")
    _, results = train_run(config, tmp_path / "run", data=blobs)
    assert results["test_accuracy"] > 0.5
    run = load_run(tmp_path / "run")
    assert run.method.config.width == 8 and run.config.method_config == config.method_config


def test_the_new_methods_settings_become_flags_and_others_are_refused(toy_registered) -> None:
    args = build_parser().parse_args(["train", "--method", "toy", "--width", "4"])
    assert RunConfig.from_dict(config_overrides(args)).method_config.width == 4
    with pytest.raises(ConfigError, match="method toy does not take num_blocks; it takes: width"):
        RunConfig(method="toy", num_blocks=3)


def test_the_contract_checks_hold_for_the_new_method(toy_registered, blobs) -> None:
    from test_method_contract import (
        test_a_step_on_a_unit_moves_only_its_groups_after_another_units_step as steps_stay_local,
    )
    from test_method_contract import (
        test_parameter_groups_are_disjoint_and_cover_every_trainable_parameter as groups_partition,
    )

    groups_partition("toy", blobs)
    steps_stay_local("toy", blobs)
