"""Why ct-adjoint stopped at 0.58 on the digits (docs/methods.md, "Ct-adjoint"; its run card).

Three checks, each one command:

* ``--check gradient``: the adjoint gradient against back-propagation through the same Euler steps
  (``odeint``), on 16 digits, the paper's conv block in training mode (dropout on, one mask):
  relative difference and cosine of the whole gradient vector, at ``--steps`` (e.g. 100 1000).
* ``--check scales``: the size of what the block's head reads at the start: image features, the
  z branch (z ~ N(0, I) and z on the simplex), the time branch, and how much the logits vary
  across images.
* ``--check classes --run RUN_DIR``: a saved run's test accuracy per class, and how close z_1 sits
  to a vertex of the simplex (mean of its largest coordinate): a class whose images all land,
  confidently, on another class's vertex gets almost no gradient through the softmax.
* ``--check train --variant V``: a plain AdamW loop (lr 1e-3, weight decay 1e-3, batch 64, fp32,
  one seed) over the digits, test accuracy after each epoch; ``V`` is ``ode`` (the method:
  ``odeint_adjoint`` from z_0 ~ N(0, I)), ``direct`` (no ODE: z_1 = u_hat(x, 0, t = 1), then the
  classifier, the same network and readout), ``logits`` (no ODE, no softmax readout: cross-entropy
  on the block's logits) or ``ode-linear`` (the ODE with u_hat = logits @ W_embed, FM's form,
  in place of softmax(logits) @ W_embed).

    OMP_NUM_THREADS=1 python benchmarks/ct_adjoint_diagnostics.py --check gradient --steps 100 1000
    OMP_NUM_THREADS=1 python benchmarks/ct_adjoint_diagnostics.py --check scales
    OMP_NUM_THREADS=1 python benchmarks/ct_adjoint_diagnostics.py --check train --variant direct --epochs 4
    OMP_NUM_THREADS=1 python benchmarks/ct_adjoint_diagnostics.py --check classes --run runs/adj-t100
"""
import argparse
import json
import time

import torch
from torch import Tensor
from torch.nn import functional as F

from noprop.blocks import sinusoidal_time_embedding
from noprop.data import load_dataset
from noprop.methods import ct_adjoint
from noprop.methods.ct_adjoint import RATE, AdjointCT, LabelField
from noprop.saved_run import load_run

VARIANTS = ("ode", "direct", "logits", "ode-linear")


class LinearEstimateField(LabelField):
    """The field with ``u_hat = logits @ W_embed`` (no softmax): z_1 is not held to the simplex."""

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z, features = state
        u_hat = self.block.forward_features(features, z, t) @ self.embedding.weight
        return RATE * (u_hat - z), torch.zeros_like(features)


def gradient(data, steps: int, adjoint: bool) -> Tensor:
    torch.manual_seed(0)
    method = AdjointCT(data.spec, ode_steps=steps).train()
    x, y = data.train_x[:16], data.train_y[:16]
    torch.manual_seed(3)  # one z_0 and one dropout mask for both
    F.cross_entropy(method.classifier(method.solve(x, adjoint=adjoint)), y).backward()
    return torch.cat([p.grad.flatten() for p in method.parameters()])


def check_gradient(data, steps_list: list[int]) -> None:
    for steps in steps_list:
        start = time.time()
        a, b = gradient(data, steps, True), gradient(data, steps, False)
        print(json.dumps({"steps": steps, "relative_difference": float((a - b).norm() / b.norm()),
                          "cosine": float(F.cosine_similarity(a, b, 0)),
                          "seconds": round(time.time() - start, 1)}), flush=True)


@torch.no_grad()
def check_scales(data) -> None:
    torch.manual_seed(0)
    block = AdjointCT(data.spec, ode_steps=10).eval().block
    x = data.train_x[:256]
    features = block.image_features(x)
    z_normal = torch.randn(256, data.spec.num_classes)
    z_simplex = F.softmax(torch.randn(256, data.spec.num_classes), -1)
    time_branch = block.time(sinusoidal_time_embedding(torch.tensor(1.0), block.TIME_DIM))
    logits = block.forward_features(features, z_simplex, torch.tensor(1.0))
    print(json.dumps({
        "image_features_std_across_images": features.std(0).mean().item(),
        "z_branch_std_across_z_normal": block.label(z_normal).std(0).mean().item(),
        "z_branch_std_across_z_simplex": block.label(z_simplex).std(0).mean().item(),
        "time_branch_mean_abs_t1": time_branch.abs().mean().item(),
        "logits_std_across_images": logits.std(0).mean().item(),
    }), flush=True)


@torch.no_grad()
def check_classes(data, run: str) -> None:
    method = load_run(run).method.eval()
    z1 = method.solve(data.test_x, adjoint=False, generator=torch.Generator().manual_seed(1234))
    predicted = method.classifier(z1).argmax(1)
    per_class = [round((predicted[data.test_y == c] == c).float().mean().item(), 4)
                 for c in range(data.spec.num_classes)]
    print(json.dumps({"run": run, "test_accuracy": (predicted == data.test_y).float().mean().item(),
                      "per_class": per_class, "mean_largest_z1": z1.max(1).values.mean().item()}), flush=True)


def logits_of(method: AdjointCT, x: Tensor, variant: str, generator: torch.Generator | None = None) -> Tensor:
    """The classifier's logits (``logits``: the block's own)."""
    if variant in ("ode", "ode-linear"):
        z1 = method.solve(x, adjoint=method.training, generator=generator)
        return method.classifier(z1)
    block_logits = method.block(x, torch.zeros(len(x), method.embedding.dim), torch.tensor(1.0))
    if variant == "logits":
        return block_logits
    return method.classifier(F.softmax(block_logits, -1) @ method.embedding.weight)


def check_train(data, variant: str, epochs: int, steps: int, lr: float, seed: int) -> None:
    if variant == "ode-linear":
        ct_adjoint.LabelField = LinearEstimateField  # solve() builds its field from this name
    torch.manual_seed(seed)
    method = AdjointCT(data.spec, ode_steps=steps)
    method.prepare(data.train_x, data.train_y)
    optimizer = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=1e-3)
    order = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(1, epochs + 1):
        method.train()
        losses = []
        for batch in torch.randperm(len(data.train_x), generator=order).split(64):
            loss = F.cross_entropy(logits_of(method, data.train_x[batch], variant), data.train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        method.eval()
        with torch.no_grad():
            test = logits_of(method, data.test_x, variant, torch.Generator().manual_seed(1234))
            train = logits_of(method, data.train_x, variant, torch.Generator().manual_seed(1234))
        print(json.dumps({"variant": variant, "epoch": epoch,
                          "train_loss": round(sum(losses) / len(losses), 4),
                          "test_accuracy": round((test.argmax(1) == data.test_y).float().mean().item(), 4),
                          "train_accuracy": round((train.argmax(1) == data.train_y).float().mean().item(), 4),
                          "seconds": round(time.time() - start, 1)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", choices=("gradient", "scales", "train", "classes"), required=True)
    ap.add_argument("--run", help="classes: a run directory of noprop train --method ct-adjoint")
    ap.add_argument("--variant", choices=VARIANTS, default="ode")
    ap.add_argument("--steps", type=int, nargs="+", default=[100], help="ODE steps (gradient: each)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load_dataset("digits")
    if args.check == "gradient":
        check_gradient(data, args.steps)
    elif args.check == "classes":
        check_classes(data, args.run)
    elif args.check == "scales":
        check_scales(data)
    else:
        check_train(data, args.variant, args.epochs, args.steps[0], args.lr, args.seed)


if __name__ == "__main__":
    main()
