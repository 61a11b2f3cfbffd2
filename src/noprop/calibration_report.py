"""How well calibrated is each way a NoProp run could report ``p(y | x)``? (``noprop calibration RUN``;
docs/calibration.md)

One NoProp model can give class probabilities several ways; this module computes each on a run's
test split and measures it with :mod:`noprop.calibration` (ECE over 15 equal-width bins, NLL,
Brier score, the AUROC of the confidence for right against wrong answers, the reliability
diagram). The ways (:data:`RULES`):

* ``softmax_stochastic``: the head's softmax on ``z_T`` of one pass of the paper's stochastic
  sampler (seeded ``seed``; the run's own ``eval_deterministic`` is ignored);
* ``softmax_noise_free``: the head's softmax on ``z_T`` of the noise-free sampler (from a seeded
  ``z_0``);
* ``frequency``: how often each class is predicted over ``k`` stochastic passes (seeds ``seed ..
  seed + k - 1``), smoothed by one pseudo-pass spread over the classes,
  ``p_c = (n_c + 1 / C) / (k + 1)``, so that no class has probability 0; the predicted class is
  the most frequent (ties: the lowest index, as ``noprop evaluate --runs``' vote);
* ``mean_softmax``: the mean of the head's softmax over the same ``k`` passes;
* ``mean_softmax_t_*``: the mean of the ``k`` passes' softmaxes at one temperature fitted like
  the others, ``p = mean_k softmax(logits_k / T)``: a Monte Carlo estimate of the model's own
  ``p(y | x) = E[p(y | z_T)]`` (paper Eq. 1) with the head tempered;
* ``softmax_*_t_heldout`` / ``softmax_*_t_train``: the two one-pass softmaxes with a temperature
  fitted (NLL, golden section, :func:`noprop.calibration.fit_temperature`) on the held-out half of
  the test examples, or on training examples (the draw ``noprop train`` fits on when
  ``train_samples`` is its 2000); the ``mean_softmax_t_*`` temperatures are fitted the same way;
* ``saved_t``: that mean at the temperature saved with the run, the default of
  ``Classifier.predict_proba`` and ``noprop predict`` (fitted after training, on training examples
  for ``noprop train`` runs, on the validation split for ``Classifier.fit``); ``saved_t_noise_free``:
  the noise-free softmax at its saved temperature (``noprop predict --stochastic 0``); both absent
  for runs saved before temperatures were;
* ``posterior_eq16_*``: the paper's posterior parameterisation (Eqs. 15-16) on the two samplers'
  ``z_T``: ``y~ = softmax(f(z_T)) W_embed`` and ``p(y | z_T) ∝ exp(-|y~ - u_y|^2 / 2 sigma^2)``.
  The paper gives no ``sigma``; ``sigma^2`` is fitted here as the temperature of the logits
  ``-|y~ - u_y|^2 / 2`` on the held-out half. It needs the head ``f``, so FM with one-hot
  embeddings (no head) has none;
* ``gaussian_z_T``: the class posterior of the stochastic pass's ``z_T`` under the model's own
  Gaussian at the last level, ``q(z_T | y) = N(sqrt(ab_T) u_y, (1 - ab_T) I)``, equal priors: not
  what Eq. 16 writes (that Gaussian is on ``y~``, of unknown width), measured beside it. DT and CT;
  FM's path has no noise at ``t = 1``.

"The head" of NoProp-FM is what its prediction uses, ``-|z_1 - u_c|^2``; FM's sampler is an ODE,
so its noise-free pass is its stochastic pass with the same ``z_0``.

**Which examples.** The test examples (the first ``samples`` of the test split) are split by index:
the even ones (0, 2, 4, ...) are the held-out half every ``heldout`` temperature is fitted on,
the odd ones are the examples every number of the table is measured on. ``train`` temperatures
are fitted on ``train_samples`` training examples (a draw seeded by the run's ``seed``,
:func:`noprop.inference.temperature_examples`), which the model has seen. The sampler runs the
steps a prediction uses (CT/FM: the method's ``inference_steps``, not the per-epoch evaluation's)
unless ``steps`` is given. Every pass goes through :func:`noprop.inference.infer` (eval mode, the
run's precision, a generator seeded per pass), so the report is a function of the run, the data
and ``seed``. Usage::

    from noprop.calibration_report import calibration_report
    report = calibration_report("runs/digits-dt", passes=10)
    print(report.table()); report.write("runs/digits-dt")     # calibration.json, calibration.png
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from noprop.analysis import ANALYZABLE, ChainView, cached_image_features
from noprop.atomic import write_report_files
from noprop.calibration import (
    DEFAULT_BINS,
    CalibrationMetrics,
    calibration_metrics,
    fit_temperature,
    tempered_probabilities,
)
from noprop.data import ClassificationData, DataError, load_dataset
from noprop.inference import (
    TEMPERATURE_EXAMPLES,
    InferenceOptions,
    Temperatures,
    infer,
    temperature_examples,
)
from noprop.methods.base import Method
from noprop.saved_run import LoadedRun, load_run

JSON_NAME = "calibration.json"
FIGURE_NAME = "calibration.png"
#: Stochastic passes of ``frequency`` and ``mean_softmax`` (and of ``noprop calibration --passes``).
DEFAULT_PASSES = 10
#: Training examples the ``*_t_train`` temperatures are fitted on (at most): as many as the trainer's.
DEFAULT_TRAIN_SAMPLES = TEMPERATURE_EXAMPLES

#: Every way of reporting p(y | x), with what it is.
RULES: dict[str, str] = {
    "softmax_stochastic": "head softmax, one stochastic pass",
    "softmax_noise_free": "head softmax, noise-free pass",
    "frequency": "class frequency over k stochastic passes",
    "mean_softmax": "mean head softmax over k stochastic passes",
    "mean_softmax_t_heldout": "mean softmax over k passes, T fitted on held-out",
    "mean_softmax_t_train": "mean softmax over k passes, T fitted on training",
    "softmax_stochastic_t_heldout": "stochastic softmax, T fitted on held-out half",
    "softmax_noise_free_t_heldout": "noise-free softmax, T fitted on held-out half",
    "softmax_stochastic_t_train": "stochastic softmax, T fitted on training examples",
    "softmax_noise_free_t_train": "noise-free softmax, T fitted on training examples",
    "saved_t": "mean softmax over k passes, saved T (default)",
    "saved_t_noise_free": "noise-free softmax, the run's saved T",
    "posterior_eq16_stochastic": "Eq. 16 posterior, stochastic z_T, sigma fitted",
    "posterior_eq16_noise_free": "Eq. 16 posterior, noise-free z_T, sigma fitted",
    "gaussian_z_T": "Gaussian q(z_T | y) posterior, stochastic z_T",
}


PerBatch = Callable[[Tensor, torch.Generator], list[Tensor | None]]


class CalibrationError(ValueError):
    """A run this measurement cannot take (a baseline without a sampler)."""


# -- what the samplers give -----------------------------------------------------------------------


@dataclass
class SamplerOutputs:
    """Per example, logits ``(N, C)`` of each kind (float32, CPU); ``None`` where a kind does not apply."""

    stochastic: Tensor
    noise_free: Tensor
    #: ``-|y~ - u_c|^2 / 2`` (Eqs. 15-16 with sigma = 1) on each sampler's z_T
    eq16_stochastic: Tensor | None
    eq16_noise_free: Tensor | None
    #: ``log q(z_T | y = c)`` up to a constant, on the stochastic z_T
    gaussian: Tensor | None
    #: the logits of each of the k stochastic passes ``(k, N, C)``; pass 0 is ``stochastic``
    passes: Tensor

    @property
    def mean_softmax(self) -> Tensor:
        """The mean over the k passes of the head's softmax (float64)."""
        return self.passes.double().softmax(-1).mean(0)


