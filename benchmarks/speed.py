"""Training speed of NoProp-DT one block at a time, fused, and backprop through the same blocks.

Measures, in one process and back to back, for each data shape (``--shapes``: MNIST 1 x 28 x 28,
CIFAR-10 3 x 32 x 32; 10 classes, the paper's block, T = 10, batch 128) and each precision
(``--precisions``: fp32, bf16 autocast):

    (a) NoProp-DT, one block at a time: T local steps per batch (interleaved order)
    (b) NoProp-DT, fused: one step over all T blocks per batch (``fused=True``; vmap on CUDA, loop on CPU)
    (c) backprop through the same T blocks (``backprop``): one end-to-end step per batch
    (d), (e) on CUDA: (b) and (c) with each step recorded once as a CUDA graph and replayed
        (``--cuda-graphs``, :mod:`noprop.training.graphs`)

training samples per second (batches x batch size / seconds) and peak memory, each as a ratio to
(c) in the same shape and precision; each cell's bf16/fp32 speed-up is reported beside them.
On a shared CPU the wall clock mostly measures the other jobs, so the process's CPU time
(``time.process_time``) is reported beside it, and the ratios are also given per round (median);
the achieved FLOP/s of (b) against the machine's matmul peak (a large matmul timed in the same
run); and the T-step sampler's images per second, unfused and fused.

The variants run in alternating rounds (a, b, c, a, b, c, ...) so that a change in the load of a
shared machine hits all three alike. Peak memory: on CUDA ``max_memory_allocated``; on CPU the
live tensor bytes of one step, counted by a dispatch mode (see :class:`PeakTensorMemory`), on
top of the parameters, buffers and optimizer state.

Usage::

    nice -n 10 python benchmarks/speed.py                 # CPU: MNIST and CIFAR-10 shapes, fp32 and bf16
    python benchmarks/speed.py --shapes mnist --precisions fp32      # one cell, about 5 minutes
    python benchmarks/speed.py --device cuda --steps 20   # GPU

bf16 on a CPU without native bf16 instructions (no AVX-512-BF16 / AMX: ``lscpu``) is emulated and
slow; the results record ``cpu_native_bf16`` so a table says which kind of CPU it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

import torch
from measure import machine
from profile_step import profiled_step, shares
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from noprop.config import RunConfig
from noprop.device import (
    bf16_autocast,
    channels_last_for,
    cpu_has_native_bf16,
    retain_freed_memory,
    step_layout,
)
from noprop.dropout import Dropout, dropout_rng_for, use_dropout_rng
from noprop.encoders import ImageBranch
from noprop.methods import Method, build_method
from noprop.spec import DataSpec
from noprop.training.graphs import CudaGraphRecorder, GraphedSteps
from noprop.training.optimizers import make_optimizers, optimizer_state

MNIST = DataSpec.image(channels=1, height=28, width=28, num_classes=10)
SHAPES = {"mnist": MNIST, "cifar-10": DataSpec.image(channels=3, height=32, width=32, num_classes=10)}
PRECISIONS = ("fp32", "bf16")
VARIANTS = {"a": "NoProp-DT, one block at a time", "b": "NoProp-DT, fused", "c": "backprop, same blocks",
            "d": "NoProp-DT, fused, CUDA graph", "e": "backprop, CUDA graph"}
#: Variants whose step is a graph replay: a FLOP counter or profiler sees none of their ops.
GRAPHED = ("d", "e")


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created inside the ``with`` block and alive at once.

    Every op's outputs pass through ``__torch_dispatch__`` (under vmap too: the mode sees the
    physical, block-stacked tensors). A storage is counted when first seen and uncounted when
    Python's weakref to it dies. Storages that existed before (``existing``) are never counted.
    """

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {t.untyped_storage().data_ptr(): 0 for t in existing}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._sizes:
                    self._sizes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


