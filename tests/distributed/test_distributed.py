"""Distributed training on 2 gloo processes on 127.0.0.1 (docs/distributed.md).

Starting a process costs an import of torch (seconds on a loaded 2-core machine), so one spawned
job does all the correctness checks and returns what each rank saw; the tests compare in this
process. Worker functions are module-level so that spawned processes can import them.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from noprop.cli import main
from noprop.config import ConfigError, RunConfig
from noprop.data import ClassificationData
from noprop.distributed import (
    Communicator,
    DistributedError,
    group_buffers,
    launch,
    make_layout,
    process_group,
    rank_seed,
    rank_trainer,
    spawn,
    train_rank,
)
from noprop.inference import InferenceOptions, accuracy
from noprop.methods import build_method
from noprop.methods.base import TrainingUnit
from noprop.run import RunFinished, build_for
from noprop.saved_run import load_run
from noprop.spec import DataSpec
from noprop.training.parallelism import Parallelism
from noprop.training.trainer import Trainer

TIMEOUT_S = 300.0  # only reached on failure; generous because imports are slow on a loaded machine
BASE = dict(method="dt", dataset="tiny", epochs=1, batch_size=16, num_blocks=3, device="cpu",
            progress=False, block_order="interleaved")  # T=3 on 2 ranks: 2 blocks and 1 block
DATA_PARALLEL = RunConfig(**BASE, parallel="data")
# A learned embedding makes the shared group matter to the blocks; syncing it only at the epoch
# end makes the result computable from one-process runs (the blocks never see each other's copy).
BLOCKS = RunConfig(**BASE, parallel="blocks", embedding="learned", embedding_dim=4, shared_sync_every=0)
BLOCKS_PER_BATCH = RunConfig(**BASE, parallel="blocks")


def tiny_data() -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(3, 1, 8, 8, generator=g)
    y = torch.arange(72) % 3
    x = patterns[y] + 0.5 * torch.randn(72, 1, 8, 8, generator=g)
    return ClassificationData("tiny", x[:48], y[:48], x[48:], y[48:], num_classes=3)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# -- what the spawned ranks run ------------------------------------------------------------------
def _all_checks(out_dir: str) -> dict:
    data = tiny_data()
    out: dict = {}
    with process_group("gloo", TIMEOUT_S) as info:
        # data parallel: one step on this rank's half of a batch
        trainer = rank_trainer(DATA_PARALLEL, data, None, info, timeout_s=TIMEOUT_S)
        out["dp_init"] = parameters(trainer.method)
        xb, yb = trainer.parallelism.shard(data.train_x[:16], data.train_y[:16])
        trainer.train_step(0, xb, yb)
        out["dp_rows"] = xb
        out["dp_step"] = parameters(trainer.method)  # BatchNorm statistics: averaged per epoch
        trainer.train_epoch()
        out["dp_epoch"] = state(trainer.method)  # parameters and buffers

        # block parallel: an epoch without the end-of-epoch gather, then the gather
        trainer = rank_trainer(BLOCKS, data, None, info, timeout_s=TIMEOUT_S)
        out["bp_init"] = state(trainer.method)
        out["bp_units"] = trainer.trained_units
        gather = trainer.parallelism.end_epoch
        trainer.parallelism.end_epoch = lambda *args: None  # type: ignore[method-assign]
        trainer.train_epoch()
        out["bp_before_gather"] = state(trainer.method)
        gather(trainer.method, trainer.optimizers)
        out["bp_gathered"] = state(trainer.method)

        # the real path, with a checkpoint written by rank 0
        outcome = train_rank(BLOCKS_PER_BATCH, Path(out_dir) / "run", info, data=data, timeout_s=TIMEOUT_S)
        out["results"] = outcome.results
        out["communication"] = outcome.communication.as_dict()
    return out


def _rank1_raises(stamp: str) -> None:
    with process_group("gloo", TIMEOUT_S) as info:
        if info.rank == 1:
            Path(stamp).write_text(str(time.time()))
            raise ValueError("boom on rank 1")
        dist.barrier()


def _rank1_hangs(timeout_s: float) -> None:
    # a long timeout to meet (the ranks start at different times), a short one for the barrier
    with process_group("gloo", TIMEOUT_S) as info:
        group = dist.new_group([0, 1], timeout=timedelta(seconds=timeout_s))
        if info.rank == 1:
            time.sleep(120)
        Communicator(info.rank, timedelta(seconds=timeout_s)).barrier("test_barrier", group)


# -- one spawned job, many checks ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out_dir = tmp_path_factory.mktemp("distributed")
    return spawn(_all_checks, 2, (str(out_dir),), threads=1), out_dir / "run"


class Only(Parallelism):
    """One process training a subset of the units: the single-process reference of one rank."""

    def __init__(self, units: list[int]) -> None:
        self._units = units

    def units(self, num_units: int) -> list[int]:
        return self._units


def reference(config: RunConfig, rank: int, units: list[int]) -> dict[str, torch.Tensor]:
    """What rank ``rank`` trains, run in this process with the same seeds, data and thread count.

    One thread, as in the spawned ranks: a different count changes float rounding, which Adam
    magnifies in the biases that feed a BatchNorm (their gradient is rounding noise around 0).
    """
    data = tiny_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(build_for(config.resolved(), data), data, config, None, parallelism=Only(units))
        torch.manual_seed(rank_seed(config.seed, rank, 0))
        trainer.train_epoch()
    finally:
        torch.set_num_threads(threads)
    return state(trainer.method)


def block_keys(sd: dict, block: int) -> list[str]:
    return [k for k in sd if k.startswith(f"blocks.{block}.")]


def test_data_parallel_ranks_train_disjoint_halves_of_each_batch(ranks):
    (r0, r1), _ = ranks
    assert len(r0["dp_rows"]) == len(r1["dp_rows"]) == 8
    assert not any(torch.equal(a, b) for a in r0["dp_rows"] for b in r1["dp_rows"])


def test_data_parallel_step_leaves_replicas_identical(ranks):
    (r0, r1), _ = ranks
    moved = [k for k in r0["dp_step"] if not torch.equal(r0["dp_step"][k], r0["dp_init"][k])]
    assert any(k.startswith("blocks.0.") for k in moved) and "classifier.weight" in moved
    for snapshot in ("dp_step", "dp_epoch"):
        for k, v in r0[snapshot].items():
            assert torch.equal(v, r1[snapshot][k]), f"{snapshot}: replicas differ in {k}"


def test_block_parallel_rank_leaves_blocks_it_does_not_own_unchanged(ranks):
    (r0, r1), _ = ranks
    assert r0["bp_units"] == [0, 2] and r1["bp_units"] == [1]
    for r in (r0, r1):
        for block in range(3):
            same = all(torch.equal(r["bp_before_gather"][k], r["bp_init"][k])
                       for k in block_keys(r["bp_init"], block))
            assert same == (block not in r["bp_units"]), f"block {block}, units {r['bp_units']}"


def test_block_parallel_gathered_model_equals_single_process_runs(ranks):
    (r0, r1), _ = ranks
    for k, v in r0["bp_gathered"].items():
        assert torch.equal(v, r1["bp_gathered"][k]), f"ranks disagree on {k} after the gather"
    refs = [reference(BLOCKS, rank, units) for rank, units in ((0, [0, 2]), (1, [1]))]
    gathered = r0["bp_gathered"]
    for block in range(3):
        ref = refs[block % 2]
        for k in block_keys(gathered, block):
            torch.testing.assert_close(gathered[k], ref[k], rtol=1e-4, atol=1e-5)
    init = r0["bp_init"]
    for k in ("classifier.weight", "classifier.bias", "embedding.weight"):
        # each rank's change to the shared parts is added, as one process would have taken both
        merged = init[k] + (refs[0][k] - init[k]) + (refs[1][k] - init[k])
        torch.testing.assert_close(gathered[k], merged, rtol=1e-4, atol=1e-5)


def test_checkpoint_from_two_processes_evaluates_the_same_in_one(ranks):
    (_, r1), run_dir = ranks
    assert r1["results"] is None
    results = json.loads((run_dir / "results.json").read_text())
    assert results["world_size"] == 2 and results["parallel"] == "blocks"
    run = load_run(run_dir)
    config = run.config
    data = tiny_data()
    options = InferenceOptions(steps=config.sampler_steps, deterministic=config.eval_deterministic,
                               seed=config.eval_seed)
    assert accuracy(run.method, data.test_x, data.test_y, options) == results["test_accuracy"]


def test_block_parallel_sends_no_gradients_only_blocks_and_shared_parts(ranks):
    (r0, _), _ = ranks
    ops = r0["communication"]["by_operation"]
    assert set(ops) == {"shared_average_per_batch", "shared_average_epoch_end", "block_broadcast",
                        "optimizer_state_gather"}
    assert ops["shared_average_per_batch"]["calls"] == 3  # 48 images / batch 16, every batch


# -- failures end the job ------------------------------------------------------------------------
def test_failing_rank_stops_the_job_with_its_error(tmp_path):
    stamp = tmp_path / "failed_at"
    with pytest.raises(DistributedError, match="rank 1 of 2 failed: ValueError: boom on rank 1"):
        spawn(_rank1_raises, 2, (str(stamp),), threads=1)
    # the waiting rank was stopped within the grace period, not left to its 300 s timeout
    assert time.time() - float(stamp.read_text()) < 60


def test_hung_rank_makes_the_others_fail_after_the_timeout():
    with pytest.raises(DistributedError, match=r"rank 0 of 2 failed: .*test_barrier failed.*3 s timeout"):
        spawn(_rank1_hangs, 2, (3.0,), threads=1)


# -- layout and bookkeeping, no processes --------------------------------------------------------
def units(n: int) -> list[TrainingUnit]:
    return [TrainingUnit(f"block{t}", (f"block{t}", "shared")) for t in range(1, n + 1)]


def test_block_layout_spreads_units_round_robin_and_finds_the_shared_group():
    layout = make_layout("blocks", 1, 2, units(5))
    assert layout.my_units == [1, 3]
    assert layout.shared_groups == ["shared"]
    assert layout.owned_groups(0) == ["block1", "block3", "block5"]


def test_world_larger_than_the_blocks_combines_block_and_data_parallel():
    layout = make_layout("blocks", 5, 6, units(3))
    assert (layout.slots, layout.replicas, layout.slot, layout.replica) == (3, 2, 2, 1)
    assert layout.slot_ranks(2) == [2, 5] and layout.my_units == [2]


def test_data_layout_and_single_unit_methods_train_everything_on_every_rank():
    assert make_layout("data", 1, 4, units(10)).my_units == list(range(10))
    backprop = [TrainingUnit("all", ("all",))]
    layout = make_layout("blocks", 1, 2, backprop)
    assert (layout.slots, layout.replicas, layout.shared_groups) == (1, 2, [])


def test_batchnorm_statistics_travel_with_their_block():
    method = build_method("dt", DataSpec.image(1, 8, 8, 3), {"num_blocks": 2})
    buffers = group_buffers(method)
    ids = {g: {id(b) for b in bs} for g, bs in buffers.items()}
    assert set(buffers) == {"block1", "block2"}  # one-hot embedding and schedule tables stay put
    for t, block in enumerate(method.blocks, start=1):
        assert {id(b) for b in block.buffers()} == ids[f"block{t}"]


def test_cli_trains_block_parallel_in_one_process(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--nproc", "1", "--parallel", "blocks", "-T", "2", "--epochs", "1",
                 "--batch-size", "256", "--device", "cpu", "--run-dir", str(run_dir), "-q"])
    assert code == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["world_size"], results["block_slots"]) == (1, 1)
    assert 0.0 <= results["test_accuracy"] <= 1.0


def test_cli_rejects_a_negative_shared_sync_interval(capsys):
    with pytest.raises(SystemExit) as exit_:  # refused by the flag itself, before any process starts
        main(["train", "--nproc", "1", "--shared-sync-every", "-1"])
    assert exit_.value.code == 2
    assert "--shared-sync-every: must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="shared_sync_every must be >= 0"):
        RunConfig(shared_sync_every=-1)


def test_options_that_would_make_processes_disagree_are_refused_before_starting():
    config = RunConfig(**BASE, parallel="blocks", max_train_seconds=10.0)
    with pytest.raises(ConfigError, match="max-train-seconds is for one process"):
        launch(config, None, nproc=2, data=tiny_data())


def test_distributed_run_resumes_from_its_checkpoint(tmp_path):
    config = RunConfig(**BASE, parallel="blocks")
    first = launch(config, tmp_path / "run", nproc=1, data=tiny_data())[0].results
    assert first["epochs"] == 1
    resumed = launch(config.replace(epochs=2), tmp_path / "run", nproc=1, resume=True, data=tiny_data())
    results = resumed[0].results
    assert results["epochs"] == 2
    assert [int(r["epoch"]) for r in csv_rows(tmp_path / "run" / "metrics.csv")] == [1, 2]
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(RunFinished, match="has already trained 2 of 2 epochs"):  # as in one process
        launch(config.replace(epochs=2), tmp_path / "run", nproc=1, resume=True, data=tiny_data())
    assert (tmp_path / "run" / "results.json").read_bytes() == before


def csv_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))
