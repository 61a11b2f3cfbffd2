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


def _pixel_data(tmp_path):
    """uint8 8x8 images, 3 classes, brightness carries the class: an .npz as a user would have."""
    import numpy as np

    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 3, n)
        x = np.clip(90 * y[:, None, None, None] + rng.integers(0, 60, (n, 1, 8, 8)), 0, 255)
        return x.astype(np.uint8), y

    (x, y), (xt, yt) = split(240), split(60)
    path = tmp_path / "pixels.npz"
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)
    return path, x, y, xt, yt


def test_load_of_a_cli_run_sees_raw_pixels_as_the_run_did(tmp_path) -> None:
    import json

    from noprop.cli import main

    path, _, _, xt, yt = _pixel_data(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(path), "-T", "2", "--epochs", "3", "--batch-size", "32",
                 "--lr", "0.01", "-q", "--device", "cpu", "--run-dir", str(run)]) == 0
    reported = json.loads((run / "results.json").read_text())["test_accuracy"]
    assert reported > 0.5
    assert Classifier.load(run).score(xt, yt) == reported  # same inputs, same seeded sampler


def test_fit_standardises_with_training_statistics_and_numpy_gives_numpy(tmp_path) -> None:
    import numpy as np

    _, x, y, xt, yt = _pixel_data(tmp_path)
    clf = Classifier("dt", num_blocks=2, epochs=3, batch_size=32, lr=1e-2)
    clf.fit(x, y, validation=(xt, yt))
    assert clf.normalization is not None and clf.normalization[0][0] > 0.1  # mean of [0, 1] pixels
    pred, proba = clf.predict(xt), clf.predict_proba(xt)
    assert isinstance(pred, np.ndarray) and pred.shape == (60,)
    assert isinstance(proba, np.ndarray) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert clf.score(xt, yt) == clf.results["test_accuracy"] > 0.5
    assert isinstance(clf.predict(torch.from_numpy(xt)), torch.Tensor)


def test_wrong_image_size_is_a_one_line_error(blobs) -> None:
    import pytest

    from noprop.data import DataError

    clf = Classifier("dt", num_blocks=2, epochs=1, batch_size=32).fit(blobs.train_x, blobs.train_y)
    with pytest.raises(DataError, match=r"inputs are 1x9x9 images but the model takes 1x8x8"):
        clf.predict(torch.zeros(3, 1, 9, 9))


def test_fit_with_a_label_count_that_is_not_the_input_count_is_one_line(blobs) -> None:
    import pytest

    from noprop.data import DataError

    clf = Classifier("dt", num_blocks=2, epochs=1, batch_size=32)
    with pytest.raises(DataError, match="fit: x has 256 examples but y has 10 labels"):
        clf.fit(blobs.train_x, blobs.train_y[:10])
    with pytest.raises(DataError, match="validation: x has 128 examples but y has 5 labels"):
        clf.fit(blobs.train_x, blobs.train_y, validation=(blobs.test_x, blobs.test_y[:5]))


def test_fit_into_an_existing_run_is_refused_unless_overwrite(blobs, tmp_path) -> None:
    import pytest

    from noprop.run import RunDirError

    kw = {"num_blocks": 2, "epochs": 1, "batch_size": 32}
    Classifier("dt", run_dir=tmp_path / "run", **kw).fit(blobs.train_x, blobs.train_y)
    with pytest.raises(RunDirError, match="already holds a run"):
        Classifier("dt", run_dir=tmp_path / "run", **kw).fit(blobs.train_x, blobs.train_y)
    Classifier("dt", run_dir=tmp_path / "run", overwrite=True, **kw).fit(blobs.train_x, blobs.train_y)


def test_save_of_a_model_fitted_without_run_dir_loads_back(blobs, tmp_path) -> None:
    clf = Classifier("dt", num_blocks=2, epochs=1, batch_size=32).fit(blobs.train_x, blobs.train_y)
    clf.save(tmp_path / "saved")
    again = Classifier.load(tmp_path / "saved")
    assert torch.equal(again.predict(blobs.test_x), clf.predict(blobs.test_x))
    assert again.normalization == clf.normalization


