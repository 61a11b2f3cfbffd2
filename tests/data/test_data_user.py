"""The user's own data (.npz, image folders) through the same --dataset flag, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_damaged_npz
from noprop.cli import main
from noprop.data import DataError, load_dataset


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n: int = 50, shape: tuple[int, ...] = (3, 12, 12), classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes


# -- .npz -------------------------------------------------------------------------------------------
def test_npz_shapes_and_classes_are_read_from_the_data(tmp_path: Path) -> None:
    x, y = _images()
    data = load_dataset(str(_npz(tmp_path / "mine.npz", x=x, y=y)))
    assert data.name == "mine"
    assert (data.spec.channels, data.spec.height, data.spec.width, data.spec.num_classes) == (3, 12, 12, 4)
    assert len(data.train_x) == 40 and len(data.test_x) == 10  # fixed 20 % hold-out
    mean = data.train_x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)  # standardised per channel


def test_npz_channels_last_and_greyscale_layouts_are_recognised(tmp_path: Path) -> None:
    x, y = _images(shape=(12, 10, 3))
    assert load_dataset(str(_npz(tmp_path / "hwc.npz", x=x, y=y))).spec.input_shape == (3, 12, 10)
    x, y = _images(shape=(9, 7))
    assert load_dataset(str(_npz(tmp_path / "grey.npz", x=x, y=y))).spec.input_shape == (1, 9, 7)


def test_npz_given_test_split_is_used_as_is(tmp_path: Path) -> None:
    x, y = _images(30)
    xt, yt = _images(7, seed=1)
    data = load_dataset(str(_npz(tmp_path / "split.npz", x=x, y=y, x_test=xt, y_test=yt,
                                 class_names=np.array(["a", "b", "c", "d"]))))
    assert len(data.train_x) == 30 and len(data.test_x) == 7
    assert torch.equal(data.test_y, torch.from_numpy(yt))
    assert data.class_names == ("a", "b", "c", "d")


# -- image folders ---------------------------------------------------------------------------------
def _write_images(folder: Path, classes: dict[str, int], size: tuple[int, int] = (8, 6), mode: str = "RGB"
                  ) -> None:
    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}.png")


def test_image_folder_classes_are_the_sorted_sub_folders(tmp_path: Path) -> None:
    _write_images(tmp_path / "pets", {"dog": 6, "cat": 5, "bird": 4})
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")  # ignored
    data = load_dataset(str(tmp_path / "pets"))
    assert data.class_names == ("bird", "cat", "dog")
    assert data.spec.input_shape == (3, 6, 8) and data.num_classes == 3
    assert len(data.train_x) + len(data.test_x) == 15


def test_image_folder_with_train_and_test_and_greyscale(tmp_path: Path) -> None:
    _write_images(tmp_path / "d" / "train", {"a": 4, "b": 4}, mode="L")
    _write_images(tmp_path / "d" / "test", {"a": 2, "b": 1}, mode="L")
    data = load_dataset(str(tmp_path / "d"))
    assert data.spec.input_shape == (1, 6, 8)
    assert len(data.train_x) == 8 and data.test_y.tolist() == [0, 0, 1]


# -- bad input: one line that names the problem ----------------------------------------------------
def _error(name: str) -> str:
    with pytest.raises(DataError) as err:
        load_dataset(name)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_wrong_path_is_named(tmp_path: Path) -> None:
    assert _error(str(tmp_path / "nope.npz")) == f"dataset path {tmp_path / 'nope.npz'} does not exist"


def test_empty_folder_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    msg = _error(str(tmp_path / "empty"))
    assert "has no class sub-folders; expected one folder of images per class" in msg


def test_class_folder_without_images_is_named(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"a": 2})
    (tmp_path / "d" / "b").mkdir()
    assert f"class folder {tmp_path / 'd' / 'b'} holds no images" in _error(str(tmp_path / "d"))


def test_npz_without_labels_says_which_array_is_missing(tmp_path: Path) -> None:
    x, _ = _images()
    msg = _error(str(_npz(tmp_path / "nolabels.npz", x=x, labels=np.zeros(50, dtype=int))))
    assert msg.endswith("nolabels.npz has no 'y' array (labels); it holds: labels, x")


@pytest.mark.parametrize("bad,expected", [(-1, "label -1 is out of range; labels must be 0..3"),
                                          (9, "label 9 is out of range; labels must be 0..3")])
def test_labels_out_of_range_are_named(tmp_path: Path, bad: int, expected: str) -> None:
    x, y = _images()
    y[3] = bad
    names = np.array(["a", "b", "c", "d"])
    assert expected in _error(str(_npz(tmp_path / "range.npz", x=x, y=y, class_names=names)))


def test_non_integer_labels_are_refused(tmp_path: Path) -> None:
    x, y = _images()
    assert "must hold integer class indices" in _error(str(_npz(tmp_path / "f.npz", x=x, y=y + 0.5)))


def test_images_of_mixed_sizes_are_named(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"a": 2}, size=(8, 8))
    _write_images(tmp_path / "d", {"b": 1}, size=(9, 8))
    msg = _error(str(tmp_path / "d"))
    assert msg.startswith("images of mixed sizes:") and "is 8x8 but" in msg and "b/0.png is 9x8" in msg


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    _write_images(tmp_path / "d", {"a": 2, "b": 2})
    (tmp_path / "d" / "b" / "1.png").write_bytes(b"not a png")
    assert f"cannot read image {tmp_path / 'd' / 'b' / '1.png'}" in _error(str(tmp_path / "d"))


def test_not_an_npz_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_text("hello")
    assert "x.npz is not a readable .npz file" in _error(str(tmp_path / "x.npz"))


@pytest.mark.parametrize("damage", ["array header", "deflate"])
def test_an_npz_damaged_inside_its_zip_is_named(tmp_path: Path, damage: str) -> None:
    path = write_damaged_npz(tmp_path / "x.npz", damage)
    assert "x.npz is not a readable .npz file" in _error(str(path))


# -- through the CLI: the model adapts to channels, size and classes -------------------------------
def test_train_on_own_npz_adapts_the_model_end_to_end(tmp_path: Path, capsys) -> None:
    x, y = _images(60)
    npz = _npz(tmp_path / "tiny.npz", x=x, y=y)
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(npz), "-T", "2", "--epochs", "1", "--batch-size", "64",
               "--device", "cpu", "--run-dir", str(run), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "tiny" and results["epochs"] == 1
    spec = torch.load(run / "checkpoint.pt", weights_only=False)["spec"]
    assert spec == {"input_shape": [3, 12, 12], "num_classes": 4}


def test_cli_bad_dataset_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", str(tmp_path / "missing.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"noprop: error: dataset path {tmp_path / 'missing.npz'} does not exist\n"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "mnits"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown dataset 'mnits'; choose one of digits, mnist, fashion-mnist" in err
