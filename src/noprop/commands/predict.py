"""``noprop predict RUN INPUT...``: classify new images or table rows with a saved model, one CSV
row each."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from noprop.commands.args import UsageError, check_steps, positive_int
from noprop.data import DataError
from noprop.device import PRECISIONS
from noprop.inference import PROBABILITY_PASSES
from noprop.predict import predict
from noprop.saved_run import load_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images or table rows with a saved model (CSV to stdout "
                       "or --output)")
    p.add_argument("run", type=Path, help="run directory or checkpoint file")
    p.add_argument("inputs", type=Path, nargs="+",
                   help="image files, folders of images, .npz files (array x) or .npy arrays; for a model "
                        "trained on a table: .csv tables with its columns, or (N, D) arrays")
    p.add_argument("--output", type=Path, default=None, help="write the CSV here instead of stdout")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="inference steps (CT/FM; default: the model's own, as in training)")
    p.add_argument("--stochastic", type=int, default=PROBABILITY_PASSES, metavar="PASSES",
                   help="average the class probabilities of this many seeded passes of the paper's "
                        f"stochastic sampler, each at the run's fitted temperature (default "
                        f"{PROBABILITY_PASSES}: the best calibrated reading, docs/calibration.md); 0: one "
                        "noise-free pass, faster, but nearly the same probability for every input)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32, bf16 (autocast) or auto (bf16 on a CPU with native bf16); default: "
                        "the run's, the precision its test accuracy was measured at")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.stochastic < 0:
        raise DataError(f"--stochastic must be >= 0 passes, got {args.stochastic}")
    loaded = load_run(args.run)
    check_steps(args.steps, loaded.config, args.run)
    rows, notes = predict(loaded, args.inputs, steps=args.steps, stochastic=args.stochastic,
                          precision=args.precision)
    for note in notes:
        print(f"noprop predict: note: {note} to match the model", file=sys.stderr)
    if loaded.temperature_note is not None:
        print(f"noprop predict: note: {loaded.temperature_note}", file=sys.stderr)
    try:
        out = args.output.open("w", newline="") if args.output else sys.stdout
    except OSError as err:
        raise UsageError(f"cannot write --output {args.output}: {err.strerror or err}") from None
    try:
        writer = csv.writer(out, lineterminator="\n")
        # class_index: the model's output index; class_name: its name (the index when none is known);
        # probability: of that class (the argmax), at the run's fitted temperature
        writer.writerow(["input", "class_index", "class_name", "probability"])
        writer.writerows([r.source, r.label, r.name, f"{r.probability:.4f}"] for r in rows)
    finally:
        if args.output:
            out.close()
    return 0