def eq16_logits(view: ChainView, z: Tensor) -> Tensor | None:
    """Eq. 15-16's exponent at sigma = 1: ``-|softmax(f(z_T)) W_embed - u_c|^2 / 2`` (``None``
    without a head ``f``)."""
    head = view.head()
    if head is None:
        return None
    weight = view.method.embedding.weight.to(z.dtype)
    y_tilde = head(z).softmax(-1) @ weight
    return -torch.cdist(y_tilde.float(), weight.float()).pow(2) / 2


def gaussian_logits(view: ChainView, z: Tensor) -> Tensor | None:
    """``log N(z_T; sqrt(ab_T) u_c, (1 - ab_T) I)`` up to a constant, per class (``None`` for FM)."""
    if view.kind == "fm":
        return None
    scale = view.scale(view.bounds[-1])
    weight = view.method.embedding.weight.float()
    return -torch.cdist(z.float(), scale * weight).pow(2) / (2 * (1 - scale**2))


def sampler_outputs(method: Method, x: Tensor, options: InferenceOptions, passes: int) -> SamplerOutputs:
    """The sampler's logits on ``x``: one stochastic pass (seed ``options.seed``, with the Eq. 16 and
    Gaussian logits of its ``z_T``), the noise-free pass, and ``passes - 1`` more stochastic passes."""
    view = ChainView(method, options.steps)

    def one_pass(deterministic: bool, extra: bool) -> PerBatch:
        def per_batch(xb: Tensor, g: torch.Generator) -> list[Tensor | None]:
            z = view.run(xb, g, deterministic=deterministic)[-1]
            out: list[Tensor | None] = [view.final_logits(z).float().cpu()]
            if extra:
                e, gauss = eq16_logits(view, z), gaussian_logits(view, z)
                out += [None if e is None else e.cpu(), None if gauss is None else gauss.cpu()]
            return out
        return per_batch

    def joined(batches: list[list[Tensor | None]], i: int) -> Tensor | None:
        parts = [b[i] for b in batches]
        return None if parts[0] is None else torch.cat(parts)  # type: ignore[arg-type]

    first = infer(method, x, options.replace(deterministic=False), one_pass(False, True))
    clean = infer(method, x, options.replace(deterministic=True), one_pass(True, True))
    stochastic = joined(first, 0)
    more = [joined(infer(method, x, options.replace(deterministic=False, seed=options.seed + k),
                         one_pass(False, False)), 0) for k in range(1, passes)]
    every = [stochastic, *more]
    return SamplerOutputs(
        stochastic=stochastic, noise_free=joined(clean, 0),  # type: ignore[arg-type]
        eq16_stochastic=joined(first, 1), eq16_noise_free=joined(clean, 1), gaussian=joined(first, 2),
        passes=torch.stack(every))  # type: ignore[arg-type]


