"""``noprop analyze`` (noprop.analysis): every measure on tiny trained runs, that each ablation gives
the blocks the input it claims to, determinism under a seed, the refusal of baselines, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import one_error_line, train_from_the_command_line, train_tiny_run
from noprop.analysis import (
    ALONE_KINDS,
    AnalysisError,
    ChainView,
    ablation_accuracy,
    analyze,
    blocks_alone,
    cached_image_features,
    chain_readouts,
    estimate_weights,
    fit_linear_probe,
    sampler_accuracies,
)
from noprop.cli import main
from noprop.inference import InferenceOptions, accuracy, readout_accuracies
from noprop.sampler import posterior_chain
from noprop.saved_run import load_run

OPTIONS = InferenceOptions(seed=11, batch_size=40)  # two batches of the 64 test images (40 + 24)


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def dt(dt_run):
    run_dir, data = dt_run
    return load_run(run_dir).method, data


def _label_inputs(module_list, calls):
    """Forward pre-hooks that record the z each block's label branch receives, in call order."""
    return [m.label.register_forward_pre_hook(lambda mod, args, i=i: calls.append((i, args[0].clone())))
            for i, m in enumerate(module_list)]


def _chain_inputs(method, data, kind=None, positions=None):
    """The z each DT block receives during one ablation pass: ``{block index: (N, d)}``."""
    calls: list = []
    hooks = _label_inputs(method.blocks, calls)
    try:
        acc = ablation_accuracy(method, data.test_x, data.test_y, OPTIONS, kind, positions)
    finally:
        for h in hooks:
            h.remove()
    seen = {i: torch.cat([z for j, z in calls if j == i]) for i in range(method.num_blocks)}
    return acc, seen


def test_unablated_pass_is_the_samplers_own(dt):
    method, data = dt
    x, y = data.test_x, data.test_y
    one = accuracy(method, x, y, OPTIONS)
    assert ablation_accuracy(method, x, y, OPTIONS, None) == one
    s = sampler_accuracies(method, x, y, OPTIONS, runs=3)
    assert s["one_pass"] == one and len(s["runs"]) == 3 and s["stderr"] is not None
    assert s["noise_free"] == accuracy(method, x, y, OPTIONS.replace(deterministic=True))
    head, nearest = chain_readouts(method, x, y, OPTIONS)
    assert head == readout_accuracies(method, x, y, OPTIONS)  # the existing per-block readout
    assert len(nearest) == 3 and head[-1] == one


def test_zero_ablation_gives_the_block_zeros_and_no_other(dt):
    method, data = dt
    _, base = _chain_inputs(method, data)
    _, seen = _chain_inputs(method, data, "zero", [1])
    assert torch.equal(seen[0], base[0])  # before the ablated block: the same chain, the same noise
    assert torch.all(seen[1] == 0) and base[1].abs().sum() > 0
    assert not torch.all(seen[2] == 0)
    _, every = _chain_inputs(method, data, "zero")
    assert all(torch.all(z == 0) for z in every.values())


def test_shuffle_ablation_permutes_the_batch(dt):
    method, data = dt
    _, base = _chain_inputs(method, data)
    _, seen = _chain_inputs(method, data, "shuffle", [1])
    assert torch.equal(seen[0], base[0])
    assert not torch.equal(seen[1], base[1])
    for start, stop in ((0, 40), (40, 64)):  # rows are permuted within each inference batch
        got, want = seen[1][start:stop], base[1][start:stop]
        assert torch.equal(got[torch.argsort(got[:, 0])], want[torch.argsort(want[:, 0])])


def test_noise_ablation_is_fresh_standard_noise(dt):
    method, data = dt
    _, base = _chain_inputs(method, data)
    _, seen = _chain_inputs(method, data, "noise", [2])
    assert torch.equal(seen[1], base[1])
    z = seen[2]
    assert not torch.equal(torch.sort(z.flatten()).values, torch.sort(base[2].flatten()).values)
    assert abs(z.mean().item()) < 0.3 and abs(z.std().item() - 1) < 0.3


