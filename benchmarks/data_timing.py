"""Measure the data path against training: ``python benchmarks/data_timing.py [--data-dir DIR]``.

Prints, for a real dataset on disk (default: Fashion-MNIST under ``--data-dir``) and for a
CIFAR-shaped tensor (50,000 x 3 x 32 x 32; the real CIFAR files may not be present):

* load: verifying (md5 of every file) and decoding into normalised tensors;
* per batch of 128: drawing a shuffled batch, with and without the CIFAR crop-and-flip;
* per batch of 128: one NoProp-DT training step (block forward, backward, AdamW step);

and the ratio of the last two, which is the share of an epoch the data path costs (an epoch is
T passes of both, so T cancels). Numbers from the development machine are in docs/data.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from noprop.data import CATALOG, ClassificationData, batches, load_dataset, locate_verified
from noprop.data.augment import cifar_augmentation


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` runs, in seconds (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _per_batch_draw(data: ClassificationData, augment: bool, repeat: int, n_batches: int = 100) -> float:
    g = torch.Generator().manual_seed(0)
    transform = data.train_transform if augment else None
    it = batches(data.train_x, data.train_y, 128, shuffle=True, generator=g, transform=transform)
    next(it)  # the shuffle itself (once per pass) is in here; it is ~1 ms per pass
    return _best(lambda: [next(it) for _ in range(n_batches)], repeat) / n_batches


def _per_batch_step(data: ClassificationData, repeat: int, steps: int = 4) -> float:
    from noprop.config import RunConfig
    from noprop.run import build_trainer

    config = RunConfig(dataset=data.name, num_blocks=2, device="cpu", progress=False, batch_size=128)
    small = ClassificationData(data.name, data.train_x[:2048], data.train_y[:2048], data.test_x[:128],
                               data.test_y[:128], data.num_classes)
    trainer = build_trainer(config, small)
    xb, yb = small.train_x[:128], small.train_y[:128]
    trainer.train_step(0, xb, yb)  # warm-up
    return _best(lambda: [trainer.train_step(i % 2, xb, yb) for i in range(steps)], repeat) / steps


def _cifar_shaped() -> ClassificationData:
    info = CATALOG["cifar-10"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50000, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (50000,), generator=g)
    return ClassificationData("cifar-10", x, y, x[:1000], y[:1000], 10,
                              train_transform=cifar_augmentation(info.mean, info.std))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    info = CATALOG[args.dataset]
    verify = _best(lambda: locate_verified(info, args.data_dir, download=False), args.repeat)
    total = _best(lambda: load_dataset(args.dataset, args.data_dir, download=False), args.repeat)
    print(f"{args.dataset} load: {total:.2f} s (of which md5 verification {verify:.2f} s)")

    for data in (load_dataset(args.dataset, args.data_dir, download=False), _cifar_shaped()):
        draw = _per_batch_draw(data, augment=False, repeat=args.repeat)
        step = _per_batch_step(data, repeat=args.repeat)
        print(f"{data.name}: per batch of 128: draw {draw * 1e3:.2f} ms, DT training step "
              f"{step * 1e3:.1f} ms -> data is {100 * draw / step:.1f} % of an epoch")
        if data.train_transform is not None:
            aug = _per_batch_draw(data, augment=True, repeat=args.repeat)
            print(f"{data.name}: draw + crop/flip {aug * 1e3:.2f} ms -> {100 * aug / step:.1f} % of an epoch")


if __name__ == "__main__":
    main()
