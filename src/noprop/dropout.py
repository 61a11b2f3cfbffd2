"""Dropout on the CPU with its mask drawn faster: PyTorch's masks bit for bit (``exact``), or a
quarter of the generator's work per mask (``fast``).

PyTorch's CPU dropout is ``x * bernoulli_(1 - p) / (1 - p)``. Its mask is drawn one element at a
time from the process's Mersenne Twister (two 32-bit draws per element), whatever the precision or
the thread count: in a bf16 step of the paper's block that serial draw is the largest single
cost (docs/benchmarks.md, "Where a CPU step's time goes"). The run setting ``dropout_rng`` picks
(``auto``, the default: ``fast`` for bf16 on a CPU, where the draw costs most, ``exact`` elsewhere,
so float32 runs keep PyTorch's masks; :func:`dropout_rng_for`):

* ``exact``: ``torch.rand(float64) < 1 - p``, the draws ``bernoulli_`` makes, in
  about half its time; every mask and every result as with ``nn.Dropout``.
* ``fast``: one 64-bit draw (two 32-bit ones) gives four 16-bit uniforms ``u``, and an element
  is kept when ``u < k``, ``k = round((1 - p) * 2^16)``. The keep probability is ``k / 2^16``
  (``1 - p`` to within ``2^-17``: 0.8000031 for the paper's ``p = 0.2``), and kept elements are
  scaled by ``2^16 / k``, its exact inverse, so ``E[output] = x`` exactly. Each element is an
  independent Bernoulli draw: Mersenne Twister output is equidistributed in 623 dimensions at
  32-bit accuracy, so its 16-bit halves are independent uniforms too. Other masks than
  ``exact`` draws with the same seed, so a seeded run's numbers change; drawn from the same global
  generator, so seeding, checkpoints (:mod:`noprop.random_state`) and resumed runs work alike.

Both draw the mask in the tensor's logical (N, C, H, W) order whatever its memory layout, so a
channels-last step draws the masks a contiguous one draws. Anywhere else (eval mode, CUDA, under
``vmap`` or ``torch.compile``, ``inplace``, and for ``exact`` MKL's vectorised ``bernoulli_`` on
Intel CPUs) :class:`Dropout` is ``F.dropout``.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.device import bf16_on_cpu
from noprop.settings import ConfigError

#: Ways a :class:`Dropout` layer draws its masks.
MASK_DRAWS = ("exact", "fast")
#: Values of the ``dropout_rng`` run setting: a mask draw, or ``auto`` (:func:`dropout_rng_for`).
DROPOUT_RNGS = ("auto", *MASK_DRAWS)
#: Bits of one uniform of the ``fast`` draw: the keep probability is a multiple of ``2^-16``.
FAST_BITS = 16


def check_dropout_rng(rng: str, allowed: tuple[str, ...] = MASK_DRAWS) -> str:
    """``rng`` if it is one of ``allowed``; else a one-line error."""
    if rng not in allowed:
        raise ConfigError(f"dropout_rng must be one of {', '.join(allowed)}; got {rng!r}")
    return rng


def dropout_rng_for(setting: str, precision: str, device: torch.device) -> str:
    """The mask draw a run's ``dropout_rng`` setting resolves to: ``auto`` is ``fast`` for bf16 on a
    CPU (there the serial draw is the largest cost of a step once bf16 has shortened the rest:
    1.2x the step, docs/benchmarks.md) and ``exact`` elsewhere; ``exact`` and ``fast`` are
    themselves. On CUDA every draw is PyTorch's own (:class:`Dropout` is ``F.dropout`` there)."""
    check_dropout_rng(setting, DROPOUT_RNGS)
    if setting != "auto":
        return setting
    return "fast" if bf16_on_cpu(precision, device) else "exact"


@cache
def rand_draws_bernoulli() -> bool:
    """Whether this torch's CPU ``bernoulli_(p)`` draws what ``torch.rand(float64) < p`` draws, and
    leaves the generator where it leaves it (checked once per process).

    True of its portable kernel (element by element, one 64-bit uniform each), which every CPU
    but an Intel one with MKL runs; with MKL on Intel, ``bernoulli_`` is a vectorised MKL stream
    instead (other numbers, already fast), and ``exact`` leaves the mask to it."""
    draws = []
    for bernoulli in (True, False):
        g = torch.Generator().manual_seed(0)
        mask = (torch.empty(4096).bernoulli_(0.8, generator=g) if bernoulli
                else (torch.rand(4096, dtype=torch.float64, generator=g) < 0.8).float())
        draws.append((mask, g.get_state()))
    (a, state_a), (b, state_b) = draws
    return torch.equal(a, b) and torch.equal(state_a, state_b)