def test_blocks_alone_see_the_uninformative_z_and_their_average_is_the_ensemble(dt):
    method, data = dt
    x, y = data.test_x, data.test_y
    calls: list = []
    hooks = _label_inputs(method.blocks, calls)
    try:
        alone, ensemble = blocks_alone(method, x, y, OPTIONS)
    finally:
        for h in hooks:
            h.remove()
    first_batch = calls[: 3 * len(ALONE_KINDS)]  # kinds in order, blocks within a kind
    u_mean = method.embedding.weight.mean(0)
    for j, kind in enumerate(ALONE_KINDS):
        for i in range(3):
            block, z = first_batch[j * 3 + i]
            assert block == i
            if kind == "zero":
                assert torch.all(z == 0)
            elif kind == "prior_mean":
                scale = method.schedule.alpha_bar(i).sqrt()
                assert torch.allclose(z, (scale * u_mean).expand_as(z))
            else:
                assert abs(z.std().item() - 1) < 0.3
    with torch.no_grad():  # the zero-z numbers by hand
        method.eval()
        zeros = torch.zeros(len(x), method.embedding.dim)
        logits = [method.blocks[i](x, zeros) for i in range(3)]
    assert alone["zero"] == pytest.approx([(lg.argmax(-1) == y).double().mean().item() for lg in logits],
                                          abs=2 / len(x))
    by_hand = (sum(lg.softmax(-1) for lg in logits).argmax(-1) == y).double().mean().item()
    assert ensemble["zero"] == pytest.approx(by_hand, abs=2 / len(x))


def test_feature_cache_computes_each_encoder_once_and_changes_no_number(dt):
    method, data = dt
    x, y = data.test_x, data.test_y

    def measures():
        return [ablation_accuracy(method, x, y, OPTIONS, "noise", [1]), blocks_alone(method, x, y, OPTIONS)]

    plain = measures()
    runs: list = []
    hooks = [next(b.image.children()).register_forward_hook(lambda *a: runs.append(1)) for b in method.blocks]
    try:
        with cached_image_features(ChainView(method)):
            cached = measures()
    finally:
        for h in hooks:
            h.remove()
    assert cached == plain
    assert len(runs) == 3 * 2  # three encoders, two batches, once each
    assert all("forward" not in vars(b.image) for b in method.blocks)  # the encoders are restored


def test_estimate_weights_unroll_the_noise_free_chain(dt):
    method, _ = dt
    d = method.embedding.dim
    estimates = [torch.randn(5, d) for _ in range(3)]  # constant, known estimates: z_T is their weighted sum
    chain = posterior_chain(lambda k, z: estimates[k], lambda k: method.schedule.step_into(k + 1), steps=3,
                            shape=(5, d), device="cpu", deterministic=True)
    w = estimate_weights(method, 3)
    z0_weight = math.prod(float(method.schedule.step_into(t).b) for t in (1, 2, 3))
    weighted = sum(wt * e for wt, e in zip(w, estimates, strict=True))
    assert torch.allclose(chain[-1], weighted + z0_weight * chain[0], atol=1e-5)
    assert len(estimate_weights(method, 2)) == 2


