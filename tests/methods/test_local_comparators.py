"""The backprop-free comparators of issue 31: ``predsim`` (Nøkland & Eidnes 2019) and ``fg`` (LG-FG-A,
Ren et al. 2023), each on ``local``'s four blocks: they learn a tiny problem, pass the locality
checker, and train from the command line and the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers import make_blobs
from noprop.api import Classifier
from noprop.cli import main
from noprop.config import RunConfig
from noprop.locality import check_locality
from noprop.methods import METHODS
from noprop.methods.fg import ForwardGradient, activity_forward_gradient, output_partition, part_derivatives
from noprop.methods.predsim import PredSim, similarity_matrix
from noprop.run import train_run
from noprop.settings import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = make_blobs().spec

#: (lr, epochs) on 128 blob images, 8 steps an epoch. fg's forward gradient is noisy: at lr 1e-2 the first
#: version's deeper blocks drifted (comparators README, fg), so it runs at 1e-3 for longer.
BUDGET = {"predsim": (1e-2, 3), "fg": (1e-3, 6)}


def test_comparators_are_registered_by_name():
    assert METHODS["predsim"] is PredSim and METHODS["fg"] is ForwardGradient
    assert PredSim.locality_forward == ForwardGradient.locality_forward == "chained"


@pytest.mark.parametrize("name", ["predsim", "fg"])
def test_comparator_learns_tiny_data_well_above_chance(name):
    data = make_blobs(n_train=128, n_test=256)  # 4 classes: chance is 0.25
    lr, epochs = BUDGET[name]
    torch.manual_seed(0)
    config = RunConfig(method=name, dataset="blobs", epochs=epochs, batch_size=16, lr=lr, progress=False,
                       log_epochs=False, block_order="interleaved", precision="fp32", device="cpu")
    _, results = train_run(config, None, data=data)
    assert results["test_accuracy"] > 0.6, f"{name}: {results['test_accuracy']:.2f}"


@pytest.mark.parametrize("name", ["predsim", "fg"])
def test_comparator_passes_the_locality_checker(name):
    torch.manual_seed(0)
    report = check_locality(METHODS[name](SPEC), make_blobs(n_train=16, n_test=8))
    assert report.passed and report.forward == "chained", report.table()


def test_similarity_matrix_of_one_hot_labels_is_same_class_indicator_after_centring():
    onehot = F.one_hot(torch.tensor([0, 1, 0, 2]), 3).float()
    r = similarity_matrix(onehot)
    assert torch.allclose(r.diagonal(), torch.ones(4))
    assert r[0, 2] == pytest.approx(1.0) and r[0, 1] == pytest.approx(-0.5)  # centred: -1/2 for 3 classes
    maps = torch.randn(4, 8, 3, 3)
    torch.testing.assert_close(similarity_matrix(maps), similarity_matrix(maps.flatten(2).std(dim=2)))


def test_predsim_beta_weighs_the_two_losses_and_is_checked():
    data = make_blobs(n_train=16)
    for beta in (0.0, 1.0, 0.99):
        torch.manual_seed(0)
        method = PredSim(SPEC, predsim_beta=beta).eval()
        out = method.unit_loss(1, data.train_x, data.train_y)
        expected = (1 - beta) * out.terms["ce"] + beta * out.terms["sim"]
        torch.testing.assert_close(out.loss.detach(), expected)
    with pytest.raises(ConfigError, match="predsim_beta"):
        PredSim(SPEC, predsim_beta=1.5)


def test_forward_gradient_directional_derivative_is_exact_and_estimate_unbiased():
    torch.manual_seed(0)
    data = make_blobs(n_train=8)
    method = ForwardGradient(SPEC).eval()
    head, y = method.heads[3], data.train_y
    z = torch.randn(8, 256, requires_grad=True)
    F.cross_entropy(head(z), y).backward()
    u = torch.randn(8, 256)
    g = activity_forward_gradient(head, z, y, u)
    # g_i = (dL/dz_i . u_i) u_i, with the JVP's directional derivative equal to backprop's
    torch.testing.assert_close(g, (z.grad * u).sum(1, keepdim=True) * u)
    mean = sum(activity_forward_gradient(head, z, y, torch.randn(8, 256)) for _ in range(2000)) / 2000
    assert F.cosine_similarity(mean.flatten(), z.grad.flatten(), dim=0) > 0.9


@pytest.mark.parametrize("size", [4, 5], ids=["pooling-aligned", "windows-overlap"])
def test_forward_gradient_part_derivatives_are_exact_through_a_pooling_head(size):
    # 4x4: the 2x2 pooling's windows each lie in one part, so the JVP runs on pooled activations;
    # 5x5: the adaptive pooling's windows overlap the cells, so the JVP runs at full size. Both
    # must give every part's exact directional derivative dL_i/dz_ik . u_ik.
    torch.manual_seed(0)
    head = ForwardGradient(SPEC).heads[1]
    y = torch.tensor([0, 1, 0])
    z = torch.randn(3, 64, size, size, requires_grad=True)
    F.cross_entropy(head(z), y).backward()
    u = torch.randn_like(z)
    unpooled = nn.Sequential(nn.Identity(), *head)  # the same head, without the shortcut
    uneven = torch.randint(0, 40, z.shape[1:])  # channels with different numbers of parts
    for parts in (output_partition(z.shape[1:], 8, True, z.device), uneven):
        count = int(parts.max()) + 1
        exact = torch.stack([(z.grad * u * (parts == k)).flatten(1).sum(1) for k in range(count)], dim=1)
        torch.testing.assert_close(part_derivatives(head, z.detach(), y, u, parts), exact)
        torch.testing.assert_close(part_derivatives(unpooled, z.detach(), y, u, parts), exact)


def test_forward_gradient_unit_reports_cross_entropy_and_moves_block_by_vjp_of_the_estimate():
    data = make_blobs(n_train=16)
    method = ForwardGradient(SPEC).eval()
    x, y = data.train_x, data.train_y
    torch.manual_seed(3)
    out = method.unit_loss(0, x, y)
    torch.testing.assert_close(out.loss.detach(), out.terms["ce"])
    out.loss.backward()
    grads = [p.grad.clone() for p in method.blocks[0].parameters()]
    method.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same tangent, on the active outputs only, 32 groups x 2x2 patches
    z = method.blocks[0](x)
    parts = output_partition(z.shape[1:], 32, True, z.device)
    cells = torch.tensor([[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2)  # channel 0's 4x4 map in 2x2 cells
    assert int(parts.max()) + 1 == 128 and (parts[0] == cells).all() and (parts[1] == cells + 4).all()
    assert output_partition(z.shape[1:], 8, False, z.device).unique().tolist() == list(range(8))
    g = activity_forward_gradient(method.heads[0], z, y, torch.randn_like(z) * (z != 0), parts)
    z.backward(g)
    for got, want in zip(grads, (p.grad for p in method.blocks[0].parameters()), strict=True):
        torch.testing.assert_close(got, want)


def exact_and_averaged_block_gradients(unit: int, tangents: int, seed: int = 0,
                                       **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``unit``'s exact local weight gradient and fg's average over ``tangents`` tangents."""
    data = make_blobs(n_train=8)
    torch.manual_seed(0)
    method = ForwardGradient(SPEC, fg_tangents=tangents, **settings).eval()
    torch.manual_seed(seed)
    block, x, y = method.blocks[unit], data.train_x, data.train_y
    with torch.no_grad():
        for earlier in method.blocks[:unit]:
            x = earlier(x)
    exact = torch.autograd.grad(F.cross_entropy(method.heads[unit](block(x)), y), list(block.parameters()))
    method.unit_loss(unit, data.train_x, y).loss.backward()
    return torch.cat([g.flatten() for g in exact]), torch.cat([p.grad.flatten() for p in block.parameters()])


