"""``cuda_graphs``: a recorded step replayed per batch trains exactly as the eager loop does.

On a CPU the graph is stood in for by :class:`CallRecorder` (a replay calls the step), which
tests everything around the graph: static buffers, warm-up steps undone, lr tensors, batches of
another shape taken eagerly, a failed capture. The real graphs are tested where CUDA is.
"""

from __future__ import annotations

import pytest
import torch

from helpers import make_blobs, one_error_line
from noprop.cli import main
from noprop.config import RunConfig
from noprop.run import build_for, build_trainer
from noprop.settings import ConfigError
from noprop.training.graphs import CallRecorder, GraphedSteps
from noprop.training.optimizers import make_optimizers
from noprop.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = {
    "dt": {"num_blocks": 2},
    "dt-fused": {"num_blocks": 2, "fused": True},
    "ct": {},
    "fm": {},
    "backprop": {"num_blocks": 2},
}


def config_for(name: str, **changes) -> RunConfig:
    method = name.split("-")[0]
    # 100 training images in batches of 16: six full batches and one of 4 each epoch; float32 on
    # every CPU (auto would pick bf16 on one with native bf16, whose rounding the tolerances exceed)
    settings = {"epochs": 2, "batch_size": 16, "progress": False, "log_epochs": False, "device": "cpu",
                "precision": "fp32"}
    return RunConfig(method=method, **{**settings, **METHODS[name], **changes})


def trained(config: RunConfig, data, recorder=None) -> Trainer:
    torch.manual_seed(config.seed)
    trainer = build_trainer(config, data)
    if recorder is not None:
        trainer.graphs = GraphedSteps(trainer._step_body, trainer._step_state,
                                      list(trainer.optimizers.values()), recorder,
                                      scheduled_lr=trainer.scheduled_lr, batch_rows=config.batch_size)
    trainer.fit()
    return trainer


def assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.method.state_dict(), b.method.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    assert [r["test_accuracy"] for r in a.metrics.rows] == [r["test_accuracy"] for r in b.metrics.rows]


def largest_difference(a: Trainer, b: Trainer) -> float:
    sb = b.method.state_dict()
    return max(float((v.float() - sb[k].float()).abs().max()) for k, v in a.method.state_dict().items())


@pytest.mark.parametrize("name", list(METHODS))
def test_replayed_steps_train_exactly_as_eager_steps(name) -> None:
    """Bit for bit on CPU: the warm-up steps before a capture leave no trace (model, BatchNorm
    statistics, optimizer moments and the noise generator are put back)."""
    data = make_blobs(n_train=100, n_test=64)
    config = config_for(name)
    eager = trained(config, data)
    graphed = trained(config, data, CallRecorder())
    assert_same_state(eager, graphed)
    units = len(eager.units)
    assert graphed.graphs.replayed == 2 * 6 * units and graphed.graphs.eager == 2 * units  # last batches
    results = graphed.results(0.0)
    assert results["cuda_graphs"] == "captured" and results["graph_steps"] == graphed.graphs.replayed


def test_without_undoing_the_warm_up_the_runs_would_differ() -> None:
    """The check above can fail: a warm-up left in place (here: no warm-up, but one extra real
    step per unit) changes the result."""
    data = make_blobs(n_train=100, n_test=64)
    config = config_for("dt")
    eager = trained(config, data)
    graphed = trained(config, data, CallRecorder())
    graphed.train_step(0, data.train_x[:16], data.train_y[:16])
    assert not torch.equal(next(eager.method.parameters()), next(graphed.method.parameters()))


