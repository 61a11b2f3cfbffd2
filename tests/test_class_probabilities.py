"""The default class probabilities (docs/calibration.md): the mean over 10 stochastic passes of the
head's softmax at a temperature fitted after training (Classifier: on the validation split; noprop
train: on training examples) and saved with the run; ``Classifier.predict_proba`` and ``noprop
predict`` report it; runs saved before temperatures existed load with ``T = 1`` and a note."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest
import torch

from helpers import make_blobs, write_npz
from noprop import Classifier
from noprop.calibration import fit_temperature, tempered_probabilities
from noprop.cli import main
from noprop.data.base import standardise
from noprop.inference import (
    PROBABILITY_PASSES,
    TEMPERATURE_EXAMPLES,
    InferenceOptions,
    Temperatures,
    pass_logits,
)
from noprop.saved_run import SavedRun, load_run

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A Classifier fitted with a validation split whose labels are a quarter wrong (so the model
    errs on it and a temperature can be fitted), saved to a run directory."""
    data = make_blobs(160, 80, classes=4, seed=3)
    val_y = data.test_y.clone()
    val_y[::4] = (val_y[::4] + 1) % 4
    run_dir = tmp_path_factory.mktemp("api") / "run"
    clf = Classifier("dt", num_blocks=2, epochs=2, batch_size=32, lr=1e-2, encoder="mlp", encoder_width=32,
                     run_dir=run_dir)
    clf.fit(data.train_x, data.train_y, validation=(data.test_x, val_y))
    return clf, data, val_y, run_dir


def _passes(clf, x, k):
    """The k stochastic passes the trainer fitted on, on inputs prepared as predict_proba does."""
    options = InferenceOptions.of_run(clf.config, torch.device("cpu"), steps=None)
    return pass_logits(clf.model, standardise(x, clf.normalization), options, k)


def test_predict_proba_is_the_mean_of_ten_passes_at_the_temperature_fitted_on_validation(fitted) -> None:
    clf, data, val_y, _ = fitted
    t = clf.temperatures
    assert t.fitted_on == "validation" and t.examples == 80 and t.passes == PROBABILITY_PASSES == 10
    assert not t.notes and t.mean != 1.0
    passes = _passes(clf, data.test_x, 10)
    assert t.mean == pytest.approx(fit_temperature(passes, val_y).temperature, rel=1e-6)
    proba = clf.predict_proba(data.test_x)
    assert torch.allclose(proba.sum(-1), torch.ones(80))
    assert torch.allclose(proba, tempered_probabilities(passes, t.mean).float())
    # one pass: the stochastic pass predict() takes, at its own temperature, so its argmax is predict()
    one = clf.predict_proba(data.test_x, passes=1)
    assert torch.equal(one.argmax(-1), clf.predict(data.test_x))
    assert torch.allclose(one, (clf.predict_logits(data.test_x) / t.stochastic).softmax(-1))
    noise_free = (clf.predict_logits(data.test_x, deterministic=True) / t.noise_free).softmax(-1)
    assert torch.allclose(clf.predict_proba(data.test_x, deterministic=True), noise_free)
    with pytest.raises(ValueError, match="stochastic sampler"):
        clf.predict_proba(data.test_x, passes=3, deterministic=True)


def test_noprop_predict_reports_what_predict_proba_does(fitted, tmp_path, capsys) -> None:
    clf, data, _, run_dir = fitted
    np.save(tmp_path / "x.npy", data.test_x.numpy())
    for flags, proba in (([], clf.predict_proba(data.test_x)),
                         (["--stochastic", "3"], clf.predict_proba(data.test_x, passes=3)),
                         (["--stochastic", "0"], clf.predict_proba(data.test_x, deterministic=True))):
        assert main(["predict", str(run_dir), str(tmp_path / "x.npy"), *flags]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert [int(r["class_index"]) for r in rows] == proba.argmax(-1).tolist()
        assert [r["probability"] for r in rows] == [f"{p:.4f}" for p in proba.max(-1).values]


def test_the_temperatures_are_saved_with_the_run_and_exported(fitted, tmp_path) -> None:
    clf, data, _, run_dir = fitted
    assert load_run(run_dir).temperatures == clf.temperatures
    assert clf.results["temperatures"]["noise_free"] == clf.temperatures.noise_free
    reloaded = Classifier.load(run_dir)
    assert torch.equal(reloaded.predict_proba(data.test_x), clf.predict_proba(data.test_x))
    exported = SavedRun.read(run_dir).export(tmp_path / "model.safetensors")
    assert SavedRun.read(exported).temperatures == clf.temperatures


def test_noprop_train_fits_on_a_draw_of_training_examples(tmp_path) -> None:
    data = make_blobs(64, 16, classes=3, seed=1)
    dataset = write_npz(tmp_path / "tiny.npz", data)
    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset), "-T", "2", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--precision", "fp32", "-q", "--run-dir", str(run_dir)]) == 0
    t = load_run(run_dir).saved.temperatures
    assert t is not None and t.fitted_on == "train" and t.examples == min(64, TEMPERATURE_EXAMPLES)
    assert json.loads((run_dir / "results.json").read_text())["temperatures"] == t.to_dict()


def test_a_checkpoint_without_temperatures_loads_with_t_1_and_a_note(fitted, tmp_path, capsys) -> None:
    _, data, _, run_dir = fitted
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state["temperatures"]  # as written before temperatures were fitted
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / "checkpoint.pt")
    run = load_run(old)
    assert run.saved.temperatures is None and run.temperatures == Temperatures()
    assert "no fitted temperature" in run.temperature_note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = Classifier.load(old)
    assert any("no fitted temperature" in str(w.message) for w in caught)
    expected = tempered_probabilities(_passes(clf, data.test_x, 10), 1.0).float()
    assert torch.allclose(clf.predict_proba(data.test_x), expected)
    np.save(tmp_path / "x.npy", data.test_x[:3].numpy())
    assert main(["predict", str(old), str(tmp_path / "x.npy")]) == 0
    assert "no fitted temperature" in capsys.readouterr().err
