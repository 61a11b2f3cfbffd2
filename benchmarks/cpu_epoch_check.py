"""The shipped ``cifar-10-dt`` on the CPU with and without the step's speed paths: epoch time and accuracy.

By default "before" is the step as it was (images channels-first, PyTorch's ``nn.Dropout``) and
"after" the defaults (``channels_last: auto``: channels-last images in bf16 on a CPU;
:class:`noprop.dropout.Dropout` with ``dropout_rng: auto``: fast masks in bf16 on a CPU);
``--before`` and ``--after`` set each side's run settings instead
(``NAME=VALUE``; ``dropout=torch`` is PyTorch's ``nn.Dropout``). On real CIFAR-10 batches, per
precision:

* **epoch time**: the trainer's own ``train_step`` over the first batches of its epoch order,
  before and after alternating in rounds of ``--steps`` steps (so load hits both alike); an epoch is
  391 batches x T block steps, so its training time is estimated as ``391 * T / steps per second``;
* **accuracy**: a fresh trainer with the config's seed, ``--accuracy-steps`` steps in the
  interleaved order (every block steps on every batch, so all T blocks train), then the run's own
  evaluation (the stochastic sampler, seeded) on the test set. In float32 before and after must
  agree bit for bit; in bf16 within noise.

Usage::

    python benchmarks/cpu_epoch_check.py --data-dir ../shared/data --threads 2 \\
        --out docs/results/2026-12-03-cpu/epoch-check.json
    python benchmarks/cpu_epoch_check.py --data-dir DIR --before --after dropout_rng=fast   # one change
    python benchmarks/cpu_epoch_check.py --data-dir DIR --before --after [--glibc-default]  # two processes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from measure import load_average, run_record, timed_rounds
from speed import parse_switches, use_torch_dropout

from noprop import device as devices
from noprop.data import load_dataset
from noprop.presets import load_preset
from noprop.run import build_trainer

SIDES = ("before", "after")
#: Each side's settings unless ``--before`` / ``--after`` give them: the step without its speed paths,
#: and the defaults.
DEFAULT_SIDES = {"before": ["channels_last=off", "dropout=torch"], "after": []}


def trainer_for(settings: list[str], precision: str, data, order: str | None = None):
    """A trainer of the shipped config on ``data`` with run ``settings`` (``NAME=VALUE``; the
    pseudo-setting ``dropout=torch`` puts PyTorch's ``nn.Dropout`` back)."""
    overrides: dict[str, Any] = {"precision": precision, "progress": False, "log_epochs": False}
    if order:
        overrides["block_order"] = order
    switches = parse_switches(settings)
    torch_dropout = switches.pop("dropout", None) == "torch"
    config = load_preset("cifar-10-dt").run_config({**overrides, **switches})
    trainer = build_trainer(config, data)
    if torch_dropout:
        use_torch_dropout(trainer.method)
    trainer.method.train()
    return trainer


def timing(data, sides: dict[str, list[str]], precision: str, steps: int, rounds: int) -> dict[str, Any]:
    trainers = {side: trainer_for(sides[side], precision, data) for side in SIDES}
    batches = list(islice(trainers["after"]._epoch_batches(0), steps + 1))
    for t in trainers.values():  # warm-up: optimizer state, kernels
        unit, x, y = batches[0]
        t.train_step(unit, x, y)

    def steps_of(t) -> None:
        for unit, x, y in batches[1:]:
            t.train_step(unit, x, y)

    timed = timed_rounds({side: lambda t=t: steps_of(t) for side, t in trainers.items()}, rounds,
                         per_call=steps)
    T = trainers["after"].method.num_blocks
    out: dict[str, Any] = {}
    for side in SIDES:
        r = timed[side]
        per_step = statistics.median(r.wall)
        out[side] = {"seconds_per_step": round(per_step, 4), "steps_per_second": round(1 / per_step, 2),
                     "epoch_seconds_estimate": round(391 * T * per_step, 1),
                     "round_seconds_per_step": [round(s, 4) for s in r.wall],
                     "minor_page_faults_per_step": round(statistics.median(r.faults)),
                     "cpu_seconds_per_step": round(statistics.median(r.cpu), 4),
                     "round_cpu_seconds_per_step": [round(s, 4) for s in r.cpu]}
    out["speedup"] = round(out["before"]["seconds_per_step"] / out["after"]["seconds_per_step"], 3)
    out["median_round_speedup"] = round(statistics.median(
        b / a for b, a in zip(timed["before"].wall, timed["after"].wall, strict=True)), 3)
    return out


def accuracy(data, sides: dict[str, list[str]], precision: str, steps: int) -> dict[str, Any]:
    out = {}
    for side in SIDES:
        t = trainer_for(sides[side], precision, data, order="interleaved")
        losses = []
        for unit, x, y in islice(t._epoch_batches(0), steps):
            terms = t.train_step(unit, x, y)
            losses.append(float(terms["loss"]))
        acc = t.evaluation(t.method)[-1]
        out[side] = {"test_accuracy": acc, "mean_loss_last_100": round(statistics.mean(losses[-100:]), 5),
                     "final_loss": losses[-1]}
    out["bitwise_equal"] = out["before"] == out["after"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--accuracy-steps", type=int, default=600, help="0: skip the accuracy check")
    p.add_argument("--test-size", type=int, default=None,
                   help="score on the first N test images (default: all)")
    p.add_argument("--before", nargs="*", default=None, metavar="NAME=VALUE",
                   help="run settings of the before side (default: channels_last=off dropout=torch)")
    p.add_argument("--after", nargs="*", default=None, metavar="NAME=VALUE",
                   help="run settings of the after side (default: none, the defaults)")
    p.add_argument("--glibc-default", action="store_true",
                   help="leave glibc's allocator as it is (the trainer otherwise sets retain_freed_memory, "
                        "process-wide: compare two processes)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.glibc_default:
        devices.retain_freed_memory = lambda: False
    sides = {side: DEFAULT_SIDES[side] if getattr(args, side) is None else getattr(args, side)
             for side in SIDES}
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("cifar-10", args.data_dir, download=False, progress=False)
    if args.test_size:
        n = args.test_size
        data = dataclasses.replace(data, test_x=data.test_x[:n], test_y=data.test_y[:n])
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {
        **run_record("cpu_epoch_check.py", argv),
        "cpu_native_bf16": devices.cpu_has_native_bf16(),
        "sides": sides,
        "glibc_default_allocator": args.glibc_default,
    }
    for precision in args.precisions:
        cell: dict[str, Any] = {"timing": timing(data, sides, precision, args.steps, args.rounds)}
        print(precision, "timing", json.dumps(cell["timing"]), flush=True)
        if args.accuracy_steps:
            cell["accuracy"] = accuracy(data, sides, precision, args.accuracy_steps)
            cell["accuracy_steps"] = args.accuracy_steps
            print(precision, "accuracy", json.dumps(cell["accuracy"]), flush=True)
        results[precision] = cell
    results["load_average_1min"] = load_average(load_before)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
