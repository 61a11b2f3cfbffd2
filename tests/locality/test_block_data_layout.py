"""Block x data parallel at the scale where the layouts differ: 4 gloo processes, T = 2, so two
blocks with two replicas each (tests/distributed spawns 2 processes, where a gradient all-reduce
over the whole world and one over a block's replicas are the same thing).

One spawn measures the real code, then the same processes measure it with the audit's leak (the
replicas' gradient all-reduce run over the whole world instead of the block's replica group) and
with a leak that broadcasts a block's parameters after every step. Leaks are module-level
functions the spawned processes import and call (a monkeypatch in this process would not reach them).
"""

from __future__ import annotations

import pytest
import torch

from helpers import make_blobs
from noprop.config import RunConfig
from noprop.distributed.parallelism import DistributedParallelism
from noprop.locality import distributed_checks, run_distributed

CONFIG = RunConfig("dt", num_blocks=2, embedding="learned", embedding_dim=4)
#: The real hooks, taken when a spawned process first imports this module (before any leak).
REAL_SYNC = DistributedParallelism.sync_gradients
LEAKS = ["test_block_data_layout:leak_world_all_reduce", "test_block_data_layout:leak_block_broadcast"]


def leak_world_all_reduce() -> None:
    """sync_gradients with the world's process group in place of the block's replica group."""

    def sync_gradients(self, method, groups) -> None:
        if self.layout.replicas == 1:
            return
        params = method.parameter_groups()
        grads = [p.grad for g in groups for p in params.get(g, []) if p.grad is not None]
        ranks = self.layout.slot_ranks(self.layout.slot)
        self.comm.all_reduce_mean("gradient_all_reduce", grads, ranks, None)  # None: the whole world

    DistributedParallelism.sync_gradients = sync_gradients


def leak_block_broadcast() -> None:
    """Back to the real all-reduce, but every step also sends block 1's parameters to every rank."""
    DistributedParallelism.sync_gradients = REAL_SYNC
    original = DistributedParallelism.after_step

    def after_step(self, method) -> None:
        original(self, method)
        block = method.parameter_groups()["block1"]
        self.comm.broadcast("block_broadcast", [p.data for p in block], src=0,
                            ranks=list(range(self.layout.world_size)), group=None)

    DistributedParallelism.after_step = after_step


@pytest.fixture(scope="module")
def measured() -> list[list[dict]]:
    data = make_blobs(n_train=16, n_test=8)
    return run_distributed(CONFIG, data, nproc=4, rows=16, setups=[None, *LEAKS], timeout_s=120)


def test_each_rank_syncs_only_its_blocks_replicas(measured) -> None:
    clean = measured[0]
    assert [r["units"] for r in clean] == [[0], [1], [0], [1]]
    assert [r["slot_ranks"] for r in clean] == [[0, 2], [1, 3], [0, 2], [1, 3]]
    checks = distributed_checks(clean)
    assert [c.passed for c in checks] == [True] * 4, "\n".join(c.detail for c in checks)
    # the synced gradient is the replicas' mean and not the world's: the check can tell them apart
    r0, r1, r2 = clean[0]["synced"][0], clean[1]["synced"][0], clean[2]["synced"][0]
    g0, g1, g2 = r0["before"]["block1"][0], r1["before"]["block2"][0], r2["before"]["block1"][0]
    torch.testing.assert_close(r0["after"]["block1"][0], (g0 + g2) / 2)
    assert not torch.allclose(r0["after"]["block1"][0], (g0 + g1 + g2 + clean[3]["synced"][0]["before"]
                                                         ["block2"][0]) / 4)
    ops = {c["op"] for r in clean for c in r["calls"]}
    assert ops == {"gradient_all_reduce", "shared_average_per_batch"}


def test_a_world_all_reduce_of_the_replicas_gradients_is_caught(measured) -> None:
    checks = distributed_checks(measured[1])
    assert all(c.passed is False for c in checks), "\n".join(c.detail for c in checks)
    assert {b for c in checks for b in c.blocks} == {"block1", "block2"}
    assert "not the mean over its block's replicas" in checks[0].detail


def test_a_block_sent_to_every_rank_during_training_is_caught(measured) -> None:
    checks = distributed_checks(measured[2])
    assert all(c.passed is False for c in checks), "\n".join(c.detail for c in checks)
    assert "block_broadcast" in checks[0].detail and "block1" in checks[0].blocks
