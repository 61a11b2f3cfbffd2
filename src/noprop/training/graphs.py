"""CUDA graphs for the training step: record one unit's step once, replay it for every batch.

Why: the paper's blocks are small, so on a GPU a step is hundreds of short kernels and the
device waits on Python issuing them (an H200 profile of the fused NoProp-DT step: 4.9 ms of
kernels in a 21 ms step). A CUDA graph records the kernels of one whole step - forward,
backward, the optimizer steps of the unit's groups - and replays them with one launch.

A replay takes the same step the eager loop takes:

* the batch is copied into static buffers, the only inputs the graph reads;
* noise (``torch.randn`` of the noisy labels, dropout) is drawn inside the graph from the CUDA
  generator, whose offset advances at every replay (graph-safe Philox), so each replay draws
  fresh noise (whether a recorded run matches an eager one to float tolerance is what the GPU
  test in ``tests/training/test_graphs.py`` checks);
* the optimizers are ``capturable`` (their step counts live on the GPU); a constant lr is
  recorded as a constant, and under an lr schedule the lr is a GPU tensor written in place
  (:func:`noprop.training.optimizers.set_lr`), which the graph reads at every replay;
* BatchNorm statistics are updated inside the graph.

Capturing needs a few warm-up steps first (lazily created optimizer state, cuDNN's choice of
kernels). They run on a side stream and are then undone: parameters, buffers, optimizer state
and the generator are put back, so a run with graphs takes the same steps as one without.

Only full batches (``batch_rows`` rows) are recorded and replayed; any other batch (the epoch's
last, smaller one) takes the eager step, which shares every tensor with the graph. A step that
cannot be captured (an op that syncs with the host, say) is reported once and the run continues
eagerly. :class:`Recorder` is what differs between the GPU and the tests: :class:`CudaGraphRecorder`
records real graphs; :class:`CallRecorder` "replays" by calling the step, so the bookkeeping
around the graph (static buffers, warm-up undone, lr tensors) is tested on any machine.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from noprop.config import RunConfig
from noprop.settings import ConfigError
from noprop.training.parallelism import Parallelism

#: A training step: ``(unit, x, y) -> loss terms``; it updates the unit's parameters in place.
StepBody = Callable[[int, Tensor, Tensor], dict[str, Tensor]]

#: A recorded step: its static input buffers ``x`` and ``y``, and its replay function.
Graph = tuple[Tensor, Tensor, Callable[[], dict[str, Tensor]]]

#: Warm-up steps before a capture (PyTorch's CUDA-graph notes use three).
WARMUP_STEPS = 3


class Recorder(Protocol):
    """Records a step once and replays it; owns the stream and the generator it runs on."""

    def warmup(self) -> contextlib.AbstractContextManager[None]:
        """Where warm-up steps run (a side stream on CUDA)."""

    def rng_state(self) -> Tensor:
        """The state of the generator the step draws its noise from."""

    def set_rng_state(self, state: Tensor) -> None:
        """Put the generator back to ``state``."""

    def record(self, fn: Callable[[], dict[str, Tensor]]) -> Callable[[], dict[str, Tensor]]:
        """A replay function for ``fn``; recording does not run ``fn``'s arithmetic."""


