"""``noprop predict RUN INPUT...``: classify new images with a saved model, one CSV row each."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from noprop.predict import predict
from noprop.run import load_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a saved model (CSV to stdout or --output)")
    p.add_argument("run", type=Path, help="run directory or checkpoint file")
    p.add_argument("inputs", type=Path, nargs="+",
                   help="image files, folders of images, .npz files (array x) or .npy arrays")
    p.add_argument("--output", type=Path, default=None, help="write the CSV here instead of stdout")
    p.add_argument("--steps", type=int, default=None, help="inference steps (CT/FM)")
    p.add_argument("--deterministic", action="store_true", help="noise-free sampler")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_run(args.run)
    rows = predict(loaded, args.inputs, steps=args.steps, deterministic=args.deterministic)
    out = args.output.open("w", newline="") if args.output else sys.stdout
    try:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["input", "label", "class", "probability"])
        writer.writerows([r.source, r.label, r.name, f"{r.probability:.4f}"] for r in rows)
    finally:
        if args.output:
            out.close()
    return 0
