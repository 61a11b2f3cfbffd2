"""``noprop export RUN OUT.safetensors``: the trained model alone, loadable without the training state."""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.commands.args import UsageError
from noprop.export import SUFFIX
from noprop.saved_run import CheckpointError, SavedRun


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained model as one .safetensors file with its config",
                       description="The weights and the configuration that rebuilds the model, as a "
                       "safetensors file (no optimizer or random states, nothing executable). "
                       "noprop predict, noprop evaluate and Classifier.load read it.")
    p.add_argument("run", type=Path, help="run directory or checkpoint file")
    p.add_argument("out", type=Path, help=f"the file to write (ends in {SUFFIX})")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != SUFFIX:
        raise CheckpointError(f"the exported model's name must end in {SUFFIX}, got {args.out.name}")
    if args.out.exists() and not args.overwrite:
        raise UsageError(f"{args.out} exists; pass --overwrite to replace it")
    out = SavedRun.read(args.run).export(args.out)
    print(f"exported {args.run} to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
