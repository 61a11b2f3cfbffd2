"""Encoders (noprop.encoders): built-ins, a user's own factory, what is refused, and locality with them."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import user_encoders
from noprop.api import Classifier
from noprop.config import RunConfig
from noprop.encoders import ImageBranch, ResNetEncoder
from noprop.methods import NoPropDT, build_method
from noprop.methods.dt_fused import fused_loss
from noprop.saved_run import load_run
from noprop.settings import ConfigError
from noprop.spec import DataSpec

IMAGES = DataSpec.image(1, 8, 8, 4)
VECTORS = DataSpec.vector(20, 3)
TINY = "user_encoders:TinyConv"


def _images(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 4


@pytest.mark.parametrize(("dtype", "channels_last"), [(torch.float32, False), (torch.bfloat16, True)])
def test_the_image_branch_pools_before_its_relu_with_the_papers_values_and_gradients(dtype,
                                                                                    channels_last) -> None:
    """conv-pool-ReLU is the paper's conv-ReLU-pool bit for bit, ties included: integer inputs and
    weights make many windows tie (at positive, zero and negative maxima)."""
    spec = DataSpec.image(3, 16, 16, 4)
    branch = ImageBranch(spec, padding=0, batch_norm=True).train().to(dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in (m for m in branch.features if isinstance(m, nn.Conv2d)):
            conv.weight.copy_(torch.randint(-1, 2, conv.weight.shape, generator=g))
            conv.bias.zero_()
    kinds = [type(m) for m in branch.features]
    assert kinds[1:3] == [nn.MaxPool2d, nn.ReLU] and kinds[8:10] == [nn.MaxPool2d, nn.ReLU]
    layers = list(branch.features)
    layers[1], layers[2], layers[8], layers[9] = layers[2], layers[1], layers[9], layers[8]
    papers = nn.Sequential(*layers)  # the same modules in the paper's order
    x = torch.randint(-2, 3, (8, 3, 16, 16), generator=g).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    outs, grads = {}, {}
    for name, features in (("ours", branch.features), ("paper", papers)):
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)
        out = features(xi)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype))
        outs[name], grads[name] = out, [xi.grad] + [p.grad for p in features.parameters()]
        branch.zero_grad(set_to_none=True)
    windows = branch.features[0](x).detach().float().unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    top = windows.amax(-1, keepdim=True)
    tied = (windows == top).sum(-1) > 1
    assert (tied & (top[..., 0] > 0)).sum() > 100 and (tied & (top[..., 0] <= 0)).sum() > 100
    assert torch.equal(outs["ours"], outs["paper"])
    for ours, paper in zip(grads["ours"], grads["paper"], strict=True):
        assert torch.equal(ours, paper)


@pytest.mark.parametrize("encoder", [TINY, "user_encoders:conv_for", user_encoders.TinyConv,
                                     user_encoders.conv_for])
def test_a_user_factory_by_path_or_callable_gives_every_block_its_own_encoder(encoder) -> None:
    model = NoPropDT(IMAGES, num_blocks=3, encoder=encoder)
    assert model.config.encoder.startswith("user_encoders:")
    params = [{id(p) for p in b.image.parameters()} for b in model.blocks]
    assert all(not (a & b) for i, a in enumerate(params) for b in params[i + 1:])


def test_the_head_is_sized_from_the_encoders_output() -> None:
    model = NoPropDT(IMAGES, num_blocks=1, encoder=TINY)
    assert model.blocks[0].head[0].in_features == 16 + 256  # TinyConv's 16 features + the label path


@pytest.mark.parametrize("method", ["dt", "ct", "fm", "backprop", "cnn"])
def test_every_method_takes_a_user_encoder_and_predicts(method: str) -> None:
    small = {"dt": {"num_blocks": 2}, "backprop": {"num_blocks": 2}, "ct": {"inference_steps": 3},
             "fm": {"inference_steps": 3}}.get(method, {})
    model = build_method(method, IMAGES, {**small, "encoder": "user_encoders:conv_for"})
    x, y = _images()
    for unit in range(len(model.training_units())):
        model.unit_loss(unit, x, y).loss.backward()
    assert model.eval().predict_logits(x).shape == (8, 4)


def test_mlp_reads_feature_vectors_and_prototypes_have_the_input_dimension() -> None:
    model = NoPropDT(VECTORS, num_blocks=2, encoder="mlp", embedding="prototype")
    x = torch.randn(12, 20)
    model.prepare(x, torch.arange(12) % 3)
    assert model.embedding.dim == 20
    model.unit_loss(0, x, torch.arange(12) % 3).loss.backward()
    assert model.eval().predict_logits(x).shape == (12, 3)


def test_the_default_encoder_is_the_papers_for_images_and_the_mlp_for_vectors() -> None:
    on_images, on_vectors = NoPropDT(IMAGES, num_blocks=2), NoPropDT(VECTORS, num_blocks=2)
    assert RunConfig(method="dt").method_config.encoder == "auto"
    assert any(isinstance(m, nn.Conv2d) for m in on_images.blocks[0].modules())
    assert not any(isinstance(m, nn.Conv2d) for m in on_vectors.blocks[0].modules())
    assert any(isinstance(m, nn.Linear) and m.in_features == 20 for m in on_vectors.blocks[0].modules())
    with pytest.raises(ConfigError, match="applies to the mlp and resnet encoders, not to auto"):
        RunConfig(method="dt", encoder_width=8)


def test_resnet_is_the_cifar_resnet_20_by_default() -> None:
    encoder = ResNetEncoder(3, width=16, depth=20)
    assert round(sum(p.numel() for p in encoder.parameters()) / 1e6, 2) == 0.27  # He et al.: 0.27 M
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize(("settings", "message"), [
    ({"encoder": "paper"}, "paper encoder reads images"),
    ({"encoder": "resnet"}, "resnet encoder reads images"),
])
def test_image_encoders_on_vectors_are_a_one_line_error(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        NoPropDT(VECTORS, num_blocks=2, **settings)


@pytest.mark.parametrize(("settings", "message"), [
    ({"encoder": "paper", "encoder_width": 8}, "encoder_width applies to the mlp and resnet"),
    ({"encoder": "resnet", "encoder_depth": 21}, "depth must be 6n.2"),
    ({"encoder": "nosuchmodule:f"}, "cannot import encoder nosuchmodule:f"),
    ({"encoder": "user_encoders:nothing"}, "user_encoders has no nothing"),
    ({"encoder": "resnet50"}, "encoder must be one of auto, paper, mlp, resnet or package.module:factory"),
    ({"encoder": lambda: nn.Flatten()}, "no import path"),
])
def test_encoder_settings_that_cannot_work_are_refused_in_one_line(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(method="dt", **settings)


@pytest.mark.parametrize(("factory", "message"), [
    ("not_flat", r"must return \(batch, features\), returned \(2, 2, 6, 6\)"),
    ("not_a_module", "returned int, not an nn.Module"),
    ("shared_layer", "gives blocks 1 and 2 the same trainable parameters"),
    ("raises", "encoder user_encoders:raises raised ValueError: width must be positive"),
])
def test_a_factory_that_breaks_the_contract_is_refused(factory: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NoPropDT(IMAGES, num_blocks=2, encoder=f"user_encoders:{factory}")


def test_a_frozen_shared_extractor_is_allowed_and_no_optimizer_sees_it() -> None:
    model = NoPropDT(IMAGES, num_blocks=2, encoder="user_encoders:frozen_then_trained")
    grouped = {id(p) for ps in model.parameter_groups().values() for p in ps}
    assert id(user_encoders.FROZEN.weight) not in grouped
    before = user_encoders.FROZEN.weight.clone()
    x, y = _images()
    model.unit_loss(0, x, y).loss.backward()
    assert user_encoders.FROZEN.weight.grad is None and torch.equal(user_encoders.FROZEN.weight, before)


def _same_noise_losses(model: NoPropDT, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused loss and the sum of per-block losses on the same noise (dropout-free encoders)."""
    T, u = model.num_blocks, model.embedding(y)
    noise = tuple(torch.randn((2, T, *u.shape), generator=torch.Generator().manual_seed(1)).unbind(0))
    fused = fused_loss(model, x, y, noise)
    return fused.loss, fused.terms["denoise"]


