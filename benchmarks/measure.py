"""What the timing benchmarks share: the timed loop, and the record of where and when they ran.

A step is timed by the wall clock and by the process's CPU time (on a shared machine the wall clock
also counts the time other jobs held the cores; the CPU time counts this process's own work), with
the minor page faults it took (a fresh allocation's first touch). Steps compared with each other
take turns, one call each per round, so a change in the machine's load hits them alike.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from noprop.bench import cpu_model


def machine() -> dict[str, Any]:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_record(script: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The head of a benchmark's results: its command line (``argv``: the arguments given to its
    ``main``, default ``sys.argv``), the date (UTC) and the machine."""
    return {"command": f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine()}


def load_average(before: float) -> dict[str, float]:
    """The 1-minute load average when the benchmark started (``before``) and now."""
    return {"before": round(before, 2), "after": round(os.getloadavg()[0], 2)}


def minor_faults() -> int:
    """Pages this process has faulted in so far without reading a disk (a fresh allocation's first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Rounds:
    """Per round, one call's wall-clock seconds, CPU seconds and minor page faults (each divided by
    the steps a call runs)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)


def timed_rounds(steps: Mapping[str, Callable[[], object]], rounds: int, *,
                 per_call: int = 1) -> dict[str, Rounds]:
    """Each of ``steps`` called once per round, in turn, ``rounds`` times; ``per_call``: the steps
    one call runs. Warm-up calls are the caller's (a step's first call chooses kernels, makes state)."""
    out = {name: Rounds() for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            wall, cpu, faults = time.perf_counter(), time.process_time(), minor_faults()
            step()
            r = out[name]
            r.wall.append((time.perf_counter() - wall) / per_call)
            r.cpu.append((time.process_time() - cpu) / per_call)
            r.faults.append((minor_faults() - faults) / per_call)
    return out


def median_ms(step: Callable[[], object], rounds: int) -> float:
    """Median wall-clock milliseconds of ``step()`` over ``rounds`` calls, after one warm-up call."""
    step()
    return round(statistics.median(timed_rounds({"step": step}, rounds)["step"].wall) * 1e3, 2)
