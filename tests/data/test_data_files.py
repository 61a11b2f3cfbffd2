"""Named datasets from their original files: the real MNIST / Fashion-MNIST in ../shared/data, and
CIFAR-10 / CIFAR-100 archives and folders that these tests write in the official pickle format."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_data_helpers import SHARED_DATA, layout_for, tiny_idx_files, write_cifar_archive, write_cifar_folder

from noprop.data import CATALOG, DataError, WrongDatasetError, load_dataset
from noprop.data.cifar import read_cifar, unpickle
from noprop.data.locate import find, resolve_root, user_cache_dir

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not all((path / f).is_file() for f in IDX_NAMES):
        pytest.skip(f"{name} not found at {path}")
    return path


@pytest.fixture(scope="module", params=["mnist", "fashion-mnist"])
def real(request: pytest.FixtureRequest):
    name = request.param
    return name, load_dataset(name, _shared(name))


# -- the real MNIST / Fashion-MNIST files ---------------------------------------------------------
def test_real_idx_datasets_have_paper_shapes_dtypes_and_labels(real) -> None:
    name, data = real
    assert data.name == name
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.num_classes == 10
    for y in (data.train_y, data.test_y):
        assert int(y.min()) == 0 and int(y.max()) == 9
        assert torch.bincount(y, minlength=10).min() > 800  # every class present in both splits


def test_real_idx_datasets_are_standardised_by_their_own_statistics(real) -> None:
    _, data = real
    assert abs(float(data.train_x.mean())) < 0.01
    assert abs(float(data.train_x.std()) - 1.0) < 0.01
    assert data.train_transform is None  # no augmentation defined for MNIST-like data


def test_shared_root_and_dataset_folder_find_the_same_files() -> None:
    path = _shared("mnist")
    info = CATALOG["mnist"]
    assert find(info, path.parent).directory == path  # root with one folder per dataset
    assert find(info, path).directory == path  # the dataset folder itself


def test_fashion_mnist_asked_of_the_mnist_folder_names_the_mix_up() -> None:
    with pytest.raises(WrongDatasetError, match=r"mnist's train-images-idx3-ubyte\.gz, not fashion-mnist's"):
        load_dataset("fashion-mnist", _shared("mnist"))


def _mnist_copy(tmp_path: Path, broken: str, content: bytes) -> Path:
    """The real MNIST files linked into ``tmp_path``, with file ``broken`` replaced by ``content``."""
    src = _shared("mnist")
    for name in IDX_NAMES:
        if name != broken:
            os.symlink(src / name, tmp_path / name)
    (tmp_path / broken).write_bytes(content)
    return tmp_path


def test_truncated_file_is_reported_by_name_and_kept(tmp_path: Path) -> None:
    good = (_shared("mnist") / "train-labels-idx1-ubyte.gz").read_bytes()
    d = _mnist_copy(tmp_path, "train-labels-idx1-ubyte.gz", good[: len(good) // 2])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz is truncated: 14440 bytes") as err:
        load_dataset("mnist", d)
    assert "\n" not in str(err.value)
    assert (d / "train-labels-idx1-ubyte.gz").stat().st_size == len(good) // 2  # never deleted


def test_corrupt_file_of_the_right_size_fails_its_checksum(tmp_path: Path) -> None:
    good = bytearray((_shared("mnist") / "t10k-labels-idx1-ubyte.gz").read_bytes())
    good[100] ^= 0xFF
    d = _mnist_copy(tmp_path, "t10k-labels-idx1-ubyte.gz", bytes(good))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt or not the official file"):
        load_dataset("mnist", d)


def test_missing_files_error_says_what_where_and_how(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, download=True)  # an explicit folder is never downloaded into
    msg = str(err.value)
    assert "missing train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in msg
    assert f"looked in {tmp_path} and {tmp_path / 'mnist'}" in msg
    assert f"noprop data download mnist --data-dir {tmp_path}" in msg


# -- where the data root comes from ---------------------------------------------------------------
def test_data_root_is_flag_then_environment_then_user_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NOPROP_DATA", raising=False)
    assert resolve_root(None).path == user_cache_dir() == tmp_path / "xdg" / "noprop" / "data"
    assert resolve_root(None).is_cache
    monkeypatch.setenv("NOPROP_DATA", str(tmp_path / "env"))
    assert resolve_root(None).path == tmp_path / "env" and not resolve_root(None).is_cache
    assert resolve_root(tmp_path / "flag").path == tmp_path / "flag"


def test_environment_variable_is_searched_like_a_data_dir(tmp_path: Path, monkeypatch) -> None:
    files = tiny_idx_files()
    monkeypatch.setitem(CATALOG, "mnist", dataclasses.replace(CATALOG["mnist"], layouts=(layout_for(files),)))
    (tmp_path / "mnist").mkdir()
    for name, data in files.items():
        (tmp_path / "mnist" / name).write_bytes(data)
    monkeypatch.setenv("NOPROP_DATA", str(tmp_path))
    data = load_dataset("mnist")
    assert data.train_x.shape == (40, 1, 28, 28) and data.test_x.shape == (20, 1, 28, 28)


# -- CIFAR, in the official format, written here ---------------------------------------------------
@pytest.mark.parametrize("form", ["archive", "folder", "flat-folder", "bytes-keys"])
def test_cifar10_reads_archive_and_folders_with_channel_order(tmp_path: Path, form: str) -> None:
    if form == "archive":
        src = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10")
    elif form == "flat-folder":
        src = write_cifar_folder(tmp_path, "cifar-10")
    else:
        write_cifar_folder(tmp_path, "cifar-10", bytes_keys=form == "bytes-keys")
        src = tmp_path
    raw = read_cifar(src, "cifar-10")
    assert raw["train_x"].shape == (30, 3, 32, 32) and raw["test_x"].shape == (6, 3, 32, 32)
    assert raw["train_y"].dtype.name == "int64" and 0 <= raw["train_y"].min() <= raw["train_y"].max() < 10
    assert raw["class_names"] == tuple(f"c{k}" for k in range(10))
    # image i of each batch is the constant colour (i, 2i, 3i): planes are R, G, B in that order
    assert [int(raw["train_x"][5, c, 17, 3]) for c in range(3)] == [5, 10, 15]


def test_cifar100_has_fine_labels_by_default_and_coarse_on_request(tmp_path: Path) -> None:
    src = write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100")
    fine, coarse = read_cifar(src, "cifar-100"), read_cifar(src, "cifar-100", "coarse")
    assert fine["train_x"].shape == (30, 3, 32, 32) and fine["test_x"].shape == (6, 3, 32, 32)
    assert len(fine["class_names"]) == 100 and len(coarse["class_names"]) == 20
    assert fine["train_y"].max() < 100 and coarse["train_y"].max() < 20
    assert not (fine["train_y"] == coarse["train_y"]).all()


def _with_layout(monkeypatch, name: str, archive: Path) -> None:
    layout = layout_for({archive.name: archive.read_bytes()}, kind="cifar-archive")
    monkeypatch.setitem(CATALOG, name, dataclasses.replace(CATALOG[name], layouts=(layout,)))


@pytest.mark.parametrize("name,classes", [("cifar-10", 10), ("cifar-100", 100), ("cifar-100-coarse", 20)])
def test_load_dataset_reads_verified_cifar_with_normalisation_and_augmentation(
    tmp_path: Path, monkeypatch, name: str, classes: int
) -> None:
    variant = "cifar-10" if name == "cifar-10" else "cifar-100"
    archive = write_cifar_archive(tmp_path / CATALOG[name].folder / f"{variant}-python.tar.gz", variant)
    _with_layout(monkeypatch, name, archive)  # the test archive's md5 stands in for the official one
    data = load_dataset(name, tmp_path)
    info = CATALOG[name]
    assert data.spec.input_shape == (3, 32, 32) and data.num_classes == classes
    assert len(data.class_names) == classes
    expected_red = (5 / 255 - info.mean[0]) / info.std[0]
    assert data.train_x[5, 0, 0, 0].item() == pytest.approx(expected_red, abs=1e-5)
    assert data.train_transform is not None


def test_official_cifar_checksum_rejects_a_look_alike_archive(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10")
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz is truncated: \d+ bytes, the official file"):
        load_dataset("cifar-10", tmp_path)


def test_truncated_cifar_archive_is_an_error_not_half_a_dataset(tmp_path: Path) -> None:
    archive = write_cifar_archive(tmp_path / "a.tar.gz", "cifar-10", n=50)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"not a readable \.tar\.gz archive"):
        read_cifar(archive, "cifar-10")


def test_cifar_folder_missing_a_batch_is_named(tmp_path: Path) -> None:
    folder = write_cifar_folder(tmp_path, "cifar-10")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        read_cifar(tmp_path, "cifar-10")


def test_cifar_unpickler_refuses_anything_but_arrays() -> None:
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, ("/nonexistent",))

    with pytest.raises(DataError, match=r"refusing to load shutil\.rmtree"):
        unpickle(pickle.dumps({"data": Evil()}), "evil_batch")


def test_catalog_checksums_are_the_official_ones() -> None:
    """Spot-check against the values published with the datasets (and used by torchvision)."""
    assert CATALOG["cifar-10"].layouts[0].files[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert CATALOG["cifar-100"].layouts[0].files[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    shared_readme = SHARED_DATA / "README.md"
    if shared_readme.is_file():
        text = shared_readme.read_text()
        for name in ("mnist", "fashion-mnist"):
            for f in CATALOG[name].layouts[0].files:
                assert f.md5 in text and str(f.size) in text
    assert hashlib.md5(b"").hexdigest() not in {f.md5 for i in CATALOG.values() for lay in i.layouts
                                                for f in lay.files}
