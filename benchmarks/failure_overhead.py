"""What the fault handling costs: the NaN/inf guard per step, and writing one checkpoint.

Per-step CPU time (one thread) of three loops over the same batches, in rounds that rotate their
order so a change in the machine's load hurts all three alike:

* ``bare``: the method's local step with no checks (loss, backward, the unit's optimizer steps);
* ``stop``: ``Trainer.train_step`` in the default mode (loss terms kept for a bulk check);
* ``skip``: ``Trainer.train_step`` with ``skip_nonfinite`` (loss, input and gradient checked
  before the optimizer steps, BatchNorm buffers snapshotted).

Then the wall time of ``Trainer.save_checkpoint`` for NoProp-DT with T = 10 on 28x28 inputs
(random images: only the sizes matter), after every optimizer has its state.

    nice -n 10 python benchmarks/failure_overhead.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from noprop.config import RunConfig
from noprop.data import ClassificationData, load_dataset
from noprop.run import build_trainer
from noprop.training.trainer import Trainer


def make_trainer(data: ClassificationData, run_dir: Path | None = None, **changes) -> Trainer:
    config = RunConfig(progress=False, log_epochs=False, device="cpu", **changes).resolved()
    return build_trainer(config, data, run_dir)


def bare_step(trainer: Trainer, unit: int, x: torch.Tensor, y: torch.Tensor) -> None:
    out = trainer.method.unit_loss(unit, x, y)
    out.loss.backward()
    for group in trainer.units[unit].groups:
        trainer.optimizers[group].step()
        trainer.optimizers[group].zero_grad(set_to_none=True)


def step_seconds(mode: str, data: ClassificationData, batches: list, warmup: int = 3) -> float:
    trainer = make_trainer(data, num_blocks=2, batch_size=64, skip_nonfinite=mode == "skip")
    step = (lambda u, x, y: bare_step(trainer, u, x, y)) if mode == "bare" else trainer.train_step
    for unit, x, y in batches[:warmup]:
        step(unit, x, y)
    start = time.process_time()
    for unit, x, y in batches:
        step(unit, x, y)
    return (time.process_time() - start) / len(batches)


def checkpoint_seconds(repeats: int = 3) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)
    data = ClassificationData("28x28", x, y, x[:16], y[:16], num_classes=10)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(data, Path(tmp), num_blocks=10, batch_size=128)
        for unit in range(len(trainer.units)):
            trainer.train_step(unit, x, y)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            trainer.save_checkpoint()
            times.append(time.perf_counter() - start)
        size = (Path(tmp) / "checkpoint.pt").stat().st_size
    return {"parameters_m": sum(p.numel() for p in trainer.method.parameters()) / 1e6,
            "checkpoint_mib": size / 2**20, "save_seconds": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits")
    batches = list(make_trainer(data, num_blocks=2, batch_size=64)._epoch_batches(0))[: args.steps]
    times: dict[str, list[float]] = {"bare": [], "stop": [], "skip": []}
    modes = list(times)
    for r in range(args.rounds):
        for mode in modes[r % 3:] + modes[: r % 3]:  # rotate the order: no mode always runs first
            times[mode].append(step_seconds(mode, data, batches))
    bare = statistics.median(times["bare"])
    report = {mode: {"ms_per_step": round(1000 * statistics.median(v), 2),
                     "relative_to_bare": round(statistics.median(v) / bare, 3)} for mode, v in times.items()}
    report["checkpoint"] = checkpoint_seconds()
    report["torch"] = torch.__version__
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
