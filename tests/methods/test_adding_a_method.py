"""docs/design.md's "How to add a method", done: one file (toy_method.py) plus one registry line,
and the method trains, saves and reloads, takes its own flag, and refuses settings it lacks.

And a new NoProp variant (toy_noprop.py: DT's schedule, one block for every level) written by
reusing the noising (``noprop.schedules``) and the embedding/classifier setup
(``LabelEmbeddingMethod``) instead of copying them: it trains, saves and reloads the same way."""

from __future__ import annotations

import pytest
import torch
from toy_method import ToyLocal
from toy_noprop import OneBlockDT

from noprop.cli import build_parser
from noprop.commands.args import config_overrides
from noprop.config import ConfigError, RunConfig
from noprop.methods import METHODS, NoPropCT, NoPropDT, NoPropFM
from noprop.methods.backprop import BackpropChain
from noprop.methods.label_embedding import LabelEmbeddingMethod
from noprop.run import train_run
from noprop.saved_run import load_run


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", ToyLocal)  # the one registry line


@pytest.fixture
def onedt_registered(monkeypatch):
    monkeypatch.setitem(METHODS, "onedt", OneBlockDT)  # the one registry line


def test_a_method_in_one_file_and_one_registry_line_trains_saves_and_reloads(toy_registered, blobs,
                                                                          tmp_path) -> None:
    config = RunConfig(method="toy", width=8, epochs=5, batch_size=32, lr=0.02, progress=False,
                       device="cpu")
    _, results = train_run(config, tmp_path / "run", data=blobs)
    assert results["test_accuracy"] > 0.5
    run = load_run(tmp_path / "run")
    assert run.method.config.width == 8 and run.config.method_config == config.method_config


def test_the_new_methods_settings_become_flags_and_others_are_refused(toy_registered) -> None:
    args = build_parser().parse_args(["train", "--method", "toy", "--width", "4"])
    assert RunConfig.from_dict(config_overrides(args)).method_config.width == 4
    with pytest.raises(ConfigError, match="method toy does not take num_blocks; it takes: width"):
        RunConfig(method="toy", num_blocks=3)


def test_the_contract_checks_hold_for_the_new_method(toy_registered, blobs) -> None:
    from test_method_contract import (
        test_a_step_on_a_unit_moves_only_its_groups_after_another_units_step as steps_stay_local,
    )
    from test_method_contract import (
        test_parameter_groups_are_disjoint_and_cover_every_trainable_parameter as groups_partition,
    )

    groups_partition("toy", blobs)
    steps_stay_local("toy", blobs)


# -- a new NoProp variant, from the shared noising and embedding code ---------------------------
SHARED = ("add_embedding", "add_classifier", "readout_parameters", "prepare", "label_estimate")


def test_a_new_noprop_variant_reuses_the_noising_and_embedding_code(blobs) -> None:
    method = OneBlockDT(blobs.spec, embedding="prototype", levels=3)
    for cls in (OneBlockDT, NoPropDT, NoPropCT, NoPropFM, BackpropChain):  # one home, no copies
        assert issubclass(cls, LabelEmbeddingMethod)
        extends = {"prepare"} if cls is BackpropChain else set()  # backprop also restarts its classifier
        assert set(SHARED) & set(vars(cls)) == extends, cls
    assert [name for name, _ in method.named_children()] == ["schedule", "embedding", "block", "classifier"]
    method.prepare(blobs.train_x, blobs.train_y)  # the shared prototype start: a training image per class
    first = blobs.train_x[blobs.train_y == 0].flatten(1)
    assert (first == method.embedding.weight[0].detach()).all(1).any()
    u = method.embedding(blobs.train_y[:5])
    torch.manual_seed(0)
    z = method.schedule.sample(u, torch.tensor([0, 1, 2, 3, 3])).z_t  # q(z_t | y), one level per row
    ab = method.schedule.alpha_bar(torch.tensor([0, 1, 2, 3, 3])).unsqueeze(-1)
    torch.manual_seed(0)
    torch.testing.assert_close(z, ab.sqrt() * u + (1 - ab).sqrt() * torch.randn_like(u))


def test_the_new_noprop_variant_trains_saves_and_reloads(onedt_registered, blobs, tmp_path) -> None:
    config = RunConfig(method="onedt", levels=3, embedding="learned", embedding_dim=6, encoder="mlp",
                       epochs=6, batch_size=32, lr=0.01, progress=False, device="cpu",
                       eval_deterministic=True)
    trainer, results = train_run(config, tmp_path / "run", data=blobs)
    assert results["test_accuracy"] > 0.5
    run = load_run(tmp_path / "run")
    assert type(run.method) is OneBlockDT and run.method.config.levels == 3
    x = blobs.test_x[:32]
    trainer.method.eval()
    with torch.no_grad():
        expected = trainer.method.predict_logits(x, deterministic=True)
        torch.testing.assert_close(run.method.predict_logits(x, deterministic=True), expected)


def test_the_contract_checks_hold_for_the_new_noprop_variant(onedt_registered, blobs) -> None:
    from test_method_contract import (
        test_a_step_on_a_unit_moves_only_its_groups_after_another_units_step as steps_stay_local,
    )
    from test_method_contract import (
        test_parameter_groups_are_disjoint_and_cover_every_trainable_parameter as groups_partition,
    )

    groups_partition("onedt", blobs)
    steps_stay_local("onedt", blobs)