def test_an_lr_schedule_reaches_the_recorded_step_through_a_tensor_lr(tmp_path) -> None:
    """A graph reads the lr by address: the schedule writes it in place, and the checkpoint holds
    plain floats, so it resumes in an eager run. A float32 lr tensor rounds the lr, hence a
    tolerance: measured 0.005 at most, against 0.8 had the schedule not reached the steps."""
    data = make_blobs(n_train=100, n_test=64)
    config = config_for("dt", lr_schedule="cosine", warmup_epochs=0.5)
    eager = trained(config, data)
    graphed = trained(config, data, CallRecorder())
    assert largest_difference(eager, graphed) < 0.02
    assert largest_difference(eager, trained(config_for("dt"), data)) > 0.2  # constant lr: far apart
    lr = graphed.optimizers["block1"].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    saved = graphed.saved_run().optimizers["block1"]["param_groups"][0]["lr"]
    assert isinstance(saved, float) and saved == pytest.approx(float(lr))


def test_a_short_batch_first_is_taken_eagerly_and_full_batches_are_still_recorded() -> None:
    """A run resumed at an epoch's last (short) step must not record its graph at that size."""
    data = make_blobs(n_train=100, n_test=64)
    trainer = Trainer(build_for(config_for("ct"), data), data, config_for("ct"))
    steps = GraphedSteps(trainer._step_body, trainer._step_state, list(trainer.optimizers.values()),
                         CallRecorder(), batch_rows=16)
    assert steps(0, data.train_x[:4], data.train_y[:4]) is None
    assert steps(0, data.train_x[:16], data.train_y[:16]) is not None
    assert (steps.eager, steps.replayed) == (1, 1)


def test_a_run_resumed_with_graphs_keeps_its_optimizers_capturable(tmp_path) -> None:
    """An eager run's checkpoint says ``capturable: False``; loading it must not undo the
    capturable optimizers a resumed ``--cuda-graphs`` run made (its capture would fail)."""
    data = make_blobs(n_train=64, n_test=32)
    config = config_for("ct", epochs=1)
    build_trainer(config, data, run_dir=tmp_path).fit()
    resumed = build_trainer(config.replace(epochs=2), data, run_dir=tmp_path)
    resumed.optimizers = make_optimizers(resumed.method, resumed.config, capturable=True)
    resumed.resume()
    assert all(g["capturable"] for opt in resumed.optimizers.values() for g in opt.param_groups)


def test_a_step_that_cannot_be_captured_continues_eagerly() -> None:
    class Failing(CallRecorder):
        def record(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    data = make_blobs(n_train=100, n_test=64)
    config = config_for("ct")
    eager = trained(config, data)
    with pytest.warns(UserWarning, match="cannot be captured"):
        graphed = trained(config, data, Failing())
    assert_same_state(eager, graphed)
    assert graphed.graphs.describe()["cuda_graphs"] == "eager"
    assert "not permitted" in graphed.graphs.error


@pytest.mark.parametrize("changes, message", [
    ({}, "cuda_graphs needs a CUDA device; this run is on cpu"),
])
def test_cuda_graphs_where_they_do_not_apply_is_one_clear_error(changes, message) -> None:
    data = make_blobs(n_train=32, n_test=16)
    config = RunConfig(num_blocks=2, epochs=1, batch_size=16, device="cpu", cuda_graphs=True, **changes)
    with pytest.raises(ConfigError, match=message):
        build_trainer(config, data)


def test_the_cli_refuses_cuda_graphs_on_a_cpu_in_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--dataset", "digits", "--device", "cpu", "--cuda-graphs", "--epochs", "1",
                 "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code != 0
    assert "cuda_graphs needs a CUDA device" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("name", list(METHODS))
def test_real_cuda_graphs_train_as_eager_steps_to_float_tolerance(name) -> None:
    """Same seed, same batches: the recorded step draws the same noise (graph-safe Philox) and
    takes the same optimizer steps; kernels may differ in summation order, hence a tolerance."""
    data = make_blobs(n_train=100, n_test=64)
    eager = trained(config_for(name, device="cuda"), data)
    graphed = trained(config_for(name, device="cuda", cuda_graphs=True), data)
    assert graphed.graphs is not None and graphed.graphs.error is None
    after = graphed.method.state_dict()
    for n, a in eager.method.state_dict().items():
        if a.is_floating_point():
            torch.testing.assert_close(after[n], a, rtol=1e-3, atol=1e-4, msg=n)
