"""Epoch wall time of NoProp-DT: one process (2 threads) vs 2 block-parallel processes (1 thread each).

Both runs train the same model (T blocks, one-hot embedding, interleaved order) for one epoch on
the same fixed subset of MNIST, each in fresh processes started the same way (spawn), back to
back; the order alternates between repeats so that a change in the machine's load hurts both.
The epoch time is rank 0's, from the first step to the end of the end-of-epoch gather (so it
includes waiting for the slower rank and sending the blocks). Bytes are the estimates counted by
``noprop.distributed.comm`` from the sizes of the tensors each rank hands to a collective.

    nice -n 10 python benchmarks/distributed.py --data-dir ../shared/data/mnist --out runs/bench-dist.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from noprop.config import RunConfig
from noprop.data import ClassificationData, load_dataset
from noprop.distributed import spawn, train_process

MODES = {  # name: (processes, threads per process, parallel)
    "one-process": (1, 2, "data"),
    "one-process-1-thread": (1, 1, "data"),  # a control: how much the second thread gives
    "block-parallel": (2, 1, "blocks"),
    "data-parallel": (2, 1, "data"),
}


def subset(data: ClassificationData, n_train: int, n_test: int) -> ClassificationData:
    """The first ``n_train`` / ``n_test`` images: a fixed subset, the same in every run."""
    return ClassificationData(f"{data.name}[:{n_train}]", data.train_x[:n_train], data.train_y[:n_train],
                              data.test_x[:n_test], data.test_y[:n_test], num_classes=data.num_classes)


def run_mode(mode: str, config: RunConfig, data: ClassificationData) -> dict[str, Any]:
    nproc, threads, parallel = MODES[mode]
    start = time.perf_counter()
    outcomes = spawn(train_process, nproc, (config.replace(parallel=parallel), None),
                     {"data": data, "timeout_s": 3600.0}, threads=threads)
    results = outcomes[0].results
    sent = [o.communication.total_sent for o in outcomes]
    return {
        "mode": mode, "processes": nproc, "threads_per_process": threads, "parallel": parallel,
        "epoch_seconds": results["train_seconds"] / results["epochs"],
        "job_seconds": round(time.perf_counter() - start, 1),
        "test_accuracy": results["test_accuracy"],
        "sent_bytes_per_epoch_per_rank": [s / results["epochs"] for s in sent],
        "sent_bytes_per_epoch_total": sum(sent) / results["epochs"],
        "communication_by_rank": [o.communication.as_dict() for o in outcomes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist"))
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("-T", "--num-blocks", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["one-process", "block-parallel"], choices=list(MODES))
    parser.add_argument("--out", type=Path, default=None, help="write the measurements here as JSON")
    args = parser.parse_args()

    data = subset(load_dataset("mnist", args.data_dir), args.train_size, args.test_size)
    config = RunConfig(method="dt", dataset="mnist", epochs=args.epochs, batch_size=args.batch_size,
                       num_blocks=args.num_blocks, block_order="interleaved", device="cpu", progress=False,
                       log_epochs=False)
    rows = []
    for repeat in range(args.repeats):
        order = args.modes if repeat % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            row = {"repeat": repeat, **run_mode(mode, config, data)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "communication_by_rank"}), flush=True)
    base = [r["epoch_seconds"] for r in rows if r["mode"] == args.modes[0]]
    summary = {}
    for mode in args.modes:
        mine = [r for r in rows if r["mode"] == mode]
        times = [r["epoch_seconds"] for r in mine]
        summary[mode] = {
            "epoch_seconds": times,
            "speedup_vs_first_mode_per_repeat": [b / t for b, t in zip(base, times, strict=True)],
            "sent_bytes_per_epoch_total": mine[0]["sent_bytes_per_epoch_total"],
        }
    report = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), shared",
        "load_average_at_end": os.getloadavg(),
        "torch_version": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "rows": rows,
        "summary": summary,
    }
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
