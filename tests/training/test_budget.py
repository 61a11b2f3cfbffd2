"""Default budgets of data without a shipped one are sized by optimizer steps, and say so."""

from __future__ import annotations

import pytest

from helpers import make_blobs, tiny_config
from noprop.config import FEW_STEPS_FRACTION, STEP_TARGET, RunConfig, sized_budget
from noprop.run import build_trainer


def test_small_data_gets_smaller_batches_and_enough_epochs_for_the_step_target() -> None:
    budget = sized_budget(120)  # iris' training rows
    assert budget == {"epochs": 125, "batch_size": 16, "steps": 1000}
    assert sized_budget(120, batch_size=64)["epochs"] == 500  # 2 batches an epoch: capped
    big = sized_budget(54_000)  # MNIST-size data keeps the default epochs and the paper's batch
    assert (big["epochs"], big["batch_size"]) == (10, 128)


@pytest.mark.parametrize("dataset,epochs,batch", [("digits", 15, 64), ("wine", 40, 64),
                                                  ("breast-cancer", 20, 64), ("mnist", 10, 128)])
def test_shipped_budgets_do_not_change_with_the_rows(dataset, epochs, batch) -> None:
    config = RunConfig(dataset=dataset)
    assert (config.resolved(train_rows=120).epochs, config.resolved().batch_size) == (epochs, batch)
    assert config.budget_note(120) is None


def test_a_method_that_learns_slower_asks_for_more_steps_on_a_users_data_and_the_tables() -> None:
    ct = RunConfig(method="ct", dataset="user").resolved(train_rows=120)
    assert (ct.epochs, ct.batch_size) == (500, 16)  # 8 batches an epoch: 4,000 steps, CT's own target
    note = RunConfig(method="ct", dataset="user").budget_note(120)
    assert note.startswith("epochs: 500, batch 16 (sized for 4,000")
    for table in ("breast-cancer", "wine"):  # CT's budgets on the embedded tables: ~4,000 steps too
        assert RunConfig(method="ct", dataset=table).resolved().batch_size == 16


def test_a_users_data_is_sized_once_its_rows_are_known_and_explicit_epochs_win() -> None:
    config = RunConfig(dataset="user")
    assert config.resolved().epochs is None
    assert (config.resolved(train_rows=120).epochs, config.resolved(train_rows=120).batch_size) == (125, 16)
    assert config.budget_note(120) == ("epochs: 125, batch 16 (sized for 1,000 steps on 120 training rows; "
                                       "--epochs to change)")
    assert RunConfig(dataset="user", epochs=3).budget_note(120) is None
    assert RunConfig(dataset="user", epochs=3).resolved(train_rows=120).batch_size == 16


def test_the_trainer_sizes_the_budget_from_its_data_and_prints_the_line_first(capsys) -> None:
    data = make_blobs(40, 8, classes=2)
    trainer = build_trainer(tiny_config(dataset="user", epochs=None, batch_size=None, log_epochs=True,
                                        max_train_seconds=0.01), data)
    assert (trainer.config.epochs, trainer.config.batch_size) == (334, 16)  # 3 steps an epoch
    trainer.fit()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "epochs: 334, batch 16 (sized for 1,002 steps on 40 training rows; --epochs to change)"


def test_a_run_with_far_too_few_steps_says_so_with_the_flag(capsys) -> None:
    data = make_blobs(40, 8, classes=2)
    trainer = build_trainer(tiny_config(dataset="user", epochs=1, batch_size=16, log_epochs=True), data)
    trainer.fit()
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("warning: each training unit"))
    assert "took only 3 optimizer steps" in line and "--epochs" in line
    assert FEW_STEPS_FRACTION * STEP_TARGET > 3
