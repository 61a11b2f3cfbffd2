"""Why weights decay into the denormal range: dead units under Adam's coupled weight decay.

Two parts (docs/methods.md, "Denormals"):

* ``simulate``: one tensor of weights whose data gradient is exactly zero (a dead unit), stepped
  by torch's ``Adam`` (coupled L2: the gradient is ``wd * p``) and by ``AdamW`` (decoupled:
  ``p *= 1 - lr * wd``) with the paper's lr = wd = 1e-3; prints when weights and moments first
  turn denormal.
* ``STATE``: a final state saved by ``benchmarks/soak.py --save-state``. Runs the training subset
  through the model (eval mode, so no dropout; the method's own ``unit_loss``, twice, for fresh
  z and t) and marks, in every Linear and Conv2d, the inputs that are zero for every example and
  the outputs that never reach a ReLU's positive side. A weight in such a column or row gets
  exactly zero gradient from the data. Prints, per weight tensor, how many of its denormal values
  (and of its Adam ``exp_avg``'s) lie on such dead units.

* ``STATE --time-steps K``: the cost of those denormals. From that same state, in rounds that
  alternate the order, K training steps with flushing off and K with it on (the state reloaded
  before each: a flushed step writes zeros), CPU time per step (one thread).

    python benchmarks/denormal_cause.py simulate
    python benchmarks/denormal_cause.py /tmp/soak-state/fm-off.pt --train-size 1600
    python benchmarks/denormal_cause.py /tmp/soak-state/fm-off.pt --time-steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch
from torch import nn

from noprop.config import RunConfig
from noprop.data import ClassificationData, load_dataset
from noprop.device import flushed_denormals
from noprop.run import build_for, build_trainer
from noprop.saved_run import SavedRun
from noprop.training.optimizers import make_optimizers

TINY = torch.finfo(torch.float32).tiny


def is_denormal(t: torch.Tensor) -> torch.Tensor:
    return (t != 0) & (t.abs() < TINY)


def simulate(steps: int = 5000) -> dict[str, dict[str, int | None]]:
    out = {}
    for kind in (torch.optim.Adam, torch.optim.AdamW):
        p = nn.Parameter(torch.linspace(-0.02, 0.02, 1000))
        opt = kind([p], lr=1e-3, weight_decay=1e-3, fused=True)
        first: dict[str, int | None] = {"param": None, "exp_avg": None, "exp_avg_sq": None}
        trace = {}
        for step in range(1, steps + 1):
            p.grad = torch.zeros_like(p)  # the data gradient of a dead unit
            opt.step()
            state = opt.state[p]
            for name, t in (("param", p.detach()), ("exp_avg", state["exp_avg"]),
                            ("exp_avg_sq", state["exp_avg_sq"])):
                if first[name] is None and bool(is_denormal(t).any()):
                    first[name] = step
            if step in (10, 100, 500, 1000, 1500, 2000, steps):
                trace[step] = {"median_abs": float(p.detach().abs().median()),
                               "denormal_params": int(is_denormal(p.detach()).sum())}
        out[kind.__name__] = {"first_denormal_step": first, "trace": trace}
    # AdamW on weights that had a gradient for 50 steps and then died: the moments decay alone
    p = nn.Parameter(torch.linspace(-0.02, 0.02, 1000))
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=1e-3, fused=True)
    g = torch.Generator().manual_seed(0)
    counts = {}
    for step in range(1, steps + 1):
        p.grad = 1e-3 * torch.randn(p.shape, generator=g) if step <= 50 else torch.zeros_like(p)
        opt.step()
        m = opt.state[p]["exp_avg"]
        if step % 50 == 0 and step <= 1500:
            counts[step] = {"exp_avg_denormal": int(is_denormal(m).sum()),
                            "exp_avg_zero": int((m == 0).sum())}
    out["AdamW, dead after 50 steps"] = {"exp_avg_per_step": counts,
                                         "exp_avg_sq_max_at_end": float(opt.state[p]["exp_avg_sq"].max())}
    return out


def dead_masks(method: nn.Module, data: ClassificationData, passes: int = 2) -> dict[str, torch.Tensor]:
    """Per Linear/Conv2d weight name: True where the weight gets zero gradient from every example."""
    leaves = [(n, m) for n, m in method.named_modules() if not list(m.children())]
    calls: list[str] = []
    seen_in: dict[str, torch.Tensor] = {}
    seen_pos: dict[str, torch.Tensor] = {}
    kinds = {n: m for n, m in leaves}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls.append(name)
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                return
            per_unit = (0,) if output.dim() == 2 else (0, 2, 3)  # Linear: features; Conv2d: channels
            nonzero = (inputs[0] != 0).any(dim=per_unit[0])
            positive = (output > 0).any(dim=per_unit[0])
            for _ in per_unit[1:]:
                nonzero, positive = nonzero.any(-1), positive.any(-1)
            seen_in[name] = seen_in.get(name, torch.zeros_like(nonzero)) | nonzero
            seen_pos[name] = seen_pos.get(name, torch.zeros_like(positive)) | positive
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    method.eval()
    with torch.no_grad():
        for _ in range(passes):
            for start in range(0, len(data.train_x), 256):
                x, y = data.train_x[start:start + 256], data.train_y[start:start + 256]
                for unit in range(len(method.training_units())):
                    method.unit_loss(unit, x, y)
    for h in handles:
        h.remove()
    relu_after = {a for a, b in itertools.pairwise(calls) if isinstance(kinds[b], nn.ReLU)}
    masks = {}
    for name in seen_in:
        weight = kinds[name].weight
        dead_col = ~seen_in[name]
        dead_row = ~seen_pos[name] if name in relu_after else torch.zeros_like(seen_pos[name])
        shape = [1] * weight.dim()
        masks[f"{name}.weight"] = (dead_row.view(-1, *shape[1:]) | dead_col.view(1, -1, *shape[2:])
                                   ).expand_as(weight).clone()
        masks[f"{name}.weight:dead_inputs"] = dead_col
        masks[f"{name}.weight:dead_outputs"] = dead_row
    return masks


def load(path: str, train_size: int, data_dir: str) -> tuple[SavedRun, RunConfig, ClassificationData]:
    saved = SavedRun.read(path)
    config = saved.run_config(path)
    full = load_dataset("cifar-10", data_dir)
    data = ClassificationData("subset", full.train_x[:train_size], full.train_y[:train_size],
                              full.test_x[:10], full.test_y[:10], num_classes=full.num_classes)
    return saved, config, data


def time_steps(path: str, train_size: int, data_dir: str, steps: int, rounds: int,
               batch_size: int | None = None) -> dict:
    saved, config, data = load(path, train_size, data_dir)
    config = config.replace(batch_size=batch_size or config.batch_size)
    trainer = build_trainer(config, data)
    batches = list(trainer._epoch_batches(0))[:steps]
    times: dict[str, list[float]] = {"flush off": [], "flush on": []}
    for r in range(rounds):
        for flush in ((False, True) if r % 2 == 0 else (True, False)):
            trainer.method.load_state_dict(saved.model)
            for name, opt in trainer.optimizers.items():
                opt.load_state_dict(saved.optimizers[name])
            with flushed_denormals(flush):
                start = time.process_time()
                for unit, x, y in batches:
                    trainer.train_step(unit, x, y)
                times["flush on" if flush else "flush off"].append((time.process_time() - start) / steps)
    ms = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
    return {"ms_per_step_median": ms, "ratio_off_on": round(ms["flush off"] / ms["flush on"], 2),
            "ms_per_step_all": {k: [round(1000 * t, 1) for t in v] for k, v in times.items()},
            "state_epoch": saved.progress.epoch, "batch_size": config.batch_size, "steps": steps,
            "rounds": rounds}


def analyse(path: str, train_size: int, data_dir: str) -> dict[str, dict[str, int]]:
    saved, config, data = load(path, train_size, data_dir)
    method = build_for(config, data)
    method.load_state_dict(saved.model)
    optimizers = make_optimizers(method, config)
    for name, opt in optimizers.items():
        opt.load_state_dict(saved.optimizers[name])
    exp_avg = {id(p): s["exp_avg"] for opt in optimizers.values() for p, s in opt.state.items()}
    masks = dead_masks(method, data)
    report = {}
    for name, p in method.named_parameters():
        den = is_denormal(p.detach())
        m = exp_avg.get(id(p))
        m_den = is_denormal(m) if m is not None else torch.zeros_like(den)
        if not (den.any() or m_den.any()) and name not in masks:
            continue
        dead = masks.get(name, torch.zeros_like(den))
        row = {"numel": p.numel(), "denormal": int(den.sum()), "dead_weights": int(dead.sum()),
               "denormal_on_dead": int((den & dead).sum()),
               "denormal_elsewhere": int((den & ~dead).sum()),
               "exp_avg_denormal": int(m_den.sum()), "exp_avg_denormal_on_dead": int((m_den & dead).sum())}
        if name in masks:
            row["dead_inputs"] = int(masks[f"{name}:dead_inputs"].sum())
            row["dead_outputs"] = int(masks[f"{name}:dead_outputs"].sum())
            row["abs_max_on_dead"] = float(p.detach()[dead].abs().max()) if dead.any() else 0.0
        if row["denormal"] or row["exp_avg_denormal"] or row["dead_weights"]:
            report[name] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", help="'simulate', or a file from benchmarks/soak.py --save-state")
    parser.add_argument("--train-size", type=int, default=1600)
    parser.add_argument("--data-dir", default=None,
                        help="data root (default: $NOPROP_DATA, then the per-user cache)")
    parser.add_argument("--time-steps", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="--time-steps: another batch size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.state == "simulate":
        print(json.dumps(simulate(), indent=1))
    elif args.time_steps:
        print(json.dumps(time_steps(args.state, args.train_size, args.data_dir, args.time_steps,
                                    args.rounds, args.batch_size), indent=1))
    else:
        print(json.dumps(analyse(args.state, args.train_size, args.data_dir), indent=1))


if __name__ == "__main__":
    main()
