"""Bad files and bad numbers: each is reported in one line naming the fault, and nothing good is lost."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from helpers import make_blobs, one_error_line, tiny_config, write_npz
from noprop import atomic as atomic_module
from noprop.atomic import atomic_write_text, write_report_files
from noprop.cli import main
from noprop.run import build_trainer, train_run
from noprop.saved_run import CHECKPOINT, METRICS, CheckpointError, SavedRun
from noprop.training.metrics import MetricsLog
from noprop.training.nonfinite import NonFiniteError

pytestmark = pytest.mark.usefixtures("one_thread")


# -- bad files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_is_reported_as_corrupt_on_resume(cli_run, capsys, damage):
    _, run_dir = cli_run
    path = run_dir / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint" * 100)
    capsys.readouterr()
    assert main(["train", "--run-dir", str(run_dir), "--resume", "-q"]) == 2
    assert re.search(r"checkpoint .* is corrupt or truncated", one_error_line(capsys))


@pytest.mark.parametrize("order", ["sequential", "interleaved"])
def test_a_training_split_that_leaves_a_last_batch_of_one_trains_on_every_example(order):
    from noprop.data.base import batches, num_batches

    x, y = torch.arange(33.0).view(33, 1), torch.arange(33)
    assert [len(b) for _, b in batches(x, y, 16)] == [16, 17] and num_batches(33, 16) == 2
    # BatchNorm cannot train on one example: 33 = 2 x 16 + 1 used to fail in the last batch
    trainer, _ = train_run(tiny_config(epochs=1, block_order=order), None, data=make_blobs(33, 8, classes=3))
    assert trainer.steps_per_epoch() == 2 * 2


def test_a_training_split_of_one_example_is_one_line(tmp_path, capsys):
    data = make_blobs(1, 8, classes=3)
    assert main(["train", "--dataset", str(write_npz(tmp_path / "one.npz", data)), "-T", "2", "--epochs", "1",
                 "-q", "--device", "cpu", "--run-dir", str(tmp_path / "run")]) == 2
    assert "the training split holds 1 example(s); training needs at least 2" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_configuration_names_the_difference(cli_run, capsys):
    _, run_dir = cli_run
    capsys.readouterr()
    assert main(["train", "--run-dir", str(run_dir), "--resume", "-q", "-T", "3", "--epochs", "2"]) == 2
    line = one_error_line(capsys)
    assert "different configuration" in line and "num_blocks: checkpoint has 2, this run has 3" in line
    assert main(["train", "--run-dir", str(run_dir), "--resume", "-q", "--embedding", "learned",
                 "--embedding-dim", "8"]) == 2
    assert "embedding: checkpoint has 'onehot', this run has 'learned'" in one_error_line(capsys)


def test_checkpoint_for_another_number_of_classes_names_it(tmp_path):
    train_run(tiny_config(epochs=1), tmp_path / "run", data=make_blobs(32, 8, classes=3))
    with pytest.raises(CheckpointError, match="num_classes: checkpoint has 3, this run has 4"):
        train_run(tiny_config(epochs=2), tmp_path / "run", data=make_blobs(32, 8, classes=4), resume=True)


def test_truncated_dataset_file_is_a_one_line_error(tmp_path, capsys):
    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    dataset.write_bytes(dataset.read_bytes()[:300])
    assert main(["train", "--dataset", str(dataset), "--run-dir", str(tmp_path / "run"), "-q"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("noprop: error:") and "tiny.npz" in line and "not a readable .npz" in line


def test_metrics_file_damaged_after_checkpoint_does_not_block_resume(cli_run, capsys):
    _, run_dir = cli_run
    (run_dir / METRICS).write_text("epoch,train_lo")  # e.g. an editor or a full disk mangled it
    assert main(["train", "--run-dir", str(run_dir), "--resume", "-q", "--epochs", "2"]) == 0
    assert [r["epoch"] for r in MetricsLog.read(run_dir / METRICS)] == [1, 2]  # rows live in the checkpoint


def test_second_run_into_an_occupied_directory_refuses(cli_run, capsys):
    flags, run_dir = cli_run
    before = (run_dir / CHECKPOINT).read_bytes()
    capsys.readouterr()
    assert main(["train", *flags]) == 2
    assert "already holds a run" in one_error_line(capsys)
    assert (run_dir / CHECKPOINT).read_bytes() == before


def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_report_files_land_in_order_in_a_new_directory_and_a_failed_write_keeps_the_old(tmp_path,
                                                                                        monkeypatch):
    out = tmp_path / "new" / "report"
    paths = write_report_files(out, "r.json", {"b": 1, "a": 2}, markdown=("r.md", "# old\n"),
                               figure=("r.png", lambda path: path.write_bytes(b"png")))
    assert paths == [out / "r.json", out / "r.md", out / "r.png"]
    assert (out / "r.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert (out / "r.md").read_text() == "# old\n" and (out / "r.png").read_bytes() == b"png"
    assert write_report_files(out, "only.json", []) == [out / "only.json"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report_files(out, "r.json", {"c": 3}, markdown=("r.md", "# new\n"))
    assert json.loads((out / "r.json").read_text()) == {"a": 2, "b": 1}
    assert sorted(os.listdir(out)) == ["only.json", "r.json", "r.md", "r.png"]


def test_temporaries_of_a_killed_write_are_removed_by_the_next_run(cli_run):
    _, run_dir = cli_run
    stale = run_dir / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--run-dir", str(run_dir), "--resume", "-q", "--epochs", "2"]) == 0
    assert not stale.exists()


# -- bad numbers -------------------------------------------------------------------------------
def first_bad_step(config, data, epoch: int) -> tuple[str, int]:
    """(unit name, 1-based step) of the first batch of ``epoch`` holding the NaN image."""
    trainer = build_trainer(config, data)
    for index, (unit, xb, _) in enumerate(trainer._epoch_batches(epoch)):
        if not torch.isfinite(xb).all():
            return trainer.units[unit].name, index + 1
    raise AssertionError("no NaN batch")


def test_nan_in_a_batch_stops_naming_unit_step_and_term_and_keeps_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    train_run(tiny_config(epochs=1), run_dir, data=make_blobs(32, 8, classes=3))
    checkpoint, metrics = (run_dir / CHECKPOINT).read_bytes(), (run_dir / METRICS).read_text()

    poisoned = make_blobs(32, 8, classes=3, nan_at=5)
    with pytest.raises(NonFiniteError) as info:
        train_run(tiny_config(epochs=2), run_dir, data=poisoned, resume=True)
    unit, step = first_bad_step(tiny_config(epochs=2), poisoned, epoch=1)
    message = str(info.value)
    assert f"training unit {unit} at epoch 2, step {step} of 4" in message
    assert "loss term 'denoise' is nan" in message and "input batch itself holds NaN/inf" in message
    assert "last good checkpoint (at the end of epoch 1) is kept" in message
    assert (run_dir / CHECKPOINT).read_bytes() == checkpoint
    assert (run_dir / METRICS).read_text() == metrics


def test_nan_before_any_checkpoint_says_nothing_was_kept(tmp_path):
    with pytest.raises(NonFiniteError, match="no checkpoint had been written yet"):
        train_run(tiny_config(epochs=1), tmp_path / "run", data=make_blobs(32, 8, classes=3, nan_at=0))
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_skip_nonfinite_skips_bad_batches_and_counts_them(tmp_path, capsys):
    poisoned = make_blobs(32, 8, classes=3, nan_at=5)
    train_run(tiny_config(epochs=1, skip_nonfinite=True), tmp_path / "run", data=poisoned)
    row = MetricsLog.read(tmp_path / "run" / METRICS)[0]
    assert row["skipped_steps"] == 2  # the NaN image is in one batch of each block's pass
    assert all(v == v for k, v in row.items() if k.startswith("train_"))  # means over good steps: no NaN
    state = SavedRun.read(tmp_path / "run").model
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())  # BatchNorm too
    assert capsys.readouterr().err.count("noprop: skipped a batch: non-finite value in training unit") == 2


def test_nonfinite_parameter_is_never_checkpointed(tmp_path):
    run_dir = tmp_path / "run"
    trainer, _ = train_run(tiny_config(epochs=1), run_dir, data=make_blobs(32, 8, classes=3))
    before = (run_dir / CHECKPOINT).read_bytes()
    with torch.no_grad():
        trainer.method.classifier.weight[0, 0] = float("inf")
    message = r"NaN/inf in the model at the end of epoch 1: classifier\.weight"
    with pytest.raises(NonFiniteError, match=message):
        trainer.save_checkpoint()
    assert (run_dir / CHECKPOINT).read_bytes() == before


def test_cli_reports_a_diverging_run_in_one_line_with_exit_code_1(tmp_path, capsys):
    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    code = main(["train", "--dataset", str(dataset), "-T", "2", "--epochs", "2", "--batch-size", "16",
                 "--device", "cpu", "-q", "--lr", "1e38", "--run-dir", str(tmp_path / "run")])
    line = one_error_line(capsys)
    assert code == 1, line
    assert re.match(r"noprop: error: non-finite value in training unit block\d at epoch \d, step \d of 4",
                    line)
