"""The benchmark harness: wall-clock budget, memory meter, summary and report format, fresh processes."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from helpers import make_blobs
from noprop.bench import (
    BENCH_JSON,
    BENCH_MD,
    RUN_JSON,
    BenchError,
    BenchPlan,
    TrainingMemory,
    markdown_report,
    run_bench,
    run_one,
    summarize,
)
from noprop.cli import main
from noprop.config import ConfigError, RunConfig
from noprop.methods import LocalLearning, PlainCNN
from noprop.spec import DataSpec
from noprop.training.trainer import Trainer


def test_wall_clock_budget_stops_mid_epoch_and_records_the_fraction_done():
    data = make_blobs(n_train=4096, n_test=64)
    config = RunConfig(method="cnn", epochs=1000, batch_size=8, max_train_seconds=0.3, progress=False)
    trainer = Trainer(PlainCNN(data.spec), data, config)
    results = trainer.fit()
    rows = trainer.metrics.rows
    assert results["epochs"] == len(rows) < 1000
    assert 0 < rows[-1]["epoch_fraction"] <= 1
    assert 0.3 <= results["train_seconds"] < 10
    done = len(data.train_x) * (len(rows) - 1 + rows[-1]["epoch_fraction"])
    # both sides are rounded (fraction to 4 places, seconds to ms)
    assert results["samples_per_second"] == pytest.approx(done / results["train_seconds"], rel=0.05)


def test_wall_clock_budget_must_be_positive():
    with pytest.raises(ConfigError, match="max_train_seconds"):
        RunConfig(max_train_seconds=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_training_memory_sees_a_transient_allocation_and_resets_after_a_pause():
    meter = TrainingMemory(torch.device("cpu"))
    meter.start()
    big = torch.ones(50_000_000)  # 200 MB, freed before the reading
    del big
    meter.pause()
    assert meter.kind == "cpu_rss_rise"
    assert 150 < meter.peak_mb < 400
    quiet = TrainingMemory(torch.device("cpu"))
    quiet.start()
    quiet.pause()
    assert quiet.peak_mb < 50


def _run(method: str, seed: int, acc: float, seconds: float, mem: float) -> dict:
    return {"method": method, "repeat": seed, "seed": seed, "test_accuracy": acc, "epochs": 1.0,
            "train_seconds": seconds, "samples_per_second": 1000 / seconds, "train_peak_mb": mem,
            "process_peak_rss_mb": mem + 300, "num_parameters": 10, "memory_kind": "cpu_rss_rise",
            "readout_accuracies": [acc]}


def test_summary_gives_mean_spread_and_ratios_to_the_baseline():
    runs = [_run("dt", 0, 0.90, 10, 100), _run("dt", 1, 0.94, 10, 120),
            _run("backprop", 0, 0.95, 20, 440), {"method": "ff", "repeat": 0, "failed": True}]
    rows = {r["method"]: r for r in summarize(runs, ["dt", "backprop", "ff"])}
    dt = rows["dt"]
    assert dt["runs"] == 2 and dt["test_accuracy"] == pytest.approx(0.92)
    assert dt["test_accuracy_std"] == pytest.approx(0.0283, abs=1e-3)
    assert dt["ratios"]["train_peak_mb"] == pytest.approx(110 / 440)
    assert dt["ratios"]["samples_per_second"] == pytest.approx(2.0)
    assert dt["accuracy_minus_baseline"] == pytest.approx(-0.03)
    assert rows["backprop"]["ratios"]["train_peak_mb"] == 1.0
    assert rows["ff"]["runs"] == 0 and rows["ff"]["failed"] == 1


def test_markdown_report_has_a_row_per_method_with_ratio_columns():
    runs = [_run("dt", 0, 0.9, 10, 100), _run("backprop", 0, 0.95, 20, 400)]
    bench = {"plan": {"config": {"dataset": "mnist", "max_train_seconds": 120}, "repeats": 1,
                      "train_subset": None, "test_subset": 5000, "baseline": "backprop"},
             "machine": {"processor": "x86_64", "cpu_count": 2, "torch_version": "2.x",
                         "date_utc": "2026-01-01 00:00 UTC"},
             "summary": summarize(runs, ["dt", "backprop"])}
    text = markdown_report(bench)
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert "train peak ×backprop" in header and "samples/s ×backprop" in header
    dt_row = next(line for line in text.splitlines() if line.startswith("| dt |"))
    cells = [c.strip() for c in dt_row.strip("|").split("|")]
    assert len(cells) == header.count("|") - 1
    assert cells[1] == "90.00 ± 0.00" and cells[9] == "0.25"
    assert "120 s of training per run" in text and "test subset 5000" in text


def test_plan_rejects_unknown_methods_runs_repeat_by_repeat_with_one_seed_each():
    with pytest.raises(BenchError, match="nope"):
        BenchPlan(methods=["nope"]).run_configs()
    planned = BenchPlan(methods=["cnn", "local"], config={"max_train_seconds": 5, "seed": 7},
                        repeats=2).run_configs()
    assert [(m, r, c.seed) for m, r, c in planned] == [("cnn", 0, 7), ("local", 0, 7), ("cnn", 1, 8),
                                                      ("local", 1, 8)]
    assert all(c.epochs is not None and c.epochs > 1000 for _, _, c in planned)  # time is the budget


def test_bench_cli_needs_a_budget(tmp_path, capsys):
    assert main(["bench", "--methods", "cnn", "--out", str(tmp_path)]) == 2
    assert "budget" in capsys.readouterr().err


def test_bench_cli_refuses_method_and_unknown_methods_with_one_line_errors(tmp_path, capsys):
    assert main(["bench", "--methods", "cnn", "--method", "dt", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main(["bench", "--methods", "cnn", "nope", "--epochs", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noprop: error:") and "nope" in err and "\n" not in err
    assert not (tmp_path / "bench.json").exists()


def test_a_setting_for_one_method_overrides_the_shared_one_for_it_alone():
    plan = BenchPlan(methods=["dt", "fg", "ct"], config={"epochs": 1, "lr": 1e-3, "seed": 3}, repeats=2,
                     method_settings={"fg": {"lr": "0.01"}, "ct": {"optimizer": "adam"}})
    configs = {(m, r): c for m, r, c in plan.run_configs()}
    assert configs["fg", 0].lr == 0.01 and configs["dt", 0].lr == configs["ct", 1].lr == 1e-3
    assert configs["ct", 0].optimizer == "adam" and configs["dt", 0].optimizer != "adam"
    assert configs["fg", 1].seed == 4 and configs["fg", 1].lr == 0.01  # every repeat gets it
    for settings, refusal in [({"fg": {"num_blocks": "3"}}, "fg: method fg does not take num_blocks"),
                              ({"ff": {"lr": "1"}}, "settings given for ff, which this bench does not run"),
                              ({"fg": {"lr": "fast"}}, "fg: lr must be a number")]:
        with pytest.raises(BenchError, match=refusal):
            BenchPlan(methods=["dt", "fg"], config={"epochs": 1}, method_settings=settings).run_configs()


def test_bench_cli_for_takes_setting_value_pairs_and_reports_them(tmp_path, capsys):
    assert main(["bench", "--methods", "cnn", "--epochs", "1", "--for", "cnn", "lr",
                 "--out", str(tmp_path)]) == 2
    assert "SETTING=VALUE" in capsys.readouterr().err
    assert main(["bench", "--methods", "cnn", "--epochs", "1", "--for", "cnn", "num-blocks=3",
                 "--out", str(tmp_path)]) == 2
    assert "cnn: method cnn does not take num_blocks" in capsys.readouterr().err
    bench = {"plan": {"config": {"dataset": "mnist", "epochs": 5}, "repeats": 1, "train_subset": None,
                      "test_subset": None, "baseline": "backprop", "method_settings": {"fg": {"lr": 0.01}}},
             "machine": {"processor": "x86_64", "cpu": "", "cpu_count": 2, "torch_version": "2.x",
                         "date_utc": "2026-01-01 00:00 UTC"},
             "summary": summarize([], ["fg"])}
    assert "for one method only: fg: lr 0.01." in markdown_report(bench).splitlines()[0]


def test_run_one_records_accuracy_memory_readouts_and_parameters(tmp_path):
    spec = {"config": RunConfig(method="local", dataset="digits", epochs=1, batch_size=64,
                                progress=False).to_dict(),
            "run_dir": str(tmp_path / "run"), "repeat": 0, "train_subset": 256, "test_subset": 128}
    record = run_one(spec)
    assert json.loads((tmp_path / "run" / RUN_JSON).read_text()) == record
    assert record["method"] == "local" and record["epochs"] == 1.0
    assert record["train_peak_mb"] > 0 and record["process_peak_rss_mb"] > record["train_peak_mb"]
    assert len(record["readout_accuracies"]) == 4  # one per local head
    assert record["readout_accuracies"][-1] == record["test_accuracy"]
    digits = LocalLearning(DataSpec.image(channels=1, height=8, width=8, num_classes=10))
    assert record["num_parameters"] == sum(p.numel() for p in digits.parameters())


@pytest.mark.slow  # two fresh Python processes: ~10 s on an idle machine, minutes on a loaded one
def test_run_bench_runs_every_repeat_in_a_fresh_process_and_writes_json_and_markdown(tmp_path):
    plan = BenchPlan(methods=["cnn"], config={"dataset": "digits", "epochs": 1, "batch_size": 64},
                     repeats=2, train_subset=256, test_subset=128, baseline="cnn")
    bench = run_bench(plan, tmp_path, log=lambda _: None)
    on_disk = json.loads((tmp_path / BENCH_JSON).read_text())
    assert on_disk["summary"] == json.loads(json.dumps(bench["summary"]))
    pids = {r["pid"] for r in on_disk["runs"]}
    assert len(pids) == 2 and os.getpid() not in pids
    for run in on_disk["runs"]:
        assert run["train_peak_mb"] > 0 and run["num_parameters"] > 0
        assert 0 <= run["test_accuracy"] <= 1 and run["readout_accuracies"][-1] == run["test_accuracy"]
        assert (tmp_path / "runs" / f"cnn-r{run['repeat']}" / "metrics.csv").is_file()
    assert "| cnn |" in (tmp_path / BENCH_MD).read_text()


def test_bench_gives_a_method_setting_only_to_the_methods_that_take_it():
    plan = BenchPlan(methods=["dt", "ct"], config={"num_blocks": 3, "epochs": 1})
    configs = {method: config for method, _, config in plan.run_configs()}
    assert configs["dt"].method_config.num_blocks == 3
    assert "num_blocks" not in configs["ct"].to_dict()
    with pytest.raises(BenchError, match="no method among dt, cnn takes fm_sigma"):
        BenchPlan(methods=["dt", "cnn"], config={"fm_sigma": 0.1, "epochs": 1}).run_configs()


def test_a_bench_run_stopped_after_a_checkpoint_goes_on_from_it(tmp_path, monkeypatch):
    spec = {"config": RunConfig(method="local", dataset="digits", epochs=2, batch_size=64,
                                progress=False).to_dict(),
            "run_dir": str(tmp_path / "run"), "repeat": 0, "train_subset": 256, "test_subset": 128}
    save = Trainer.save_checkpoint

    def save_then_die(self):
        save(self)
        raise RuntimeError("killed after the first checkpoint")

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        run_one(spec)
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    record = run_one(spec, resume=True)
    assert record["resumed"] and record["epochs"] == 2.0
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header, epoch 1 from before the stop, epoch 2 after it


def test_a_bench_refuses_runs_of_other_settings_in_its_directory_unless_told_to_replace_them(tmp_path,
                                                                                              monkeypatch):
    plan = BenchPlan(methods=["cnn"], config={"dataset": "digits", "epochs": 2}, baseline="cnn")
    (_, _, config), = plan.run_configs()
    run_dir = tmp_path / "runs" / "cnn-r0"
    run_dir.mkdir(parents=True)
    earlier = {"config": {**config.to_dict(), "epochs": 1}, "run_dir": str(run_dir), "repeat": 0,
               "train_subset": None, "test_subset": None}
    (run_dir / "bench_spec.json").write_text(json.dumps(earlier))
    (run_dir / RUN_JSON).write_text(json.dumps(_run("cnn", 0, 0.5, 1, 1)))
    monkeypatch.setattr("noprop.bench._run_in_fresh_process", lambda *a, **k: _run("cnn", 0, 0.9, 1, 1))
    clash = r"holds runs of other settings \(cnn-r0: epochs: 1 → 2\); pass --overwrite"
    with pytest.raises(BenchError, match=clash):
        run_bench(plan, tmp_path, log=lambda _: None)
    assert json.loads((run_dir / RUN_JSON).read_text())["test_accuracy"] == 0.5  # nothing touched
    lines: list[str] = []
    bench = run_bench(plan, tmp_path, overwrite=True, log=lines.append)
    assert any("replacing the run of other settings" in line and "(epochs: 1 → 2)" in line for line in lines)
    assert bench["runs"][0]["test_accuracy"] == 0.9
    lines.clear()
    (run_dir / "bench_spec.json").write_text(json.dumps({**earlier, "config": config.to_dict()}))
    run_bench(plan, tmp_path, log=lines.append)  # the same settings: kept, no --overwrite needed
    assert lines == ["[bench] cnn repeat 1/1 (seed 0): kept from an earlier run"]


def test_markdown_report_of_a_stopped_bench_tells_methods_not_run_from_failed_ones():
    runs = [_run("backprop", 0, 0.95, 20, 400), {"method": "ff", "repeat": 0, "failed": True}]
    bench = {"plan": {"config": {"dataset": "mnist", "epochs": 5, "num_threads": 2}, "repeats": 1,
                      "train_subset": None, "test_subset": None, "baseline": "backprop"},
             "machine": {"processor": "x86_64", "cpu": "AMD EPYC 9B14", "cpu_count": 2,
                         "torch_version": "2.x", "date_utc": "2026-01-01 00:00 UTC"},
             "summary": summarize(runs, ["backprop", "ff", "dt"])}
    lines = markdown_report(bench).splitlines()
    assert next(line for line in lines if line.startswith("| ff |")).startswith("| ff | failed (1 run(s)) |")
    assert next(line for line in lines if line.startswith("| dt |")).startswith("| dt | not run yet |")
    assert any(line.startswith("Machine: AMD EPYC 9B14, 2 CPU(s), 2 torch thread(s)") for line in lines)


def test_a_signal_to_the_bench_reaches_its_worker_once_and_is_reported(tmp_path):
    """Ctrl-C or SIGTERM to ``noprop bench`` must let the worker checkpoint, not kill it: the signal
    is passed on once (the worker sits outside the terminal's process group) and reported back."""
    import signal
    import threading
    import time

    from noprop.bench import run_forwarding_signals

    ready, got = tmp_path / "ready", tmp_path / "got"
    worker = ("import signal, sys, time, pathlib\n"
              "def stop(signum, frame):\n"
              f"    pathlib.Path({str(got)!r}).write_text(str(signum)); sys.exit(128 + signum)\n"
              "signal.signal(signal.SIGTERM, stop)\n"
              f"pathlib.Path({str(ready)!r}).touch()\n"
              "time.sleep(60)\n")

    def send_when_ready() -> None:
        for _ in range(400):
            if ready.exists():
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=send_when_ready, daemon=True).start()
    with (tmp_path / "log.txt").open("w") as out:
        returncode, signum = run_forwarding_signals([sys.executable, "-c", worker], out)
    assert signum == signal.SIGTERM and returncode == 128 + signal.SIGTERM
    assert got.read_text() == str(int(signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
