"""``noprop calibration RUN``: how well calibrated is each way a NoProp run could report p(y | x)
(:mod:`noprop.calibration_report`; docs/calibration.md).

    noprop calibration runs/digits-dt                   # table; calibration.json, calibration.png in the run
    noprop calibration runs/mnist-dt --samples 2000 --passes 10 --seed 1
"""

from __future__ import annotations

import argparse

from noprop.commands.args import (
    UsageError,
    add_report_output_args,
    add_run_input_args,
    existing_run_path,
    positive_int,
    print_and_write_report,
    progress_printer,
    refuse_negative,
)
from noprop.device import PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibration", help="ECE, NLL, Brier score and reliability diagram of every way a "
                       "NoProp run could report p(y | x)",
                       description="On a trained NoProp run's test split: the head's softmax on the "
                       "stochastic and the noise-free sampler's z_T, the class frequency and the mean "
                       "softmax over k stochastic passes, temperature-scaled softmaxes (and those at the "
                       "temperatures saved with the run: the default of noprop predict), the paper's "
                       "posterior (Eqs. 15-16) and the Gaussian posterior of z_T. Temperatures are fitted "
                       "on the even-indexed test examples (or on training examples), every number is "
                       "measured on the odd ones. Prints a table; writes calibration.json and "
                       "calibration.png.")
    add_run_input_args(p, samples_help="use the first N test examples (default: all)")
    p.add_argument("--passes", type=positive_int, default=10, metavar="K",
                   help="stochastic passes of the class frequency and the mean softmax (default: 10)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the sampler (default: the run's eval_seed)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps of a CT/FM run (default: the method's inference_steps, as "
                        "noprop predict)")
    p.add_argument("--train-samples", dest="train_samples", type=int, default=2000, metavar="N",
                   help="training examples the *_t_train temperatures are fitted on (0: none; default 2000)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32, bf16 (autocast) or auto; default: the run's")
    add_report_output_args(p, files="calibration.json and calibration.png")
    p.set_defaults(handler=cmd_calibration)


def cmd_calibration(args: argparse.Namespace) -> int:
    from noprop.calibration_report import CalibrationError, calibration_report
    from noprop.device import resolve_device

    refuse_negative(args.train_samples, "--train-samples")
    try:
        report = calibration_report(existing_run_path(args), data_dir=args.data_dir, samples=args.samples,
                                    passes=args.passes, seed=args.seed, steps=args.steps,
                                    train_samples=args.train_samples, precision=args.precision,
                                    device=resolve_device(args.device),
                                    progress=progress_printer(args, "calibration"))
    except CalibrationError as err:
        raise UsageError(str(err)) from None
    return print_and_write_report(report, args)