#: the first version (one derivative for a block's whole output, on every unit), active-only, the default
PLAIN = {"fg_active_only": False, "fg_groups": 1, "fg_patches": False}
ACTIVE = {"fg_groups": 1, "fg_patches": False}


@pytest.mark.parametrize(("unit", "tangents", "settings"),
                         [(3, 3000, PLAIN), (3, 1500, ACTIVE), (1, 200, {})], ids=["plain", "active", "all"])
def test_forward_gradient_of_block_weights_averages_to_exact_local_gradient(unit, tangents, settings):
    # unbiased: every variant's estimate of the block's weight gradient, averaged over many
    # tangents, approaches the exact gradient of the block's local loss
    exact, averaged = exact_and_averaged_block_gradients(unit, tangents, **settings)
    # (the gap falls as 1/tangents: at 250 / 1000 / 4000 the plain estimate's cosine is 0.65 / 0.86 / 0.95)
    assert F.cosine_similarity(exact, averaged, dim=0) > 0.92
    assert averaged.norm() / exact.norm() == pytest.approx(1.0, abs=0.12)


def test_forward_gradient_variance_falls_with_active_only_tangents_and_groups():
    # one tangent: the paper's means (tangent before the ReLU, then local losses on 32 groups and
    # 2x2 patches, the default) align a single estimate better with the exact gradient
    def alignment(**settings) -> float:
        cos = [F.cosine_similarity(*exact_and_averaged_block_gradients(1, 1, seed, **settings), dim=0)
               for seed in range(20)]
        return float(torch.stack(cos).mean())

    assert alignment(**PLAIN) < alignment(**ACTIVE) < alignment()


def test_fg_groups_beyond_a_blocks_features_is_refused():
    with pytest.raises(ConfigError, match="fg_groups"):
        data = make_blobs(n_train=4)
        ForwardGradient(SPEC, fg_groups=64).unit_loss(0, data.train_x, data.train_y)


@pytest.mark.parametrize("name", ["predsim", "fg"])
def test_comparator_trains_from_the_command_line(name, tmp_path: Path):
    run_dir = tmp_path / name
    assert main(["train", "--method", name, "--epochs", "1", "--batch-size", "128", "--quiet",
                 "--device", "cpu", "--run-dir", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == name and 0.0 <= results["test_accuracy"] <= 1.0


@pytest.mark.parametrize("name", ["predsim", "fg"])
def test_comparator_trains_from_the_classifier(name):
    data = make_blobs(n_train=64, n_test=32)
    clf = Classifier(method=name, epochs=1, batch_size=16, device="cpu").fit(data.train_x.numpy(),
                                                                             data.train_y.numpy())
    assert clf.predict(data.test_x.numpy()).shape == (32,)


@pytest.mark.parametrize("name", ["local", "predsim", "auglocal", "fg"])
def test_the_image_block_methods_refuse_a_table_in_one_line(name, tmp_path, capsys):
    from noprop.spec import DataSpec

    with pytest.raises(ConfigError, match="13 features, not images"):
        METHODS[name](DataSpec.vector(13, 3))
    code = main(["train", "--dataset", "wine", "--method", name, "--epochs", "1", "-q",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not images" in err
