"""``noprop analyze RUN``: what a NoProp run's chain of denoisers adds over its blocks
(:mod:`noprop.analysis`; docs/chain-analysis.md).

    noprop analyze runs/digits-dt                       # table; analysis.json, analysis.png in the run
    noprop analyze runs/mnist-dt --samples 2000 --runs 5 --seed 1
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="what a NoProp run's chain adds over its blocks (ablations, probes)",
                       description="On a trained NoProp run's test split: the sampler against each "
                       "block alone and the average of all blocks, z ablated at every block and one "
                       "block at a time, what z carries along the chain, and a linear probe on each "
                       "block's image features. Prints a table; writes analysis.json and analysis.png.")
    add_run_input_args(p, samples_help="analyze the first N test examples (default: all)")
    p.add_argument("--runs", type=positive_int, default=5, metavar="K",
                   help="stochastic sampler passes for the mean and the majority vote (default: 5, "
                        "the paper's)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the sampler and the ablations (default: the run's eval_seed)")
    p.add_argument("--probe-samples", dest="probe_samples", type=int, default=2000, metavar="N",
                   help="training examples the linear probes are fitted on (0: no probe; default 2000)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps of a CT/FM run (default: the run's per-epoch evaluation steps)")
    add_report_output_args(p, files="analysis.json and analysis.png")
    p.set_defaults(handler=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from noprop.analysis import AnalysisError, analyze
    from noprop.device import resolve_device

    refuse_negative(args.probe_samples, "--probe-samples")
    try:
        result = analyze(existing_run_path(args), data_dir=args.data_dir, samples=args.samples,
                         runs=args.runs, seed=args.seed, probe_samples=args.probe_samples, steps=args.steps,
                         device=resolve_device(args.device), progress=progress_printer(args, "analyze"))
    except AnalysisError as err:
        raise UsageError(str(err)) from None
    return print_and_write_report(result, args)
