"""Several seeded passes of a stochastic sampler: the paper's protocol and their majority vote.

The Eq. 3 sampler does not compute ``argmax_y p(y | x)``: run to its optimum it *draws* a class
from the model's ``p(y | x)``. One pass therefore scores ``E_x[p(y_true | x)]`` (the mean
probability of the true class), which is below the argmax accuracy whenever the model is unsure.
The paper reports the mean and standard error of the accuracy over 5 inference runs per seed
(v1 Table 1); the majority vote over the same runs estimates the mode of the sampled class, so
with many runs it approaches the argmax accuracy::

    accuracy_k = mean_i [pred_k(x_i) == y_i]                      (run k, seed + k)
    vote(x_i)  = argmax_c #{k : pred_k(x_i) == c}                  (ties: lowest class index)

``docs/methods.md`` ("What one stochastic pass scores") records what this gap measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from noprop.data.base import batch_bounds
from noprop.device import inference_numerics
from noprop.methods.base import Method


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean, ``stdev / sqrt(n)`` (``None`` from fewer than two values)."""
    n = len(values)
    return statistics.stdev(values) / math.sqrt(n) if n > 1 else None


@dataclass(frozen=True)
class InferenceRuns:
    """Accuracies of ``len(accuracies)`` sampler passes and of their majority vote."""

    accuracies: list[float]
    vote_accuracy: float

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def stderr(self) -> float | None:
        """Standard error of the mean accuracy (``None`` from a single run)."""
        return standard_error(self.accuracies)


@contextmanager
def seeded_pass(method: Method, seed: int) -> Iterator[tuple[torch.device, torch.Generator]]:
    """One sampler pass's frame: eval mode, and the model's device with a generator seeded ``seed``.

    Every evaluation (the trainer's, ``noprop evaluate``'s runs) draws its noise from this
    generator, batch after batch, so a pass is a function of ``seed`` alone; train mode is
    restored afterwards, also when the pass fails.
    """
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    try:
        yield device, torch.Generator(device=device).manual_seed(seed)
    finally:
        method.train(was_training)


@torch.inference_mode()
def predictions(method: Method, x: Tensor, *, steps: int | None = None, deterministic: bool = False,
                seed: int = 1234, batch_size: int = 1000) -> Tensor:
    """The predicted class of every row of ``x`` from one sampler pass seeded with ``seed``."""
    with seeded_pass(method, seed) as (device, generator):
        preds = [
            method.predict_logits(xb.to(device), steps=steps, deterministic=deterministic,
                                  generator=generator).argmax(-1).cpu()
            for xb in (x[start:stop] for start, stop in batch_bounds(len(x), batch_size))
        ]
    return torch.cat(preds)


def inference_runs(method: Method, x: Tensor, y: Tensor, *, runs: int, steps: int | None = None,
                   seed: int = 1234, batch_size: int = 1000, flush_denormal: bool = True,
                   precision: str = "fp32") -> InferenceRuns:
    """``runs`` stochastic sampler passes over ``(x, y)``, seeded ``seed, seed + 1, ...``.

    Run ``k`` uses the same seed as :func:`noprop.training.trainer.evaluate_accuracy` with
    ``seed + k``, so the first run reproduces the trainer's own evaluation at these steps, when
    ``precision`` (resolved: fp32 or bf16 autocast) is the one the trainer evaluated with.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    num_classes = method.spec.num_classes
    votes = torch.zeros(len(x), num_classes, dtype=torch.long)
    accuracies = []
    device = next(method.parameters()).device
    with inference_numerics(precision, device, flush_denormal):
        for k in range(runs):
            pred = predictions(method, x, steps=steps, seed=seed + k, batch_size=batch_size)
            votes[torch.arange(len(x)), pred] += 1
            accuracies.append((pred == y).double().mean().item())
    vote = (votes.argmax(-1) == y).double().mean().item()
    return InferenceRuns(accuracies=accuracies, vote_accuracy=vote)
