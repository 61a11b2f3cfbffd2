"""What does NoProp's chain of denoisers add? (``noprop analyze RUN``; docs/chain-analysis.md)

NoProp-DT trains each block alone to predict the label from the image ``x`` and a noisy label
``z``. Whether the blocks build anything *together*, or each is a classifier of ``x`` and the
Eq. 3 chain an elaborate ensemble, is a question about a trained run, answered here on its test
split by four groups of measures:

1. **The chain against its parts.** The sampler's accuracy (one stochastic pass, the mean and the
   majority vote of ``runs`` passes, the noise-free sampler) beside each block on its own, from
   ``x`` and an uninformative ``z`` (zero, fresh ``N(0, I)``, the prior mean of the level it
   reads), the best such block, and the plain average of all blocks' class probabilities (an
   ensemble that uses no chain).
2. **Ablations of z.** The sampler with the ``z`` a block is *given* zeroed, shuffled across the
   batch or replaced by fresh noise, at every block and at one block at a time. Only the block's
   input changes (``posterior_chain``'s ``denoiser_input``); the chain's own ``b_t z_{t-1}`` term
   and the sampler's noise draws are those of the unablated pass (same seed), so a difference
   from the one-pass accuracy is the ablation's alone.
3. **What z carries.** Along the sampled chain: the accuracy of the linear head on ``z_t`` (the
   per-block readout of ``noprop plot``) and of ``z_t``'s nearest class mean of ``q(z_t | y)``
   (the class embedding scaled as the noising scales it: ``sqrt(ab_t) u_c``; FM ``t u_c``).
4. **An image-only probe.** A linear classifier (L2-regularised logistic regression, L-BFGS) on
   each block's frozen image features (its encoder's output), fitted on a training subset.

NoProp-CT and -FM have one block run at every step of a time grid; their "positions" are up to
ten equal segments of the sampler's steps: a block "alone" is the network at the segment's first
time, an ablation "at one position" replaces ``z`` at every step of the segment, and the image
probe is one number (one encoder).

Every pass goes through :func:`noprop.inference.infer` (eval mode, the run's precision, a
generator seeded ``seed``); the extra randomness of an ablation (a permutation, fresh noise) comes
from a second generator seeded from ``seed``, so the analysis is a function of the run, the data
subset and ``seed``. Usage::

    from noprop.analysis import analyze
    result = analyze("runs/digits-dt", samples=1000, runs=5)
    print(result.table()); result.write("runs/digits-dt")     # analysis.json, analysis.png
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.atomic import write_report_files
from noprop.data import ClassificationData, DataError, load_dataset
from noprop.data.base import batch_bounds
from noprop.inference import InferenceOptions, accuracy, infer, inference_runs
from noprop.methods.base import Method
from noprop.saved_run import LoadedRun, load_run

#: Methods whose prediction is a chain of denoisers (the rest are refused).
ANALYZABLE = ("dt", "ct", "fm")
#: The uninformative z a block is given when it runs alone.
ALONE_KINDS = ("zero", "noise", "prior_mean")
#: What an ablation puts in place of the z a block is given.
ABLATIONS = ("zero", "shuffle", "noise")
#: Time segments of a CT/FM sampler (at most; fewer with fewer steps).
MAX_SEGMENTS = 10
#: The seed of the ablations' own generator is ``seed + AUX_SEED`` (the sampler's is ``seed``).
AUX_SEED = 7919
JSON_NAME = "analysis.json"
FIGURE_NAME = "analysis.png"

Intervention = Callable[[int, Tensor], Tensor]


class AnalysisError(ValueError):
    """A run the analysis cannot take (a baseline without a chain)."""


# -- how the analysis reaches into each method ----------------------------------------------------


class ChainView:
    """One trained NoProp model seen as a chain of ``positions``: DT's blocks, or CT/FM's segments.

    ``bounds[i]:bounds[i + 1]`` are the sampler steps of position ``i``; ``run`` returns ``z`` after
    each position (the last is the sampler's final ``z``), optionally with an intervention on what
    the denoiser is given.
    """

    def __init__(self, method: Method, steps: int | None = None) -> None:
        if method.name not in ANALYZABLE:
            raise AnalysisError(f"a {method.name} model has no chain of denoisers; noprop analyze "
                                f"takes NoProp runs ({', '.join(ANALYZABLE)})")
        self.method: Any = method
        self.kind = method.name
        if self.kind == "dt":
            self.steps = method.num_blocks
            self.bounds = list(range(self.steps + 1))
        else:
            self.steps = steps or method.inference_steps
            segments = min(self.steps, MAX_SEGMENTS)
            self.bounds = [round(j * self.steps / segments) for j in range(segments + 1)]
        self.positions = len(self.bounds) - 1

    # the time (CT/FM) of a sampler step, and the labels of the positions
    def time(self, k: int) -> float:
        return k / self.steps

    def labels(self) -> list[str]:
        if self.kind == "dt":
            return [str(t) for t in range(1, self.positions + 1)]
        return [f"{self.time(self.bounds[i]):.2f}" for i in range(self.positions)]

    def run(self, x: Tensor, generator: torch.Generator, *, deterministic: bool = False,
            intervention: Intervention | None = None) -> list[Tensor]:
        """``z`` after each position, by the method's own sampler."""
        m = self.method
        if self.kind == "dt":
            return m.sample_chain(x, deterministic=deterministic, generator=generator,
                                  denoiser_input=intervention)[1:]
        ends = self.bounds[1:-1]
        seen: dict[int, Tensor] = {}

        def observe(k: int, z: Tensor) -> Tensor:
            if k in ends:
                seen[k] = z
            return z if intervention is None else intervention(k, z)

        z_final = m.sample(x, steps=self.steps, deterministic=deterministic, generator=generator,
                           denoiser_input=observe)
        return [seen[k] for k in ends] + [z_final]

    def final_logits(self, z: Tensor) -> Tensor:
        """The method's prediction from the sampler's final ``z`` (as ``predict_logits``)."""
        if self.kind == "fm":
            return -torch.cdist(z, self.method.embedding.weight).pow(2)
        return self.method.classifier(z)

    def head(self) -> nn.Module | None:
        """The linear classifier on ``z`` (``None``: FM with one-hot embeddings has none)."""
        return self.method.classifier

    def scale(self, k: int) -> float:
        """The factor on ``u_y`` in the mean of ``z`` after ``k`` sampler steps."""
        if self.kind == "fm":
            return self.time(k)
        device = self.method.embedding.weight.device
        level = k if self.kind == "dt" else torch.tensor(self.time(k), device=device)
        return float(self.method.schedule.alpha_bar(level)) ** 0.5

    def prior_mean(self, i: int, like: Tensor) -> Tensor:
        """The mean over the classes of what position ``i``'s block reads: ``scale * mean_c u_c``."""
        u = self.method.embedding.weight
        return (self.scale(self.bounds[i]) * u.mean(0)).to(like.dtype).expand_as(like)

    def alone_logits(self, x: Tensor, i: int, z: Tensor) -> Tensor:
        """Position ``i``'s block on its own: its class scores from ``x`` and the given ``z``."""
        m = self.method
        if self.kind == "dt":
            return m.blocks[i](x, z)
        t = torch.full((), self.time(self.bounds[i]), device=x.device)
        if self.kind == "ct":
            return m.block(x, z, t)
        z_1 = z + (1.0 - t) * m.velocity(x, z, t)  # FM: where the block's velocity leads
        return -torch.cdist(z_1, m.embedding.weight).pow(2)

    def encoders(self) -> list[nn.Module]:
        """The image encoder of each block (CT/FM: the one block's)."""
        if self.kind == "dt":
            return [b.image for b in self.method.blocks]
        return [self.method.block.image]


@contextmanager
def cached_image_features(view: ChainView) -> Iterator[None]:
    """Within: each image encoder computes its features of a given input once and reuses them.

    An encoder in eval mode is a function of ``x`` alone (it never sees ``z``), and the analysis
    runs ~50 sampler passes over the same test images, so nearly all the work is the same
    convolutions again. The cache is keyed by the input tensor's storage, shape, stride and version
    and holds the input itself, so its memory cannot be reused by another tensor while the cache
    lives; the inputs must therefore stay on the model's device (no per-pass copies) to hit.
    """
    encoders = view.encoders()
    for enc in encoders:
        cache: dict[tuple, tuple[Tensor, Tensor]] = {}

        def forward(x: Tensor, _own: Callable[[Tensor], Tensor] = enc.forward,
                    _cache: dict = cache) -> Tensor:
            key = (x.data_ptr(), tuple(x.shape), x.stride(), x._version, x.dtype, torch.is_autocast_enabled())
            if key not in _cache:
                _cache[key] = (x, _own(x))
            return _cache[key][1]

        enc.forward = forward
    try:
        yield
    finally:
        for enc in encoders:
            del enc.forward


# -- interventions ------------------------------------------------------------------------------


def replacement(kind: str, generator: torch.Generator) -> Callable[[Tensor], Tensor]:
    """What ablation ``kind`` gives a block in place of ``z``: zeros, the rows of ``z`` permuted
    across the batch, or fresh ``N(0, I)``; randomness from ``generator``."""
    if kind == "zero":
        return torch.zeros_like
    if kind == "shuffle":
        return lambda z: z[torch.randperm(len(z), generator=generator, device=z.device)]
    if kind == "noise":
        return lambda z: torch.randn(z.shape, generator=generator, device=z.device).to(z.dtype)
    raise ValueError(f"unknown ablation {kind!r}; known: {', '.join(ABLATIONS)}")


def intervention(kind: str, steps: set[int] | None, generator: torch.Generator) -> Intervention:
    """An intervention for ``denoiser_input``: ``kind`` at the sampler steps ``steps`` (``None``: all)."""
    replace = replacement(kind, generator)
    return lambda k, z: replace(z) if steps is None or k in steps else z


def aux_generator(method: Method, seed: int) -> torch.Generator:
    return torch.Generator(device=next(method.parameters()).device).manual_seed(seed + AUX_SEED)


# -- the measures ---------------------------------------------------------------------------------


def _hit_rate(parts: list[Tensor], n: int) -> list[float]:
    return (torch.stack(parts).sum(0).double() / n).tolist()


def sampler_accuracies(method: Method, x: Tensor, y: Tensor, options: InferenceOptions,
                       runs: int) -> dict[str, Any]:
    """The sampler as the paper runs it: one pass, ``runs`` passes (mean, s.e., vote), noise-free."""
    r = inference_runs(method, x, y, runs, options.replace(deterministic=False))
    return {"one_pass": r.accuracies[0], "mean": r.mean, "stderr": r.stderr, "runs": r.accuracies,
            "vote": r.vote_accuracy,
            "noise_free": accuracy(method, x, y, options.replace(deterministic=True))}


def ablation_accuracy(method: Method, x: Tensor, y: Tensor, options: InferenceOptions, kind: str | None,
                      positions: list[int] | None = None) -> float:
    """The stochastic sampler's accuracy with the ``z`` given to the blocks at ``positions``
    (``None``: every one) replaced by ablation ``kind`` (``None``: no ablation, the one-pass
    accuracy). The sampler's own noise is that of the unablated pass."""
    view = ChainView(method, options.steps)
    steps = None if positions is None else {k for i in positions
                                            for k in range(view.bounds[i], view.bounds[i + 1])}
    aux = aux_generator(method, options.seed)
    change = None if kind is None else intervention(kind, steps, aux)
    bounds = iter(_bounds(len(x), options))

    def hits(xb: Tensor, g: torch.Generator) -> Tensor:
        yb = _labels(y, bounds, xb)
        z = view.run(xb, g, intervention=change)[-1]
        return (view.final_logits(z).argmax(-1) == yb).sum()

    return _hit_rate(infer(method, x, options.replace(deterministic=False), hits), len(x))


def chain_readouts(method: Method, x: Tensor, y: Tensor, options: InferenceOptions
                   ) -> tuple[list[float] | None, list[float]]:
    """Along one stochastic pass: the head's accuracy on ``z`` after each position (``None``
    without a head) and the accuracy of ``z``'s nearest class mean of ``q(z | y)``."""
    view = ChainView(method, options.steps)
    head = view.head()
    bounds = iter(_bounds(len(x), options))
    weight = method.embedding.weight  # type: ignore[union-attr]

    def hits(xb: Tensor, g: torch.Generator) -> Tensor:
        yb = _labels(y, bounds, xb)
        zs = view.run(xb, g)
        nearest = [(-torch.cdist(z, view.scale(view.bounds[i + 1]) * weight.to(z.dtype))).argmax(-1) == yb
                   for i, z in enumerate(zs)]
        heads = [head(z).argmax(-1) == yb for z in zs] if head is not None else []
        return torch.stack([h.sum() for h in (*heads, *nearest)])

    rates = _hit_rate(infer(method, x, options.replace(deterministic=False), hits), len(x))
    n = view.positions
    return (rates[:n] if head is not None else None), rates[-n:]


def blocks_alone(method: Method, x: Tensor, y: Tensor, options: InferenceOptions
                 ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each position's block from ``x`` and an uninformative ``z`` (``ALONE_KINDS``), and the
    argmax of all blocks' averaged class probabilities for each kind of ``z``."""
    view = ChainView(method, options.steps)
    aux = aux_generator(method, options.seed)
    bounds = iter(_bounds(len(x), options))
    dim = method.embedding.dim  # type: ignore[union-attr]

    def hits(xb: Tensor, g: torch.Generator) -> Tensor:
        yb = _labels(y, bounds, xb)
        shape = (len(xb), dim)
        out = []
        for kind in ALONE_KINDS:
            probs = 0.0
            for i in range(view.positions):
                if kind == "zero":
                    z = torch.zeros(shape, device=xb.device)
                elif kind == "noise":
                    z = torch.randn(shape, device=xb.device, generator=aux)
                else:
                    z = view.prior_mean(i, torch.zeros(shape, device=xb.device))
                logits = view.alone_logits(xb, i, z).float()
                out.append((logits.argmax(-1) == yb).sum())
                probs = probs + logits.softmax(-1)
            out.append((probs.argmax(-1) == yb).sum())
        return torch.stack(out)

    rates = _hit_rate(infer(method, x, options, hits), len(x))
    n = view.positions + 1
    alone = {k: rates[j * n:(j + 1) * n - 1] for j, k in enumerate(ALONE_KINDS)}
    ensemble = {k: rates[(j + 1) * n - 1] for j, k in enumerate(ALONE_KINDS)}
    return alone, ensemble


def image_features(method: Method, x: Tensor, options: InferenceOptions) -> list[Tensor]:
    """Each block's image features of ``x`` (its encoder's output, eval mode), float32 on the CPU."""
    encoders = ChainView(method, options.steps).encoders()
    parts = infer(method, x, options, lambda xb, g: [e(xb).float().cpu() for e in encoders])
    return [torch.cat([p[j] for p in parts]).clone() for j in range(len(encoders))]


def fit_linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, classes: int,
                     *, weight_decay: float = 1e-3, max_iter: int = 200) -> float:
    """Test accuracy of a multinomial logistic regression on standardised features (L-BFGS from
    zero weights: a convex fit, deterministic, no seed)."""
    mean, std = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    a, b = (train_f - mean) / std, (test_f - mean) / std
    probe = nn.Linear(a.shape[1], classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(a), train_y) + weight_decay / 2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (probe(b).argmax(-1) == test_y).double().mean().item()


def image_probe(method: Method, train_x: Tensor, train_y: Tensor, x: Tensor, y: Tensor,
                options: InferenceOptions) -> list[float]:
    """A linear probe's test accuracy on each block's frozen image features (CT/FM: one)."""
    train_f, test_f = image_features(method, train_x, options), image_features(method, x, options)
    return [fit_linear_probe(a, train_y, b, y, method.spec.num_classes) for a, b in zip(train_f, test_f,
                                                                                        strict=True)]


def estimate_weights(method: Method, upto: int) -> list[float]:
    """DT: the weight of each block's estimate ``u_hat_t`` (t = 1..upto) in the noise-free chain's
    ``z_upto``. Unrolling Eq. 3 without noise, ``z_k = sum_t a_t (prod_{s=t+1..k} b_s) u_hat_t +
    (prod_s b_s) z_0``: a weighted sum of the blocks' estimates, each computed from the ``z`` the
    block was given. (What the chain adds beyond this sum is only that each block reads ``z``.)"""
    schedule = method.schedule  # type: ignore[attr-defined]
    coef = [schedule.step_into(t) for t in range(1, upto + 1)]
    weights = []
    for t in range(upto):
        w = float(coef[t].a)
        for s in range(t + 1, upto):
            w *= float(coef[s].b)
        weights.append(w)
    return weights


def _bounds(n: int, options: InferenceOptions) -> list[tuple[int, int]]:
    return list(batch_bounds(n, options.batch_size))


def _labels(y: Tensor, bounds: Any, xb: Tensor) -> Tensor:
    start, stop = next(bounds)
    return y[start:stop].to(xb.device)


# -- the whole analysis ---------------------------------------------------------------------------


@dataclass
class ChainAnalysis:
    """Every measure of one run (accuracies in [0, 1]); ``to_dict`` is ``analysis.json``."""

    run: str
    method: str
    dataset: str
    samples: int
    probe_samples: int
    runs: int
    seed: int
    steps: int
    precision: str
    #: one label per position: DT's block number, CT/FM's segment start time
    positions: list[str]
    sampler: dict[str, Any]
    alone: dict[str, list[float]]
    ensemble: dict[str, float]
    ablation_all: dict[str, float]
    ablation_each: dict[str, list[float]]
    readout_head: list[float] | None
    readout_nearest: list[float]
    probe: list[float]
    #: DT: the weight of each block's estimate in the noise-free chain's z_T and z_{T-1}
    #: (:func:`estimate_weights`); ``None`` for CT/FM
    weights_final: list[float] | None = None
    weights_before_last: list[float] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def best_block(self) -> dict[str, Any]:
        """The best single block alone (chosen on the test subset itself: an optimistic pick)."""
        kind, i = max(((k, i) for k in ALONE_KINDS for i in range(len(self.positions))),
                      key=lambda ki: self.alone[ki[0]][ki[1]])
        return {"z": kind, "position": self.positions[i], "accuracy": self.alone[kind][i]}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "best_block": self.best_block}

    def write(self, out_dir: str | Path, *, figure: bool = True) -> list[Path]:
        """``analysis.json`` (atomic) and, with ``figure``, ``analysis.png`` in ``out_dir``."""
        draw = (FIGURE_NAME, lambda path: plot_analysis(self, path)) if figure else None
        return write_report_files(out_dir, JSON_NAME, self.to_dict(), figure=draw)

    def table(self) -> str:
        """The terminal report."""
        s = self.sampler
        best = self.best_block
        where = "block" if self.method == "dt" else "segment from t ="
        lines = [f"{self.method} on {self.dataset}: {self.samples} test examples, {self.runs} sampler "
                 f"runs, seed {self.seed}, {self.steps} sampler steps, {self.precision}",
                 "", "the chain (Eq. 3 sampler)"]
        spread = f" +- {s['stderr']:.4f}" if s["stderr"] is not None else ""
        rows = [("one stochastic pass", s["one_pass"]), (f"mean of {self.runs} passes", s["mean"], spread),
                (f"majority vote of {self.runs} passes", s["vote"]), ("noise-free sampler", s["noise_free"])]
        rows += [(f"z {_ABLATION_WORDS[k]} at every {where.split()[0]}", self.ablation_all[k])
                 for k in ABLATIONS]
        lines += [f"  {r[0]:<38} {r[1]:.4f}{r[2] if len(r) > 2 else ''}" for r in rows]
        lines += ["", "the blocks without the chain (from x and an uninformative z)"]
        lines.append(f"  {'best single block':<38} {best['accuracy']:.4f}  ({where} {best['position']}, "
                     f"z {_ALONE_WORDS[best['z']]}; picked on these test examples)")
        lines += [f"  {'average of all blocks, z ' + _ALONE_WORDS[k]:<38} {self.ensemble[k]:.4f}"
                  for k in ALONE_KINDS]
        lines += ["", f"per {where.split()[0]}" + ("" if self.method == "dt" else " (t at its start)")]
        width = max(6, *(len(p) + 1 for p in self.positions))
        lines.append(f"  {where.split()[0]:<36}" + "".join(f"{p:>{width}}" for p in self.positions))
        per = [(f"alone, z {_ALONE_WORDS[k]}", self.alone[k]) for k in ALONE_KINDS]
        per += [(f"chain, z {_ABLATION_WORDS[k]} here only", self.ablation_each[k]) for k in ABLATIONS]
        if self.readout_head is not None:
            per.append(("chain, head on z", self.readout_head))
        per.append(("chain, nearest class mean of z", self.readout_nearest))
        if len(self.probe) == len(self.positions):
            per.append(("linear probe on image features", self.probe))
        lines += [f"  {name:<36}" + "".join(f"{v:>{width}.3f}" for v in values) for name, values in per]
        if self.weights_final is not None and self.weights_before_last is not None:
            per_w = [("weight of its u_hat in z_T", self.weights_final),
                     ("weight of its u_hat in z_T-1", [*self.weights_before_last, 0.0])]
            lines += [f"  {name:<36}" + "".join(f"{v:>{width}.3f}" for v in values) for name, values in per_w]
        if self.probe and len(self.probe) != len(self.positions):
            lines.append(f"  {'linear probe on image features':<36} {self.probe[0]:.4f} (one encoder)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


_ABLATION_WORDS = {"zero": "zeroed", "shuffle": "shuffled", "noise": "fresh noise"}
_ALONE_WORDS = {"zero": "= 0", "noise": "~ N(0, I)", "prior_mean": "= prior mean"}


def analyze(run: str | Path | LoadedRun, *, data: ClassificationData | None = None,
            data_dir: str | Path | None = None, samples: int | None = None, runs: int = 5,
            seed: int | None = None, probe_samples: int = 2000, steps: int | None = None,
            precision: str | None = None, device: str | torch.device = "cpu",
            progress: Callable[[str], None] | None = None) -> ChainAnalysis:
    """Every measure of the module docstring on ``run``'s test split (its first ``samples``
    examples; all by default). ``data``: the dataset to use instead of loading the run's;
    ``seed``: of the sampler (default: the run's ``eval_seed``, so the one-pass accuracy on the
    whole test split is the trainer's number); ``probe_samples``: training examples the probe is
    fitted on (0: no probe); ``steps``: CT/FM sampler steps (default: the run's evaluation steps)."""
    started = time.perf_counter()
    say = progress or (lambda _: None)
    loaded = run if isinstance(run, LoadedRun) else load_run(run, map_location=device)
    config, method = loaded.config, loaded.method
    if config.method not in ANALYZABLE:
        raise AnalysisError(f"{run if not isinstance(run, LoadedRun) else 'the run'} is a {config.method} "
                            f"run, which has no chain of denoisers; noprop analyze takes NoProp runs "
                            f"({', '.join(ANALYZABLE)})")
    if runs < 1:
        raise AnalysisError(f"runs must be >= 1, got {runs}")
    if steps is not None and config.sampler_steps is None:
        raise AnalysisError(f"steps sets the sampler steps of CT and FM runs; this is a {config.method} run")
    dataset = config.dataset if data is None else data.name
    if data is None:
        if config.dataset == "user":
            raise DataError("the run was fitted from Python on in-memory data; pass its data "
                            "(analyze(run, data=...))")
        data = load_dataset(config.dataset, data_dir or config.data_dir, label_column=config.label_column)
    options = InferenceOptions.of_run(config, next(method.parameters()).device,
                                      precision=loaded.precision(precision))
    options = options.replace(seed=config.eval_seed if seed is None else seed,
                              steps=steps or options.steps, deterministic=False)
    n = len(data.test_x) if samples is None else min(samples, len(data.test_x))
    m = min(probe_samples, len(data.train_x))
    device = next(method.parameters()).device  # on the device once: the feature cache keys on storage
    x, y = data.test_x[:n].to(device), data.test_y[:n]
    view = ChainView(method, options.steps)
    with cached_image_features(view):
        say(f"sampler: {runs} stochastic passes and the noise-free one")
        sampler = sampler_accuracies(method, x, y, options, runs)
        say("blocks alone")
        alone, ensemble = blocks_alone(method, x, y, options)
        say(f"ablations: {len(ABLATIONS)} kinds x (all + {view.positions} positions)")
        ablation_all = {k: ablation_accuracy(method, x, y, options, k) for k in ABLATIONS}
        ablation_each = {k: [ablation_accuracy(method, x, y, options, k, [i]) for i in range(view.positions)]
                         for k in ABLATIONS}
        say("readouts along the chain")
        head, nearest = chain_readouts(method, x, y, options)
        probe = []
        if m > 0:
            say(f"linear probes on {m} training examples")
            probe = image_probe(method, data.train_x[:m].to(device), data.train_y[:m], x, y, options)
    weights: list[list[float] | None] = [None, None]
    if config.method == "dt":
        weights = [estimate_weights(method, view.positions), estimate_weights(method, view.positions - 1)]
    notes = []
    if config.method == "fm":
        notes.append("FM's sampler is an ODE: the noise-free row is the same pass as one stochastic pass")
    return ChainAnalysis(
        run=str(run if not isinstance(run, LoadedRun) else ""), method=config.method, dataset=dataset,
        samples=n, probe_samples=m, runs=runs, seed=options.seed, steps=view.steps,
        precision=options.precision, positions=view.labels(), sampler=sampler, alone=alone, ensemble=ensemble,
        ablation_all=ablation_all, ablation_each=ablation_each, readout_head=head, readout_nearest=nearest,
        probe=probe, weights_final=weights[0], weights_before_last=weights[1],
        seconds=round(time.perf_counter() - started, 2), notes=notes)


# -- the figure -----------------------------------------------------------------------------------


def plot_analysis(result: ChainAnalysis, path: Path) -> Path:
    """One figure: accuracy per block for each measure, the sampler's accuracies as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = list(range(1, len(result.positions) + 1))
    fig, (ax_alone, ax_chain) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    s = result.sampler
    sampler_lines = [(s["one_pass"], "one stochastic pass", "-"), (s["vote"], f"vote of {result.runs}", "--"),
                     (s["noise_free"], "noise-free sampler", ":")]
    for ax in (ax_alone, ax_chain):
        for value, label, style in sampler_lines:
            ax.axhline(100 * value, color="black", linestyle=style, linewidth=1.2, label=f"chain: {label}")
    colors = {"zero": "tab:blue", "noise": "tab:orange", "prior_mean": "tab:green", "shuffle": "tab:purple"}
    for k in ALONE_KINDS:
        ax_alone.plot(pos, [100 * v for v in result.alone[k]], marker="o", color=colors[k],
                      label=f"block alone, z {_ALONE_WORDS[k]}")
    ax_alone.axhline(100 * result.ensemble["zero"], color="tab:red", linewidth=1.5,
                     label="average of all blocks (z = 0)")
    if len(result.probe) == len(pos):
        ax_alone.plot(pos, [100 * v for v in result.probe], marker="s", color="tab:gray",
                      label="linear probe on image features")
    elif result.probe:
        ax_alone.axhline(100 * result.probe[0], color="tab:gray", label="linear probe on image features")
    unit = "block" if result.method == "dt" else "segment"
    for k in ABLATIONS:
        ax_chain.plot(pos, [100 * v for v in result.ablation_each[k]], marker="o", color=colors[k],
                      label=f"z {_ABLATION_WORDS[k]} at this {unit}")
    if result.readout_head is not None:
        ax_chain.plot(pos, [100 * v for v in result.readout_head], marker="^", color="tab:brown",
                      label="head on z after it")
    ax_chain.plot(pos, [100 * v for v in result.readout_nearest], marker="v", color="tab:cyan",
                  label="nearest class mean of z after it")
    xlabel = "block" if result.method == "dt" else "segment of the sampler (t at its start)"
    ax_alone.set(title="each block on its own (no chain)", xlabel=xlabel, ylabel="test accuracy (%)")
    ax_chain.set(title="the chain, with z ablated at one position", xlabel=xlabel)
    for ax in (ax_alone, ax_chain):
        ax.set_xticks(pos, result.positions)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    fig.suptitle(f"What the chain adds: {result.method} on {result.dataset}, {result.samples} test examples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
