"""``noprop train``: train one method into a run directory (default: NoProp-DT on the embedded digits).

    noprop train --method ct --dataset mnist --epochs 5
    noprop train --config mnist-dt --data-dir DATA/mnist       # a shipped preset, flags override it
    noprop train --run-dir runs/x --resume                     # continue a run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from noprop.commands.args import (
    UsageError,
    add_config_flags,
    check_steps,
    config_overrides,
    positive_float,
    positive_int,
    refuse_multiprocess_flags,
)
from noprop.config import RunConfig
from noprop.data import check_data_dir
from noprop.presets import load_preset
from noprop.run import default_run_dir, train_run
from noprop.saved_run import read_config

#: The keys of results.json printed on the last line.
SUMMARY = ("method", "dataset", "epochs", "test_accuracy", "train_seconds", "samples_per_second",
           "peak_memory_mb", "device")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: NoProp-DT on the embedded digits)")
    p.add_argument("--config", default=None, metavar="NAME",
                   help="start from a shipped experiment config (noprop reproduce --list) or a "
                        "YAML file; other flags override its fields (default: none, the built-in defaults)")
    add_config_flags(p)
    p.add_argument("--run-dir", dest="run_dir", type=Path, default=None,
                   help="where to write the run (default: runs/<dataset>-<method>-<time>)")
    p.add_argument("--out-dir", dest="out_dir", type=Path, default=Path("runs"),
                   help="parent of the default run directory (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (the per-epoch lines stay)")
    p.add_argument("--nproc", type=positive_int, default=None,
                   help="train with N local processes (gloo on CPU, NCCL on GPU); see --parallel. "
                        "Under torchrun leave it out (default: one process)")
    p.add_argument("--dist-timeout", dest="dist_timeout", type=positive_float, default=1800.0,
                   metavar="SECONDS",
                   help="how long a process waits for the others before failing (default: 1800)")
    p.set_defaults(handler=cmd_train)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration: saved (``--resume``) or preset, with the given flags on top."""
    overrides = config_overrides(args)
    overrides["progress"] = not args.quiet  # a display choice of this invocation, also on resume
    if args.resume:
        if args.run_dir is None:
            raise UsageError("--resume needs --run-dir: the run directory to continue")
        if args.config:
            raise UsageError("--config starts a new run; a resumed run keeps its saved configuration")
        config = RunConfig.from_dict({**read_config(args.run_dir), **overrides})
    else:
        base = load_preset(args.config).fields if args.config else {}
        config = RunConfig.from_dict({**base, **overrides})
    if "data_dir" in overrides:
        check_data_dir(config.dataset, config.data_dir)
    check_steps(overrides.get("eval_inference_steps"), config, "this run", "--eval-inference-steps")
    return config


def cmd_train(args: argparse.Namespace) -> int:
    config = run_config(args)  # a ConfigError (e.g. a setting the method does not take): exit 2
    run_dir = args.run_dir or default_run_dir(config, args.out_dir)
    from noprop.distributed import launched_by_torchrun

    if args.nproc is not None or launched_by_torchrun():
        from noprop.distributed import DistributedError, train_distributed

        try:
            results = train_distributed(config, run_dir, nproc=args.nproc, resume=args.resume,
                                        overwrite=args.overwrite, timeout_s=args.dist_timeout)
        except DistributedError as err:
            print(f"noprop: error: {err}", file=sys.stderr)
            return 1
        if results is None:  # a torchrun process other than rank 0: rank 0 reports
            return 0
    else:
        refuse_multiprocess_flags(config_overrides(args),
                                  "this run has one (add --nproc N, or launch it with torchrun)")
        _, results = train_run(config, run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({k: results[k] for k in SUMMARY}))
    print(f"run directory: {run_dir}")
    return 0
