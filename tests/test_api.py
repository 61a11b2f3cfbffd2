"""The Python API: fit on tensors or a DataLoader, predict, score, load a saved run."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from noprop import Classifier


def test_fit_on_tensors_then_predict_and_score(blobs, tmp_path) -> None:
    clf = Classifier("dt", num_blocks=2, epochs=3, batch_size=32, lr=1e-2, run_dir=tmp_path / "run")
    clf.fit(blobs.train_x, blobs.train_y, validation=(blobs.test_x, blobs.test_y))
    pred = clf.predict(blobs.test_x)
    assert pred.shape == (len(blobs.test_x),) and pred.dtype == torch.long
    assert clf.score(blobs.test_x, blobs.test_y) > 0.7
    assert clf.score(blobs.test_x, blobs.test_y) == clf.results["test_accuracy"]
    reloaded = Classifier.load(tmp_path / "run")
    assert torch.equal(reloaded.predict(blobs.test_x), pred)


def test_fit_on_a_dataloader_with_a_held_out_split(blobs) -> None:
    loader = DataLoader(TensorDataset(blobs.train_x, blobs.train_y), batch_size=50)
    clf = Classifier("dt", num_blocks=2, epochs=2, batch_size=32, lr=1e-2).fit(loader)
    assert clf.results["epochs"] == 2
    assert clf.predict(blobs.test_x[:7]).shape == (7,)
