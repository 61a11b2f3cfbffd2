"""The locality checker on every built-in method, a user's encoder and a user's method, from Python
and from ``noprop check-locality``: the NoProp variants and the local baselines pass, back-
propagation fails (one unit spans every block and its gradient crosses them)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from helpers import make_blobs
from noprop.cli import main
from noprop.config import RunConfig
from noprop.locality import LocalityReport, check_locality
from noprop.methods import METHODS, LossOutput, Method, TrainingUnit
from noprop.methods.config import MethodConfig
from noprop.methods.forward_forward import ForwardForward
from noprop.settings import setting
from noprop.spec import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"dt": {"num_blocks": 3}, "dt-fused": {"num_blocks": 3, "fused": True},
         "dt-learned": {"num_blocks": 3, "embedding": "learned", "embedding_dim": 6},
         "ct": {"inference_steps": 4}, "fm": {"inference_steps": 4}, "local": {}, "cnn": {},
         "dt@user": {"num_blocks": 2, "encoder": "user_encoders:conv_for"}}


def data():
    return make_blobs(n_train=16, n_test=8)


def report_for(name: str) -> LocalityReport:
    method = name.partition("-")[0].partition("@")[0]
    return check_locality({"method": method, **SMALL[name]}, data())


@pytest.mark.parametrize("name", list(SMALL))
def test_every_local_method_passes(name: str) -> None:
    report = report_for(name)
    assert report.passed, report.table()
    assert {c.check for c in report.checks} >= {"groups", "gradient", "forward", "optimizer"}


def test_forward_forward_passes_as_a_chained_method() -> None:
    report = check_locality(ForwardForward(data().spec, num_layers=3, layer_width=16), data())
    assert report.passed and report.forward == "chained", report.table()
    # NoProp's stronger claim does not hold for it: layer k trains on layer k-1's output
    ff = ForwardForward(data().spec, num_layers=3, layer_width=16)
    strict = check_locality(ff, data(), forward="isolated")
    assert strict.flagged("gradient") and strict.failures[0].leak == "activation crosses blocks"


def test_dt_passes_on_the_default_digits_batch() -> None:
    report = check_locality(RunConfig("dt", num_blocks=2))
    assert report.passed, report.table()
    assert report.blocks == ["block1", "block2"] and report.shared == ["shared"]


def test_backprop_fails_with_one_unit_spanning_every_block() -> None:
    report = check_locality({"method": "backprop", "num_blocks": 3}, data())
    assert not report.passed
    (failure,) = report.failures
    assert failure.check == "gradient" and failure.subject == "all"
    assert failure.leak == "gradient crosses blocks"
    assert "one unit spans 3 blocks" in failure.detail and "back-propagation" in failure.detail
    assert failure.blocks[0] == "block1" and set(failure.blocks[1:]) == {"block2", "block3"}


def test_built_method_and_a_plain_batch_are_accepted() -> None:
    d = data()
    torch.manual_seed(0)
    method = METHODS["dt"](d.spec, num_blocks=2)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    report = check_locality(method, (d.train_x, d.train_y))
    assert report.passed, report.table()
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the checker changed the model"


def test_a_shared_group_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="not groups of dt"):
        check_locality({"method": "dt", "num_blocks": 2}, data(), shared_groups=["head"])


# -- a user's method, registered as docs/design.md describes ------------------------------------
@dataclass(frozen=True)
class PairConfig(MethodConfig):
    width: int = setting(8, "hidden units per block", positive=True, shape=True)


class Pair(Method):
    """Two blocks on the input, each with its own head (no chain): local, like NoProp."""

    name = "pair"
    config_class = PairConfig

    def __init__(self, spec: DataSpec, config: PairConfig | None = None, **settings: object) -> None:
        super().__init__(spec, config, **settings)
        w = self.config.width
        self.blocks = nn.ModuleList(nn.Sequential(nn.Flatten(), nn.Linear(spec.input_size, w), nn.ReLU(),
                                                  nn.Linear(w, spec.num_classes)) for _ in range(2))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {f"block{k}": list(b.parameters()) for k, b in enumerate(self.blocks, start=1)}

    def training_units(self) -> list[TrainingUnit]:
        return [TrainingUnit(f"block{k}", (f"block{k}",)) for k in (1, 2)]

    def unit_loss(self, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        ce = F.cross_entropy(self.blocks[unit](x), y)
        return LossOutput(ce, {"ce": ce.detach()})

    def predict_logits(self, x, *, steps=None, deterministic=False, generator=None) -> Tensor:
        return sum(b(x) for b in self.blocks)


def register() -> None:
    """What ``--setup test_checker:register`` calls (here and in every spawned process)."""
    METHODS["pair"] = Pair


@pytest.fixture
def pair_registered(monkeypatch):
    monkeypatch.setitem(METHODS, "pair", Pair)


def test_a_users_registered_method(pair_registered) -> None:
    report = check_locality("pair", data())
    assert report.passed and report.units == ["block1", "block2"], report.table()


# -- the command --------------------------------------------------------------------------------
def test_cli_prints_the_table_and_exits_0_for_dt(capsys) -> None:
    assert main(["check-locality", "--method", "dt", "-T", "2", "--nproc", "0", "--rows", "16"]) == 0
    out = capsys.readouterr().out
    assert "locality of dt" in out and "PASSED: all" in out
    for check in ("groups", "gradient", "forward", "optimizer"):
        assert f"\n{check} " in out


def test_cli_exits_1_for_backprop(capsys) -> None:
    assert main(["check-locality", "--method", "backprop", "-T", "2", "--nproc", "0", "--rows", "16"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "gradient crosses blocks" in out


def test_cli_takes_a_users_encoder_and_a_users_method(capsys, monkeypatch) -> None:
    assert main(["check-locality", "--method", "dt", "-T", "2", "--encoder", "user_encoders:TinyConv",
                 "--nproc", "0", "--rows", "16"]) == 0
    monkeypatch.setitem(METHODS, "pair", METHODS.get("pair", Pair))  # undone after the test
    assert main(["check-locality", "--method", "pair", "--setup", "test_checker:register", "--width", "4",
                 "--nproc", "0", "--rows", "16"]) == 0
    assert "locality of pair" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--shared", "head"], "not groups of dt"),
    (["--parallel", "data"], "--parallel split the work"),
    (["--setup", "no_such_module:f"], "--setup no_such_module:f"),
    (["--nproc", "-1"], "--nproc must be"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys) -> None:
    assert main(["check-locality", "-T", "2", "--nproc", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("noprop: error: ") and message in err, err
