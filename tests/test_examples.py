"""Every script in examples/ runs as it is, at the tiny budget its ``--tiny`` flag selects, so the
examples a user copies cannot rot. Each runs in a fresh process from a scratch directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: What each example prints when it worked (beside exit code 0).
EXPECTED = {
    "train_and_predict.py": "test accuracy",
    "own_encoder.py": "SmallConv blocks: test accuracy",
    "csv_table.py": "test_accuracy",
    "block_parallel.py": '"test_accuracy"',
    "compare_methods.py": "| dt |",
    "reproduce_paper_row.py": "| mnist-dt | 99.47",
}


def run_example(name: str, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(EXAMPLES / name), "--tiny", *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "reproduce_paper_row.py"])
def test_example_runs_as_is(name: str, tmp_path: Path):
    done = run_example(name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert EXPECTED[name] in done.stdout + done.stderr


def test_reproduce_example_sets_a_row_beside_the_paper(tmp_path: Path):
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found under {SHARED_DATA}")
    out = tmp_path / "out"
    done = run_example("reproduce_paper_row.py", "--data-dir", str(SHARED_DATA), "--out-dir", str(out),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert EXPECTED["reproduce_paper_row.py"] in done.stdout
    assert "num_blocks=2" in (out / "reproduction.md").read_text()   # marked: not the paper's experiment