def fast_keep_threshold(keep: float) -> int:
    """``k = round(keep * 2^16)``: an element is kept with probability ``k / 2^16``."""
    return round(keep * 2**FAST_BITS)


def fast_keep_mask(shape: torch.Size | tuple[int, ...], keep: float,
                   generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """A boolean mask of ``shape`` (logical order), each element kept with probability ``k / 2^16``
    (:func:`fast_keep_threshold`), and that probability.

    ``random_(-2^63, None)`` fills int64 words with all 64 bits of one generator draw each; read as
    int16 they are uniform on ``[-2^15, 2^15)``, and ``u - 2^15 < k - 2^15`` holds for ``k`` of
    the ``2^16`` values."""
    threshold = fast_keep_threshold(keep)
    n = math.prod(shape)
    words = torch.empty(-(-n // 4), dtype=torch.int64).random_(-(2**63), None, generator=generator)
    uniforms = words.view(torch.int16)[:n].view(shape)
    return uniforms < threshold - 2 ** (FAST_BITS - 1), threshold / 2**FAST_BITS


def exact_keep_mask(shape: torch.Size | tuple[int, ...], keep: float,
                    generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """``bernoulli_(keep)``'s mask (logical order) and ``keep``: ``torch.rand(float64) < keep``."""
    return torch.rand(shape, dtype=torch.float64, generator=generator) < keep, keep


class MaskProduct(torch.autograd.Function):
    """``x * noise``, whose gradient ``grad * noise`` is laid out as ``noise`` (and ``x``) is.

    Autograd's own product gives the gradient the layout it arrives in: behind a flatten, a
    channels-first one, which made the channels-last max pooling before the last dropout copy its
    whole input gradient to channels-first and back (docs/benchmarks.md, "Where a CPU step's time
    goes"). Values are the same products either way."""

    @staticmethod
    def forward(x: Tensor, noise: Tensor) -> Tensor:
        return x * noise

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (noise,) = ctx.saved_tensors
        return torch.mul(grad, noise, out=torch.empty_like(noise)), None


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its CPU mask drawn faster (``rng``: ``exact`` or ``fast``, see the module
    docstring) and in the tensor's logical order."""

    #: ``x * noise`` with its gradient in ``x``'s layout (``benchmarks/speed.py`` swaps in ``torch.mul``
    #: to time the difference).
    product = staticmethod(MaskProduct.apply)

    def __init__(self, p: float = 0.5, inplace: bool = False, rng: str = "exact") -> None:
        super().__init__(p, inplace)
        self.rng = check_dropout_rng(rng)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rng={self.rng}"

    def forward(self, x: Tensor) -> Tensor:
        keep = 1 - self.p
        fast = self.rng == "fast" and 0 < fast_keep_threshold(keep) < 2**FAST_BITS
        if (not self.training or self.inplace or not 0 < self.p < 1 or x.device.type != "cpu"
                or x.numel() == 0 or torch.compiler.is_compiling()
                or torch._C._functorch.is_batchedtensor(x) or not (fast or rand_draws_bernoulli())):
            return F.dropout(x, self.p, self.training, self.inplace)
        with torch.profiler.record_function("noprop::dropout"):  # one bucket in benchmarks/profile_step.py
            mask, kept = (fast_keep_mask if fast else exact_keep_mask)(x.shape, keep)
            noise = torch.empty_like(x).copy_(mask)  # in x's layout: the products run at full speed
            return self.product(x, noise.div_(kept))


def use_dropout_rng(model: nn.Module, rng: str) -> int:
    """Set every :class:`Dropout` of ``model`` to draw its masks with ``rng``; how many there are."""
    check_dropout_rng(rng)
    layers = [m for m in model.modules() if isinstance(m, Dropout)]
    for layer in layers:
        layer.rng = rng
    return len(layers)
