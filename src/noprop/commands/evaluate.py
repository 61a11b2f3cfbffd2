"""``noprop evaluate RUN``: re-evaluate a saved model on its test set (at several sampler step counts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.commands.args import positive_int
from noprop.config import DEVICES
from noprop.data import load_dataset
from noprop.run import load_run
from noprop.training.device import resolve_device
from noprop.training.trainer import evaluate_accuracy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="re-evaluate a saved model on its test set")
    p.add_argument("path", type=Path, help="run directory or checkpoint file")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="data root or dataset folder (default: the run's)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=None,
                   help="inference step counts to evaluate (CT/FM; default: the run's inference_steps)")
    p.add_argument("--deterministic", action="store_true",
                   help="noise-free sampler (default: the run's eval_deterministic)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: CUDA when available (default: auto)")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.path, map_location=resolve_device(args.device))
    config = run.config
    data = load_dataset(config.dataset, args.data_dir or config.data_dir)
    for steps in args.steps or [config.sampler_steps]:
        acc = evaluate_accuracy(
            run.method, data.test_x, data.test_y, steps=steps,
            deterministic=args.deterministic or config.eval_deterministic, seed=config.eval_seed,
            flush_denormal=config.flush_denormal,
        )
        label = f"steps={steps}: " if steps is not None else ""
        print(f"{label}test_accuracy {acc:.4f}")
    return 0
