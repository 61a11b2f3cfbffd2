"""The Python API in one class: build, fit on your tensors (or a DataLoader), predict.

    >>> from noprop import Classifier
    >>> clf = Classifier(method="dt", epochs=5)             # any RunConfig field
    >>> clf.fit(x_train, y_train, validation=(x_test, y_test))
    >>> clf.predict(x_test)                                   # class indices
    >>> clf.score(x_test, y_test)                             # accuracy in [0, 1]

Images are ``(N, C, H, W)`` (or ``(N, H, W)`` for one channel) floats, labels integers in
``[0, C)``; the model's input shape and class count are read from the data. Pass ``run_dir`` to
keep metrics, checkpoints and results on disk exactly as ``noprop train`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noprop.config import RunConfig
from noprop.data import ClassificationData, DataError
from noprop.methods import Method
from noprop.run import load_run, train_run

ArrayLike = Tensor | np.ndarray


def _as_images(x: ArrayLike) -> Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(f"images must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    return x


def _as_labels(y: ArrayLike) -> Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise DataError(f"labels must be a 1-D integer array, got {tuple(y.shape)} {y.dtype}")
    return y.long()


def _from_loader(loader: Iterable[Any]) -> tuple[Tensor, Tensor]:
    xs, ys = zip(*((xb, yb) for xb, yb in loader), strict=True)
    return torch.cat([_as_images(x) for x in xs]), torch.cat([_as_labels(y) for y in ys])


class Classifier:
    """A NoProp (or baseline) image classifier with a scikit-learn-like surface."""

    def __init__(self, method: str = "dt", *, run_dir: str | Path | None = None, **config: Any) -> None:
        self.config = RunConfig.from_dict({"method": method, "progress": False, **config})
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model: Method | None = None
        self.results: dict[str, Any] | None = None

    def fit(
        self,
        x: ArrayLike | Iterable[Any],
        y: ArrayLike | None = None,
        *,
        validation: tuple[ArrayLike, ArrayLike] | Iterable[Any] | None = None,
        validation_split: float = 0.1,
    ) -> Classifier:
        """Train on ``(x, y)`` tensors/arrays, or on a DataLoader of ``(x, y)`` batches as ``x``.

        Per-epoch accuracy is measured on ``validation``; without it, on a held-out
        ``validation_split`` of the training data (a fixed, seeded split).
        """
        train_x, train_y = _from_loader(x) if y is None else (_as_images(x), _as_labels(y))
        if validation is None:
            order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(self.config.seed))
            n_val = max(1, int(len(train_x) * validation_split))
            val, keep = order[:n_val], order[n_val:]
            val_x, val_y, train_x, train_y = train_x[val], train_y[val], train_x[keep], train_y[keep]
        elif isinstance(validation, tuple):
            val_x, val_y = _as_images(validation[0]), _as_labels(validation[1])
        else:
            val_x, val_y = _from_loader(validation)
        num_classes = int(max(train_y.max(), val_y.max())) + 1
        data = ClassificationData("user", train_x, train_y, val_x, val_y, num_classes=num_classes)
        trainer, self.results = train_run(self.config.replace(dataset="user"), self.run_dir, data=data,
                                          overwrite=True)
        self.model = trainer.method.eval()
        return self

    def _model(self) -> Method:
        if self.model is None:
            raise RuntimeError("call fit() or Classifier.load() first")
        return self.model

    @torch.inference_mode()
    def predict_logits(self, x: ArrayLike, *, batch_size: int = 1000, **sampler: Any) -> Tensor:
        """Class scores ``(N, C)``; ``sampler`` passes ``steps``/``deterministic`` to the method."""
        model = self._model().eval()
        device = next(model.parameters()).device
        x = _as_images(x)
        generator = torch.Generator(device=device).manual_seed(self.config.eval_seed)
        out = [model.predict_logits(x[i : i + batch_size].to(device), generator=generator, **sampler)
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).cpu()

    def predict(self, x: ArrayLike, **sampler: Any) -> Tensor:
        """Predicted class indices ``(N,)``."""
        return self.predict_logits(x, **sampler).argmax(-1)

    def score(self, x: ArrayLike, y: ArrayLike, **sampler: Any) -> float:
        """Accuracy of :meth:`predict` against ``y``."""
        return float((self.predict(x, **sampler) == _as_labels(y)).double().mean())

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Restore a classifier from a run directory or checkpoint (``noprop train`` output too)."""
        run = load_run(Path(path))
        clf = cls.__new__(cls)
        clf.config, clf.run_dir, clf.model, clf.results = run.config, Path(path), run.method, None
        return clf