def class_frequencies(predictions: Tensor, classes: int) -> Tensor:
    """``(n_c + 1 / C) / (k + 1)`` from the predicted classes of ``k`` passes ``(k, N)``: ``(N, C)``."""
    k, n = predictions.shape
    counts = torch.zeros(n, classes, dtype=torch.float64)
    counts.scatter_add_(1, predictions.t().long(), torch.ones(n, k, dtype=torch.float64))
    return (counts + 1.0 / classes) / (k + 1)


# -- the whole measurement ------------------------------------------------------------------------


@dataclass
class RuleResult:
    """One way of reporting p(y | x), measured: its metrics on the reported examples."""

    name: str
    description: str
    #: sampler passes per input it costs at prediction time
    passes: int
    #: the temperature (``T``, or ``sigma^2`` for Eq. 16) it was fitted to, if any
    temperature: float | None
    metrics: CalibrationMetrics
    #: the fitted temperature lies at an end of the searched range (the optimum is beyond it)
    at_bound: bool = False


@dataclass
class CalibrationReport:
    """Every way of reporting p(y | x) of one run, measured; ``to_dict`` is ``calibration.json``."""

    run: str
    method: str
    dataset: str
    #: epochs the checkpoint had finished
    epoch: int
    seed: int
    passes: int
    bins: int
    steps: int
    precision: str
    #: test examples used (first of the split), the held-out (even) and the reported (odd) ones
    samples: int
    heldout: int
    reported: int
    train_samples: int
    rules: list[RuleResult]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, out_dir: str | Path, *, figure: bool = True) -> list[Path]:
        """``calibration.json`` (atomic) and, with ``figure``, ``calibration.png`` in ``out_dir``."""
        draw = (FIGURE_NAME, lambda path: plot_reliability(self, path)) if figure else None
        return write_report_files(out_dir, JSON_NAME, self.to_dict(), figure=draw)

    def table(self) -> str:
        """The terminal report: one row per way of reporting p(y | x)."""
        lines = [f"{self.method} on {self.dataset} (epoch {self.epoch}): measured on {self.reported} test "
                 f"examples (odd indices of the first {self.samples}); temperatures fitted on the "
                 f"{self.heldout} even ones or on {self.train_samples} training examples; k = {self.passes} "
                 f"passes, seed {self.seed}, {self.steps} sampler steps, {self.precision}, ECE over "
                 f"{self.bins} equal-width bins", ""]
        lines.append(f"  {'p(y | x)':<50} {'passes':>6} {'T':>8} {'acc':>7} {'ECE':>7} {'NLL':>7} "
                     f"{'Brier':>7} {'conf':>7} {'AUROC':>7}")
        for r in self.rules:
            m = r.metrics
            t = f"{r.temperature:.3g}" if r.temperature is not None else "-"
            auroc = f"{m.auroc:.4f}" if m.auroc is not None else "-"
            lines.append(f"  {r.description:<50} {r.passes:>6} {t:>8} {m.accuracy:>7.4f} {m.ece:>7.4f} "
                         f"{m.nll:>7.4f} {m.brier:>7.4f} {m.mean_confidence:>7.4f} {auroc:>7}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def calibration_report(run: str | Path | LoadedRun, *, data: ClassificationData | None = None,
                       data_dir: str | Path | None = None, samples: int | None = None,
                       passes: int = DEFAULT_PASSES, seed: int | None = None, steps: int | None = None,
                       train_samples: int = DEFAULT_TRAIN_SAMPLES, bins: int = DEFAULT_BINS,
                       precision: str | None = None, device: str | torch.device = "cpu",
                       progress: Callable[[str], None] | None = None) -> CalibrationReport:
    """Every rule of :data:`RULES` on ``run``'s test split (its first ``samples`` examples; all by
    default). ``seed``: of the sampler (default: the run's ``eval_seed``); ``passes``: ``k``;
    ``steps``: CT/FM sampler steps (default: the method's own, as a prediction);
    ``train_samples``: training examples the ``*_t_train`` temperatures are fitted on (0: none)."""
    started = time.perf_counter()
    say = progress or (lambda _: None)
    loaded = run if isinstance(run, LoadedRun) else load_run(run, map_location=device)
    config, method = loaded.config, loaded.method
    name = "the run" if isinstance(run, LoadedRun) else str(run)
    if config.method not in ANALYZABLE:
        raise CalibrationError(f"{name} is a {config.method} run, which has no sampler; noprop calibration "
                               f"takes NoProp runs ({', '.join(ANALYZABLE)})")
    if passes < 1:
        raise CalibrationError(f"passes must be >= 1, got {passes}")
    if steps is not None and config.sampler_steps is None:
        raise CalibrationError(f"steps sets the sampler steps of CT and FM runs; {name} is a "
                               f"{config.method} run")
    if data is None:
        if config.dataset == "user":
            raise DataError("the run was fitted from Python on in-memory data; pass its data "
                            "(calibration_report(run, data=...))")
        data = load_dataset(config.dataset, data_dir or config.data_dir, label_column=config.label_column)
    n = len(data.test_x) if samples is None else min(samples, len(data.test_x))
    if n < 2:
        raise CalibrationError(f"need at least 2 test examples (one held out, one reported), got {n}")
    device = next(method.parameters()).device
    options = InferenceOptions.of_run(config, device, precision=loaded.precision(precision), steps=steps)
    options = options.replace(seed=config.eval_seed if seed is None else seed)
    x, y = data.test_x[:n].to(device), data.test_y[:n]
    m = min(train_samples, len(data.train_x))
    view = ChainView(method, options.steps)
    with cached_image_features(view):
        say(f"{n} test examples: {passes} stochastic passes and the noise-free one")
        out = sampler_outputs(method, x, options, passes)
        train = None
        if m > 0:
            say(f"{m} training examples: {passes} stochastic passes and the noise-free one")
            pick = temperature_examples(len(data.train_x), config.seed, m)
            train = (sampler_outputs(method, data.train_x[pick].to(device), options, passes),
                     data.train_y[pick])
    fit, rep = slice(0, n, 2), slice(1, n, 2)
    saved = loaded.saved.temperatures
    rules = _measure(out, y, fit, rep, train, passes, method.spec.num_classes, bins, saved)
    notes = []
    if saved is None:
        notes.append("the run has no saved temperature (saved before they were fitted): no saved_t rows")
    else:
        notes.append(f"saved_t: T fitted after training on {saved.examples} {saved.fitted_on} examples, for "
                     f"{saved.passes} passes" + (f" ({'; '.join(saved.notes)})" if saved.notes else ""))
    if config.method == "fm":
        notes.append("FM's sampler is an ODE: its noise-free pass is its stochastic pass (same z_0)")
        if out.eq16_stochastic is None:
            notes.append("Eq. 16 needs the linear head, which FM with one-hot embeddings does not have")
        notes.append("FM's path has no Gaussian at t = 1: no gaussian_z_T")
    notes += [f"{r.name}: the fitted temperature is at the end of the searched range"
              for r in rules if r.at_bound]
    return CalibrationReport(
        run=str(run if not isinstance(run, LoadedRun) else ""), method=config.method, dataset=data.name,
        epoch=loaded.saved.progress.epoch, seed=options.seed, passes=passes, bins=bins,
        steps=view.steps, precision=options.precision, samples=n, heldout=len(range(0, n, 2)),
        reported=len(range(1, n, 2)), train_samples=m, rules=rules,
        seconds=round(time.perf_counter() - started, 2), notes=notes)


