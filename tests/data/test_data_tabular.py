"""Tables of features: .csv files, .npz with a 2-D x, the embedded scikit-learn tables, the shipped
fixture, and the one-line errors for bad tables."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from noprop.cli import main
from noprop.config import RunConfig
from noprop.data import EMBEDDED_TABLES, ClassificationData, DataError, check_dataset, load_dataset
from noprop.data.base import hold_out
from noprop.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "synthetic-table.csv"


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _table(n: int = 30, d: int = 3, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(5.0, 3.0, (n, d)).round(3), np.arange(n) % classes


def _write_table(path: Path, x: np.ndarray, labels, header=None, label_column: str = "label") -> Path:
    header = header or [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*header, label_column])]
    lines += [",".join([*(repr(float(v)) for v in row), str(label)])
              for row, label in zip(x, labels, strict=True)]
    return _csv(path, "\n".join(lines) + "\n")


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        load_dataset(str(path), **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


# -- .csv ---------------------------------------------------------------------------------------------
def test_csv_rows_become_standardised_features_with_a_seeded_20_percent_hold_out(tmp_path: Path) -> None:
    x, y = _table(50, 4)
    data = load_dataset(str(_write_table(tmp_path / "mine.csv", x, y)))
    assert data.name == "mine" and data.spec.input_shape == (4,) and data.num_classes == 3
    assert len(data.train_x) == 40 and len(data.test_x) == 10
    assert data.feature_names == ("f0", "f1", "f2", "f3") and data.class_names is None
    # the hold-out is exactly the one every table and .npz without a split gets
    tx, ty, vx, vy = hold_out(x.astype(np.float32), y, "mine")
    assert torch.equal(data.train_y, torch.from_numpy(ty)) and torch.equal(data.test_y, torch.from_numpy(vy))
    mean, std = (np.array(v) for v in data.normalization)
    assert np.allclose(mean, tx.mean(0), atol=1e-5) and np.allclose(std, tx.std(0), atol=1e-5)
    assert torch.allclose(data.train_x.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(data.train_x.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert torch.allclose(data.test_x, torch.from_numpy((vx - mean) / std).float(), atol=1e-5)


def test_csv_string_labels_are_the_sorted_classes(tmp_path: Path) -> None:
    x, _ = _table(12, 2)
    labels = ["setosa", "virginica", "versicolor"] * 4
    data = load_dataset(str(_write_table(tmp_path / "iris.csv", x, labels, label_column="species")),
                        label_column="species")
    assert data.class_names == ("setosa", "versicolor", "virginica")
    y = torch.cat([data.train_y, data.test_y])
    assert sorted(y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_csv_label_column_may_be_anywhere_and_a_split_column_marks_the_test_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv",
                "a,label,split,b\n1,0,train,2\n3,1,train,4\n5,0,test,6\n7,1,TEST,8\n9,1,train,0\n")
    data = load_dataset(str(path))
    assert data.feature_names == ("a", "b")
    assert data.train_y.tolist() == [0, 1, 1] and data.test_y.tolist() == [0, 1]
    mean, std = data.normalization
    assert mean == pytest.approx((13 / 3, 2.0))  # training rows only
    raw = data.test_x * torch.tensor(std) + torch.tensor(mean)
    assert torch.allclose(raw, torch.tensor([[5.0, 6], [7, 8]]))


def test_csv_constant_feature_becomes_zero_not_nan(tmp_path: Path) -> None:
    path = _csv(tmp_path / "c.csv", "k,v,label\n" + "".join(f"7,{i},{i % 2}\n" for i in range(10)))
    data = load_dataset(str(path))
    assert torch.isfinite(data.train_x).all() and torch.isfinite(data.test_x).all()
    assert data.normalization[1][0] == 1.0 and torch.equal(data.train_x[:, 0], torch.zeros(8))


def test_csv_quoted_cells_blank_lines_and_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes('\ufeff"x 1", label\n 1.5 ,"a"\n\n2.5,b\n3.5,a\n4.5,b\n\n'.encode())
    data = load_dataset(str(path))
    assert data.feature_names == ("x 1",) and data.class_names == ("a", "b")
    assert len(data.train_x) + len(data.test_x) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b,label\n1,2,0\n3,oops,1\n", "line 3: column 'b' holds 'oops', not a number"),
        ("a,b,label\n1,2,0\n3,inf,1\n", "line 3: column 'b' holds 'inf', not a finite number"),
        ("a,b,label\n1,2,0\n1e39,4,1\n", "line 3: column 'a' holds '1e39', not a finite number in 32-bit"),
        ("a,b,label\n1,2,0\n,4,1\n", "line 3: column 'a' has no value ('')"),
        ("a,b,label\n1,NA,0\n3,4,1\n", "line 2: column 'b' has no value ('NA')"),
        ("a,b,label\n1,2,0\n3,4,\n", "line 3: column 'label' has no value ('')"),
        ("a,b,y\n1,2,0\n3,4,1\n", "has no label column 'label'; its columns are: a, b, y"),
        ("", "is empty; a table needs a header line"),
        ("\n\n", "is empty"),
        ("a,b,label\n", "has a header but no rows"),
        ("a,b,label\n1,2,3\n4,5,3\n", "needs at least 2 classes, but every label is '3'"),
        ("a,b,label\n1,2,0\n4,5\n", "line 3 has 2 fields but the header has 3"),
        ("a,a,label\n1,2,0\n4,5,1\n", "the header names column 'a' twice"),
        ("label\n0\n1\n", "has no feature columns, only label"),
        ("a,label\n1,0\n2,-1\n", "label -1 is out of range"),
        ("a,label,split\n1,0,train\n2,1,validation\n", "line 3: column 'split' holds 'validation'"),
        ("a,label,split\n1,0,train\n2,1,train\n", "column 'split' marks every row train"),
    ],
)
def test_csv_errors_are_one_line_naming_column_line_and_value(tmp_path: Path, text: str, expected: str
                                                              ) -> None:
    path = _csv(tmp_path / "bad.csv", text)
    message = _error(path)
    assert expected in message and str(path) in message


def test_csv_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    assert "is not a UTF-8 text file" in _error(path)


def test_cli_reports_a_bad_table_in_one_line(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path / "t.csv", "a,label\n1,0\nx,1\n")
    assert main(["train", "--dataset", str(path), "--quiet", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"noprop: error: {path} line 3: column 'a' holds 'x', not a number; every column but " \
                  "the label and split columns must be numeric\n"
    assert not (tmp_path / "run").exists()


# -- .npz with a 2-D x ------------------------------------------------------------------------------
def test_npz_with_2d_x_is_a_table_taken_as_it_is_even_uint8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 5), dtype=np.uint8), np.arange(40) % 2
    path = tmp_path / "feat.npz"
    np.savez(path, x=x, y=y, feature_names=np.array(list("abcde")))
    data = load_dataset(str(path))
    assert data.spec.input_shape == (5,) and data.feature_names == tuple("abcde")
    tx = hold_out(x.astype(np.float32), y, path)[0]
    assert np.allclose(data.normalization[0], tx.mean(0), atol=1e-4)  # not divided by 255
    assert data.normalization[0][0] > 1


def test_npz_table_errors(tmp_path: Path) -> None:
    x, y = _table(20, 3)
    np.savez(tmp_path / "a.npz", x=x, y=y, feature_names=np.array(["a", "b"]))
    assert "feature_names lists 2 names but x has 3 features" in _error(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:, :2], y_test=y)
    assert "x_test rows are (2,), x rows are (3,)" in _error(tmp_path / "b.npz")


def test_container_refuses_feature_names_that_do_not_fit() -> None:
    x = torch.zeros(4, 3)
    with pytest.raises(DataError, match="2 feature names for inputs of shape"):
        ClassificationData("t", x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([0, 1, 0, 1]), 2,
                           feature_names=("a", "b"))


# -- embedded tables ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "rows", "features", "classes"),
                         [("breast-cancer", 569, 30, ("malignant", "benign")),
                          ("wine", 178, 13, ("class_0", "class_1", "class_2"))])
def test_embedded_tables_load_split_80_20_and_standardised(name: str, rows: int, features: int,
                                                            classes: tuple[str, ...]) -> None:
    data = load_dataset(name)
    assert data.spec.input_shape == (features,) and data.class_names == classes
    assert len(data.test_x) == int(rows * 0.2) and len(data.train_x) + len(data.test_x) == rows
    assert len(data.feature_names) == features
    assert torch.allclose(data.train_x.mean(0), torch.zeros(features), atol=1e-4)
    assert check_dataset(name) == name


def test_noprop_data_list_shows_the_embedded_tables(tmp_path: Path, capsys) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("digits", *EMBEDDED_TABLES):
        assert any(line.split()[:2] == [name, "embedded"] for line in out.splitlines())


def test_embedded_tables_have_a_small_batch_budget() -> None:
    for name in EMBEDDED_TABLES:
        assert RunConfig(dataset=name).resolved().batch_size == 64
    assert RunConfig(dataset="mnist").resolved().batch_size == 128


# -- the label_column setting ------------------------------------------------------------------------
def test_label_column_is_a_setting_of_csv_datasets_only(tmp_path: Path) -> None:
    assert RunConfig(dataset="t.csv", label_column="species").label_column == "species"
    assert RunConfig(dataset="mnist").label_column == "label"  # the default: fine anywhere
    for dataset in ("digits", "wine", "x.npz", "images/"):
        with pytest.raises(ConfigError, match=f"applies to .csv datasets only; dataset {dataset} is not one"):
            RunConfig(dataset=dataset, label_column="species")
    with pytest.raises(ConfigError, match="empty name"):
        RunConfig(dataset="t.csv", label_column=" ")


def test_cli_label_column_flag(tmp_path: Path, capsys) -> None:
    assert main(["train", "--label-column", "species", "--quiet", "--run-dir", str(tmp_path / "r")]) == 2
    assert "label_column applies to .csv datasets only" in capsys.readouterr().err
    path = _write_table(tmp_path / "t.csv", *_table(10, 2, 2))
    assert main(["train", "--dataset", str(path), "--label-column", "target", "--quiet",
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "has no label column 'target'; its columns are: f0, f1, label" in capsys.readouterr().err


# -- the shipped fixture -----------------------------------------------------------------------------
def test_shipped_synthetic_table_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_table", ROOT / "benchmarks" / "make_table.py")
    make_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_table)
    text = make_table.table_text().encode()
    assert hashlib.md5(FIXTURE.read_bytes()).hexdigest() == hashlib.md5(text).hexdigest()
    assert FIXTURE.stat().st_size < 1_000_000


def test_shipped_synthetic_table_loads() -> None:
    data = load_dataset(str(FIXTURE))
    assert data.spec.input_shape == (20,) and data.num_classes == 4
    assert (len(data.train_x), len(data.test_x)) == (4800, 1200)
    assert data.feature_names == tuple(f"x{i}" for i in range(20))
