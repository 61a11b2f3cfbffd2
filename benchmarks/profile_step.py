"""Where the time of one training step goes, op by op, against each op's FLOPs.

Profiles (``torch.profiler``, CPU) one step of

    (a) NoProp-DT one block at a time: the T block steps of one batch (T local steps)
    (c) backprop through the same T blocks: one end-to-end step

on CIFAR-10 shapes (3 x 32 x 32, T = 10, batch 128; ``--shape mnist`` for 1 x 28 x 28) in each
precision (``--precisions``: fp32, bf16 autocast), with the step of ``benchmarks/speed.py``
(the trainer's: forward under the precision's autocast, backward, the unit's optimizers). Every
op the step calls at its top level (an autograd node in the backward pass) is put in one bucket:
convolution forward / backward, matmul forward / backward, batch norm, ReLU, max pooling,
dropout (the mask draw, its scaling and the backward multiply), autocast's casts (the ``aten::to``
that autocast inserts in front of a convolution or matmul, and their backward), the optimizer
step, ``zero_grad``, the loss and the rest; "not in an op" is the step's wall time outside any op
(Python, autograd's bookkeeping). The FLOPs of each bucket come from ``FlopCounterMode`` over the
same step, so a bucket's GFLOP/s can be set against the matmul peak measured in the same run.

The profiled step is timed twice: unprofiled (median of ``--steps`` steps) and under the
profiler (which adds a few microseconds per op); the split is given as fractions of the profiled
step, and the unprofiled time is the one to quote.

Usage::

    python benchmarks/profile_step.py --threads 2 --out docs/results/2026-12-03-cpu/profile
    python benchmarks/profile_step.py --precisions bf16 --variants a --steps 3 --top 30
    python benchmarks/profile_step.py --compare old=channels_last=off,dropout=torch \
        dropout=channels_last=off new= --rounds 3 --out DIR       # changes against each other

Prints a table per (variant, precision) and writes ``profile.json`` (all cells) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from measure import load_average, run_record, timed_rounds
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

#: Buckets of the time split, in the order the table prints them.
BUCKETS = ("conv forward", "conv backward", "matmul forward", "matmul backward", "batch norm", "relu",
           "max pool", "dropout", "autocast casts", "optimizer step", "zero_grad", "loss and rest",
           "not in an op")
#: Buckets whose FLOPs the counter sees.
FLOP_BUCKETS = ("conv forward", "conv backward", "matmul forward", "matmul backward")
_BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
_MATMUL = {"linear", "addmm", "mm", "bmm", "matmul", "baddbmm", "addmv", "mv"}
_CASTS = {"to", "_to_copy", "copy_"}
#: Names of the events the split counts (their children are inside them): aten ops, autograd
#: nodes, the optimizers' markers and the library's own (``noprop::dropout``).
_TOP = ("aten::", _BACKWARD_PREFIX, "Optimizer.", "noprop::")


def bucket(name: str, big_mul: bool = False) -> str:
    """The bucket of a top-level profiler event ``name`` (an aten op, an autograd node, a marker).

    ``big_mul``: a ``MulBackward0`` whose output is an activation map (dropout's backward multiply,
    the only large multiply in these blocks)."""
    if name.startswith("Optimizer.step"):
        return "optimizer step"
    if name.startswith("Optimizer.zero_grad"):
        return "zero_grad"
    if name == "noprop::dropout":
        return "dropout"
    backward = name.startswith(_BACKWARD_PREFIX)
    op = name.removeprefix(_BACKWARD_PREFIX).removeprefix("aten::").lower()
    if backward:
        if op.startswith("convolution"):
            return "conv backward"
        if op.startswith(("addmm", "mm", "bmm", "linear")):
            return "matmul backward"
        if op.startswith("nativebatchnorm") or "batchnorm" in op:
            return "batch norm"
        if op.startswith(("relu", "threshold")):
            return "relu"
        if op.startswith("maxpool"):
            return "max pool"
        if op.startswith("tocopy"):
            return "autocast casts"
        if op.startswith("mulbackward") and big_mul:
            return "dropout"
        return "loss and rest"
    if op in ("conv2d", "convolution", "_convolution", "mkldnn_convolution"):
        return "conv forward"
    if op in _MATMUL:
        return "matmul forward"
    if "batch_norm" in op:
        return "batch norm"
    if op in ("relu", "relu_", "clamp_min"):
        return "relu"
    if "max_pool" in op:
        return "max pool"
    if "dropout" in op or op.startswith("bernoulli"):
        return "dropout"
    if op in _CASTS:
        return "autocast casts"
    return "loss and rest"


def _is_top(event: Any) -> bool:
    """An aten op, autograd node, optimizer marker or ``noprop::`` marker not inside another."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(_TOP):
            return False
        parent = parent.cpu_parent
    return event.name.startswith(_TOP)