def _measure(out: SamplerOutputs, y: Tensor, fit: slice, rep: slice,
             train: tuple[SamplerOutputs, Tensor] | None, passes: int, classes: int,
             bins: int, saved: Temperatures | None) -> list[RuleResult]:
    """Each rule's metrics on the ``rep`` examples, temperatures fitted on ``fit`` (or ``train``)."""
    results: list[RuleResult] = []

    def add(name: str, probs: Tensor, cost: int, temperature: float | None = None, at_bound: bool = False
            ) -> None:
        results.append(RuleResult(name, RULES[name], cost, temperature,
                                  calibration_metrics(probs[rep], y[rep], bins), at_bound))

    def fitted(name: str, logits: Tensor, fit_logits: Tensor, fit_y: Tensor, cost: int) -> None:
        t = fit_temperature(fit_logits, fit_y)  # (k, N, C): the mean of k passes' softmaxes
        add(name, tempered_probabilities(logits.double(), t.temperature), cost, t.temperature, t.at_bound)

    add("softmax_stochastic", out.stochastic.double().softmax(-1), 1)
    add("softmax_noise_free", out.noise_free.double().softmax(-1), 1)
    add("frequency", class_frequencies(out.passes.argmax(-1), classes), passes)
    add("mean_softmax", out.mean_softmax.double(), passes)
    fitted("softmax_stochastic_t_heldout", out.stochastic, out.stochastic[fit], y[fit], 1)
    fitted("softmax_noise_free_t_heldout", out.noise_free, out.noise_free[fit], y[fit], 1)
    fitted("mean_softmax_t_heldout", out.passes, out.passes[:, fit], y[fit], passes)
    if train is not None:
        t_out, ty = train
        fitted("softmax_stochastic_t_train", out.stochastic, t_out.stochastic, ty, 1)
        fitted("softmax_noise_free_t_train", out.noise_free, t_out.noise_free, ty, 1)
        fitted("mean_softmax_t_train", out.passes, t_out.passes, ty, passes)
    if saved is not None:
        t_mean = saved.of(deterministic=False, passes=passes)
        add("saved_t", tempered_probabilities(out.passes.double(), t_mean), passes, t_mean)
        t_free = saved.noise_free
        add("saved_t_noise_free", (out.noise_free.double() / t_free).softmax(-1), 1, t_free)
    if out.eq16_stochastic is not None and out.eq16_noise_free is not None:
        fitted("posterior_eq16_stochastic", out.eq16_stochastic, out.eq16_stochastic[fit], y[fit], 1)
        fitted("posterior_eq16_noise_free", out.eq16_noise_free, out.eq16_noise_free[fit], y[fit], 1)
    if out.gaussian is not None:
        add("gaussian_z_T", out.gaussian.double().softmax(-1), 1)
    order = list(RULES)
    return sorted(results, key=lambda r: order.index(r.name))


