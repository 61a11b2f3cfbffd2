"""Soak: one method trained for many epochs on a small real data set, seconds per epoch as a curve.

A long CPU run can slow down when weights or optimizer moments decay into the denormal range
(|x| < 1.18e-38, the CPU's slow path; docs/benchmarks.md, "Denormals"). This trains one shipped
CIFAR-10 configuration (``cifar-10-dt|ct|fm``: the paper's optimizer, lr, weight decay, batch 128)
on the first ``--train-size`` training images and after every epoch records its wall time and the
number of denormal values in the parameters and in the optimizer state. Flushing is on by default
(as in ``noprop train``); ``--no-flush-denormal`` turns it off, which is how the slowdown shows.

    OMP_NUM_THREADS=1 python benchmarks/soak.py --method fm --epochs 70 --train-size 1600 \\
        --batch-size 32 --no-flush-denormal --out docs/results/2026-12-01-cpu/soak/fm-off.json

The JSON (rewritten after every epoch, so a run cut short can be reported as it stands) holds the
command, machine, load, torch version, one row per epoch and, at the end, the denormal count of
every parameter and optimizer-state tensor that has any. Drift compares the median epoch time of
the last three epochs with that of epochs 2-4 (epoch 1 carries the warm-up).
The training loop is ``Trainer.train_epoch`` inside ``flushed_denormals`` (what ``Trainer.fit``
does, without the per-epoch evaluation); the test accuracy is measured once, at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from noprop.bench import cpu_model
from noprop.data import ClassificationData, load_dataset
from noprop.device import flushed_denormals
from noprop.presets import load_preset
from noprop.run import build_trainer
from noprop.training.trainer import Trainer

TINY = torch.finfo(torch.float32).tiny


def denormals(t: torch.Tensor) -> int:
    if not t.is_floating_point():
        return 0
    return int(((t != 0) & (t.abs() < TINY)).sum())


def named_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every parameter (``param:NAME``) and optimizer-state tensor (``GROUP/NAME:exp_avg``)."""
    out = {f"param:{n}": p.detach() for n, p in trainer.method.named_parameters()}
    names = {id(p): n for n, p in trainer.method.named_parameters()}
    for group, opt in trainer.optimizers.items():
        for p, state in opt.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    out[f"{group}/{names.get(id(p), '?')}:{key}"] = value
    return out


def denormal_counts(trainer: Trainer) -> tuple[int, int, dict[str, int]]:
    per = {k: denormals(v) for k, v in named_state(trainer).items()}
    params = sum(v for k, v in per.items() if k.startswith("param:"))
    return params, sum(per.values()) - params, {k: v for k, v in per.items() if v}


def save_state(trainer: Trainer, path: Path) -> None:
    """The model, optimizer state and configuration (for benchmarks/denormal_cause.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": trainer.method.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
                "config": trainer.config.to_dict(), "epoch": trainer.epoch}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def subset(data: ClassificationData, train: int, test: int) -> ClassificationData:
    return ClassificationData(f"{data.name}[:{train}]", data.train_x[:train], data.train_y[:train],
                              data.test_x[:test], data.test_y[:test], num_classes=data.num_classes)


def machine() -> dict[str, object]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def drift(seconds: list[float]) -> float | None:
    """Median of the last three epochs over the median of epochs 2-4, minus one."""
    if len(seconds) < 7:
        return None
    return statistics.median(seconds[-3:]) / statistics.median(seconds[1:4]) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("dt", "ct", "fm"), default="fm")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--train-size", type=int, default=2560)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=None, help="override the config's 128")
    parser.add_argument("--optimizer", choices=("adam", "adamw"), default=None,
                        help="override the config's optimizer (CT/FM: adam, DT: adamw)")
    parser.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--data-dir", default=None,
                        help="data root (default: $NOPROP_DATA, then the per-user cache)")
    parser.add_argument("--save-state", type=Path, default=None,
                        help="also save the model and optimizer state here after every epoch")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    data = subset(load_dataset("cifar-10", args.data_dir), args.train_size, args.test_size)
    overrides = {"epochs": args.epochs, "flush_denormal": args.flush_denormal, "device": "cpu",
                 "progress": False, "eval_inference_steps": 10}
    if args.optimizer:
        overrides["optimizer"] = args.optimizer
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    config = load_preset(f"cifar-10-{args.method}").run_config(overrides)
    trainer = build_trainer(config, data)
    report: dict[str, object] = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_at_start": os.getloadavg(),
        "method": args.method, "optimizer": trainer.config.optimizer,
        "weight_decay": trainer.config.weight_decay, "lr": trainer.config.lr,
        "batch_size": trainer.config.batch_size,
        "train_size": args.train_size, "steps_per_epoch": trainer.steps_per_epoch(),
        "flush_denormal": args.flush_denormal, "epochs": [],
    }
    rows: list[dict[str, object]] = report["epochs"]  # type: ignore[assignment]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with flushed_denormals(args.flush_denormal) as flushed:
        report["flushed"] = flushed
        for epoch in range(1, args.epochs + 1):
            terms = trainer.train_epoch()
            trainer.epoch += 1
            params, state, _ = denormal_counts(trainer)
            rows.append({"epoch": epoch, "seconds": round(trainer.last_epoch.seconds, 3),
                         "loss": round(terms["loss"], 5), "denormal_params": params,
                         "denormal_optimizer_state": state, "load1": round(os.getloadavg()[0], 2)})
            print(f"epoch {epoch:3d}  {trainer.last_epoch.seconds:7.2f} s  loss {terms['loss']:.4f}  "
                  f"denormals: params {params:8d}  optimizer {state:8d}", flush=True)
            report["drift"] = drift([float(r["seconds"]) for r in rows])  # type: ignore[arg-type]
            args.out.write_text(json.dumps(report, indent=1) + "\n")
            if args.save_state:
                save_state(trainer, args.save_state)
        report["test_accuracy"] = round(trainer.evaluate(), 4)
    report["denormals_per_tensor"] = denormal_counts(trainer)[2]
    report["numel_per_tensor"] = {k: v.numel() for k, v in named_state(trainer).items()
                                  if k in report["denormals_per_tensor"]}  # type: ignore[operator]
    report["load_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    seconds = [float(r["seconds"]) for r in rows]  # type: ignore[arg-type]
    d = report["drift"]
    print(f"{args.method} flush={'on' if args.flush_denormal else 'off'}: first {seconds[0]:.2f} s, "
          f"last {seconds[-1]:.2f} s, drift {'-' if d is None else f'{100 * d:+.1f} %'}, "
          f"test accuracy {report['test_accuracy']}")


if __name__ == "__main__":
    main()
