"""What one NoProp-DT block step costs with each encoder, as a ratio to the paper's block.

For each encoder (``--encoders``, ``name`` or ``name:depth`` or ``name:depth:width``) this builds
NoProp-DT on CIFAR-10 shapes (3 x 32 x 32, 10 classes, one-hot, the shipped ``cifar-10-dt``
padding) and measures one training step of block 1 (Eq. 8 at t = 1: forward, backward, AdamW on
``block1`` and ``shared``), batch 128:

* parameters per block;
* FLOPs of the step's forward and backward (``torch.utils.flop_counter``; matmuls and convs);
* seconds per step, wall and process CPU time, median over ``--rounds`` rounds in which the
  encoders take turns (paper, resnet8, ..., paper, resnet8, ...), so that a change in a shared
  machine's load hits them alike; each as a ratio to the paper block's in the same round.

A DT epoch is ``T x 391`` such steps, so the ratio is also the ratio of epoch times. The time
ratio is the number to quote for "how much longer would a ResNet run take here"; the FLOP ratio
says how much of that is compute.

Usage::

    nice -n 10 python benchmarks/encoder_cost.py        # paper, resnet:8, resnet:20, resnet:20:32
    python benchmarks/encoder_cost.py --encoders paper resnet:8 --rounds 3 --out /tmp/cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from noprop.bench import cpu_model
from noprop.methods import build_method
from noprop.methods.base import Method
from noprop.spec import DataSpec

CIFAR = DataSpec(input_shape=(3, 32, 32), num_classes=10)


def parse_encoder(text: str) -> dict[str, Any]:
    """``resnet:20:32`` -> the DT settings ``encoder``, ``encoder_depth``, ``encoder_width``."""
    name, *rest = text.split(":")
    settings: dict[str, Any] = {"encoder": name, "conv_padding": "valid"}
    if rest:
        settings["encoder_depth"] = int(rest[0])
    if len(rest) > 1:
        settings["encoder_width"] = int(rest[1])
    return settings


class BlockStep:
    """One training step of block 1 of a NoProp-DT model, with its own AdamW."""

    def __init__(self, method: Method, batch: int) -> None:
        self.method = method
        groups = method.parameter_groups()
        self.params = groups["block1"] + groups["shared"]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-3, weight_decay=1e-3)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, *CIFAR.input_shape, generator=g)
        self.y = torch.randint(0, CIFAR.num_classes, (batch,), generator=g)

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.method.block_loss(1, self.x, self.y).loss.backward()
        self.optimizer.step()

    def flops(self) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            self.method.block_loss(1, self.x, self.y).loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def timed(self, steps: int) -> tuple[float, float]:
        """Wall and CPU seconds per step over ``steps`` steps."""
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self()
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_1min": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", nargs="+", default=["paper", "resnet:8", "resnet:20", "resnet:20:32"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per encoder per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("encoder-cost.json"))
    args = p.parse_args()
    if args.encoders[0] != "paper":
        p.error("the first encoder is the reference of the ratios: put paper first")

    torch.manual_seed(0)
    steps = {e: BlockStep(build_method("dt", CIFAR, parse_encoder(e)), args.batch_size)
             for e in args.encoders}
    rows: dict[str, dict[str, Any]] = {}
    for e, step in steps.items():
        step()                                   # warm-up: allocator, AdamW state
        rows[e] = {"params_per_block": sum(p.numel() for p in step.method.blocks[0].parameters()),
                   "gflop_per_step": step.flops() / 1e9, "wall_s": [], "cpu_s": []}
    for _ in range(args.rounds):
        for e, step in steps.items():
            wall, cpu = step.timed(args.steps)
            rows[e]["wall_s"].append(wall)
            rows[e]["cpu_s"].append(cpu)
    ref = rows[args.encoders[0]]
    for row in rows.values():
        for key in ("wall_s", "cpu_s"):
            row[f"{key}_median"] = statistics.median(row[key])
            row[f"{key}_ratio"] = statistics.median(a / b for a, b in zip(row[key], ref[key], strict=True))
        row["flop_ratio"] = row["gflop_per_step"] / ref["gflop_per_step"]
        row["param_ratio"] = row["params_per_block"] / ref["params_per_block"]

    command = "python benchmarks/encoder_cost.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items())
    result = {"command": command, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine(), "batch_size": args.batch_size, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"# {command}\n# {result['date_utc']}  {result['machine']}")
    print("| encoder | params / block | x paper | GFLOP / step | x paper | s / step (CPU) | x paper (CPU) "
          "| x paper (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    for e, r in rows.items():
        print(f"| {e} | {r['params_per_block']:,} | {r['param_ratio']:.2f} | {r['gflop_per_step']:.1f} | "
              f"{r['flop_ratio']:.2f} | {r['cpu_s_median']:.3f} | {r['cpu_s_ratio']:.2f} "
              f"| {r['wall_s_ratio']:.2f} |")


if __name__ == "__main__":
    main()
