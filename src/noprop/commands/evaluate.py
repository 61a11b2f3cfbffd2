"""``noprop evaluate RUN``: re-evaluate a saved model on its test set (at several sampler step counts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.commands.args import UsageError, check_steps, positive_int
from noprop.data import ClassificationData, DataError, check_data_dir, check_dataset, load_dataset
from noprop.data.base import standardise, unstandardise
from noprop.data.tabular import check_columns
from noprop.device import PRECISIONS, check_device, resolve_device
from noprop.inference import InferenceOptions, accuracy, inference_runs
from noprop.saved_run import load_run
from noprop.spec import DataSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="re-evaluate a saved model on its test set")
    p.add_argument("path", type=Path, help="run directory or checkpoint file")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="data root or dataset folder (default: the run's)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=None,
                   help="inference step counts to evaluate (CT/FM; default: the run's inference_steps)")
    p.add_argument("--deterministic", action="store_true",
                   help="noise-free sampler (default: the run's eval_deterministic)")
    p.add_argument("--runs", type=positive_int, default=1, metavar="K",
                   help="K seeded passes of the stochastic sampler: their mean accuracy +- standard "
                        "error (the paper's protocol: 5) and their majority vote (default: 1)")
    p.add_argument("--device", type=check_device, default="auto", metavar="DEVICE",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32, bf16 (autocast) or auto (bf16 on a CPU with native bf16); default: "
                        "the run's, so that the trainer's own evaluation comes back")
    p.add_argument("--dataset", default=None, metavar="NAME|PATH",
                   help="evaluate on this dataset's test split instead of the run's (needed for a "
                        "model fitted from Python on in-memory arrays); inputs are standardised with "
                        "the model's own statistics (default: the run's dataset)")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.path, map_location=resolve_device(args.device))
    config = run.config
    check_steps(args.steps, config, args.path)
    name = args.dataset or config.dataset
    if name == "user":
        raise DataError(f"{args.path} was fitted from Python on in-memory data; pass --dataset PATH "
                        "(a .npz file, a .csv table or an image folder) or a dataset name to evaluate it")
    check_data_dir(check_dataset(name), args.data_dir)
    data = load_dataset(name, args.data_dir or (None if args.dataset else config.data_dir),
                        label_column=config.label_column)
    if args.dataset:
        check_columns(data.feature_names, run.data_info.feature_names, name)
        data = _as_the_model_saw(data, run.data_info.normalization)
    _check_fits(data.spec, run.spec, name)
    options = InferenceOptions.of_run(config, next(run.method.parameters()).device,
                                      precision=run.precision(args.precision),
                                      deterministic=args.deterministic or config.eval_deterministic)
    if args.runs > 1 and options.deterministic:
        raise UsageError("--runs needs the stochastic sampler: the noise-free one gives the same "
                        "answer every run (drop --deterministic, or eval_deterministic in the run)")
    for steps in args.steps or [config.sampler_steps]:
        label = f"steps={steps}: " if steps is not None else ""
        if args.runs > 1:
            r = inference_runs(run.method, data.test_x, data.test_y, args.runs, options.replace(steps=steps))
            each = " ".join(f"{a:.4f}" for a in r.accuracies)
            print(f"{label}test_accuracy {r.mean:.4f} +- {r.stderr:.4f} over {args.runs} sampler "
                  f"runs ({each}); majority vote {r.vote_accuracy:.4f}")
            continue
        acc = accuracy(run.method, data.test_x, data.test_y, options.replace(steps=steps))
        print(f"{label}test_accuracy {acc:.4f}")
    return 0


def _check_fits(data: DataSpec, model: DataSpec, name: str) -> None:
    """Refuse test data the model cannot score: inputs of another shape, or more classes."""
    if data.input_shape != model.input_shape:
        raise DataError(f"dataset {name} has inputs of {data.describe()}, but the model takes "
                        f"{model.describe()}")
    if data.num_classes > model.num_classes:
        raise DataError(f"dataset {name} has {data.num_classes} classes, but the model knows only "
                        f"{model.num_classes}")


def _as_the_model_saw(data: ClassificationData, normalization: list[list[float]] | None
                      ) -> ClassificationData:
    """``data``'s test images re-standardised from its own statistics to the model's."""
    if normalization is None or data.normalization is None:
        return data
    data.test_x = standardise(unstandardise(data.test_x, data.normalization), normalization)
    return data