def test_fused_dt_uses_vmap_where_the_encoder_allows_and_says_so() -> None:
    model = NoPropDT(IMAGES, num_blocks=3, encoder=TINY, fused=True)
    model.stacked.vectorize = True
    x, y = _images()
    vmapped = _same_noise_losses(model, x, y)
    assert model.describe() == {"fused_pass": "vmap", "fused_vmap_error": None}
    model.stacked.vectorize = False
    looped = _same_noise_losses(model, x, y)
    assert model.describe()["fused_pass"] == "loop"
    torch.testing.assert_close(vmapped, looped)


def test_fused_dt_falls_back_to_a_loop_for_an_encoder_vmap_cannot_run() -> None:
    model = NoPropDT(IMAGES, num_blocks=3, encoder="user_encoders:DataDependent", fused=True)
    model.stacked.vectorize = True
    x, y = _images()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.unit_loss(0, x, y).loss.backward()
    assert any("cannot run under vmap" in str(w.message) for w in caught)
    facts = model.describe()
    assert facts["fused_pass"] == "loop" and facts["fused_vmap_error"]


def test_a_run_records_its_encoder_and_loading_rebuilds_it(tmp_path, blobs) -> None:
    clf = Classifier(method="dt", encoder=user_encoders.TinyConv, num_blocks=2, epochs=1, batch_size=64,
                     run_dir=tmp_path / "run", progress=False)
    clf.fit(blobs.train_x, blobs.train_y)
    loaded = load_run(tmp_path / "run")
    assert loaded.config.method_config.encoder == TINY
    torch.manual_seed(0)
    a = clf.model.eval().predict_logits(blobs.test_x, deterministic=True)
    torch.manual_seed(0)
    b = loaded.method.predict_logits(blobs.test_x, deterministic=True)
    torch.testing.assert_close(a, b)