def _output_numel(event: Any) -> int:
    shapes = [s for s in (event.input_shapes or []) if s]
    return max((int(torch.tensor(s).prod()) for s in shapes), default=0)


def time_split(events: Iterable[Any], wall_us: float) -> dict[str, float]:
    """Microseconds per bucket of one profiled step (``wall_us``: its wall time under the profiler).

    A top-level convolution or matmul forward under autocast has its casts (direct ``aten::to``
    children) moved to the casts bucket; a top-level op inside an optimizer marker counts there."""
    spent: dict[str, float] = defaultdict(float)
    for e in events:
        if not _is_top(e):
            continue
        name = e.name
        kind = bucket(name, big_mul=name.endswith("MulBackward0") and _big_mul(e))
        total = e.cpu_time_total
        if kind in ("conv forward", "matmul forward"):
            casts = sum(c.cpu_time_total for c in e.cpu_children if c.name in ("aten::to", "aten::_to_copy"))
            spent["autocast casts"] += casts
            total -= casts
        spent[kind] += total
    spent["not in an op"] = max(wall_us - sum(spent.values()), 0.0)
    return {k: spent.get(k, 0.0) for k in BUCKETS}


def _big_mul(event: Any) -> bool:
    """Whether an autograd ``MulBackward0`` node multiplies an activation map (>= 64k elements)."""
    return any(_output_numel(c) >= 65536 for c in event.cpu_children) or _output_numel(event) >= 65536


def top_ops(events: Iterable[Any], rows: int) -> list[dict[str, Any]]:
    """The ``rows`` aten ops with the most self time: name, calls, self microseconds."""
    self_us: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for e in events:
        if e.name.startswith("aten::"):
            self_us[e.name] += e.self_cpu_time_total
            calls[e.name] += 1
    ranked = sorted(self_us, key=self_us.__getitem__, reverse=True)[:rows]
    return [{"op": n, "calls": calls[n], "self_us": round(self_us[n], 1)} for n in ranked]


