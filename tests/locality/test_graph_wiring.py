"""The trainer's own CUDA-graph wiring, on a CPU: ``--cuda-graphs`` as the Trainer builds it, with
the CUDA recorder stood in for by :class:`CallRecorder` (a replay calls the recorded step).

tests/training/test_graphs.py builds ``GraphedSteps`` itself, so a trainer that wired its graphs to
the wrong step body (one without the optimizer step, say) passed every CPU test. Here the Trainer
builds them: a recorded run must equal an eager one bit for bit (measured: max parameter
difference 0.0; with the step body's optimizer step left out, 0.0078 after this test's 8 steps at
lr 1e-3), and the locality checker, stepping through the recorded steps, must flag a replay of
another unit's (stale) graph.
"""

from __future__ import annotations

import pytest
import torch

import noprop.training.trainer as trainer_module
from helpers import make_blobs
from noprop.config import RunConfig
from noprop.locality import check_locality
from noprop.methods import NoPropDT
from noprop.run import build_for
from noprop.training.graphs import CallRecorder, GraphedSteps
from noprop.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cpu_graphs(monkeypatch) -> None:
    """Let the trainer build its graphs on the CPU: the recorder replays by calling the step."""
    monkeypatch.setattr(trainer_module, "CudaGraphRecorder", lambda device: CallRecorder())
    monkeypatch.setattr(trainer_module, "check_cuda_graphs", lambda *args: None)


def config(**changes) -> RunConfig:
    return RunConfig("dt", num_blocks=2, epochs=1, batch_size=16, progress=False, log_epochs=False,
                     device="cpu", precision="fp32", **changes)


def largest_difference_from_eager() -> float:
    """Max parameter difference between a recorded and an eager run (same seed, data, steps)."""
    data = make_blobs(n_train=64, n_test=16)
    runs = []
    for graphs in (False, True):
        c = config(cuda_graphs=graphs)
        trainer = Trainer(build_for(c.resolved(), data), data, c)
        assert (trainer.graphs is not None) == graphs
        torch.manual_seed(0)
        trainer.train_epoch()
        if graphs:
            assert trainer.graphs.replayed > 0 and trainer.graphs.error is None
        runs.append({k: v.detach() for k, v in trainer.method.named_parameters()})
    eager, graphed = runs
    return max(float((eager[k] - graphed[k]).abs().max()) for k in eager)


def test_the_trainers_recorded_steps_train_exactly_as_eager_steps(cpu_graphs) -> None:
    assert largest_difference_from_eager() == 0.0


def test_graphs_wired_to_a_step_body_without_the_optimizer_step_are_caught(cpu_graphs, monkeypatch) -> None:
    """The audit's leak: the Trainer hands GraphedSteps its forward-backward, not the whole step."""

    class Miswired(GraphedSteps):
        def __init__(self, body, *args, **kwargs) -> None:
            super().__init__(body.__self__._forward_backward, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "GraphedSteps", Miswired)
    assert largest_difference_from_eager() > 1e-3


def test_the_checker_passes_the_trainers_recorded_steps(cpu_graphs) -> None:
    torch.manual_seed(0)
    report = check_locality(NoPropDT(make_blobs().spec, num_blocks=3), make_blobs(n_train=16, n_test=8),
                            cuda_graphs=True)
    assert report.passed, report.table()


def test_a_stale_replay_of_another_units_graph_is_caught(cpu_graphs, monkeypatch) -> None:
    """Graphs keyed wrongly: every unit replays the first recorded graph (block 1's step)."""
    real_call = GraphedSteps.__call__

    def stale(self, unit, x, y):
        return real_call(self, next(iter(self._graphs), unit), x, y)

    monkeypatch.setattr(GraphedSteps, "__call__", stale)
    torch.manual_seed(0)
    report = check_locality(NoPropDT(make_blobs().spec, num_blocks=3), make_blobs(n_train=16, n_test=8),
                            cuda_graphs=True)
    failed = [c for c in report.failures if c.check == "optimizer"]
    assert failed and failed[0].leak == "optimizer state crosses blocks", report.table()
    assert "block1" in failed[0].blocks and failed[0].subject == "block2"
