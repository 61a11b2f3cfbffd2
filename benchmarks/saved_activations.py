"""Activation memory one training step keeps for its backward pass, counted exactly (no timing).

    python benchmarks/saved_activations.py [--batch-size 128] [-T 10]

For each method on MNIST-shaped inputs, runs the forward of every training unit under
``torch.autograd.graph.saved_tensors_hooks`` and adds up the distinct tensor storages autograd
saves for the backward pass; prints the largest unit (the step that holds the most) in MB, and the
parameter memory. This is what the "train peak" of ``noprop bench`` measures, minus the
model/gradient/optimizer state and allocator slack, and unlike RSS it does not depend on the
machine's load or allocator. Output: a markdown table on stdout.
"""

from __future__ import annotations

import argparse

import torch

from noprop.methods import build_method, method_class
from noprop.spec import DataSpec

MNIST = DataSpec.image(channels=1, height=28, width=28, num_classes=10)


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` builds its graph."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("-T", "--num-blocks", type=int, default=10)
    p.add_argument("--methods", nargs="+", default=["dt", "backprop", "cnn", "local", "ff"])
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, *MNIST.input_shape)
    y = torch.randint(0, MNIST.num_classes, (args.batch_size,))
    print(f"batch {args.batch_size}, T = {args.num_blocks}, torch {torch.__version__}\n")
    print("| method | units | saved activations, largest unit (MB) | parameters (MB) |")
    print("|---|---|---|---|")
    for name in args.methods:
        takes_t = "num_blocks" in method_class(name).config_class.names()
        method = build_method(name, MNIST, {"num_blocks": args.num_blocks} if takes_t else {}).train()
        units = len(method.training_units())
        largest = max(saved_bytes(lambda u=u, m=method: m.unit_loss(u, x, y).loss) for u in range(units))
        params = sum(p.numel() * p.element_size() for p in method.parameters())
        print(f"| {name} | {units} | {largest / 2**20:.1f} | {params / 2**20:.1f} |")


if __name__ == "__main__":
    main()
