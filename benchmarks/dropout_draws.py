"""How long one block step's dropout masks take to draw on the CPU, by way of drawing them.

The paper's block has three dropouts; on CIFAR-10 shapes at batch 128 their inputs are
32 x 15 x 15, 64 x 13 x 13 and 128 x 5 x 5 per image (2.7 M mask elements per block step). Timed,
median over ``--rounds`` rounds, milliseconds per block step (all three masks):

* draws only: ``bernoulli_`` (what ``F.dropout`` draws), ``rand(float64) < 1 - p`` (``exact``:
  the same draws), ``rand(float32) < 1 - p`` (one 32-bit draw per element; not shipped),
  ``fast_keep_mask`` (``fast``: one 64-bit draw per four elements), and ``fast`` split in two
  halves drawn by two generators in two threads (not shipped: a second generator state to seed
  and checkpoint);
* forward and backward of :class:`noprop.dropout.Dropout` in each ``rng``, and of ``F.dropout``,
  on bf16 channels-last and float32 channels-first activations (the step's two layouts).

Usage::

    python benchmarks/dropout_draws.py --threads 1 --rounds 9 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from measure import load_average, median_ms, run_record
from torch.nn import functional as F

from noprop.dropout import Dropout, fast_keep_mask

#: The three dropout inputs of the paper's block on 3 x 32 x 32 images (valid convolutions).
SHAPES = ((32, 15, 15), (64, 13, 13), (128, 5, 5))
P = 0.2


def two_thread_fast(shapes: list[tuple[int, ...]], pool: ThreadPoolExecutor,
                    generators: tuple[torch.Generator, torch.Generator]) -> None:
    """``fast`` masks, each drawn in two halves by two generators at once (torch ops release the GIL)."""
    for shape in shapes:
        n = 1
        for d in shape:
            n *= d
        halves = (n // 2, n - n // 2)
        list(pool.map(lambda h, g: fast_keep_mask((h,), 1 - P, generator=g), halves, generators))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [(args.batch_size, *s) for s in SHAPES]
    keep = 1 - P
    pool = ThreadPoolExecutor(2)
    generators = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    draws = {
        "bernoulli_ (F.dropout)": lambda: [torch.empty(s).bernoulli_(keep) for s in shapes],
        "rand float64 (exact)": lambda: [torch.rand(s, dtype=torch.float64) < keep for s in shapes],
        "rand float32": lambda: [torch.rand(s) < keep for s in shapes],
        "64-bit words, 4 x 16 bits (fast)": lambda: [fast_keep_mask(s, keep) for s in shapes],
        "fast, two generators in two threads": lambda: two_thread_fast(shapes, pool, generators),
    }
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {
        **run_record("dropout_draws.py", argv),
        "threads": torch.get_num_threads(),
        "mask_elements_per_block_step": sum(s[0] * s[1] * s[2] * s[3] for s in shapes),
        "draw_ms_per_block_step": {name: median_ms(fn, args.rounds) for name, fn in draws.items()},
    }
    layers = {"F.dropout": None, **{rng: Dropout(P, rng=rng).train() for rng in ("exact", "fast")}}
    for layout, dtype, memory in (("bf16 channels-last", torch.bfloat16, torch.channels_last),
                                  ("fp32 channels-first", torch.float32, torch.contiguous_format)):
        xs = [torch.randn(s, dtype=dtype).contiguous(memory_format=memory).requires_grad_() for s in shapes]

        def forward_backward(layer: Dropout | None, xs: list[torch.Tensor] = xs) -> None:
            for x in xs:
                out = F.dropout(x, P, training=True) if layer is None else layer(x)
                out.backward(torch.ones_like(out))

        results[f"forward_backward_ms_per_block_step, {layout}"] = {
            name: median_ms(lambda layer=layer: forward_backward(layer), args.rounds)
            for name, layer in layers.items()}
    pool.shutdown()
    results["load_average_1min"] = load_average(load_before)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
