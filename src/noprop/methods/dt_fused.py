"""Fused NoProp-DT: the T blocks of a training step run as one batched pass (``--fused``).

NoProp-DT's blocks never exchange a value or a gradient, so a training step over all T blocks is
T small, independent problems. Run one after another, each is a small launch; run together,
the same work fills the machine. :class:`StackedBlocks` runs T structurally identical blocks as
one module with :func:`torch.func.vmap` over their stacked parameters (``functional_call``)::

    logits[t] = block_t(x, z[t])          for t = 1..T, in one pass; shape (T, batch, C)

Convolutions become one grouped convolution (the first one, whose input ``x`` all blocks share,
one convolution with ``T * 32`` output channels), linear layers batched matmuls, BatchNorm and
dropout one call each over all blocks (``randomness="different"``: every block draws its own
dropout mask, as it would alone).

What stays exactly as in the one-block-at-a-time step:

* **Locality.** The parameters are stacked by ``torch.stack`` at every call, so gradients flow
  back into each block's own ``nn.Parameter`` s; block t's parameters enter only ``logits[t]``,
  so the gradient of ``sum_t loss_t`` with respect to block t is that of ``loss_t`` alone.
  The model, its ``state_dict`` and its checkpoints are the same as unfused.
* **Per-block optimizers.** The trainer still keeps one optimizer per group and steps each.
* **BatchNorm statistics.** The running statistics are stacked, updated inside the pass (per
  block, on that block's batch) and written back to each block's buffers.

Device switches (chosen here, so the trainer and CLI need not know): on CUDA the pass is the vmap,
under bf16 autocast with channels-last images. On CPU it is a plain loop over the blocks into
one stacked output (:attr:`StackedBlocks.vectorize`): the same sum of losses and the same
gradients, without the stacking copies that made the vmap 5 % slower than one block at a time
there. When the vmap does run on CPU, glibc is asked to keep freed memory
(:func:`noprop.device.retain_freed_memory`, which the trainer also sets on a CPU), without which
the T-times larger activations are page-faulted in afresh at every step (measured: the fused step
took ~2x as long).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from noprop.device import bf16_autocast, retain_freed_memory
from noprop.methods.base import LossOutput, TrainingUnit
from noprop.sampler import posterior_chain
from noprop.schedules import gaussian_prior_kl

if TYPE_CHECKING:
    from noprop.methods.dt import NoPropDT

#: Images per vmapped pass of the fused sampler's image path: its activations are T times those
#: of one block, so large evaluation batches are cut into slices of this size on CPU.
CPU_SAMPLER_CHUNK = 128

class StackedBlocks:
    """Runs the modules of ``blocks`` (identical in structure) as one vmapped module.

    Not an ``nn.Module``: it owns nothing. The parameters and buffers live in ``blocks`` and are
    stacked at each call, so ``.to(device)``, ``load_state_dict`` and optimizers see the usual
    per-block tensors.
    """

    #: ``True``: one ``vmap`` over the stacked parameters. ``False``: the blocks one after another
    #: into one stacked output (same result, no stacking copies). ``None``: vmap on CUDA, where it
    #: is 2.8x faster, and the loop on CPU, where the convolutions already fill the cores and
    #: stacking only adds copies (docs/benchmarks.md, "Speed").
    vectorize: bool | None = None

    def __init__(self, blocks: nn.ModuleList) -> None:
        self.blocks = blocks
        try:
            self.template = copy.deepcopy(blocks[0]).to("meta")
        except Exception as err:  # a user's module that cannot be copied: loop only
            self.vmap_error = f"cannot copy a block: {type(err).__name__}: {err}"
        #: ``None``: channels-last on CUDA only (measured no gain on CPU with 1-channel images).
        self.channels_last: bool | None = None
        #: ``None``: bf16 autocast on CUDA only; ``False`` keeps float32 everywhere.
        self.autocast: bool | None = None
        #: How the last pass ran: ``"vmap"`` or ``"loop"`` (``None`` before the first).
        self.last_pass: str | None = None
        #: Why vmap could not run these blocks (a user's encoder may not vmap); then always the loop.
        self.vmap_error: str | None = None

    def _stacked(self, kind: str, prefix: str) -> dict[str, Tensor]:
        per_block = [dict(getattr(b, kind)()) for b in self.blocks]
        cut = len(prefix)
        return {n[cut:]: torch.stack([d[n] for d in per_block]) for n in per_block[0] if n.startswith(prefix)}

    def __call__(self, *args: Tensor, in_dims: tuple[int | None, ...], submodule: str = "") -> Tensor:
        """``submodule(args)`` of every block at once; ``in_dims[i] = 0`` if ``args[i]`` has a block axis.

        Returns the outputs stacked on a leading block axis, shape ``(T, ...)``.
        """
        device = args[0].device
        wanted = self.vectorize if self.vectorize is not None else device.type == "cuda"
        if wanted and self.vmap_error is None:
            try:
                out = self._vmapped(args, in_dims, submodule)
                self.last_pass = "vmap"
                return out
            except Exception as err:  # an encoder vmap cannot run: loop from now on
                self.vmap_error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
                warnings.warn(f"fused NoProp-DT: the blocks cannot run under vmap ({self.vmap_error}); "
                              "they run one after another in one pass instead", stacklevel=2)
        self.last_pass = "loop"
        return self._loop(args, in_dims, submodule)

    def _vmapped(self, args: tuple[Tensor, ...], in_dims: tuple[int | None, ...], submodule: str) -> Tensor:
        """All blocks in one ``vmap`` over their stacked parameters and buffers."""
        device = args[0].device
        if device.type == "cpu":
            retain_freed_memory()
        # the template follows each live module's train/eval flag (BatchNorm and dropout differ)
        for live, meta in zip(self.blocks[0].modules(), self.template.modules(), strict=True):
            meta.training = live.training
        prefix = f"{submodule}." if submodule else ""
        module = self.template.get_submodule(submodule)
        params, buffers = self._stacked("named_parameters", prefix), self._stacked("named_buffers", prefix)
        on_cuda = device.type == "cuda"
        if self.channels_last if self.channels_last is not None else on_cuda:
            args = tuple(a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args)
        use_autocast = self.autocast if self.autocast is not None else on_cuda
        autocast = bf16_autocast(device) if use_autocast else nullcontext()

        def one_block(p: dict[str, Tensor], b: dict[str, Tensor], *a: Tensor) -> Tensor:
            return functional_call(module, (p, b), a)

        with autocast:
            out = vmap(one_block, in_dims=(0, 0, *in_dims), randomness="different")(params, buffers, *args)
        if buffers and module.training:  # BatchNorm updated the stacked statistics: write them back
            live = [(buf, buffers[name][t]) for t, block in enumerate(self.blocks)
                    for name, buf in block.get_submodule(submodule).named_buffers()]
            with torch.no_grad():
                torch._foreach_copy_([dst for dst, _ in live], [src for _, src in live])  # one launch
        return out.float() if use_autocast else out

    def _loop(self, args: tuple[Tensor, ...], in_dims: tuple[int | None, ...], submodule: str) -> Tensor:
        """The unvectorised pass: each block's own module on its slice of the inputs, stacked."""
        outs = []
        for t, block in enumerate(self.blocks):
            own = tuple(a if d is None else a.select(d, t) for a, d in zip(args, in_dims, strict=True))
            outs.append(block.get_submodule(submodule)(*own))
        return torch.stack(outs)


