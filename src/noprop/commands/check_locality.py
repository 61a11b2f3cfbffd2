"""``noprop check-locality``: prove on real batches that a method trains each block locally.

    noprop check-locality --method dt --encoder mypkg.nets:small
    noprop check-locality --method mine --setup mypkg.methods:register --nproc 0

Prints one row per check (groups, gradient, forward, optimizer, distributed) with PASS/FAIL and
exits 1 if any failed (docs/locality.md). Every configuration flag of ``noprop train`` applies
(``-T``, ``--fused``, ``--embedding``, ``--dataset`` ...); the default batch is the first 64
training rows of the digits.
"""

from __future__ import annotations

import argparse

from noprop.commands.args import (
    UsageError,
    add_config_flags,
    config_overrides,
    positive_int,
    refuse_multiprocess_flags,
)
from noprop.config import RunConfig
from noprop.data import check_data_dir
from noprop.locality import FORWARD_MODES, call_setup, check_locality
from noprop.methods import METHODS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-locality",
        help="check that no gradient, activation or optimizer state crosses blocks (docs/locality.md)",
        description="Check on a real batch that each training unit's loss gives gradient only to its own "
        "groups, reads no other unit's blocks, and that a step moves nothing else; with --nproc, "
        "that block x data parallel training exchanges only its block's gradients. Exit 1 on a failure.",
    )
    p.add_argument("--method", dest="method_name", default="dt", metavar="METHOD",
                   help=f"training method: {', '.join(sorted(METHODS))}, or one --setup registers "
                        "(default: dt)")
    p.add_argument("--rows", type=positive_int, default=None,
                   help="rows of the batch the checks run on (default: the batch size, at most 64)")
    p.add_argument("--nproc", type=int, default=4, metavar="N",
                   help="also train one step on N gloo processes, block parallel (blocks x replicas when "
                        "N > T, e.g. -T 2 --nproc 4), and check what they exchange (default: 4; 0 skips)")
    p.add_argument("--shared", nargs="+", default=None, metavar="GROUP",
                   help="the parameter groups every unit may train (default: 'shared' and groups several "
                        "units name)")
    p.add_argument("--forward", choices=FORWARD_MODES, default=None,
                   help="isolated: a unit reads no other block (NoProp); chained: only earlier ones "
                        "(layer-wise methods); targets: values of any block, no gradient through "
                        "another (dtp, ccl); default: the method's own claim")
    p.add_argument("--setup", default=None, metavar="MODULE:FUNCTION",
                   help="a function called first, here and in every process (e.g. to register a method)")
    add_config_flags(p, method_flag=False)
    p.set_defaults(handler=cmd_check_locality)


def cmd_check_locality(args: argparse.Namespace) -> int:
    overrides = config_overrides(args)
    refuse_multiprocess_flags(overrides, "noprop check-locality sets them itself (see --nproc)")
    if args.nproc < 0:
        raise UsageError(f"--nproc must be 0 (skip) or a number of processes, got {args.nproc}")
    try:
        call_setup(args.setup)
    except (ImportError, AttributeError, ValueError) as err:
        raise UsageError(f"--setup {args.setup}: {type(err).__name__}: {err}") from None
    if args.method_name not in METHODS:
        raise UsageError(f"unknown method {args.method_name!r}; choose one of {', '.join(sorted(METHODS))}")
    config = RunConfig(args.method_name, **overrides)
    check_data_dir(config.dataset, config.data_dir)
    try:
        report = check_locality(config, rows=args.rows, seed=config.seed, shared_groups=args.shared,
                                forward=args.forward, device=_device(config.device),
                                nproc=args.nproc, setup=args.setup)
    except ValueError as err:  # a --shared group the method does not have
        raise UsageError(str(err)) from None
    print(report.table())
    return 0 if report.passed else 1


def _device(device: str) -> str:
    """The checks compare tensors bit for bit on one device: CPU unless one is asked for."""
    return "cpu" if device == "auto" else device
