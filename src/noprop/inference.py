"""The one inference loop: a method's predictions over a set of inputs, seeded, batched, at a precision.

Every evaluation in the library runs :func:`infer`: the trainer's per-epoch evaluation,
``noprop evaluate`` (one pass or the paper's k passes), ``noprop predict``, ``Classifier``,
``noprop reproduce`` and ``noprop plot``. Its settings are one :class:`InferenceOptions`, so a new
evaluation setting is one field there and its use here. A pass puts the model in eval mode and
draws all its noise, batch after batch, from one generator seeded ``options.seed``: a pass is a
function of the seed alone, and pass 1 of ``noprop evaluate --runs k`` is the trainer's number.

The Eq. 3 sampler does not compute ``argmax_y p(y | x)``: run to its optimum it *draws* a class
from the model's ``p(y | x)``. One pass therefore scores ``E_x[p(y_true | x)]``, which is below the
argmax accuracy whenever the model is unsure. The paper reports the mean and standard error of the
accuracy over 5 inference runs (v1 Table 1); the majority vote over the same runs estimates the
mode of the sampled class (:func:`inference_runs`)::

    accuracy_k = mean_i [pred_k(x_i) == y_i]                      (run k, seed + k)
    vote(x_i)  = argmax_c #{k : pred_k(x_i) == c}                  (ties: lowest class index)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from noprop.config import RunConfig
from noprop.data.base import batch_bounds
from noprop.device import inference_numerics, resolve_precision
from noprop.methods.base import Method

T = TypeVar("T")


@dataclass(frozen=True)
class InferenceOptions:
    """How one inference pass runs."""

    #: sampler steps (CT/FM; ``None``: the method's own)
    steps: int | None = None
    #: the noise-free sampler instead of the paper's stochastic one
    deterministic: bool = False
    #: seed of the sampler's noise
    seed: int = 1234
    #: rows per forward pass (a last batch of one joins the one before, as in training)
    batch_size: int = 1000
    #: ``fp32`` or ``bf16`` (autocast), resolved for the device
    precision: str = "fp32"
    #: flush denormal floats to zero on the CPU during the pass
    flush_denormal: bool = True

    @classmethod
    def of_run(cls, config: RunConfig, device: torch.device, **changes: Any) -> InferenceOptions:
        """The run's own evaluation settings (what the trainer scores each epoch), with ``changes``.
        At the run's precision an evaluation gives back the trainer's number."""
        own = cls(steps=config.eval_inference_steps or config.sampler_steps,
                  deterministic=config.eval_deterministic, seed=config.eval_seed,
                  precision=resolve_precision(config.precision, device), flush_denormal=config.flush_denormal)
        return own.replace(**changes)

    def replace(self, **changes: Any) -> InferenceOptions:
        return dataclasses.replace(self, **changes)

    def sampler(self) -> dict[str, Any]:
        """The keyword arguments of ``Method.predict_logits`` / ``readout_logits`` these set."""
        return {"steps": self.steps, "deterministic": self.deterministic}


@contextmanager
def seeded_pass(method: Method, seed: int) -> Iterator[tuple[torch.device, torch.Generator]]:
    """Eval mode, and the model's device with a generator seeded ``seed``; train mode is restored
    afterwards, also when the pass fails."""
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    try:
        yield device, torch.Generator(device=device).manual_seed(seed)
    finally:
        method.train(was_training)


@torch.inference_mode()
def infer(method: Method, x: Tensor, options: InferenceOptions,
          per_batch: Callable[[Tensor, torch.Generator], T]) -> list[T]:
    """``per_batch(x_batch on the model's device, generator)`` over ``x`` in order, in one seeded pass."""
    device = next(method.parameters()).device
    with inference_numerics(options.precision, device, options.flush_denormal), \
            seeded_pass(method, options.seed) as (device, generator):
        return [per_batch(x[start:stop].to(device), generator)
                for start, stop in batch_bounds(len(x), options.batch_size)]


def logits(method: Method, x: Tensor, options: InferenceOptions) -> Tensor:
    """Class scores ``(N, C)`` of one pass, float32 on the CPU."""
    return torch.cat(infer(method, x, options, lambda xb, g: method.predict_logits(
        xb, generator=g, **options.sampler()).float().cpu()))


def predictions(method: Method, x: Tensor, options: InferenceOptions) -> Tensor:
    """The predicted class of every row of ``x`` from one pass."""
    return torch.cat(infer(method, x, options, lambda xb, g: method.predict_logits(
        xb, generator=g, **options.sampler()).argmax(-1).cpu()))


def readout_accuracies(method: Method, x: Tensor, y: Tensor, options: InferenceOptions = InferenceOptions()
                       ) -> list[float]:
    """Accuracy of the prediction read out after each inference step (the last is the final one)."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    bounds = iter(list(batch_bounds(len(x), options.batch_size)))

    def hits(xb: Tensor, generator: torch.Generator) -> Tensor:
        start, stop = next(bounds)
        yb = y[start:stop].to(xb.device)
        outs = method.readout_logits(xb, generator=generator, **options.sampler())
        return torch.stack([(o.argmax(-1) == yb).sum() for o in outs])

    return (torch.stack(infer(method, x, options, hits)).sum(0).double() / len(x)).tolist()


def accuracy(method: Method, x: Tensor, y: Tensor, options: InferenceOptions = InferenceOptions()) -> float:
    """Test accuracy of the method's own inference rule in one pass."""
    return readout_accuracies(method, x, y, options)[-1]


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


def inference_runs(method: Method, x: Tensor, y: Tensor, runs: int,
                   options: InferenceOptions = InferenceOptions()) -> InferenceRuns:
    """``runs`` passes of the stochastic sampler over ``(x, y)``, seeded ``seed, seed + 1, ...``;
    run 1 is :func:`accuracy` with the same options."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    votes = torch.zeros(len(x), method.spec.num_classes, dtype=torch.long)
    accuracies = []
    for k in range(runs):
        pred = predictions(method, x, options.replace(seed=options.seed + k))
        votes[torch.arange(len(x)), pred] += 1
        accuracies.append((pred == y).double().mean().item())
    vote = (votes.argmax(-1) == y).double().mean().item()
    return InferenceRuns(accuracies=accuracies, vote_accuracy=vote)