class Variant:
    """A method with its optimizers and a function that takes one training step on a batch.

    ``speed``: ``NAME=VALUE`` switches of the step, each measured against its default in
    docs/benchmarks.md ("Where a CPU step's time goes"): ``channels_last=on|all|off`` (the images,
    and with ``all`` also the convolution weights, channels-last; default: the trainer's choice,
    :func:`noprop.device.channels_last_for`), ``dropout=torch`` (PyTorch's ``nn.Dropout`` in
    place of :class:`noprop.dropout.Dropout`, the same masks drawn the old way),
    ``dropout=exact|fast`` (the run setting ``dropout_rng``; default: the trainer's choice,
    :func:`noprop.dropout.dropout_rng_for`, ``fast`` for bf16 on a CPU),
    ``relu_pool=paper`` (the paper's ReLU-then-pool order in place of the image branch's
    pool-then-ReLU, the same values), ``dropout_grad=autograd`` (the mask product's gradient in the
    layout it arrives in, as before :class:`noprop.dropout.MaskProduct`), ``compile=blocks``
    (``torch.compile`` of each block; inductor draws its own dropout masks)."""

    def __init__(self, key: str, method: Method, device: torch.device, precision: str = "fp32",
                 speed: Iterable[str] = ()) -> None:
        self.key = key
        self.precision = precision
        self.switches = parse_switches(speed)
        self.method = method.to(device).train()
        layout = self.switches.get("channels_last")
        self.channels_last = layout == "all" or channels_last_for(layout or "auto", precision, device)
        if layout == "all":
            self.method.to(memory_format=torch.channels_last)
        if self.switches.get("dropout") == "torch":
            use_torch_dropout(self.method)
        else:
            draw = dropout_rng_for(self.switches.get("dropout", "auto"), precision, device)
            use_dropout_rng(self.method, draw)
        if self.switches.get("relu_pool") == "paper":
            relu_before_pool(self.method)
        if self.switches.get("dropout_grad") == "autograd":
            for module in self.method.modules():
                if isinstance(module, Dropout):
                    module.product = torch.mul
        if self.switches.get("compile") == "blocks":  # inductor, each block (the first step compiles)
            for block in getattr(self.method, "blocks", []):
                block.compile()
        graphed = key in GRAPHED
        self.optimizers = make_optimizers(self.method, RunConfig(method=method.name), capturable=graphed)
        self.units = self.method.training_units()
        self.device = device
        self.graphs = (GraphedSteps(self.unit_step, self.state_tensors, list(self.optimizers.values()),
                                    CudaGraphRecorder(device)) if graphed else None)
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.batches = 0
        self.round_seconds: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Every training unit once on (x, y): T local steps for (a), one step for the others."""
        for i in range(len(self.units)):
            if self.graphs is None or self.graphs(i, x, y) is None:
                self.unit_step(i, x, y)

    def unit_step(self, i: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on training unit ``i`` (what a graph of (d), (e) records)."""
        loss = self.forward(i, x, y)
        self.backward(loss)
        self.optimizer_step(i)
        return {"loss": loss.detach()}

    def forward(self, i: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Unit ``i``'s loss, under bf16 autocast for bf16 (and on CUDA, the fused step's own choice)."""
        on = self.precision == "bf16" or self.device.type == "cuda"
        with bf16_autocast(self.device) if on else nullcontext():
            return self.method.unit_loss(i, step_layout(x, self.channels_last), y).loss

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self, i: int) -> None:
        """Step the optimizers of unit ``i``'s groups and drop their gradients, as the trainer does."""
        for group in self.units[i].groups:
            if group in self.optimizers:
                self.optimizers[group].step()
                self.optimizers[group].zero_grad(set_to_none=True)

    def state_tensors(self) -> list[torch.Tensor]:
        """Parameters, buffers and optimizer state: the memory a step starts with."""
        return [*self.method.parameters(), *self.method.buffers(), *optimizer_state(self.optimizers.values())]


