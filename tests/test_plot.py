"""``noprop plot``: figures for a run directory and for a benchmark directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noprop.cli import main
from noprop.plot import PlotError, method_colors, plot_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, method: str, accs: list[float], readouts: list[float] | None = None) -> None:
    run_dir.mkdir(parents=True)
    lines = ["epoch,train_loss,train_ce,test_accuracy,epoch_seconds,samples_per_second"]
    lines += [f"{i},{2.0 / i},{1.0 / i},{a},10.0,100.0" for i, a in enumerate(accs, start=1)]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "config.yaml").write_text(f"method: {method}\ndataset: mnist\n")
    if readouts is not None:
        (run_dir / "bench_run.json").write_text(json.dumps({"readout_accuracies": readouts}))


def assert_pngs(paths: list[Path], names: set[str]) -> None:
    assert {p.name for p in paths} == names
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def test_run_directory_gives_training_curves_and_chain_readout(tmp_path):
    write_run(tmp_path / "run", "dt", [0.5, 0.8, 0.9], readouts=[0.3, 0.6, 0.9])
    written = plot_path(tmp_path / "run", tmp_path / "figs")
    assert_pngs(written, {"training_curves.png", "readout.png"})


def test_run_without_a_chain_gets_no_readout_figure_and_says_why(tmp_path, capsys):
    write_run(tmp_path / "run", "cnn", [0.5, 0.8], readouts=[0.8])
    assert_pngs(plot_path(tmp_path / "run"), {"training_curves.png"})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no readout figure" in err[0] and "one prediction" in err[0]


def test_a_loss_term_equal_to_the_total_is_drawn_once_not_hidden_under_it() -> None:
    from noprop.plot import _loss_curves

    rows = [{"train_loss": 2.0, "train_flow": 2.0, "train_ce": 1.0}, {"train_loss": 1.0, "train_flow": 1.0,
                                                                      "train_ce": 0.5}]
    curves = _loss_curves(rows, ["train_loss", "train_flow", "train_ce"])
    assert curves == {"loss = flow": [2.0, 1.0], "ce": [1.0, 0.5]}
    rows[1]["train_flow"] = 0.9  # a term that differs somewhere keeps its own line
    assert set(_loss_curves(rows, ["train_loss", "train_flow"])) == {"loss", "flow"}


def test_a_damaged_checkpoint_or_config_still_gives_the_training_curves(tmp_path, capsys):
    write_run(tmp_path / "run", "dt", [0.5, 0.8])
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert_pngs(plot_path(tmp_path / "run"), {"training_curves.png"})
    err = capsys.readouterr().err
    assert err.startswith("noprop plot: no readout figure for") and len(err.strip().splitlines()) == 1
    (tmp_path / "run" / "config.yaml").write_text("method: [dt\n")  # invalid YAML: label falls back
    assert_pngs(plot_path(tmp_path / "run"), {"training_curves.png"})


def test_bench_directory_gives_accuracy_time_memory_readout_and_loss_figures(tmp_path):
    runs = []
    for method, peak, readouts in [("dt", 300.0, [0.2, 0.5, 0.7]), ("backprop", 900.0, [0.3, 0.6, 0.8]),
                                   ("cnn", 100.0, [0.9])]:
        for seed in (0, 1):
            run_dir = tmp_path / "runs" / f"{method}-r{seed}"
            write_run(run_dir, method, [0.4, readouts[-1]])
            runs.append({"method": method, "seed": seed, "dataset": "mnist", "train_peak_mb": peak + seed,
                         "readout_accuracies": readouts, "run_dir": str(run_dir)})
    runs.append({"method": "ff", "seed": 0, "failed": True, "run_dir": "x"})
    summary = [{"method": m, "runs": 2, "train_peak_mb": p + 0.5, "memory_kind": "cpu_rss_rise"}
               for m, p in [("dt", 300.0), ("backprop", 900.0), ("cnn", 100.0)]]
    summary.append({"method": "ff", "runs": 0})
    bench = {"plan": {"methods": ["dt", "backprop", "cnn", "ff"], "config": {"dataset": "mnist"}},
             "machine": {}, "runs": runs, "summary": summary}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    written = plot_path(tmp_path, tmp_path / "figs")
    assert_pngs(written, {"accuracy_vs_time.png", "peak_memory.png", "training_curves.png", "readout.png"})


def test_plot_of_a_directory_with_nothing_to_plot_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(PlotError):
        plot_path(tmp_path)
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noprop: error:") and "bench.json" in err and "\n" not in err


def test_several_run_directories_are_compared_in_one_figure(tmp_path, capsys):
    write_run(tmp_path / "ct-g3", "ct", [0.80, 0.90, 0.95])
    write_run(tmp_path / "ct-g7", "ct", [0.60, 0.70])
    assert main(["plot", str(tmp_path / "ct-g3"), str(tmp_path / "ct-g7"), "--out", str(tmp_path / "f")]) == 0
    assert_pngs([tmp_path / "f" / "comparison.png"], {"comparison.png"})
    assert capsys.readouterr().out.strip() == str(tmp_path / "f" / "comparison.png")


def test_comparing_runs_needs_out_and_run_directories(tmp_path, capsys):
    write_run(tmp_path / "a", "ct", [0.8])
    (tmp_path / "b").mkdir()
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "f")]) == 2
    assert "metrics.csv" in capsys.readouterr().err


def test_comparison_legends_name_methods_and_only_add_directories_to_tell_runs_apart(tmp_path):
    from noprop.plot import comparison_labels

    write_run(tmp_path / "run-a", "dt", [0.9])
    write_run(tmp_path / "run-b", "ct", [0.8])
    write_run(tmp_path / "run-c", "ct", [0.7])
    assert comparison_labels([tmp_path / "run-a", tmp_path / "run-b", tmp_path / "run-c"]) == [
        "dt on mnist", "ct on mnist (run-b)", "ct on mnist (run-c)"]


def test_training_loss_panel_is_log_scale_and_short_runs_get_whole_epoch_ticks(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from noprop import plot

    seen = {}
    monkeypatch.setattr(plot, "_save", lambda fig, path: seen.setdefault("fig", fig) and path)
    write_run(tmp_path / "run", "dt", [0.5, 0.9])
    plot.plot_run(tmp_path / "run", tmp_path, readout_samples=0)
    loss_ax, acc_ax = seen["fig"].axes
    assert loss_ax.get_yscale() == "log"
    seen["fig"].canvas.draw()
    assert [t for t in acc_ax.get_xticks() if 0.5 <= t <= 2.5] == [1.0, 2.0]
    plt.close(seen["fig"])


@pytest.mark.parametrize("count", [3, 10, 13, 20])
def test_every_method_of_a_bench_gets_its_own_colour(count) -> None:
    methods = [f"m{i}" for i in range(count)]
    colors = method_colors(methods)
    assert set(colors) == set(methods) and len(set(colors.values())) == count


@pytest.mark.parametrize(("slow_seconds", "scale"), [(50.0, "linear"), (500.0, "log")])
def test_accuracy_against_time_goes_log_when_methods_differ_tenfold_and_keeps_its_legend_outside(
        tmp_path, monkeypatch, slow_seconds, scale):
    import matplotlib.pyplot as plt

    from noprop import plot

    seen = {}
    monkeypatch.setattr(plot, "_save", lambda fig, path: seen.setdefault("fig", fig) and path)
    runs = [{"method": "fast"}, {"method": "slow"}]
    curves = {id(runs[0]): [{"epoch_seconds": 10.0, "test_accuracy": 0.5}] * 2,  # 20 s in all
              id(runs[1]): [{"epoch_seconds": slow_seconds / 2, "test_accuracy": 0.6}] * 2}
    methods = ["fast", "slow"]
    plot._plot_accuracy_vs_time(runs, curves, methods, method_colors(methods), "x", tmp_path)
    (ax,) = seen["fig"].axes
    assert ax.get_xscale() == scale
    seen["fig"].canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1  # beside the curves, not over them
    plt.close(seen["fig"])