# -- the figure -----------------------------------------------------------------------------------


def plot_reliability(report: CalibrationReport, path: Path) -> Path:
    """Reliability diagrams, one panel per rule: accuracy per confidence bin (bars), its gap to the
    bin's mean confidence (hatched), the diagonal, and the share of examples in each bin (a step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = report.rules
    cols = min(4, len(rules))
    rows = -(-len(rules) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, rules, strict=False):
        rel = r.metrics.reliability
        width = 1.0 / len(rel.count)
        lefts = rel.edges[:-1]
        acc = [a if a is not None else 0.0 for a in rel.accuracy]
        share = [c / max(1, sum(rel.count)) for c in rel.count]
        conf = [c if c is not None else 0.0 for c in rel.confidence]
        ax.bar(lefts, acc, width=width, align="edge", color="tab:blue", edgecolor="white", label="accuracy")
        ax.bar(lefts, [c - a for c, a in zip(conf, acc, strict=True)], bottom=acc, width=width, align="edge",
               color="none", edgecolor="tab:red", hatch="//", linewidth=0.6, label="gap to confidence")
        ax.step(rel.edges, [*share, share[-1]], where="post", color="black", linewidth=1,
                label="share of examples")
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{r.description}\nECE {r.metrics.ece:.3f}, "
               f"NLL {r.metrics.nll:.3f}", xlabel="confidence (top probability)", ylabel="accuracy")
        ax.title.set_fontsize("small")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="x-small", loc="upper left")
    for ax in list(axes.flat)[len(rules):]:
        ax.set_visible(False)
    fig.suptitle(f"Reliability of p(y | x): {report.method} on {report.dataset}, epoch {report.epoch}, "
                 f"{report.reported} test examples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
