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

Class probabilities (:func:`class_probabilities`, what ``Classifier.predict_proba`` and ``noprop
predict`` report) are by default the mean over ``PROBABILITY_PASSES`` passes of the stochastic
sampler of the head's softmax at a temperature fitted when the model was trained
(:func:`fit_temperatures`, :class:`Temperatures`)::

    p(y | x) = mean_k softmax(f(z_T^(k)) / T)      z_T^(k): pass k of the Eq. 3 sampler

a Monte Carlo estimate of the model's own ``p(y | x) = E[p(y | z_T)]`` (paper Eq. 1) with the head
tempered: the head's own softmax is far from calibrated (a NoProp-DT digits model puts 0.88 on
every image, a CIFAR-10 one 0.997), and the noise-free pass, calibrated by a temperature, still
gives every input nearly the same number, right or wrong (docs/calibration.md measures each).
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

from noprop.calibration import fit_temperature, tempered_probabilities
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


# -- class probabilities ----------------------------------------------------------------------------

#: Training examples a run's temperatures are fitted on when it has no validation split (at most).
TEMPERATURE_EXAMPLES = 2000
#: Stochastic passes whose mean is the default class probability.
PROBABILITY_PASSES = 10


@dataclass(frozen=True)
class Temperatures:
    """The temperature ``T`` of each way of reading class probabilities off the sampler, fitted on
    held-out (or training) examples when the model was trained (NLL, :func:`fit_temperatures`);
    ``T = 1`` where none was fitted::

        default      p(y | x) = mean_k softmax(logits_k / T_mean)     k stochastic passes
        one pass     p(y | x) = softmax(logits / T_stochastic)        (its argmax: predict())
        noise-free   p(y | x) = softmax(logits / T_noise_free)
    """

    #: of the mean of several stochastic passes' softmaxes (the default of ``predict_proba``)
    mean: float = 1.0
    #: the number of passes ``mean`` was fitted on (it serves any number above one)
    passes: int = PROBABILITY_PASSES
    #: of one pass of the paper's stochastic sampler
    stochastic: float = 1.0
    #: of the noise-free sampler's pass
    noise_free: float = 1.0
    #: ``"train"`` (a seeded draw of training examples), ``"validation"``, or ``None`` (not fitted)
    fitted_on: str | None = None
    examples: int = 0
    #: why a temperature was left at 1 (a fit that hit the end of its range)
    notes: tuple[str, ...] = ()

    def of(self, deterministic: bool, passes: int = 1) -> float:
        """The temperature of the noise-free pass, of one stochastic pass, or of the mean of several."""
        if deterministic:
            return self.noise_free
        return self.stochastic if passes == 1 else self.mean

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Temperatures | None:
        """``None`` for a checkpoint written before temperatures were fitted."""
        if d is None:
            return None
        return cls(mean=float(d.get("mean", 1.0)), passes=int(d.get("passes", PROBABILITY_PASSES)),
                   stochastic=float(d.get("stochastic", 1.0)), noise_free=float(d.get("noise_free", 1.0)),
                   fitted_on=d.get("fitted_on"), examples=int(d.get("examples", 0)),
                   notes=tuple(d.get("notes", ())))


def probability_passes(method: Method, deterministic: bool = False) -> int:
    """How many passes class probabilities average by default: ``PROBABILITY_PASSES`` for a
    method whose prediction samples, one for the noise-free sampler or a method without noise."""
    return PROBABILITY_PASSES if method.stochastic_prediction and not deterministic else 1


def temperature_examples(rows: int, seed: int, limit: int = TEMPERATURE_EXAMPLES) -> Tensor:
    """Indices of the (at most ``limit``) training examples temperatures are fitted on: a draw seeded
    ``seed`` from a generator of its own (the process's random state is untouched), in order."""
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


def pass_logits(method: Method, x: Tensor, options: InferenceOptions, passes: int = 1) -> Tensor:
    """Class scores ``(passes, N, C)`` of ``passes`` passes, each batch's drawn one after another
    from the pass's generator (float32, CPU)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if passes > 1 and options.deterministic:
        raise ValueError("several passes need the stochastic sampler: the noise-free one gives the same "
                         "answer every pass")

    def per_batch(xb: Tensor, generator: torch.Generator) -> Tensor:  # fp32 scores under bf16
        return torch.stack([method.predict_logits(xb, generator=generator, **options.sampler()).float()
                            for _ in range(passes)]).cpu()

    return torch.cat(infer(method, x, options, per_batch), dim=1)


def class_probabilities(method: Method, x: Tensor, options: InferenceOptions,
                        temperatures: Temperatures = Temperatures(), passes: int = 1) -> Tensor:
    """``mean_k softmax(logits_k / T)`` ``(N, C)`` over ``passes`` passes (one: that pass's softmax,
    whose argmax is its class), ``T`` the run's temperature of that reading (float32, CPU)."""
    t = temperatures.of(options.deterministic, passes)
    return tempered_probabilities(pass_logits(method, x, options, passes), t)


def fit_temperatures(method: Method, x: Tensor, y: Tensor, options: InferenceOptions, fitted_on: str,
                     passes: int = PROBABILITY_PASSES) -> Temperatures:
    """The NLL-minimising temperature of each reading on ``(x, y)``: the mean of ``passes``
    stochastic passes, the first of them alone, and the noise-free pass (``options``' seed). A fit
    at the low end of the searched range means the examples were all classified right (the NLL
    falls as ``T -> 0``); it would make every answer certain, so that temperature is left at 1,
    with a note."""
    if len(x) == 0:
        raise ValueError("cannot fit temperatures on no examples")
    passes = min(passes, probability_passes(method))  # one pass where passes would all be the same
    stochastic = pass_logits(method, x, options.replace(deterministic=False), passes)
    readings = {"mean": stochastic, "stochastic": stochastic[0],
                "noise_free": pass_logits(method, x, options.replace(deterministic=True))[0]}
    found: dict[str, float] = {}
    unfitted = []
    for name, scores in readings.items():
        fit = fit_temperature(scores, y)
        degenerate = fit.at_bound and fit.temperature < 1.0
        found[name] = 1.0 if degenerate else fit.temperature
        if degenerate:
            unfitted.append(name.replace("_", "-"))
    which = ", ".join(unfitted) + (" readings, so their temperatures are" if len(unfitted) > 1
                                      else " reading, so its temperature is")
    notes = [f"the {len(x)} {fitted_on} examples are all classified right by the {which} 1 (not fitted)"
             ] if unfitted else []
    return Temperatures(mean=found["mean"], passes=passes, stochastic=found["stochastic"],
                        noise_free=found["noise_free"], fitted_on=fitted_on, examples=len(x),
                        notes=tuple(notes))