def phase_flops(variant: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """FLOPs of one step per bucket: convolution and matmul, forward and backward."""
    flops = dict.fromkeys(FLOP_BUCKETS, 0)
    for i in range(len(variant.units)):
        with FlopCounterMode(display=False) as forward:
            loss = variant.forward(i, x, y)
        with FlopCounterMode(display=False) as backward:
            variant.backward(loss)
        variant.optimizer_step(i)
        for counter, side in ((forward, "forward"), (backward, "backward")):
            for op, n in counter.get_flop_counts().get("Global", {}).items():
                kind = "conv" if "convolution" in str(op) else "matmul"
                flops[f"{kind} {side}"] += n
    return flops


def profiled_step(variant: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, float], Any, float]:
    """One step under the profiler: microseconds per bucket, the profiler's events, wall seconds."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        variant.step(x, y)
        profiled = time.perf_counter() - start
    events = prof.events()
    return time_split(events, profiled * 1e6), events, profiled


def shares(split: dict[str, float]) -> dict[str, float]:
    """A split as shares of the step, buckets under half a percent left out (what ``speed.py`` reports)."""
    total = sum(split.values()) or 1.0
    return {k: round(v / total, 3) for k, v in split.items() if v / total >= 0.005}


def profile_variant(variant: Any, x: torch.Tensor, y: torch.Tensor, *, steps: int, peak: float,
                    rows: int = 25) -> dict[str, Any]:
    """One variant's step: unprofiled time, the profiled time split, FLOPs per bucket, top ops."""
    variant.step(x, y)  # warm: kernels chosen, optimizer state made
    seconds = timed_rounds({"step": lambda: variant.step(x, y)}, steps)["step"].wall
    flops = phase_flops(variant, x, y)
    split, events, profiled = profiled_step(variant, x, y)
    total_us = sum(split.values())
    step_s = statistics.median(seconds)
    model_flops = sum(flops.values())
    buckets = {}
    for k, us in split.items():
        row: dict[str, Any] = {"ms": round(us / 1e3, 2), "fraction": round(us / total_us, 4)}
        if k in flops:
            row["gflop"] = round(flops[k] / 1e9, 3)
            row["gflop_per_s"] = round(flops[k] / (us / 1e6) / 1e9, 1) if us else None
            row["fraction_of_peak"] = round(flops[k] / (us / 1e6) / peak, 3) if us else None
        buckets[k] = row
    return {
        "step_seconds": round(step_s, 4),
        "step_seconds_all": [round(s, 4) for s in seconds],
        "profiled_step_seconds": round(profiled, 4),
        "gflop_per_step": round(model_flops / 1e9, 3),
        "gflop_per_second": round(model_flops / step_s / 1e9, 1),
        "fraction_of_matmul_peak": round(model_flops / step_s / peak, 3),
        "split": buckets,
        "top_ops": top_ops(events, rows),
    }


