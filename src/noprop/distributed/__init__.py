"""Distributed training with ``torch.distributed`` (gloo on CPU, NCCL on GPU); see docs/distributed.md.

* :mod:`~noprop.distributed.layout`: which rank trains which units (data vs block parallel);
* :mod:`~noprop.distributed.comm`: the counted collectives and their timeouts;
* :mod:`~noprop.distributed.parallelism`: the trainer hooks that keep ranks consistent;
* :mod:`~noprop.distributed.launch`: torchrun's environment, ``--nproc`` spawning, one rank's run.
"""

from noprop.distributed.comm import CommStats, Communicator, DistributedError
from noprop.distributed.launch import (
    DEFAULT_TIMEOUT_S,
    ProcessInfo,
    ProcessOutcome,
    launch,
    launched_by_torchrun,
    process_group,
    rank_seed,
    rank_trainer,
    spawn,
    train_distributed,
    train_process,
    train_rank,
)
from noprop.distributed.layout import ProcessLayout, make_layout
from noprop.distributed.parallelism import DistributedParallelism, group_buffers

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CommStats",
    "Communicator",
    "DistributedError",
    "DistributedParallelism",
    "ProcessInfo",
    "ProcessLayout",
    "ProcessOutcome",
    "group_buffers",
    "launch",
    "launched_by_torchrun",
    "make_layout",
    "process_group",
    "rank_seed",
    "rank_trainer",
    "spawn",
    "train_distributed",
    "train_process",
    "train_rank",
]