def fused_loss(method: NoPropDT, x: Tensor, y: Tensor, noise: tuple[Tensor, Tensor] | None = None
               ) -> LossOutput:
    """``sum_t`` of block t's loss (Eq. 8 with t fixed), every block on its own noisy target.

    Equals ``sum(method.unit_loss(t) for t)`` when both see the same noise: ``noise`` is
    ``(eps_prev, eps_T)``, each ``(T, batch, d)``, the standard normal draws behind block t's input
    ``z_{t-1}`` and its classifier sample ``z_T`` (drawn here when ``None``). Since the loss is
    a sum, block t's gradient is that of its own loss; the shared group (classifier, embedding)
    gets the sum of the T blocks' gradients, ``T`` times Eq. 8 with the expectation over t exact.
    Logged terms are means over the blocks, comparable with the unfused per-unit averages.
    """
    T = method.num_blocks
    u = method.embedding(y)
    if noise is None:
        noise = tuple(torch.randn((2, T, *u.shape), device=u.device, dtype=u.dtype).unbind(0))
    eps_prev, eps_T = noise
    schedule = method.schedule
    levels = schedule.levels[:, None]  # (T + 1, 1): one sample of the whole batch per level
    z_prev = schedule.sample(u, levels[:-1], eps_prev).z_t  # (T, batch, d): block t reads level t - 1
    logits = method.stacked(x, z_prev, in_dims=(None, 0))
    u_hat = method.label_estimate(logits)
    sq_error = (u_hat - u).pow(2).sum(-1).mean(-1)
    denoise = method.weights * sq_error
    z_T = schedule.sample(u, levels[-1:].expand(T, 1), eps_T).z_t
    ce = F.cross_entropy(method.classifier(z_T).flatten(0, 1), y.repeat(T))
    kl = gaussian_prior_kl(u, schedule.alpha_bar(0)).mean()
    return LossOutput(
        loss=T * (ce + kl) + denoise.sum(),
        terms={"ce": ce.detach(), "kl": kl.detach(), "denoise": denoise.mean().detach(),
               "sq_error": sq_error.mean().detach()},
    )


