"""``noprop predict``: new images, prepared as in training, get the same answer as evaluation."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_damaged_npz
from noprop import Classifier
from noprop.cli import main
from noprop.device import autocast_for
from noprop.saved_run import load_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A tiny run on a user .npz of uint8 12x12 images of 3 classes."""
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 256, size=(3, 12, 12))
    y = rng.integers(0, 3, size=150)
    x = np.clip(patterns[y] + rng.normal(0, 20, size=(150, 12, 12)), 0, 255).astype(np.uint8)
    np.savez(root / "mine.npz", x=x, y=y, class_names=np.array(["ant", "bee", "cat"]))
    run_dir = root / "run"
    argv = ["train", "--dataset", str(root / "mine.npz"), "-T", "2", "--epochs", "3", "--batch-size", "32",
            "--lr", "1e-2", "--quiet", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    return run_dir, x, y


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_npz_matches_the_model_on_identically_prepared_inputs(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    np.savez(tmp_path / "new.npz", x=x[:20])
    assert main(["predict", str(run_dir), str(tmp_path / "new.npz"), "--stochastic", "0"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 20 and rows[0]["input"].endswith("new.npz[0]")
    run = load_run(run_dir)
    mean, std = run.data_info.normalization
    prepared = (torch.from_numpy(x[:20]).float().unsqueeze(1) / 255 - mean[0]) / std[0]
    generator = torch.Generator().manual_seed(run.config.eval_seed)
    with autocast_for(run.precision(), torch.device("cpu")):  # `auto`: bf16 on a CPU with native bf16
        expected = run.method.predict_logits(prepared, deterministic=True, generator=generator).argmax(-1)
    assert [int(r["class_index"]) for r in rows] == expected.tolist()
    assert {r["class_name"] for r in rows} <= {"ant", "bee", "cat"}


def test_predict_and_the_api_infer_at_the_runs_precision(trained, tmp_path, capsys) -> None:
    _, x, _ = trained
    np.savez(tmp_path / "mine.npz", x=x, y=trained[2])
    run_dir = tmp_path / "bf16"  # bf16 autocast, as `auto` gives on a CPU with native bf16
    assert main(["train", "--dataset", str(tmp_path / "mine.npz"), "-T", "2", "--epochs", "1", "--quiet",
                 "--precision", "bf16", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    outs = {}
    for precision in (None, "bf16", "fp32"):
        flags = ["--precision", precision] if precision else []
        assert main(["predict", str(run_dir), str(tmp_path / "mine.npz"), *flags]) == 0
        outs[precision] = [r["probability"] for r in _rows(capsys.readouterr().out)]
    assert outs[None] == outs["bf16"] != outs["fp32"]
    proba = Classifier.load(run_dir).predict_proba(x)  # both: the mean of 10 passes, at the run's T
    assert [f"{p:.4f}" for p in proba.max(-1)] == outs[None]


def test_predict_reads_image_files_and_folders(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(x[i]).save(folder / f"img{i}.png")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(folder), "--output", str(out)]) == 0
    rows = _rows(out.read_text())
    assert [Path(r["input"]).name for r in rows] == [f"img{i}.png" for i in range(6)]
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)


def test_predict_rejects_images_with_channels_it_cannot_convert(trained, tmp_path, capsys) -> None:
    run_dir, *_ = trained
    np.save(tmp_path / "two.npy", np.zeros((2, 2, 12, 12), dtype=np.uint8))
    assert main(["predict", str(run_dir), str(tmp_path / "two.npy")]) == 2
    assert "inputs have 2 channels but the model takes 1" in capsys.readouterr().err


def test_predict_resizes_and_converts_rgb_with_a_note(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    big = np.repeat(np.repeat(x[:4], 2, axis=1), 2, axis=2)  # 24x24, each pixel doubled
    rgb = np.repeat(big[:, None], 3, axis=1)
    np.save(tmp_path / "rgb.npy", rgb)
    assert main(["predict", str(run_dir), str(tmp_path / "rgb.npy")]) == 0
    captured = capsys.readouterr()
    assert "converted RGB inputs to grey" in captured.err and "from 24x24 to 12x12" in captured.err
    np.save(tmp_path / "same.npy", x[:4])
    assert main(["predict", str(run_dir), str(tmp_path / "same.npy")]) == 0
    direct = [r["class_index"] for r in _rows(capsys.readouterr().out)]
    assert [r["class_index"] for r in _rows(captured.out)] == direct  # halving undoes the doubling


def test_predict_answers_the_same_every_time_and_other_pass_counts_differ(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    np.save(tmp_path / "few.npy", x[:10])
    outs = []
    for extra in ([], [], ["--stochastic", "3"], ["--stochastic", "0"]):  # default: 10 seeded passes
        assert main(["predict", str(run_dir), str(tmp_path / "few.npy"), *extra]) == 0
        outs.append([r["probability"] for r in _rows(capsys.readouterr().out)])
    assert outs[0] == outs[1]
    assert outs[2] != outs[0] and outs[3] != outs[0]


def test_an_npz_without_x_lists_what_it_holds(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    np.savez(tmp_path / "odd.npz", images=x[:2], labels=np.zeros(2))
    assert main(["predict", str(run_dir), str(tmp_path / "odd.npz")]) == 2
    assert "holds no array 'x' (the images); it holds: images, labels" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["not a zip", "array header", "deflate"])
def test_a_damaged_npz_is_one_line_naming_it(trained, tmp_path, capsys, damage) -> None:
    run_dir, _, _ = trained
    path = tmp_path / "bad.npz"
    if damage == "not a zip":
        path.write_bytes(b"PK\x03\x04garbage")
    else:
        write_damaged_npz(path, damage)
    assert main(["predict", str(run_dir), str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"cannot read images from {path}" in lines[0]


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "5"], "--steps sets the sampler steps of CT and FM models"),  # a DT model: none
    (["--output", "{tmp}/no/such/dir/out.csv"], "cannot write --output"),
    (["--output", "{tmp}"], "cannot write --output"),
])
def test_an_inapplicable_or_unwritable_predict_option_is_one_line(trained, tmp_path, capsys, flags,
                                                                 message) -> None:
    run_dir, x, _ = trained
    np.savez(tmp_path / "few.npz", x=x[:2])
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["predict", str(run_dir), str(tmp_path / "few.npz"), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_predict_resizes_images_of_mixed_sizes_in_one_call(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    Image.fromarray(x[0]).save(tmp_path / "a.png")  # the model's 12x12
    Image.fromarray(np.repeat(np.repeat(x[1], 2, axis=0), 2, axis=1)).save(tmp_path / "b.png")  # 24x24
    np.save(tmp_path / "c.npy", np.repeat(np.repeat(x[2:4], 3, axis=1), 3, axis=2))  # 36x36
    paths = [str(tmp_path / n) for n in ("a.png", "b.png", "c.npy")]
    assert main(["predict", str(run_dir), *paths]) == 0
    captured = capsys.readouterr()
    assert [Path(r["input"]).name for r in _rows(captured.out)] == ["a.png", "b.png", "c.npy[0]", "c.npy[1]"]
    assert "from 24x24 to 12x12" in captured.err and "from 36x36 to 12x12" in captured.err


def test_predict_refuses_float_pixels_0_to_255_naming_the_fix(trained, tmp_path, capsys) -> None:
    run_dir, x, _ = trained
    np.save(tmp_path / "floats.npy", x[:4].astype(np.float32))
    assert main(["predict", str(run_dir), str(tmp_path / "floats.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "divide by 255 (or pass uint8)" in err
    np.save(tmp_path / "scaled.npy", x[:4].astype(np.float32) / 255)  # the contract: floats in [0, 1]
    assert main(["predict", str(run_dir), str(tmp_path / "scaled.npy")]) == 0