class CudaGraphRecorder:
    """Real CUDA graphs on ``device``; each graph gets its own memory pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(side)

    def rng_state(self) -> Tensor:
        return torch.cuda.get_rng_state(self.device)

    def set_rng_state(self, state: Tensor) -> None:
        torch.cuda.set_rng_state(state, self.device)

    def record(self, fn: Callable[[], dict[str, Tensor]]) -> Callable[[], dict[str, Tensor]]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = fn()

        def replay() -> dict[str, Tensor]:
            graph.replay()
            return static_out

        return replay


class CallRecorder:
    """Stands in for CUDA graphs where there are none: a replay calls the step (on the CPU
    generator). Same bookkeeping as a graph, so tests of it need no GPU."""

    def warmup(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def rng_state(self) -> Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: Tensor) -> None:
        torch.set_rng_state(state)

    def record(self, fn: Callable[[], dict[str, Tensor]]) -> Callable[[], dict[str, Tensor]]:
        return fn


class GraphedSteps:
    """Replays recorded steps of ``body``: one graph per training unit, for its full batches.

    ``state()`` lists every tensor a step may change (parameters, buffers, and optimizer state,
    which may not exist before the first step); ``optimizers`` are the run's, made
    ``capturable``; ``scheduled_lr``: the lr changes during the run (then it becomes a tensor);
    ``batch_rows``: the size of the batches to record (``None``: the first batch's).
    :meth:`__call__` returns the step's loss terms, or ``None`` when the batch is
    for the eager step (another shape, or capture failed: :attr:`error` says why).
    """

    def __init__(
        self,
        body: StepBody,
        state: Callable[[], list[Tensor]],
        optimizers: list[torch.optim.Optimizer],
        recorder: Recorder,
        *,
        scheduled_lr: bool = False,
        batch_rows: int | None = None,
        warmup_steps: int = WARMUP_STEPS,
    ) -> None:
        self.body = body
        self.state = state
        self.optimizers = optimizers
        self.recorder = recorder
        self.warmup_steps = warmup_steps
        self.scheduled_lr = scheduled_lr
        self.batch_rows = batch_rows
        self._graphs: dict[int, Graph] = {}
        #: Why capturing failed (then every step is eager); ``None`` while graphs run.
        self.error: str | None = None
        #: Steps replayed from a graph, and steps taken eagerly beside them.
        self.replayed = 0
        self.eager = 0

    def __call__(self, unit: int, x: Tensor, y: Tensor) -> dict[str, Tensor] | None:
        full = self.batch_rows is None or len(x) == self.batch_rows
        if self.error is None and unit not in self._graphs and full:
            try:
                self._graphs[unit] = self._capture(unit, x, y)
            except Exception as err:  # an op that cannot be captured: eager from here on
                self.error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
                for t in self.state():  # a cut-off recording may leave gradients of unrun kernels
                    t.grad = None
                warnings.warn(f"CUDA graphs: the training step cannot be captured ({self.error}); "
                              "training continues without graphs", stacklevel=2)
        graph = self._graphs.get(unit)
        if graph is None or graph[0].shape != x.shape or graph[1].shape != y.shape:
            self.eager += 1
            return None
        static_x, static_y, replay = graph
        static_x.copy_(x)
        static_y.copy_(y)
        out = replay()
        self.replayed += 1
        return {k: v.clone() for k, v in out.items()}  # the graph overwrites its outputs next time

    def _capture(self, unit: int, x: Tensor, y: Tensor) -> Graph:
        static_x, static_y = x.clone(), y.clone()
        if self.scheduled_lr:
            self._tensor_lrs(x.device)
        before = {id(t): t.clone() for t in self.state()}
        rng = self.recorder.rng_state()
        with self.recorder.warmup():
            for _ in range(self.warmup_steps):
                self.body(unit, static_x, static_y)
        self._undo(before)
        self.recorder.set_rng_state(rng)
        replay = self.recorder.record(lambda: self.body(unit, static_x, static_y))
        return static_x, static_y, replay

    def _undo(self, before: dict[int, Tensor]) -> None:
        """Put back what the warm-up changed; state it created starts as a first step finds it."""
        with torch.no_grad():
            for t in self.state():
                saved = before.get(id(t))
                if saved is not None:
                    t.copy_(saved)
                else:  # optimizer state created by the warm-up (Adam's moments and step count)
                    t.zero_()

    def _tensor_lrs(self, device: torch.device) -> None:
        """Each optimizer's lr as a tensor on ``device``, so a graph reads it rather than a constant."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                if not isinstance(group["lr"], Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), device=device)

    def describe(self) -> dict[str, object]:
        """For ``results.json``: whether graphs ran, and how many steps each way."""
        return {"cuda_graphs": "eager" if self.error else "captured", "cuda_graph_error": self.error,
                "graph_steps": self.replayed, "eager_steps_beside_graphs": self.eager}


def check_cuda_graphs(config: RunConfig, device: torch.device, parallelism: Parallelism) -> None:
    """``cuda_graphs`` applies to one process on a CUDA device, in stop mode; else one line."""
    if not config.cuda_graphs:
        return
    if device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device; this run is on {device.type}")
    if config.skip_nonfinite:
        raise ConfigError("cuda_graphs cannot be used with skip_nonfinite (a recorded step cannot "
                          "look at its gradients before the optimizer step)")
    if type(parallelism) is not Parallelism:
        raise ConfigError("cuda_graphs trains in one process; it is not available with --nproc/torchrun")
