"""The ``noprop`` command line: ``train`` and ``evaluate`` (more commands register the same way).

Every user error (bad option value, missing data, occupied run directory, incompatible
checkpoint) ends with one line on stderr, ``noprop: error: ...``, and exit code 2; no traceback,
and nothing an earlier run wrote is touched.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from noprop import __version__
from noprop.commands import COMMAND_MODULES
from noprop.config import BLOCK_ORDERS, DEVICES, OPTIMIZERS, PARALLEL_MODES, ConfigError, RunConfig
from noprop.data import DATASETS, DataError, check_dataset, load_dataset
from noprop.embeddings import EMBEDDING_KINDS
from noprop.methods import METHODS
from noprop.presets import load_preset
from noprop.run import RunDirError, RunFinished, default_run_dir, load_run, saved_config, train_run
from noprop.training.checkpoint import CheckpointError
from noprop.training.device import resolve_device
from noprop.training.interrupt import TrainingInterrupted
from noprop.training.lr_schedule import LR_SCHEDULES
from noprop.training.nonfinite import NonFiniteError
from noprop.training.trainer import evaluate_accuracy

USER_ERRORS = (ConfigError, DataError, RunDirError, CheckpointError)
EXIT_USAGE = 2
EXIT_NONFINITE = 1  # a NaN/inf stopped training (docs/failure-modes.md)


class UsageError(Exception):
    """Raised by a command for a one-line error and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line: ``noprop train: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _dataset(text: str) -> str:
    """A known dataset name or a path (.npz file, image folder); unknown names list the known ones."""
    try:
        return check_dataset(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags for RunConfig fields. Defaults are SUPPRESSed: only given flags override a config."""
    s = argparse.SUPPRESS
    p.add_argument("--method", choices=sorted(METHODS), default=s, help="training method (default dt)")
    p.add_argument("--dataset", type=_dataset, default=s, metavar="NAME|PATH",
                   help=f"{', '.join(DATASETS)}, or a .npz file or image folder (default: digits)")
    p.add_argument("--data-dir", dest="data_dir", default=s,
                   help="data root or dataset folder (default: $NOPROP_DATA, then the per-user cache)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=s,
                   help="CIFAR training augmentation, random crop + flip (default off, as in the paper)")
    p.add_argument("--epochs", type=_positive_int, default=s)
    p.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=s)
    p.add_argument("--lr", type=_positive_float, default=s, help="learning rate (paper: 1e-3)")
    p.add_argument("--lr-schedule", dest="lr_schedule", choices=LR_SCHEDULES, default=s,
                   help="constant (default, the paper) or cosine decay to 0 over the run")
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=_nonnegative_float, default=s,
                   metavar="EPOCHS", help="linear lr warm-up over this many epochs (default 0)")
    p.add_argument("--weight-decay", dest="weight_decay", type=_nonnegative_float, default=s)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=s)
    p.add_argument("--block-order", dest="block_order", choices=BLOCK_ORDERS, default=s,
                   help="sequential: Algorithm 1, a pass per block; interleaved: all blocks per batch")
    p.add_argument("-T", "--num-blocks", dest="num_blocks", type=_positive_int, default=s,
                   help="number of blocks / diffusion steps T (DT; default 10)")
    p.add_argument("--eta", type=_nonnegative_float, default=s, help="denoising loss weight")
    p.add_argument("--embedding", choices=EMBEDDING_KINDS, default=s, help="class embedding")
    p.add_argument("--embedding-dim", dest="embedding_dim", type=_positive_int, default=s,
                   help="dimension of learned embeddings (default 20)")
    p.add_argument("--inference-steps", dest="inference_steps", type=_positive_int, default=s)
    p.add_argument("--fused", action="store_true", default=s,
                   help="DT: all blocks of a step in one batched pass (same block updates; for GPUs)")
    p.add_argument("--eval-inference-steps", dest="eval_inference_steps", type=_positive_int,
                   default=s, help="sampler steps for the per-epoch evaluation (default: --inference-steps)")
    p.add_argument("--schedule-gamma", dest="schedule_gamma", type=_positive_float, default=s,
                   metavar="G", help="CT: the learned alpha_bar starts from sigmoid(-G) to sigmoid(G)")
    p.add_argument("--fm-sigma", dest="fm_sigma", type=_nonnegative_float, default=s,
                   help="width of the flow-matching path (FM; default 0)")
    p.add_argument("--eval-deterministic", dest="eval_deterministic", action="store_true", default=s,
                   help="evaluate with the noise-free sampler")
    p.add_argument("--skip-nonfinite", dest="skip_nonfinite", action="store_true", default=s,
                   help="skip a batch whose loss or gradient is NaN/inf (counted in metrics.csv) "
                        "instead of stopping; docs/failure-modes.md")
    p.add_argument("--checkpoint-minutes", dest="checkpoint_minutes", type=_nonnegative_float, default=s,
                   help="also checkpoint mid-epoch this often (default 10; 0: only after each epoch)")
    p.add_argument("--max-train-seconds", dest="max_train_seconds", type=_positive_float, default=s,
                   metavar="SECONDS", help="stop training after this many seconds (evaluation excluded)")
    p.add_argument("--parallel", choices=PARALLEL_MODES, default=s,
                   help="with --nproc/torchrun: data (every process, a share of each batch) or blocks "
                        "(each process its own blocks, all the data); docs/distributed.md")
    p.add_argument("--shared-sync-every", dest="shared_sync_every", type=int, default=s, metavar="BATCHES",
                   help="block parallel: average shared parts every this many batches (0: per epoch)")
    p.add_argument("--flush-denormal", dest="flush_denormal", action=argparse.BooleanOptionalAction,
                   default=s, help="flush denormal floats to zero on the CPU, which keeps long runs "
                                   "from slowing down (default on; docs/benchmarks.md)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=s,
                   help="bf16: autocast the forward passes; auto (default): bf16 where the CPU has "
                        "native bf16 (AVX-512 BF16 / AMX), else fp32. results.json records what ran")
    p.add_argument("--seed", type=int, default=s)
    p.add_argument("--device", choices=DEVICES, default=s)


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import fields

    names = {f.name for f in fields(RunConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def cmd_train(args: argparse.Namespace) -> int:
    overrides = _config_overrides(args)
    overrides["progress"] = not args.quiet  # a display choice of this invocation, also on resume
    if args.resume:
        if args.run_dir is None:
            raise UsageError("--resume needs --run-dir: the run directory to continue")
        if args.config:
            raise UsageError("--config starts a new run; a resumed run keeps its saved configuration")
        config = RunConfig.from_dict({**saved_config(args.run_dir), **overrides})
        run_dir = args.run_dir
    else:
        base = load_preset(args.config).fields if args.config else {}
        config = RunConfig.from_dict({**base, **overrides})
        run_dir = args.run_dir or default_run_dir(config, args.out_dir)
    if args.nproc is not None or _under_torchrun():
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
        _, results = train_run(config, run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({k: results[k] for k in ("method", "dataset", "epochs", "test_accuracy",
                                             "train_seconds", "samples_per_second",
                                             "peak_memory_mb", "device")}))
    print(f"run directory: {run_dir}")
    return 0


def _under_torchrun() -> bool:
    from noprop.distributed import launched_by_torchrun

    return launched_by_torchrun()


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.path, map_location=resolve_device(args.device))
    config = run.config
    data = load_dataset(config.dataset, args.data_dir or config.data_dir)
    steps_list = args.steps or [config.inference_steps]
    report = []
    for steps in steps_list:
        acc = evaluate_accuracy(
            run.method, data.test_x, data.test_y, steps=steps,
            deterministic=args.deterministic or config.eval_deterministic, seed=config.eval_seed,
            flush_denormal=config.flush_denormal,
        )
        report.append({"steps": steps, "test_accuracy": acc})
    for row in report:
        label = f"steps={row['steps']}: " if row["steps"] is not None else ""
        print(f"{label}test_accuracy {row['test_accuracy']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="noprop", description="Train neural networks without back-propagation (NoProp).")
    parser.add_argument("--version", action="version", version=f"noprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (default: NoProp-DT on the embedded digits)")
    train.add_argument("--config", default=None, metavar="NAME",
                       help="start from a shipped experiment config (noprop reproduce --list) or a "
                            "YAML file; other flags override its fields")
    add_config_flags(train)
    train.add_argument("--run-dir", dest="run_dir", type=Path, default=None,
                       help="where to write the run (default: runs/<dataset>-<method>-<time>)")
    train.add_argument("--out-dir", dest="out_dir", type=Path, default=Path("runs"),
                       help="parent of the default run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    train.add_argument("--nproc", type=_positive_int, default=None,
                       help="train with N local processes (gloo on CPU, NCCL on GPU); see --parallel. "
                            "Under torchrun leave it out")
    train.add_argument("--dist-timeout", dest="dist_timeout", type=_positive_float, default=1800.0,
                       metavar="SECONDS", help="how long a process waits for the others before failing")
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser("evaluate", help="re-evaluate a saved model on its test set")
    evaluate.add_argument("path", type=Path, help="run directory or checkpoint file")
    evaluate.add_argument("--data-dir", dest="data_dir", default=None)
    evaluate.add_argument("--steps", type=_positive_int, nargs="+", default=None,
                          help="inference step counts to evaluate (CT/FM)")
    evaluate.add_argument("--deterministic", action="store_true", help="noise-free sampler")
    evaluate.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available")
    evaluate.set_defaults(handler=cmd_evaluate)

    for name in COMMAND_MODULES:
        importlib.import_module(f"noprop.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except RunFinished as err:  # not a failure: there is nothing left to do
        print(f"noprop: {err}", file=sys.stderr)
        return 0
    except (UsageError, *USER_ERRORS) as err:
        print(f"noprop: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingInterrupted as err:  # checkpointed; 130 for SIGINT, 143 for SIGTERM
        print(f"noprop: {err}", file=sys.stderr)
        return err.exit_code
    except NonFiniteError as err:
        print(f"noprop: error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print("noprop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