def use_torch_dropout(model: nn.Module) -> None:
    """Turn every :class:`noprop.dropout.Dropout` of ``model`` back into PyTorch's ``nn.Dropout``
    (same masks, drawn the old way: the "before" of docs/benchmarks.md)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.__class__ = nn.Dropout


def relu_before_pool(model: nn.Module) -> None:
    """Put every image branch's ReLU back in front of its max pooling (the paper's order; the
    branch pools first, which computes the same on a quarter of the elements)."""
    for module in model.modules():
        if isinstance(module, ImageBranch):
            layers = list(module.features)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
                    layers[i], layers[i + 1] = layers[i + 1], layers[i]
            module.features = nn.Sequential(*layers)


def parse_switches(items: Iterable[str]) -> dict[str, str]:
    """``["channels_last=input", ...]`` as a dict; a one-line error for an item without ``=``."""
    switches = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"speed switch {item!r} is not NAME=VALUE")
        switches[name] = value
    return switches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    return timed_both(fn, device)[0]


def timed_both(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def matmul_peak_flops(device: torch.device, n: int, reps: int, precision: str = "fp32",
                      cpu_time: bool = False) -> float:
    """FLOP/s of an ``n x n`` matmul in the cell's dtype (bf16 on CUDA, as the fused step uses there);
    ``cpu_time``: per second of the process's CPU time instead of the wall clock."""
    dtype = torch.bfloat16 if device.type == "cuda" or precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = min(timed_both(lambda: a @ b, device)[1 if cpu_time else 0] for _ in range(reps))
    return 2 * n**3 / best


