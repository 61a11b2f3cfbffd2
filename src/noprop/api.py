"""The Python API in one class: build, fit on your tensors (or a DataLoader), predict.

    >>> from noprop import Classifier
    >>> clf = Classifier(method="dt", epochs=5)             # any RunConfig field
    >>> clf.fit(x_train, y_train, validation=(x_test, y_test), verbose=True)  # the CLI's epoch lines
    >>> clf.validation_score_, clf.history_                   # last epoch's accuracy, metrics rows
    >>> clf.predict(x_test)                                   # class indices (the paper's sampler)
    >>> clf.predict_proba(x_test)                             # calibrated p(y | x) (docs/calibration.md)
    >>> clf.score(x_test, y_test)                             # accuracy in [0, 1]
    >>> Classifier(method="dt", encoder=MyNet)                # your nn.Module factory per block
    >>> Classifier(method="fm")      # tables: encoder "auto" is an MLP on feature vectors

Images are ``(N, C, H, W)`` (or ``(N, H, W)`` for one channel), tables ``(N, D)`` (one row of
``D`` features per example), labels integers in ``[0, C)``; the model's input shape and class
count are read from the data. Inputs are seen exactly as ``noprop predict`` sees them. The one
input contract for images: uint8 0..255 (scaled to [0, 1]) or floats in [0, 1]; 0..255 pixels in
another dtype are refused by ``fit``, and inputs far outside the range a model was trained on by
``predict*``/``score``, in one line (divide by 255, or pass uint8), because they would score near
chance without a word. Tables are taken as they are. Then every
channel (every feature) is standardised with the mean and std of the training split, which are
saved with the model (``Classifier.load`` of a ``noprop train`` run uses that run's statistics). Pass
``run_dir`` to keep metrics, checkpoints and results on disk exactly as ``noprop train`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noprop.config import RunConfig
from noprop.data import ClassificationData, DataError
from noprop.data.base import TEST_FRACTION, standardise
from noprop.data.tabular import feature_statistics, features_from_array
from noprop.data.user import check_training_range, images_from_array
from noprop.encoders import unportable_encoder
from noprop.inference import InferenceOptions, Temperatures, class_probabilities, logits, probability_passes
from noprop.methods import Method
from noprop.run import clear_run_files, prepare_run_dir, run_dir_lock, train_run
from noprop.saved_run import CHECKPOINT, load_run, write_config, write_results
from noprop.spec import DataSpec
from noprop.training.trainer import Trainer

ArrayLike = Tensor | np.ndarray
Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def _as_inputs(x: ArrayLike) -> Tensor:
    """Rows ``(N, D)`` as they are, or images ``(N, C, H, W)``, float32; uint8 images scaled to
    [0, 1] as ``noprop predict`` does."""
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim == 2:
        return torch.from_numpy(features_from_array(a, "rows"))
    return torch.from_numpy(images_from_array(a, "images"))


def _as_labels(y: ArrayLike) -> Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise DataError(f"labels must be a 1-D integer array, got {tuple(y.shape)} {y.dtype}")
    return y.long()


def _as_examples(x: ArrayLike, y: ArrayLike, what: str) -> tuple[Tensor, Tensor]:
    """Inputs and labels, refused in one line unless there is one label per input."""
    inputs, labels = _as_inputs(x), _as_labels(y)
    if len(inputs) != len(labels):
        raise DataError(f"{what}: x has {len(inputs)} examples but y has {len(labels)} labels")
    return inputs, labels


def _from_loader(loader: Iterable[Any]) -> tuple[Tensor, Tensor]:
    xs, ys = zip(*((xb, yb) for xb, yb in loader), strict=True)
    return torch.cat([_as_inputs(x) for x in xs]), torch.cat([_as_labels(y) for y in ys])


def _statistics(x: Tensor) -> Normalization:
    """Per-channel mean and std of training images (std floored, as for ``.npz`` data); per
    feature of training rows (as for tables)."""
    if x.dim() == 2:
        return feature_statistics(x.numpy())
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


class Classifier:
    """A NoProp (or baseline) classifier of images or table rows with a scikit-learn-like surface.

    Budgets and the held-out split are ``noprop train``'s on a file of the same data (one code
    path, ``RunConfig.resolved``). After :meth:`fit`: ``validation_score_`` (the last epoch's
    accuracy on the validation data) and ``history_`` (the rows of ``metrics.csv``, one per epoch).
    """

    def __init__(self, method: str = "dt", *, run_dir: str | Path | None = None, overwrite: bool = False,
                 **config: Any) -> None:
        settings = {"method": method, "progress": False, "log_epochs": False, **config}
        self.config = RunConfig.from_dict(settings)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.overwrite = overwrite
        self.model: Method | None = None
        self.results: dict[str, Any] | None = None
        #: Per-channel (mean, std) that inputs are standardised with: the training split's.
        self.normalization: Normalization | None = None
        self.spec: DataSpec | None = None
        self._trainer: Trainer | None = None
        #: The temperatures of :meth:`predict_proba`, fitted on the validation data after training.
        self.temperatures: Temperatures = Temperatures()
        self.validation_score_: float | None = None
        self.history_: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        """``Classifier(method='dt', epochs=5)``: the settings that differ from the defaults."""
        defaults = RunConfig(self.config.method).to_dict()
        shown = {k: v for k, v in self.config.to_dict().items()
                 if k not in ("method", "progress", "log_epochs") and v != defaults.get(k)}
        return "Classifier(" + ", ".join([f"method={self.config.method!r}",
                                          *(f"{k}={v!r}" for k, v in shown.items())]) + ")"

    def fit(
        self,
        x: ArrayLike | Iterable[Any],
        y: ArrayLike | None = None,
        *,
        validation: tuple[ArrayLike, ArrayLike] | Iterable[Any] | None = None,
        validation_split: float = TEST_FRACTION,
        verbose: bool = False,
    ) -> Classifier:
        """Train on ``(x, y)`` tensors/arrays, or on a DataLoader of ``(x, y)`` batches as ``x``;
        returns ``self``.

        Per-epoch accuracy is measured on ``validation``; without it, on a held-out
        ``validation_split`` of the training data (a fixed, seeded split; 20 %, as ``noprop train``
        holds out of a file without a test split). ``verbose``: print what ``noprop train`` prints
        (the budget and model lines, one line per epoch). An existing run in ``run_dir`` is
        refused unless the classifier was made with ``overwrite=True``.
        """
        train_x, train_y = _from_loader(x) if y is None else _as_examples(x, y, "fit")
        if validation is None:
            order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(self.config.seed))
            n_val = max(1, int(len(train_x) * validation_split))
            val, keep = order[:n_val], order[n_val:]
            val_x, val_y, train_x, train_y = train_x[val], train_y[val], train_x[keep], train_y[keep]
        elif isinstance(validation, tuple):
            val_x, val_y = _as_examples(*validation, "validation")
        else:
            val_x, val_y = _from_loader(validation)
        num_classes = int(max(train_y.max(), val_y.max())) + 1
        stats = _statistics(train_x)
        data = ClassificationData("user", standardise(train_x, stats), train_y, standardise(val_x, stats),
                                  val_y, num_classes=num_classes, normalization=stats)
        config = self.config.replace(dataset="user", log_epochs=verbose, progress=verbose)
        if self.run_dir is not None:
            self._warn_unportable()
        trainer, self.results = train_run(config, self.run_dir, data=data, overwrite=self.overwrite,
                                          fit_temperature_on="validation")
        self._trainer, self.model = trainer, trainer.method.eval()
        self.temperatures = trainer.temperatures or Temperatures()
        self.validation_score_ = float(self.results["test_accuracy"])
        self.history_ = [dict(row) for row in trainer.metrics.rows]
        self.normalization, self.spec = stats, data.spec
        return self

    def _model(self) -> Method:
        if self.model is None:
            raise RuntimeError("call fit() or Classifier.load() first")
        return self.model

    def _prepare(self, x: ArrayLike) -> Tensor:
        """Inputs as the model was trained on: shape checked, standardised."""
        inputs = _as_inputs(x)
        if self.spec is not None and tuple(inputs.shape[1:]) != self.spec.input_shape:
            given = DataSpec(tuple(inputs.shape[1:]), self.spec.num_classes)
            axes = " (channels x height x width)" if given.is_image and self.spec.is_image else ""
            raise DataError(f"inputs are {_kind(given)} but the model takes {_kind(self.spec)}{axes}")
        if inputs.dim() == 4:
            check_training_range(inputs, self.normalization, "inputs")
        return standardise(inputs, self.normalization)

    def _options(self, batch_size: int, sampler: dict[str, Any]) -> InferenceOptions:
        # the run's precision and noise seed, so that score() gives back the trainer's evaluation
        return InferenceOptions.of_run(self.config, next(self._model().parameters()).device, steps=None,
                                       deterministic=False, batch_size=batch_size).replace(**sampler)

    def _logits(self, x: ArrayLike, batch_size: int, sampler: dict[str, Any]) -> Tensor:
        return logits(self._model(), self._prepare(x), self._options(batch_size, sampler))

    def predict_logits(self, x: ArrayLike, *, batch_size: int = 1000, **sampler: Any) -> Tensor | np.ndarray:
        """Class scores ``(N, C)``; ``sampler`` passes ``steps``/``deterministic`` to the method.
        numpy in, numpy out; a tensor otherwise."""
        return _like(x, self._logits(x, batch_size, sampler))

    def predict_proba(self, x: ArrayLike, *, batch_size: int = 1000, passes: int | None = None,
                      **sampler: Any) -> Tensor | np.ndarray:
        """Class probabilities ``(N, C)``, rows summing to 1, meant to mean what they say (of the
        inputs given 0.8, about 80 % right, and the wrong answers given lower numbers than the
        right ones): ``mean_k softmax(f(z_T^(k)) / T)``, the mean over ``passes`` passes of the
        paper's stochastic sampler (default 10, ``noprop.inference.PROBABILITY_PASSES``; one for a
        method whose prediction draws no noise) of the head's softmax at the temperature
        ``T = self.temperatures.mean`` fitted after training on the validation data (``noprop
        train`` runs: on training examples). It costs ``passes`` sampler passes;
        docs/calibration.md measures it against every other reading. A model saved before
        temperatures were fitted uses ``T = 1``.

        Its argmax can differ from :meth:`predict`'s class (one stochastic pass, the paper's and the
        trainer's, which draws a class near a decision boundary); ``passes=1`` gives that one pass's
        probabilities (at their own ``T``), whose argmax is :meth:`predict`. ``deterministic=True``
        gives the noise-free pass's, at its own ``T``: one pass, calibrated on average, but close to
        the same number for every input, right or wrong."""
        deterministic = bool(sampler.get("deterministic", False))
        count = probability_passes(self._model(), deterministic) if passes is None else passes
        options = self._options(batch_size, {"deterministic": deterministic, **sampler})
        return _like(x, class_probabilities(self._model(), self._prepare(x), options, self.temperatures,
                                            passes=count))

    def predict(self, x: ArrayLike, **sampler: Any) -> Tensor | np.ndarray:
        """Predicted class indices ``(N,)``: one pass of the paper's stochastic sampler, seeded (the
        pass :meth:`score` and the trainer's evaluation score)."""
        return _like(x, self._logits(x, 1000, sampler).argmax(-1))

    def score(self, x: ArrayLike, y: ArrayLike, **sampler: Any) -> float:
        """Accuracy of :meth:`predict` against ``y``."""
        return float((self._logits(x, 1000, sampler).argmax(-1) == _as_labels(y)).double().mean())

    def save(self, path: str | Path) -> Path:
        """Write the fitted model as a run directory (``checkpoint.pt``, ``config.yaml``,
        ``results.json``) that ``Classifier.load``, ``noprop predict`` and ``noprop evaluate`` read.
        Refuses a directory holding another run unless made with ``overwrite=True``."""
        if self._trainer is None:
            raise RuntimeError("save() needs a model fitted in this process; a loaded one is already on disk")
        path = Path(path)
        self._warn_unportable()
        with run_dir_lock(path):
            prepare_run_dir(path, resume=False, overwrite=self.overwrite)
            clear_run_files(path)
            write_config(path, self._trainer.config)
            self._trainer.saved_run().write(path / CHECKPOINT)
            if self.results is not None:
                write_results(path, self.results)
        return path

    def _warn_unportable(self) -> None:
        note = unportable_encoder(getattr(self.config.method_config, "encoder", None))
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=3)

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Restore a classifier from a run directory or checkpoint (``noprop train`` output too),
        with the input statistics it was trained with."""
        run = load_run(Path(path))
        clf = cls.__new__(cls)
        clf.config, clf.run_dir, clf.model, clf.results = run.config, Path(path), run.method, None
        clf.overwrite, clf._trainer = False, None
        clf.validation_score_, clf.history_ = None, []
        clf.spec, clf.normalization = run.spec, run.data_info.statistics
        clf.temperatures = run.temperatures
        if run.temperature_note is not None:
            warnings.warn(f"{path}: {run.temperature_note}", UserWarning, stacklevel=2)
        return clf


def _kind(spec: DataSpec) -> str:
    """``rows of 30 features``, ``3x32x32 images``."""
    return f"{spec.describe()} images" if spec.is_image else f"rows of {spec.describe()}"


def _like(x: ArrayLike, out: Tensor) -> Tensor | np.ndarray:
    return out.numpy() if isinstance(x, np.ndarray) else out