def test_resuming_with_another_encoder_names_the_difference(tmp_path, blobs) -> None:
    from noprop.run import train_run
    from noprop.saved_run import CheckpointError

    config = RunConfig(method="dt", num_blocks=2, epochs=1, batch_size=64, progress=False, encoder=TINY)
    train_run(config, tmp_path / "run", data=blobs)
    with pytest.raises(CheckpointError, match="encoder: checkpoint has 'user_encoders:TinyConv'"):
        train_run(config.replace(encoder="user_encoders:conv_for", epochs=2), tmp_path / "run",
                  data=blobs, resume=True)


def test_the_cli_trains_evaluates_and_predicts_with_a_user_encoder(tmp_path, capsys) -> None:
    from helpers import make_blobs, write_npz
    from noprop.cli import main

    dataset = write_npz(tmp_path / "tiny.npz", make_blobs(32, 8, classes=3))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset), "--encoder", TINY, "-T", "2", "--epochs", "1",
                 "--batch-size", "16", "--device", "cpu", "-q", "--run-dir", str(run)]) == 0
    assert (run / "config.yaml").read_text().count(f"encoder: {TINY}") == 1
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(dataset)]) == 0
    assert capsys.readouterr().out.startswith("input,class_index,class_name,probability")


def test_another_encoder_overrides_a_paper_preset_that_sets_conv_padding() -> None:
    config = RunConfig.from_dict({"method": "dt", "conv_padding": "valid", "encoder": "resnet",
                                  "encoder_depth": 8})
    model = NoPropDT(DataSpec.image(3, 32, 32, 10), config.method_config)
    assert type(model.blocks[0].image).__name__ == "ResNetEncoder"


def test_the_cli_refuses_an_encoder_for_a_method_without_one(capsys) -> None:
    from noprop.cli import main

    assert main(["train", "--method", "ff", "--encoder", "mlp", "--epochs", "1"]) == 2
    assert "method ff does not take encoder" in capsys.readouterr().err
