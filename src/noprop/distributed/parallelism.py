"""The trainer hooks that keep processes consistent (data and block parallel; see ``layout``).

Per training step:

* data parallel (replicas of one slot): after a unit's backward, the gradients of the groups it
  updates are averaged across the slot's replicas with one all-reduce, so every replica takes the
  same optimizer step and the replicas stay identical, as with DistributedDataParallel. Each
  replica takes rows ``replica::R`` of every global batch (the batch padded by wrapping to a
  multiple of R, as ``DistributedSampler`` pads), so the global batch stays ``batch_size``.
* block parallel (slots): nothing crosses slots during a step. Every ``shared_sync_every`` batches
  (interleaved order) the shared groups are merged across all ranks: each slot's change to the
  shared parameters since the last merge is added to them (as if one process had taken every
  slot's steps, which is what a one-process run does: each block's step also steps the shared
  group), and their floating buffers are averaged. A gradient all-reduce would have no common
  clock: ranks owning more units step the shared groups more often.

At the end of every epoch (inside the epoch's timing):

1. replicas average the floating buffers of their groups (BatchNorm statistics, computed on their
   own shard);
2. all ranks merge the shared groups (the slots' changes added, buffers averaged);
3. each slot's first rank broadcasts its owned groups' parameters and buffers, so every rank
   holds the whole model for evaluation and checkpoints;
4. if a checkpoint will be written, rank 0 gathers the optimizer state of the groups it does
   not train, so the checkpoint can resume with any layout.

Buffers belong to a group when the nearest enclosing module whose parameters all lie in one
group lies in that group (a BatchNorm's running statistics go with its weight). Buffers outside
every group (DT's one-hot embedding, schedule tables) never change in training and are not sent.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from noprop.distributed.comm import Communicator
from noprop.distributed.layout import ProcessLayout
from noprop.methods.base import Method
from noprop.training.parallelism import Parallelism


def group_buffers(method: Method) -> dict[str, list[Tensor]]:
    """Buffers of each parameter group, found through the modules that hold them."""
    group_of = {id(p): g for g, params in method.parameter_groups().items() for p in params}
    modules = dict(method.named_modules())
    out: dict[str, list[Tensor]] = {}
    for name, module in modules.items():
        buffers = list(module.buffers(recurse=False))
        if not buffers:
            continue
        path = name.split(".") if name else []
        while True:
            owner = modules[".".join(path)]
            groups = {group_of.get(id(p)) for p in owner.parameters()}
            if groups:
                if len(groups) == 1 and None not in groups:
                    out.setdefault(groups.pop(), []).extend(buffers)
                break
            if not path:
                break
            path.pop()
    return out


def _optimizer_state_cpu(opt: torch.optim.Optimizer) -> dict[str, Any]:
    def cpu(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.detach().cpu()
        if isinstance(v, dict):
            return {k: cpu(x) for k, x in v.items()}
        if isinstance(v, list):
            return [cpu(x) for x in v]
        return v

    return cpu(opt.state_dict())


class DistributedParallelism(Parallelism):
    """Trainer hooks for one rank of a data- or block-parallel run."""

    def __init__(
        self,
        layout: ProcessLayout,
        comm: Communicator,
        *,
        parallel: str,
        block_order: str,
        shared_sync_every: int,
        gather_optimizer_state: bool,
    ) -> None:
        self.layout = layout
        self.comm = comm
        self.parallel = parallel
        self.gather_optimizer_state = gather_optimizer_state
        # Batches line up across slots only when every rank visits each batch once per pass.
        interleaved = block_order == "interleaved"
        self.sync_every_steps = (
            shared_sync_every * len(layout.my_units)
            if interleaved and shared_sync_every > 0 and layout.shared_groups else 0
        )
        self._steps = 0
        #: The shared parameters as of the last merge (equal on every rank), set at each epoch start.
        self._merged: list[Tensor] = []
        # One process group per slot for its replicas; every rank must create every group.
        self._slot_groups = [
            dist.new_group(layout.slot_ranks(s)) if layout.replicas > 1 and layout.slots > 1 else None
            for s in range(layout.slots)
        ]

    # -- what this rank trains ----------------------------------------------------------------
    def units(self, num_units: int) -> list[int]:
        if num_units != len(self.layout.units):
            raise ValueError(f"layout made for {len(self.layout.units)} units, trainer has {num_units}")
        return self.layout.my_units

    def shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        r = self.layout.replicas
        if r == 1:
            return x, y
        n = len(x)
        rows = (torch.arange(n + (-n) % r) % n)[self.layout.replica :: r]
        return x[rows], y[rows]

    # -- per step -----------------------------------------------------------------------------
    @property
    def _slot_group(self) -> Any:
        return self._slot_groups[self.layout.slot]

    def begin_epoch(self, method: Method) -> None:
        # every rank holds the same shared parameters here: built from one seed, loaded from one
        # checkpoint, or merged and broadcast at the last epoch's end
        self._merged = [p.detach().clone() for p in self._shared_parameters(method)]

    def sync_gradients(self, method: Method, groups: tuple[str, ...]) -> None:
        if self.layout.replicas == 1:
            return
        params = method.parameter_groups()
        grads = [p.grad for g in groups for p in params.get(g, []) if p.grad is not None]
        ranks = self.layout.slot_ranks(self.layout.slot)
        self.comm.all_reduce_mean("gradient_all_reduce", grads, ranks, self._slot_group)

    def after_step(self, method: Method) -> None:
        self._steps += 1
        if self.sync_every_steps and self._steps % self.sync_every_steps == 0:
            self._merge_shared(method, "shared_average_per_batch")

    # -- per epoch ----------------------------------------------------------------------------
    def end_epoch(self, method: Method, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self._steps = 0
        lay = self.layout
        if lay.replicas > 1:
            mine = lay.owned_groups(lay.slot) + lay.shared_groups
            buffers = [b for b in self._tensors(method, mine, params=False) if b.is_floating_point()]
            self.comm.all_reduce_mean("buffer_average", buffers, lay.slot_ranks(lay.slot), self._slot_group)
        if lay.slots == 1:
            return
        self._merge_shared(method, "shared_average_epoch_end")
        world = list(range(lay.world_size))
        for slot in range(lay.slots):
            tensors = self._tensors(method, lay.owned_groups(slot))
            self.comm.broadcast("block_broadcast", tensors, src=slot, ranks=world, group=None)
        if self.gather_optimizer_state:
            self._gather_optimizer_state(optimizers)

    def _shared_parameters(self, method: Method) -> list[Tensor]:
        groups = method.parameter_groups()
        return [p.data for g in self.layout.shared_groups for p in groups.get(g, [])]

    @torch.no_grad()
    def _merge_shared(self, method: Method, op: str) -> None:
        """Merge the shared groups: parameters take the sum of the slots' changes since the last
        merge, floating buffers the mean, in one all-reduce per dtype.

        A slot's replicas hold the same change (their gradients are averaged), so the sum over
        slots is ``slots`` times the mean over all ranks.
        """
        lay = self.layout
        params = self._shared_parameters(method)
        if len(self._merged) != len(params):
            raise RuntimeError("shared parameters merged before begin_epoch recorded them")
        changes = [p - before for p, before in zip(params, self._merged, strict=True)]
        buffers = [t for t in self._tensors(method, lay.shared_groups, params=False) if t.is_floating_point()]
        self.comm.all_reduce_mean(op, changes + buffers, list(range(lay.world_size)), None)
        for p, before, change in zip(params, self._merged, changes, strict=True):
            p.copy_(before + lay.slots * change)
        self._merged = [p.clone() for p in params]

    def _gather_optimizer_state(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        lay = self.layout
        send = lay.replica == 0 and lay.slot != 0
        mine = {g: _optimizer_state_cpu(optimizers[g]) for g in lay.owned_groups(lay.slot)
                if send and g in optimizers}
        gathered = self.comm.gather_object("optimizer_state_gather", mine, lay.world_size)
        for states in gathered or []:
            for g, state in (states or {}).items():
                optimizers[g].load_state_dict(state)

    @staticmethod
    def _tensors(method: Method, groups: list[str], *, params: bool = True) -> list[Tensor]:
        """Parameters (optionally) and buffers of ``groups``, in a fixed order on every rank."""
        by_group = method.parameter_groups()
        buffers = group_buffers(method)
        out: list[Tensor] = []
        for g in groups:
            if params:
                out += [p.data for p in by_group.get(g, [])]
            out += buffers.get(g, [])
        return out

    def describe(self) -> dict[str, Any]:
        lay = self.layout
        return {
            "parallel": self.parallel,
            "world_size": lay.world_size,
            "block_slots": lay.slots,
            "replicas": lay.replicas,
            "units_of_rank0": [lay.units[u].name for u in lay.units_of(0)],
            "communication": {"rank": lay.rank, **self.comm.stats.as_dict()},
        }
