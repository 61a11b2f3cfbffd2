"""benchmarks/data_chunks.py: a folder survives pack -> chunks -> unpack byte for byte, or fails loudly."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_chunks.py"
spec = importlib.util.spec_from_file_location("data_chunks", SCRIPT)
data_chunks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(data_chunks)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"batch_{i}.bin").write_bytes(random.Random(i).randbytes(5_000 + i))  # incompressible
    return src


def test_pack_then_unpack_gives_the_same_files(folder: Path, tmp_path: Path) -> None:
    manifest = data_chunks.pack(folder, tmp_path / "chunks", chunk_mib=0.002)
    assert len(manifest["chunks"]) > 1  # really cut into pieces
    data_chunks.unpack(tmp_path / "chunks", tmp_path / "out")
    for f in folder.iterdir():
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


def test_a_missing_or_damaged_chunk_is_named_and_nothing_is_written(folder: Path, tmp_path: Path) -> None:
    data_chunks.pack(folder, tmp_path / "chunks", chunk_mib=0.002)
    part = tmp_path / "chunks" / "part-001"
    good = part.read_bytes()
    part.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ValueError, match="chunk part-001 is damaged"):
        data_chunks.unpack(tmp_path / "chunks", tmp_path / "out")
    part.unlink()
    with pytest.raises(ValueError, match="chunk part-001 has not arrived"):
        data_chunks.unpack(tmp_path / "chunks", tmp_path / "out")
    assert not (tmp_path / "out").exists()