def peak_memory_mb(variant: Variant, x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak memory of one training step, state included (after a warm step created the state)."""
    static = sum(t.untyped_storage().nbytes() for t in {id(t): t for t in variant.state_tensors()}.values())
    if variant.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(variant.device)
        variant.step(x, y)
        return torch.cuda.max_memory_allocated(variant.device) / 2**20
    with PeakTensorMemory(variant.state_tensors()) as tracker:
        variant.step(x, y)
    return (static + tracker.peak) / 2**20


def step_flops(variant: Variant, x: torch.Tensor, y: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        variant.step(x, y)
    return counter.get_total_flops()


def sampler_images_per_second(method: Method, x: torch.Tensor, fused: bool, reps: int) -> float:
    method.eval()
    method.fused = fused
    with torch.inference_mode():
        method.predict_logits(x[:8])
        seconds = min(timed(lambda: method.predict_logits(x), x.device) for _ in range(reps))
    method.fused = True
    method.train()
    return len(x) / seconds


def profile_table(variant: Variant, x: torch.Tensor, y: torch.Tensor, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if variant.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        variant.step(x, y)
        sync(variant.device)
    key = "self_cuda_time_total" if variant.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def measure(spec: DataSpec, precision: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """One cell of the matrix: (a), (b), (c) on ``spec``-shaped data in ``precision``."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * max(args.steps, 4)
    data_x = torch.randn(n, *spec.input_shape, generator=g).to(device)
    data_y = torch.randint(0, spec.num_classes, (n,), generator=g).to(device)
    hp = {"num_blocks": args.num_blocks}
    on = {"device": device, "precision": precision, "speed": args.speed}
    variants = {
        "a": Variant("a", build_method("dt", spec, hp), **on),
        "b": Variant("b", build_method("dt", spec, {**hp, "fused": True}), **on),
        "c": Variant("c", build_method("backprop", spec, hp), **on),
    }
    if device.type == "cuda":
        variants["d"] = Variant("d", build_method("dt", spec, {**hp, "fused": True}), **on)
        variants["e"] = Variant("e", build_method("backprop", spec, hp), **on)

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (i * args.batch_size) % (n - args.batch_size + 1)
        return data_x[start : start + args.batch_size], data_y[start : start + args.batch_size]

    x0, y0 = batch(0)
    warmup = {}
    for k, v in variants.items():  # warm-up: kernels chosen, optimizer state created, memory reserved
        warmup[k] = timed(lambda v=v: v.step(x0, y0), device)  # with compile=blocks: the compilation
    round_peaks = []
    for r in range(args.rounds):
        # the matmul peak in every round, beside the variants, so that each round has its own ratio
        round_peaks.append(matmul_peak_flops(device, args.matmul_size, reps=3, precision=precision))
        for v in variants.values():
            def run(v: Variant = v, r: int = r) -> None:
                for i in range(args.steps):
                    v.step(*batch(r * args.steps + i))
            wall, cpu = timed_both(run, device)
            v.seconds += wall
            v.cpu_seconds += cpu
            v.round_seconds.append(wall)
            v.batches += args.steps
        rates = (f"({k}) {v.batches * args.batch_size / v.seconds:.1f}" for k, v in variants.items())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(rates) + " samples/s", flush=True)

    memory = {k: peak_memory_mb(v, x0, y0) for k, v in variants.items()}
    flops = {k: step_flops(v, x0, y0) for k, v in variants.items() if k not in GRAPHED}
    peak = max(round_peaks)
    sampler_x = data_x[: args.sampler_batch] if len(data_x) >= args.sampler_batch else data_x
    sampler = {name: sampler_images_per_second(variants["b"].method, sampler_x, fused, reps=3)
               for name, fused in (("unfused", False), ("fused", True))}

    throughput = {k: v.batches * args.batch_size / v.seconds for k, v in variants.items()}
    cpu_throughput = {k: v.batches * args.batch_size / v.cpu_seconds for k, v in variants.items()}
    per_round = {k: sorted(variants["c"].round_seconds[r] / v.round_seconds[r] for r in range(args.rounds))
                 for k, v in variants.items()}
    # model FLOPs: the work of T blocks, counted on (a) for (a) and (b); the counter sees more in
    # (b)'s vmapped convolution backward (docs/benchmarks.md), which would flatter the fraction
    work = {k: flops["c" if k in ("c", "e") else "a"] for k in variants}
    fused_flops = work["b"] * variants["b"].batches / variants["b"].seconds
    fraction = {k: work[k] * v.batches / v.seconds / peak for k, v in variants.items()}
    round_fraction = {k: sorted(work[k] * args.steps / v.round_seconds[r] / round_peaks[r]
                                for r in range(args.rounds)) for k, v in variants.items()}
    # where a step's time goes (benchmarks/profile_step.py's buckets), one profiled step each
    split = {k: shares(profiled_step(v, x0, y0)[0]) for k, v in variants.items()
             if k not in GRAPHED and device.type == "cpu"}
    if args.profile:
        for k in ("a", "b"):
            print(f"\n## profile of one step of ({k}) {VARIANTS[k]}\n")
            print(profile_table(variants[k], x0, y0, rows=12))
    graphs = {}
    if "d" in variants:
        graphs = {
            "graph_speedup_over_eager": {"fused dt": round(throughput["d"] / throughput["b"], 3),
                                         "backprop": round(throughput["e"] / throughput["c"], 3)},
            "graphed_fused_dt_over_graphed_backprop": round(throughput["d"] / throughput["e"], 3),
            "graph_errors": {k: variants[k].graphs.error for k in GRAPHED},
        }
    return {
        **graphs,
        "samples_per_second": {k: round(v, 2) for k, v in throughput.items()},
        "throughput_ratio_to_backprop": {k: round(v / throughput["c"], 3) for k, v in throughput.items()},
        "fused_speedup_over_one_block_at_a_time": round(throughput["b"] / throughput["a"], 3),
        "median_round_ratio_to_backprop": {k: round(v[len(v) // 2], 3) for k, v in per_round.items()},
        "samples_per_cpu_second": {k: round(v, 2) for k, v in cpu_throughput.items()},
        "cpu_time_ratio_to_backprop": {k: round(v / cpu_throughput["c"], 3)
                                       for k, v in cpu_throughput.items()},
        "fused_speedup_over_one_block_at_a_time_cpu_time": round(cpu_throughput["b"] / cpu_throughput["a"],
                                                                 3),
        "peak_memory_mb": {k: round(v, 1) for k, v in memory.items()},
        "memory_ratio_to_backprop": {k: round(v / memory["c"], 3) for k, v in memory.items()},
        "gflop_per_step": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "fused_model_gflop_per_second": round(fused_flops / 1e9, 2),
        "matmul_peak_gflop_per_second": round(peak / 1e9, 2),
        "matmul_peak_gflop_per_second_per_round": [round(x / 1e9, 1) for x in round_peaks],
        "fused_fraction_of_matmul_peak": round(fused_flops / peak, 3),
        "fraction_of_matmul_peak": {k: round(v, 3) for k, v in fraction.items()},
        "median_round_fraction_of_matmul_peak": {k: round(v[len(v) // 2], 3)
                                                 for k, v in round_fraction.items()},
        "time_split": split,
        "warmup_step_seconds": {k: round(v, 2) for k, v in warmup.items()},
        "speed_switches": parse_switches(args.speed),
        "channels_last": {k: v.channels_last for k, v in variants.items()},
        "sampler_images_per_second": {k: round(v, 1) for k, v in sampler.items()},
    }


def matrix_table(cells: list[dict[str, Any]]) -> str:
    """samples/s of (a), (b), (c) per cell, with the ratios to (c) and, for bf16, to fp32."""
    lines = ["| shape | precision | (a) one block | (b) fused | (c) backprop | (a)/(c) | (b)/(c) | "
             "of matmul peak (a, b, c) | bf16/fp32 (a, b, c) | peak MB (a, b, c) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        sps, ratio, mem = c["samples_per_second"], c["throughput_ratio_to_backprop"], c["peak_memory_mb"]
        up, frac = c.get("speedup_over_fp32"), c["fraction_of_matmul_peak"]
        lines.append(f"| {c['shape']} | {c['precision']} | {sps['a']:.1f} | {sps['b']:.1f} | "
                     f"{sps['c']:.1f} | "
                     f"{ratio['a']:.2f} | {ratio['b']:.2f} | "
                     f"{', '.join(f'{frac[k]:.2f}' for k in 'abc')} | "
                     f"{', '.join(f'{up[k]:.2f}' for k in 'abc') if up else '–'} | "
                     f"{mem['a']:.0f}, {mem['b']:.0f}, {mem['c']:.0f} |")
    return "\n".join(lines)


def split_table(cells: list[dict[str, Any]]) -> str:
    """Each cell's time split (share of one profiled step per bucket) for (a), (b), (c)."""
    lines = []
    for c in cells:
        if not c.get("time_split"):
            continue
        lines.append(f"time split, {c['shape']} {c['precision']}:")
        for k, split in c["time_split"].items():
            lines.append(f"  ({k}) " + ", ".join(f"{name} {share:.2f}" for name, share in split.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("-T", "--num-blocks", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed batches per variant per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a), (b), (c)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--sampler-batch", type=int, default=512)
    p.add_argument("--profile", action="store_true", help="print the top ops of one step of (a) and (b)")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--speed", nargs="*", default=[], metavar="NAME=VALUE",
                   help="speed switches of every variant's step (see Variant): channels_last=on|all|off, "
                        "dropout=torch|exact|fast, dropout_grad=autograd, relu_pool=paper, compile=blocks")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # the fused step switches this on for the whole process at its first CPU call; switch it on
    # before anything runs so that (a), (b) and (c) all run with the same allocator
    allocator = retain_freed_memory() if device.type == "cpu" else None
    started = time.perf_counter()
    load_before = os.getloadavg()
    cells = []
    for shape in args.shapes:
        for precision in args.precisions:
            print(f"== {shape}, {precision}", flush=True)
            cells.append(measure(SHAPES[shape], precision, device, args))
            cells[-1].update(shape=shape, precision=precision)
    for cell in cells:
        fp32 = next((c for c in cells if c["shape"] == cell["shape"] and c["precision"] == "fp32"), None)
        if fp32 is not None and cell is not fp32:
            cell["speedup_over_fp32"] = {k: round(v / fp32["samples_per_second"][k], 3)
                                         for k, v in cell["samples_per_second"].items()}
    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "device": str(device),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "cpu_allocator_retains_freed_memory": allocator,
        "settings": {k: getattr(args, k) for k in ("num_blocks", "batch_size", "steps", "rounds")},
        "cells": cells,
        "benchmark_seconds": round(time.perf_counter() - started, 1),
    }
    print(matrix_table(cells))
    print(split_table(cells))
    for c in cells:
        if "graph_speedup_over_eager" in c:
            print(f"CUDA graphs, {c['shape']} {c['precision']}: (d) {c['samples_per_second']['d']:.0f}, "
                  f"(e) {c['samples_per_second']['e']:.0f} samples/s; "
                  f"graph/eager {c['graph_speedup_over_eager']}; "
                  f"(d)/(e) {c['graphed_fused_dt_over_graphed_backprop']}")
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
