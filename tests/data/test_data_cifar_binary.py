"""CIFAR's binary version: fixed-size records read without pickle, verified, class names built in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_data_helpers import SHARED_DATA, cifar_binary_members, write_cifar_binary

from noprop.data import CATALOG, DataError, load_dataset
from noprop.data.catalog import DataFile, FileLayout
from noprop.data.cifar import read_cifar
from noprop.data.cifar_names import CIFAR10_CLASSES, CIFAR100_COARSE_CLASSES


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_binary_records_decode_to_channel_planes_and_labels(tmp_path: Path, archive: bool) -> None:
    path = write_cifar_binary(tmp_path, "cifar-10", n=12, archive=archive)
    raw = read_cifar(path if archive else tmp_path, "cifar-10", version="binary")
    assert raw["train_x"].shape == (60, 3, 32, 32) and raw["test_x"].shape == (12, 3, 32, 32)
    assert [int(raw["train_x"][5, c, 17, 3]) for c in range(3)] == [5, 10, 15]  # R, G, B planes
    assert raw["train_y"][:12].tolist() == [i % 10 for i in range(12)]
    assert raw["class_names"] == CIFAR10_CLASSES


def test_cifar100_binary_has_fine_labels_by_default_and_coarse_on_request(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path, "cifar-100", n=8)
    fine = read_cifar(tmp_path, "cifar-100", version="binary")
    coarse = read_cifar(tmp_path, "cifar-100", "coarse", version="binary")
    assert fine["train_x"].shape == (40, 3, 32, 32)
    assert fine["train_y"][:5].tolist() == [1, 4, 7, 10, 13]  # second label byte
    assert coarse["train_y"][:5].tolist() == [0, 1, 2, 3, 4]  # first label byte
    assert len(fine["class_names"]) == 100 and coarse["class_names"] == CIFAR100_COARSE_CLASSES
    assert [int(fine["test_x"][3, c, 0, 0]) for c in range(3)] == [3, 6, 9]


def test_a_binary_file_that_is_not_whole_records_is_named(tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path, "cifar-10")
    (folder / "data_batch_2.bin").write_bytes(b"\x00" * 3072)
    with pytest.raises(DataError, match=r"data_batch_2\.bin: 3072 bytes is not a whole number of 3073-byte"):
        read_cifar(tmp_path, "cifar-10", version="binary")


def test_a_label_outside_the_classes_is_an_error(tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path, "cifar-10")
    data = bytearray((folder / "test_batch.bin").read_bytes())
    data[0] = 17
    (folder / "test_batch.bin").write_bytes(bytes(data))
    with pytest.raises(DataError, match="label 17 found"):
        read_cifar(tmp_path, "cifar-10", version="binary")


def _binary_layout(variant: str, n: int) -> FileLayout:
    import hashlib

    folder = "cifar-10-batches-bin" if variant == "cifar-10" else "cifar-100-binary"
    return FileLayout("cifar-binary-folder", tuple(
        DataFile(f"{folder}/{name}", hashlib.md5(data).hexdigest(), len(data))
        for name, data in cifar_binary_members(variant, n).items()))


@pytest.mark.parametrize("name,classes", [("cifar-10", 10), ("cifar-100", 100), ("cifar-100-coarse", 20)])
def test_load_dataset_finds_and_verifies_the_binary_folder(tmp_path: Path, monkeypatch, name: str,
                                                           classes: int) -> None:
    variant = "cifar-10" if name == "cifar-10" else "cifar-100"
    write_cifar_binary(tmp_path / CATALOG[name].folder, variant)
    # the test files' md5s stand in for the official ones
    layouts = (_binary_layout(variant, 6),)
    monkeypatch.setitem(CATALOG, name, dataclasses.replace(CATALOG[name], layouts=layouts))
    data = load_dataset(name, tmp_path)
    assert data.num_classes == classes and len(data.class_names) == classes
    assert data.spec.input_shape == (3, 32, 32) and data.train_transform is not None


def test_the_official_binary_checksums_reject_a_look_alike_folder(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path / "cifar-10", "cifar-10")
    with pytest.raises(DataError, match=r"data_batch_1\.bin is truncated"):
        load_dataset("cifar-10", tmp_path)


def test_catalog_binary_checksums_are_the_official_ones() -> None:
    kinds = {lay.kind: lay for lay in CATALOG["cifar-10"].layouts}
    assert kinds["cifar-binary-archive"].files[0].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert {lay.kind: lay for lay in CATALOG["cifar-100"].layouts}["cifar-binary-archive"].files[0].md5 \
        == "03b5dce01913d631647c71ecec9e9cb8"
    readme = SHARED_DATA / "README.md"
    if readme.is_file():
        text = readme.read_text()
        for f in kinds["cifar-binary-folder"].files:
            assert f.md5 in text and f.name in text


def test_the_real_cifar10_binary_files_load(tmp_path: Path) -> None:
    folder = SHARED_DATA / "cifar-10" / "cifar-10-batches-bin"
    if not (folder / "test_batch.bin").is_file():
        pytest.skip(f"CIFAR-10 binary version not found at {folder}")
    data = load_dataset("cifar-10", SHARED_DATA)
    assert len(data.train_x) == 50000 and len(data.test_x) == 10000
    assert data.train_y.bincount().tolist() == [5000] * 10
    assert data.test_y.bincount().tolist() == [1000] * 10
    assert abs(float(data.train_x.mean())) < 0.01  # the catalog's statistics fit these pixels