def test_linear_probe_reads_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(3, 16, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    f = centres[y] + torch.randn(300, 16, generator=g)
    acc = fit_linear_probe(f[:200], y[:200], f[200:], y[200:], 3)
    assert acc > 0.95
    assert acc == fit_linear_probe(f[:200], y[:200], f[200:], y[200:], 3)  # deterministic
    noise = torch.randn(300, 16, generator=g)
    assert fit_linear_probe(noise[:200], y[:200], noise[200:], y[200:], 3) < 0.6


def test_analyze_is_deterministic_under_a_seed(dt_run):
    run_dir, data = dt_run
    a = analyze(run_dir, data=data, runs=2, seed=5, probe_samples=64).to_dict()
    b = analyze(run_dir, data=data, runs=2, seed=5, probe_samples=64).to_dict()
    for d in (a, b):
        d.pop("seconds")
    assert a == b
    assert a["samples"] == 64 and a["seed"] == 5
    assert a["positions"] == ["1", "2", "3"] and len(a["probe"]) == 3
    assert len(a["weights_final"]) == 3 and len(a["weights_before_last"]) == 2
    assert set(a["ablation_each"]) == {"zero", "shuffle", "noise"}
    assert all(len(v) == 3 for v in a["ablation_each"].values())
    assert a["best_block"]["accuracy"] == max(max(v) for v in a["alone"].values())
    assert all(0 <= p <= 1 for p in a["probe"]) and a["probe_samples"] == 64
    assert all(math.isfinite(v) for v in a["ensemble"].values())


@pytest.mark.parametrize("method", ["ct", "fm"])
def test_ct_and_fm_ablate_along_the_time_grid(tmp_path_factory, method):
    run_dir, data = train_tiny_run(tmp_path_factory.mktemp(method) / "run", method)
    model = load_run(run_dir).method
    options = OPTIONS.replace(steps=4)
    view = ChainView(model, 4)
    assert view.bounds == [0, 1, 2, 3, 4]
    assert ChainView(model, 25).bounds == [0, 2, 5, 8, 10, 12, 15, 18, 20, 22, 25]  # at most 10 segments
    calls: list = []
    hooks = _label_inputs([model.block], calls)
    try:
        base = ablation_accuracy(model, data.test_x, data.test_y, options, None)
        n_base = len(calls)
        ablation_accuracy(model, data.test_x, data.test_y, options, "zero", [3])
    finally:
        for h in hooks:
            h.remove()
    assert base == accuracy(model, data.test_x, data.test_y, options)
    ablated = [z for _, z in calls[n_base:]]
    assert len(ablated) == 2 * 4  # two batches x 4 steps
    zero_steps = [k for k, z in enumerate(ablated[:4]) if torch.all(z == 0)]
    assert zero_steps == [3]  # only the segment's step saw zeros
    result = analyze(run_dir, data=data, runs=2, steps=4, samples=40, probe_samples=32)
    assert len(result.positions) == 4 and len(result.probe) == 1
    assert result.positions[0] == "0.00" and result.dataset == "blobs"
    assert (result.readout_head is None) == (method == "fm")  # FM with one-hot has no head
    assert "segment" in result.table()


def test_baselines_are_refused_in_one_line(tmp_path, capsys):
    train_from_the_command_line(tmp_path, "cnn", "--method", "cnn")
    capsys.readouterr()
    with pytest.raises(AnalysisError, match="cnn run"):
        analyze(tmp_path / "cnn")
    assert main(["analyze", str(tmp_path / "cnn")]) == 2
    assert "no chain of denoisers" in one_error_line(capsys)
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_steps_refused_for_dt(dt_run, capsys):
    run_dir, _ = dt_run
    with pytest.raises(AnalysisError, match="CT and FM"):
        analyze(run_dir, steps=4)


def test_cli_writes_table_json_and_figure(cli_run, capsys, tmp_path):
    _, run_dir = cli_run
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["analyze", str(run_dir), "--samples", "6", "--runs", "2", "--probe-samples", "16",
                 "--seed", "3", "-q", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "one stochastic pass" in printed and "linear probe on image features" in printed
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["samples"] == 6 and saved["runs"] == 2 and saved["seed"] == 3
    assert (out / "analysis.png").stat().st_size > 10_000
    assert main(["analyze", str(run_dir), "--samples", "6", "--runs", "1", "--probe-samples", "0",
                 "--no-figure", "-q"]) == 0
    assert (run_dir / "analysis.json").is_file() and not (run_dir / "analysis.png").exists()
    assert json.loads((run_dir / "analysis.json").read_text())["probe"] == []
