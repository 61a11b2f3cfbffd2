"""Progress that survives a log file: plain lines off a terminal, none when quiet."""

from __future__ import annotations

import re

import pytest

from helpers import make_blobs, tiny_config
from noprop.run import build_trainer
from noprop.training import progress


@pytest.mark.parametrize("enabled", [True, False])
def test_off_a_terminal_a_plain_line_comes_every_tenth_of_the_epoch_once_due(monkeypatch, capsys,
                                                                           enabled) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY_SECONDS", 0.0)  # due by the fraction alone
    trainer = build_trainer(tiny_config(epochs=1, batch_size=16, progress=enabled), make_blobs(160, 8))
    trainer.train_epoch()  # 2 blocks x 10 batches: a line every 2 steps
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 1: step")]
    if not enabled:  # -q / progress: false
        assert lines == []
        return
    assert len(lines) == 10
    assert re.fullmatch(r"epoch 1: step 2/20 \(10%\), loss \d+\.\d{3}, \d+ samples/s", lines[0])
    assert lines[-1].startswith("epoch 1: step 20/20 (100%)")


def test_no_line_before_the_time_is_due(capsys) -> None:
    trainer = build_trainer(tiny_config(epochs=1, batch_size=16), make_blobs(160, 8))
    trainer.train_epoch()  # well under the 60 s
    assert "step" not in capsys.readouterr().out