def compare(variants: dict[str, Any], x: torch.Tensor, y: torch.Tensor, *, rounds: int, flops: float,
            peak_of: Any) -> dict[str, Any]:
    """Step time of each of ``variants`` (name -> variant), interleaved round by round with a matmul
    peak per round; each one's median round speed-up over the first and its fraction of the peak,
    by the wall clock and by the process's CPU time (``peak_of(cpu_time)``). With one torch thread
    on a shared machine the CPU time counts the step's own work only, not the time other jobs held
    the core, so its ratios hold where wall-clock ones swing."""
    for v in variants.values():
        v.step(x, y)
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    peaks, cpu_peaks = [], []
    for _ in range(rounds):
        peaks.append(peak_of(False))
        cpu_peaks.append(peak_of(True))
        for k, v in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            v.step(x, y)
            seconds[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    first = next(iter(variants))

    def ratio(times: dict[str, list[float]], k: str) -> float:
        return round(statistics.median(b / a for a, b in zip(times[k], times[first], strict=True)), 3)

    def fraction(times: list[float], pks: list[float]) -> float:
        return round(statistics.median(flops / t / pk for t, pk in zip(times, pks, strict=True)), 3)

    return {k: {"step_seconds": round(statistics.median(s), 4),
                "speedup_over_" + first: ratio(seconds, k),
                "median_round_fraction_of_matmul_peak": fraction(s, peaks),
                "cpu_step_seconds": round(statistics.median(cpu[k]), 4),
                "cpu_time_speedup_over_" + first: ratio(cpu, k),
                "cpu_time_fraction_of_matmul_peak": fraction(cpu[k], cpu_peaks)}
            for k, s in seconds.items()} | {
        "matmul_peak_gflop_per_second": [round(pk / 1e9, 1) for pk in peaks],
        "matmul_peak_gflop_per_cpu_second": [round(pk / 1e9, 1) for pk in cpu_peaks]}


def split_table(cell: dict[str, Any]) -> str:
    lines = ["| bucket | ms | share | GFLOP | GFLOP/s | of peak |", "|---|---|---|---|---|---|"]
    for name, row in cell["split"].items():
        extra = (f"{row['gflop']:.2f} | {row['gflop_per_s'] or 0:.0f} | {row['fraction_of_peak'] or 0:.2f}"
                 if "gflop" in row else "| |")
        lines.append(f"| {name} | {row['ms']:.1f} | {row['fraction']:.3f} | {extra} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from speed import SHAPES, VARIANTS, Variant, matmul_peak_flops  # benchmarks/ on sys.path

    from noprop.device import retain_freed_memory
    from noprop.methods import build_method

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="cifar-10", choices=list(SHAPES))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--variants", nargs="+", default=["a", "c"], choices=("a", "b", "c"))
    p.add_argument("-T", "--num-blocks", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="unprofiled timed steps per cell")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--top", type=int, default=25, help="aten ops listed by self time")
    p.add_argument("--speed", nargs="*", default=[], metavar="NAME=VALUE",
                   help="speed switches of the step (benchmarks/speed.py --speed)")
    p.add_argument("--compare", nargs="+", default=None, metavar="NAME=SWITCH,SWITCH",
                   help="instead of profiling: time these step configurations against each other, "
                        "interleaved (the first is the reference), e.g. old=channels_last=off,dropout=torch "
                        "new=")
    p.add_argument("--rounds", type=int, default=3, help="rounds of --compare")
    p.add_argument("--out", type=Path, default=None, help="write profile.json (compare.json) here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()
    device = torch.device("cpu")
    spec = SHAPES[args.shape]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, *spec.input_shape, generator=g)
    y = torch.randint(0, spec.num_classes, (args.batch_size,), generator=g)
    load_before = os.getloadavg()[0]
    cells: list[dict[str, Any]] = []
    for precision in (args.precisions if args.compare else []):
        for key in args.variants:
            name = "backprop" if key == "c" else "dt"
            hp = {"num_blocks": args.num_blocks, **({"fused": True} if key == "b" else {})}
            configs = {}
            for item in args.compare:
                label, _, switches = item.partition("=")
                torch.manual_seed(0)
                configs[label] = Variant(key, build_method(name, spec, hp), device, precision,
                                         speed=[sw for sw in switches.split(",") if sw])
            flops = sum(phase_flops(next(iter(configs.values())), x, y).values())
            def peak_of(cpu_time: bool, p: str = precision) -> float:
                return matmul_peak_flops(device, args.matmul_size, reps=3, precision=p, cpu_time=cpu_time)

            cell = compare(configs, x, y, rounds=args.rounds, flops=flops, peak_of=peak_of)
            cell.update(variant=key, name=VARIANTS[key], precision=precision, compared=args.compare,
                        gflop_per_step=round(flops / 1e9, 2))
            cells.append(cell)
            print(f"({key}) {precision}: " + json.dumps(cell), flush=True)
    for precision in ([] if args.compare else args.precisions):
        peak = matmul_peak_flops(device, args.matmul_size, reps=5, precision=precision)
        for key in args.variants:
            torch.manual_seed(0)
            name = "backprop" if key == "c" else "dt"
            hp = {"num_blocks": args.num_blocks, **({"fused": True} if key == "b" else {})}
            variant = Variant(key, build_method(name, spec, hp), device, precision, speed=args.speed)
            cell = profile_variant(variant, x, y, steps=args.steps, peak=peak, rows=args.top)
            cell.update(variant=key, name=VARIANTS[key], precision=precision,
                        matmul_peak_gflop_per_second=round(peak / 1e9, 1))
            cells.append(cell)
            print(f"\n## ({key}) {VARIANTS[key]}, {precision}: {cell['step_seconds'] * 1e3:.0f} ms per batch "
                  f"(profiled {cell['profiled_step_seconds'] * 1e3:.0f} ms), "
                  f"{cell['gflop_per_step']:.1f} GFLOP, "
                  f"{cell['fraction_of_matmul_peak']:.2f} of the {precision} matmul peak "
                  f"({peak / 1e9:.0f} GFLOP/s)\n", flush=True)
            print(split_table(cell))
            print("\ntop ops by self time: " + ", ".join(
                f"{o['op'].removeprefix('aten::')} {o['self_us'] / 1e3:.1f} ms x{o['calls']}"
                for o in cell["top_ops"][:12]))
    results = {
        **run_record("profile_step.py", argv),
        "load_average_1min": load_average(load_before),
        "settings": {"shape": args.shape, "num_blocks": args.num_blocks, "batch_size": args.batch_size,
                     "speed": args.speed},
        "cells": cells,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "compare.json" if args.compare else "profile.json"
        (args.out / name).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
