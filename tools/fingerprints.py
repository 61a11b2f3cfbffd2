"""Fingerprints of seeded training runs, to prove that a change of code left behaviour unchanged.

Trains every method (and the code paths around them: the fused step, an lr schedule, learned and
prototype embeddings, skip mode, two-process data and block parallel, the Python API) for a few
epochs on the embedded digits data in fp32, then hashes what a run leaves: the model and optimizer
tensors of ``checkpoint.pt``, ``metrics.csv`` without its timing columns, ``config.yaml``, and the
outputs of ``noprop evaluate`` and ``noprop predict``. It also checks that run directories written
by another version of the code (``--old-runs``) still evaluate, predict and resume to the same
numbers. Two fingerprint files compare with ``--compare A.json B.json``::

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before/src python tools/fingerprints.py --out before.json --keep /tmp/runs-before
    python tools/fingerprints.py --out after.json --old-runs /tmp/runs-before
    python tools/fingerprints.py --compare before.json after.json

Every hash is of exact bytes, so any difference in a single bit of any tensor shows.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

TIMING = {"epoch_seconds", "samples_per_second"}
IN_PROCESS = True
USES = ("evaluate", "evaluate_runs", "predict", "predict_stochastic")
BASE = ["--dataset", "digits", "--epochs", "2", "--precision", "fp32", "--device", "cpu", "-q",
        "--num-threads", "2"]
RUNS: dict[str, list[str]] = {
    "dt": ["--method", "dt"],
    "dt-fused": ["--method", "dt", "--fused"],
    "dt-interleaved-cosine": ["--method", "dt", "--block-order", "interleaved", "--lr-schedule", "cosine",
                              "--warmup-epochs", "0.5"],
    "dt-learned": ["--method", "dt", "--embedding", "learned", "-T", "4"],
    "dt-prototype": ["--method", "dt", "--embedding", "prototype", "-T", "3"],
    "dt-skip": ["--method", "dt", "-T", "3", "--skip-nonfinite"],
    "ct": ["--method", "ct", "--epochs", "3"],
    "fm": ["--method", "fm", "--epochs", "3"],
    "fm-learned": ["--method", "fm", "--embedding", "learned", "--epochs", "2"],
    "backprop": ["--method", "backprop"],
    "cnn": ["--method", "cnn"],
    "ff": ["--method", "ff"],
    "local": ["--method", "local"],
    "dt-data-parallel": ["--method", "dt", "-T", "3", "--nproc", "2", "--parallel", "data"],
    "dt-block-parallel": ["--method", "dt", "-T", "4", "--nproc", "2", "--parallel", "blocks"],
}


def digest(obj: Any) -> str:
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().reshape(-1).contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(f"K{k}".encode())
                feed(o[k])
        elif isinstance(o, list | tuple):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(o).encode())

    feed(obj)
    return h.hexdigest()[:16]


def noprop(*args: str) -> str:
    """``noprop ARGS``'s standard output; in this process (the commands seed themselves), except
    multi-process training, which spawns its own processes either way."""
    if IN_PROCESS and "--nproc" not in args:
        from noprop.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(args))
        if code:
            raise SystemExit(f"noprop {' '.join(args)} failed with exit code {code}")
        return out.getvalue()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-m", "noprop", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"noprop {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_files(run: Path) -> dict[str, str]:
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv") as f:
            rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]
    else:  # a model saved from Python: its rows are in the checkpoint
        rows = [{k: str(v) for k, v in r.items() if k not in TIMING} for r in state["metrics"]]
    return {
        "model": digest(state["model"]),
        "optimizers": digest({k: v.get("state") for k, v in state["optimizers"].items()}),
        "metrics": digest(rows),
        "test_accuracy": rows[-1]["test_accuracy"],
        "config": digest((run / "config.yaml").read_text()),
        "checkpoint_keys": ",".join(sorted(state)),
    }


def one_more(run: Path) -> str:
    """One epoch more than ``run`` has trained, for a resume that trains."""
    return str(json.loads((run / "results.json").read_text())["epochs"] + 1)


def uses(run: Path, images: Path) -> dict[str, str]:
    """What evaluate (one pass, and three runs) and predict (noise-free, and 2 stochastic) answer."""
    return {
        "evaluate": noprop("evaluate", str(run), "--device", "cpu").strip(),
        "evaluate_runs": noprop("evaluate", str(run), "--runs", "3", "--device", "cpu").strip(),
        # the CSV names each input by its path: the same images lie under another root in each run
        "predict": digest(noprop("predict", str(run), str(images)).replace(str(images), "IMAGES")),
        "predict_stochastic": digest(noprop("predict", str(run), str(images), "--stochastic", "2")
                                     .replace(str(images), "IMAGES")),
    }


def api_fingerprint(root: Path) -> dict[str, str]:
    from sklearn.datasets import load_digits

    from noprop import Classifier

    torch.set_num_threads(2)
    d = load_digits()
    x = (d.images[:, None] * (255 / 16)).astype(np.uint8)
    clf = Classifier(method="dt", epochs=2, num_blocks=3, precision="fp32", device="cpu")
    clf.fit(x[:1200], d.target[:1200])
    proba = clf.predict_proba(x[1200:])
    shutil.rmtree(root / "api-run", ignore_errors=True)
    clf.save(root / "api-run")
    again = Classifier.load(root / "api-run").predict_proba(x[1200:])
    return {"proba": digest(torch.from_numpy(proba)), "reloaded": digest(torch.from_numpy(again)),
            "score": f"{clf.score(x[1200:], d.target[1200:]):.6f}", **run_files(root / "api-run")}


def fingerprints(root: Path, old_runs: Path | None, reuse: bool = False) -> dict[str, Any]:
    images = root / "images.npz"
    from sklearn.datasets import load_digits
    np.savez(images, x=(load_digits().images[:40, None] * (255 / 16)).astype(np.uint8))
    out: dict[str, Any] = {}
    for name, flags in RUNS.items():
        run = root / name
        if not (reuse and (run / "results.json").is_file()):
            noprop("train", *BASE, *flags, "--run-dir", str(run))
        out[name] = {**run_files(run), **uses(run, images)}
        if "parallel" not in " ".join(flags):
            resumed = root / f"{name}-resumed"
            if not (reuse and (resumed / "results.json").is_file()):
                shutil.rmtree(resumed, ignore_errors=True)
                shutil.copytree(run, resumed)
                noprop("train", "--run-dir", str(resumed), "--resume", "--epochs", one_more(run), "-q")
            out[name]["resumed"] = run_files(resumed)
        if old_runs is not None and (old_runs / name).is_dir():
            old = root / f"{name}-old"
            shutil.copytree(old_runs / name, old)
            out[name]["old_run_uses"] = uses(old, images)
            if "parallel" not in " ".join(flags):
                noprop("train", "--run-dir", str(old), "--resume", "--epochs", one_more(old), "-q")
                out[name]["old_run_resumed"] = run_files(old)
        print(name, out[name]["test_accuracy"], out[name]["model"], flush=True)
    out["api"] = api_fingerprint(root)
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Print every difference; with old runs, their uses must equal the fresh runs' (same code paths)."""
    bad = 0
    for name in sorted(set(a) | set(b)):
        for key in sorted(set(a.get(name, {})) | set(b.get(name, {}))):
            va, vb = a.get(name, {}).get(key), b.get(name, {}).get(key)
            if va != vb and vb is not None and va is not None:
                bad += 1
                print(f"DIFFERENT {name}.{key}: {va} != {vb}")
        for key in ("old_run_uses", "old_run_resumed"):
            fresh = {"old_run_uses": None, "old_run_resumed": "resumed"}[key]
            if key in b.get(name, {}):
                expect = (a[name]["resumed"] if fresh else
                          {k: a[name][k] for k in USES})
                if b[name][key] != expect:
                    bad += 1
                    print(f"DIFFERENT {name}.{key}: {b[name][key]} != {expect}")
    print(f"{bad} differences over {len(b)} runs")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--keep", type=Path, help="keep the run directories here")
    p.add_argument("--old-runs", type=Path, help="run directories of another version to load and resume")
    p.add_argument("--compare", type=Path, nargs=2)
    p.add_argument("--reuse", action="store_true", help="keep runs already trained under --keep")
    p.add_argument("--subprocess", action="store_true", help="run every command in a fresh process")
    args = p.parse_args()
    if args.compare:
        return compare(*(json.loads(p.read_text()) for p in args.compare))
    global IN_PROCESS
    IN_PROCESS = not args.subprocess
    torch.set_num_threads(2)
    root = args.keep or Path(tempfile.mkdtemp(prefix="noprop-fingerprints-"))
    root.mkdir(parents=True, exist_ok=True)
    result = fingerprints(root, args.old_runs, args.reuse)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
