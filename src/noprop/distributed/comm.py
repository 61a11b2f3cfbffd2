"""The collectives distributed training calls, each counted, and flattened into one call per dtype.

Every call records its *payload* (the bytes of the tensors this rank hands in) and an *estimate*
of the bytes this rank sends on the wire, from the algorithm's textbook cost:

* all-reduce of ``S`` bytes over ``n`` ranks (ring): ``2 (n - 1) / n * S`` sent by every rank;
* broadcast of ``S`` bytes to ``n`` ranks: the root sends ``S`` to each of the ``n - 1`` others;
* gather of a pickled object of ``S`` bytes: every non-root rank sends ``S`` to the root.

These are counts from tensor sizes, not packet captures; transport headers are left out.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class DistributedError(RuntimeError):
    """A rank failed, hung past the timeout, or lost its peers; the message says which and why."""


@dataclass
class CommStats:
    """Per operation name: number of calls, payload bytes and estimated bytes sent by this rank."""

    calls: dict[str, int] = field(default_factory=dict)
    payload_bytes: dict[str, int] = field(default_factory=dict)
    sent_bytes: dict[str, float] = field(default_factory=dict)

    def record(self, op: str, payload: int, sent: float) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        self.payload_bytes[op] = self.payload_bytes.get(op, 0) + payload
        self.sent_bytes[op] = self.sent_bytes.get(op, 0.0) + sent

    @property
    def total_sent(self) -> int:
        return round(sum(self.sent_bytes.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent_bytes_estimate": self.total_sent,
            "by_operation": {
                op: {"calls": self.calls[op], "payload_bytes": self.payload_bytes[op],
                     "sent_bytes_estimate": round(self.sent_bytes[op])}
                for op in sorted(self.calls)
            },
        }


def _flat_by_dtype(tensors: Sequence[Tensor]) -> dict[torch.dtype, list[Tensor]]:
    out: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        out.setdefault(t.dtype, []).append(t)
    return out


class Communicator:
    """Counted collectives on one process group; errors name the rank and the timeout."""

    def __init__(self, rank: int, timeout: timedelta) -> None:
        self.rank = rank
        self.timeout = timeout
        self.stats = CommStats()

    def _fail(self, op: str, err: Exception) -> DistributedError:
        return DistributedError(
            f"rank {self.rank}: {op} failed: a peer exited, hung or took longer than the "
            f"{self.timeout.total_seconds():g} s timeout ({type(err).__name__}: {str(err).splitlines()[0]})"
        )

    @torch.no_grad()
    def all_reduce_mean(self, op: str, tensors: Sequence[Tensor], ranks: list[int], group: Any) -> None:
        """Replace each tensor by its mean over ``ranks`` (one all-reduce per dtype)."""
        n = len(ranks)
        if n == 1 or not tensors:
            return
        for same in _flat_by_dtype(tensors).values():
            flat = torch.cat([t.reshape(-1) for t in same])
            try:
                dist.all_reduce(flat, group=group)
            except RuntimeError as err:  # gloo and NCCL raise RuntimeError subclasses
                raise self._fail(op, err) from err
            flat /= n
            self._unflatten(flat, same)
            size = flat.numel() * flat.element_size()
            self.stats.record(op, size, 2 * (n - 1) / n * size)

    @torch.no_grad()
    def broadcast(self, op: str, tensors: Sequence[Tensor], src: int, ranks: list[int], group: Any) -> None:
        """Overwrite each tensor with ``src``'s copy (one broadcast per dtype)."""
        n = len(ranks)
        if n == 1 or not tensors:
            return
        for same in _flat_by_dtype(tensors).values():
            flat = torch.cat([t.reshape(-1) for t in same])
            try:
                dist.broadcast(flat, src=src, group=group)
            except RuntimeError as err:  # gloo and NCCL raise RuntimeError subclasses
                raise self._fail(op, err) from err
            self._unflatten(flat, same)
            size = flat.numel() * flat.element_size()
            self.stats.record(op, size, size * (n - 1) if self.rank == src else 0.0)

    def gather_object(self, op: str, obj: Any, world_size: int) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (``None`` elsewhere); objects are pickled."""
        if world_size == 1:
            return [obj]
        out: list[Any] | None = [None] * world_size if self.rank == 0 else None
        try:
            dist.gather_object(obj, out, dst=0)
        except RuntimeError as err:  # gloo and NCCL raise RuntimeError subclasses
            raise self._fail(op, err) from err
        size = len(pickle.dumps(obj))
        self.stats.record(op, size, 0.0 if self.rank == 0 else size)
        return out

    def broadcast_object(self, op: str, obj: Any, world_size: int) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for one-off state such as a resumed checkpoint)."""
        if world_size == 1:
            return obj
        box = [obj]
        try:
            dist.broadcast_object_list(box, src=0)
        except RuntimeError as err:  # gloo and NCCL raise RuntimeError subclasses
            raise self._fail(op, err) from err
        size = len(pickle.dumps(box[0]))
        self.stats.record(op, size, size * (world_size - 1) if self.rank == 0 else 0.0)
        return box[0]

    def barrier(self, op: str, group: Any = None) -> None:
        try:
            dist.barrier(group=group)
        except RuntimeError as err:  # gloo and NCCL raise RuntimeError subclasses
            raise self._fail(op, err) from err

    @staticmethod
    def _unflatten(flat: Tensor, tensors: Sequence[Tensor]) -> None:
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