def test_noprop_evaluate_reads_an_api_run_given_the_data(tmp_path, capsys) -> None:
    import numpy as np

    from noprop.cli import main

    path, x, y, xt, yt = _pixel_data(tmp_path)
    clf = Classifier("dt", num_blocks=2, epochs=3, batch_size=32, lr=1e-2, run_dir=tmp_path / "api")
    clf.fit(x[:200], y[:200], validation=(xt, yt))  # statistics of 200 images, not of the .npz's 240
    assert main(["evaluate", str(tmp_path / "api")]) == 2
    assert "fitted from Python on in-memory data; pass --dataset" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "api"), "--dataset", str(path)]) == 0
    reported = float(capsys.readouterr().out.split()[-1])
    assert reported == round(clf.score(xt, yt), 4)
    assert np.isfinite(reported)


def test_float_pixels_0_to_255_are_refused_by_fit_and_by_a_model_trained_on_0_to_1(tmp_path) -> None:
    import numpy as np
    import pytest

    from noprop.data import DataError

    _, x, y, xt, yt = _pixel_data(tmp_path)
    with pytest.raises(DataError, match=r"divide by 255 \(or pass uint8\)"):
        Classifier("dt", num_blocks=2, epochs=1).fit(x.astype(np.float32), y)
    clf = Classifier("dt", num_blocks=2, epochs=1, batch_size=32).fit(x, y, validation=(xt, yt))
    for call in (clf.predict, clf.predict_proba, clf.predict_logits):
        with pytest.raises(DataError, match="divide by 255"):
            call(xt.astype(np.float32))
    with pytest.raises(DataError, match="far outside what the model was trained on"):
        clf.score(xt / 255 * 40 - 20, yt)  # signed, so not pixels, but nothing like the training inputs
    assert clf.score(xt.astype(np.float32) / 255, yt) == clf.score(xt, yt)  # the same contract, two spellings


def test_fit_is_quiet_by_default_verbose_prints_the_epoch_lines_and_sets_the_fitted_attributes(
        blobs, capsys) -> None:
    clf = Classifier("dt", num_blocks=2, epochs=2, batch_size=32)
    assert clf.fit(blobs.train_x, blobs.train_y) is clf
    assert capsys.readouterr().out == ""
    assert [row["epoch"] for row in clf.history_] == [1, 2]
    assert clf.validation_score_ == clf.history_[-1]["test_accuracy"] == clf.results["test_accuracy"]
    Classifier("dt", num_blocks=2, epochs=2, batch_size=32).fit(blobs.train_x, blobs.train_y, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model NoPropDT") and lines[2].startswith("epoch 2: loss")


def test_the_api_budget_and_hold_out_are_the_clis_on_a_file_of_the_same_data(blobs) -> None:
    clf = Classifier("dt", num_blocks=2, max_train_seconds=0.01)
    clf.fit(blobs.train_x, blobs.train_y)  # 256 examples: 20 % held out, as noprop train does
    config = clf._trainer.config
    assert len(clf._trainer.data.test_x) == 51
    assert (config.epochs, config.batch_size) == (77, 16)  # sized_budget(205): 13 batches of 16 an epoch


def test_repr_shows_the_method_and_only_the_settings_that_differ_from_the_defaults() -> None:
    assert repr(Classifier()) == "Classifier(method='dt')"
    assert repr(Classifier("ct", epochs=5, lr=0.01)) == "Classifier(method='ct', epochs=5, lr=0.01)"


def test_saving_a_model_whose_encoder_lives_in_the_script_warns_with_the_fix(blobs, tmp_path,
                                                                             monkeypatch) -> None:
    import sys
    import warnings

    import pytest

    import user_encoders
    from noprop.encoders import unportable_encoder

    def my_encoder(spec):
        return user_encoders.conv_for(spec)

    my_encoder.__module__, my_encoder.__qualname__ = "__main__", "my_encoder"
    monkeypatch.setattr(sys.modules["__main__"], "my_encoder", my_encoder, raising=False)
    clf = Classifier("dt", encoder=my_encoder, num_blocks=2, epochs=1, batch_size=64)
    with pytest.warns(UserWarning, match="move the encoder into an importable module"):
        clf.fit(blobs.train_x, blobs.train_y, verbose=False)
        clf.save(tmp_path / "saved")
    with pytest.warns(UserWarning, match=r"encoder __main__:my_encoder is defined in the script"):
        Classifier("dt", encoder=my_encoder, num_blocks=2, epochs=1, run_dir=tmp_path / "run").fit(
            blobs.train_x[:40], blobs.train_y[:40])
    assert unportable_encoder("user_encoders:conv_for") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf2 = Classifier("dt", encoder=user_encoders.conv_for, num_blocks=2, epochs=1, batch_size=64)
        clf2.fit(blobs.train_x[:40], blobs.train_y[:40]).save(tmp_path / "fine")
