"""Who trains what: the grid of block slots x replicas that a world of processes forms.

``W`` processes (ranks) and a method with ``U`` training units are arranged as ``G`` block slots
times ``R`` replicas, ``W = G * R``; rank ``r`` is replica ``r // G`` of slot ``r % G``:

* data parallel: ``G = 1``, ``R = W``. Every rank trains every unit on its share of each batch.
* block parallel: ``G`` is the largest divisor of ``W`` that is at most ``U``, ``R = W / G``.
  Slot ``s`` owns the units ``u`` with ``u % G == s`` (round robin, so NoProp-DT's equal-sized
  blocks spread evenly) and streams the full data through them; its ``R`` replicas split every
  batch between them, as in data parallel. ``W = 2, U = 10`` gives two slots of five blocks;
  ``W = 20, U = 10`` gives ten slots of one block, each with two replicas.

A parameter group listed by units of two or more slots is *shared* (NoProp-DT's ``shared``: the
classifier and a learned embedding); every other group a unit names is *owned* by that unit's slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from noprop.config import PARALLEL_MODES
from noprop.methods.base import TrainingUnit


@dataclass(frozen=True)
class ProcessLayout:
    """The place of one rank in the slot x replica grid, and the units and groups it trains."""

    rank: int
    world_size: int
    slots: int
    units: tuple[TrainingUnit, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside a world of {self.world_size}")
        if self.slots < 1 or self.world_size % self.slots or self.slots > max(1, len(self.units)):
            raise ValueError(
                f"{self.slots} slots cannot split {self.world_size} ranks and {len(self.units)} units"
            )

    @property
    def replicas(self) -> int:
        return self.world_size // self.slots

    @property
    def slot(self) -> int:
        return self.rank % self.slots

    @property
    def replica(self) -> int:
        return self.rank // self.slots

    def slot_of(self, unit: int) -> int:
        return unit % self.slots

    def slot_ranks(self, slot: int) -> list[int]:
        """The ranks that hold replicas of ``slot`` (the first is the one that broadcasts it)."""
        return [slot + k * self.slots for k in range(self.replicas)]

    def units_of(self, slot: int) -> list[int]:
        return [u for u in range(len(self.units)) if self.slot_of(u) == slot]

    @property
    def my_units(self) -> list[int]:
        return self.units_of(self.slot)

    @property
    def shared_groups(self) -> list[str]:
        """Groups named by units of two or more slots, in first-seen order."""
        slots_of_group: dict[str, set[int]] = {}
        for u, unit in enumerate(self.units):
            for g in unit.groups:
                slots_of_group.setdefault(g, set()).add(self.slot_of(u))
        return [g for g, slots in slots_of_group.items() if len(slots) > 1]

    def owned_groups(self, slot: int) -> list[str]:
        """Groups only ``slot``'s units train, in first-seen order."""
        shared = set(self.shared_groups)
        out: list[str] = []
        for u in self.units_of(slot):
            out += [g for g in self.units[u].groups if g not in shared and g not in out]
        return out


def make_layout(parallel: str, rank: int, world_size: int, units: list[TrainingUnit]) -> ProcessLayout:
    """The layout for ``parallel`` (``data`` or ``blocks``); blocks falls back to data when U = 1."""
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {', '.join(PARALLEL_MODES)}; got {parallel!r}")
    slots = 1
    if parallel == "blocks":
        slots = max(g for g in range(1, min(world_size, max(1, len(units))) + 1) if world_size % g == 0)
    return ProcessLayout(rank=rank, world_size=world_size, slots=slots, units=tuple(units))
