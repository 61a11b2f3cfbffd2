"""Training on a table and predicting on new rows: noprop train/predict/evaluate and Classifier.

Most tests use Forward-Forward (``ff``), an MLP that takes feature vectors without an encoder
setting (cheap to share across tests); the NoProp-DT ones use the MLP encoder (``--encoder mlp``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from noprop import Classifier
from noprop.cli import main
from noprop.data import DataError, load_dataset

COLUMNS = ("f0", "f1", "f2", "f3", "f4")
CLASSES = ("ant", "bee", "cat")


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable rows: each class a shifted cloud in 5 features of different scales."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    centres = np.array([[0, 0, 0, 0, 0], [3, -3, 0, 2, 0], [-3, 3, 2, 0, 0]], dtype=float)
    x = (centres[y] + rng.normal(size=(n, 5))) * np.array([1, 10, 100, 0.1, 1]) + 50
    return x.round(4), y


def write_table(path: Path, x: np.ndarray, y: np.ndarray | None, columns=COLUMNS) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*columns, *(["label"] if y is not None else [])])
        for i, row in enumerate(x):
            w.writerow([*(f"{v:.4f}" for v in row), *([CLASSES[y[i]]] if y is not None else [])])
    return path


def _predict(run: Path, *inputs: Path, capsys) -> list[dict[str, str]]:
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, inputs)]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def _predict_error(run: Path, *inputs: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, inputs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


@pytest.fixture(scope="module")
def ff_run(tmp_path_factory) -> tuple[Path, Path]:
    """A one-epoch ff run on a 60-row .csv: (the table, the run directory)."""
    root = tmp_path_factory.mktemp("table")
    table = write_table(root / "train.csv", *_rows(60))
    run = root / "run"
    assert main(["train", "--dataset", str(table), "--method", "ff", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--num-threads", "1", "-q", "--run-dir", str(run)]) == 0
    return table, run


def test_checkpoint_records_the_table_columns_and_statistics(ff_run) -> None:
    table, run = ff_run
    info = torch.load(run / "checkpoint.pt", weights_only=False)["data_info"]
    assert info["feature_names"] == list(COLUMNS) and info["class_names"] == list(CLASSES)
    assert info["normalization"] == [list(v) for v in load_dataset(str(table)).normalization]


def test_predict_on_a_table_standardises_rows_as_in_training(ff_run, tmp_path: Path, capsys) -> None:
    table, run = ff_run
    rows = _predict(run, table, capsys=capsys)  # the label column is there, and dropped
    assert [r["input"] for r in rows] == [f"{table}[{i}]" for i in range(60)]
    assert {r["class_name"] for r in rows} <= set(CLASSES)
    answers = [r["class_index"] for r in rows]
    unlabelled = write_table(tmp_path / "new.csv", _rows(60)[0], None)
    assert [r["class_index"] for r in _predict(run, unlabelled, capsys=capsys)] == answers
    # the same rows as an (N, D) array, not rescaled: the same answers
    np.save(tmp_path / "rows.npy", _rows(60)[0].astype(np.float32))
    assert [r["class_index"] for r in _predict(run, tmp_path / "rows.npy", capsys=capsys)] == answers


def test_predict_refuses_a_table_with_other_columns_in_one_line(ff_run, tmp_path: Path, capsys) -> None:
    _, run = ff_run
    x = _rows(4)[0]
    swapped = write_table(tmp_path / "swapped.csv", x, None, columns=("f0", "f2", "f1", "f3", "f4"))
    assert "feature column 2 is 'f2' where the model's is 'f1'" in _predict_error(run, swapped, capsys=capsys)
    fewer = write_table(tmp_path / "fewer.csv", x[:, :4], None, columns=COLUMNS[:4])
    assert "has 4 feature columns but the model was trained on 5: f0, f1, f2, f3, f4" in \
           _predict_error(run, fewer, capsys=capsys)
    np.save(tmp_path / "wide.npy", np.zeros((2, 6), dtype=np.float32))
    assert "has 6 features per row, but the model takes 5" in \
           _predict_error(run, tmp_path / "wide.npy", capsys=capsys)


def test_predict_refuses_images_for_a_table_model(ff_run, tmp_path: Path, capsys) -> None:
    from PIL import Image

    _, run = ff_run
    Image.new("L", (5, 1)).save(tmp_path / "a.png")
    assert "a.png is an image, but this model takes rows of 5 features" in \
           _predict_error(run, tmp_path / "a.png", capsys=capsys)
    np.savez(tmp_path / "imgs.npz", x=np.zeros((2, 1, 5, 5), dtype=np.uint8))
    assert "holds images of shape (2, 1, 5, 5), but this model takes rows of 5 features" in \
           _predict_error(run, tmp_path / "imgs.npz", capsys=capsys)


def test_predict_refuses_a_table_for_an_image_model(cli_run, tmp_path: Path, capsys) -> None:
    _, run = cli_run
    table = write_table(tmp_path / "t.csv", *_rows(3))
    assert "t.csv is a table, but this model takes images" in _predict_error(run, table, capsys=capsys)
    np.savez(tmp_path / "rows.npz", x=np.zeros((3, 5), dtype=np.float32))
    assert "holds a table of features (3, 5), but this model takes images" in \
           _predict_error(run, tmp_path / "rows.npz", capsys=capsys)


def test_evaluate_on_another_table_with_the_models_columns(ff_run, tmp_path: Path, capsys) -> None:
    _, run = ff_run
    other = write_table(tmp_path / "other.csv", *_rows(30, seed=1))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--dataset", str(other)]) == 0
    assert capsys.readouterr().out.startswith("test_accuracy ")
    bad = write_table(tmp_path / "bad.csv", *_rows(30, seed=1), columns=("a", *COLUMNS[1:]))
    assert main(["evaluate", str(run), "--dataset", str(bad)]) == 2
    assert "feature column 1 is 'a' where the model's is 'f0'" in capsys.readouterr().err


# -- the Python API on numpy tables ----------------------------------------------------------------
def test_classifier_fits_and_predicts_numpy_rows(tmp_path: Path, one_thread) -> None:
    x, y = _rows(60)
    xt, yt = _rows(30, seed=1)
    clf = Classifier(method="ff", epochs=1, batch_size=16, device="cpu").fit(x, y, validation=(xt, yt))
    assert clf.spec.input_shape == (5,)
    mean, std = clf.normalization
    assert np.allclose(mean, x.mean(0), rtol=1e-4) and np.allclose(std, x.std(0), rtol=1e-4)  # as they are
    pred = clf.predict(xt)
    assert isinstance(pred, np.ndarray) and pred.shape == (30,)
    assert 0.0 <= clf.score(torch.from_numpy(xt).float(), yt) <= 1.0
    clf.save(tmp_path / "model")
    again = Classifier.load(tmp_path / "model")
    assert np.array_equal(again.predict(xt), pred)
    with pytest.raises(DataError, match="inputs are rows of 4 features but the model takes rows of 5 feat"):
        clf.predict(xt[:, :4])
    with pytest.raises(DataError, match="inputs are 1x5x5 images but the model takes rows of 5 features"):
        clf.predict(np.zeros((2, 5, 5), dtype=np.float32))


# -- NoProp-DT with the MLP encoder ------------------------------------------------------------------
def test_noprop_dt_trains_on_a_table_and_predicts_it(tmp_path: Path, capsys) -> None:
    table = write_table(tmp_path / "t.csv", *_rows(90))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(table), "--encoder", "mlp", "--method", "dt", "--epochs", "2",
                 "-T", "3", "--batch-size", "32", "--device", "cpu", "--num-threads", "1", "-q",
                 "--run-dir", str(run)]) == 0
    rows = _predict(run, table, capsys=capsys)
    assert len(rows) == 90 and {r["class_name"] for r in rows} <= set(CLASSES)


def test_classifier_with_the_mlp_encoder_on_numpy_rows(one_thread) -> None:
    x, y = _rows(90)
    clf = Classifier(method="dt", encoder="mlp", num_blocks=3, epochs=2, batch_size=32, device="cpu")
    clf.fit(x, y)
    assert clf.predict(x).shape == (90,)


def test_prototype_embedding_on_rows_has_one_value_per_feature(one_thread) -> None:
    x, y = _rows(90)
    clf = Classifier(method="dt", encoder="mlp", embedding="prototype", num_blocks=2, epochs=1,
                     batch_size=32, device="cpu").fit(x, y)
    assert clf.model.embedding.weight.shape == (3, 5)