def fused_sample_chain(
    method: NoPropDT, x: Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None,
    denoiser_input: Callable[[int, Tensor], Tensor] | None = None,
) -> list[Tensor]:
    """``[z_0, ..., z_T]`` of the Eq. 3 sampler, with the image path of all T blocks in one pass.

    The image path (the convolutions, nearly all of the work) does not depend on ``z``, so it runs
    for every block at once before the chain; the chain then needs only each block's label path
    and head. Draws the same noise, in the same order, as ``NoPropDT.sample_chain``.
    """
    chunk = x.shape[0] if x.is_cuda else CPU_SAMPLER_CHUNK
    features = torch.cat(
        [method.stacked(part, in_dims=(None,), submodule="image") for part in x.split(chunk)], dim=1
    )

    def denoise(k: int, z: Tensor) -> Tensor:  # DTBlock.forward with the image features precomputed
        block = method.blocks[k]
        return method.label_estimate(block.head(torch.cat([features[k], block.label(z)], dim=1)))

    return posterior_chain(
        denoise, lambda k: method.schedule.step_into(k + 1), steps=method.num_blocks,
        shape=(x.shape[0], method.embedding.dim), device=x.device, deterministic=deterministic,
        generator=generator, denoiser_input=denoiser_input,
    )


class AllBlocksFused:
    """NoProp-DT's blocks run fused: one unit ``blocks`` whose loss is :func:`fused_loss`, and
    :func:`fused_sample_chain` (the strategy behind ``NoPropDT(spec, fused=True)``)."""

    def training_units(self, m: NoPropDT) -> list[TrainingUnit]:
        return [TrainingUnit("blocks", tuple(m.parameter_groups()))]

    def unit_loss(self, m: NoPropDT, unit: int, x: Tensor, y: Tensor) -> LossOutput:
        return fused_loss(m, x, y)

    def sample_chain(self, m: NoPropDT, x: Tensor, *, deterministic: bool,
                     generator: torch.Generator | None,
                     denoiser_input: Callable[[int, Tensor], Tensor] | None = None) -> list[Tensor]:
        return fused_sample_chain(m, x, deterministic=deterministic, generator=generator,
                                  denoiser_input=denoiser_input)
