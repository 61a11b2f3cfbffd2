"""Is it really backprop-free? A locality check for any method, built in or a user's (docs/locality.md).

NoProp's defining property is that while training no gradient, no forward activation and no
optimizer state crosses from one block to another. Reading the code is not enough (a stray
``.forward()`` of an earlier block, a straight-through ``z + (f - f.detach())``, one optimizer
over everything all look harmless), so this module *measures* it on real batches:

* **groups**: the parameter groups are disjoint and cover every trainable parameter (a parameter
  tied between two blocks lands in both);
* **gradient**: a backward on unit u's loss gives gradient only to the groups u names; where one
  unit spans several blocks (fused NoProp-DT, Forward-Forward), each block's gradient is unchanged
  when every other block is perturbed (the loss is a sum of per-block terms), which back-propagation
  through a chain of blocks cannot satisfy;
* **forward**: with the same seed, perturbing every parameter and buffer of every other unit's own
  groups leaves unit u's loss, terms and gradients bit-identical. This is a perturbation, not a
  hook, so ``.forward()``, ``functional_call`` and ``vmap`` leaks are caught alike;
* **optimizer**: every optimizer the trainer makes holds one group, and a trainer step on unit u
  leaves every other unit's parameters, buffers and optimizer state (moments, step counts)
  bit-identical;
* **distributed** (:func:`check_distributed`, spawned gloo processes): in a block x data layout the
  gradient a rank syncs equals the mean over its block's replicas (and differs from the world
  mean), each collective carries only the unit's own groups, and only the shared groups are merged
  at the sync points.

Roles of the groups: a group is *shared* if the method lists it in ``locality_shared_groups``, or
it is called ``shared``, or several units name it (NoProp-DT's classifier and embedding); every
other group is a *block*. Shared groups may get gradient from every unit that names them and are
not perturbed (they legitimately affect every unit). ``forward="chained"`` is for layer-wise
methods whose claim is gradient locality only (``local``, ``ff``: block k trains on block k-1's
output): there a unit may read the blocks before its own, never the ones after.
``forward="targets"`` is for target methods (``dtp``, ``ccl``): block k's loss reads values of every
block (its input from below, its target from above), so no perturbation can isolate it; instead the
gradient check doubles the gradient that flows back through every other block's modules (values
unchanged), and each block's gradient must stay bit-identical: no gradient passes another block.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from noprop.config import RunConfig
from noprop.data import ClassificationData, load_dataset
from noprop.distributed.parallelism import group_buffers
from noprop.methods import METHODS, Method
from noprop.run import build_for
from noprop.training.trainer import Trainer

#: Forward modes: ``isolated`` (NoProp: a unit reads no other block), ``chained`` (earlier only) or
#: ``targets`` (values of any block, gradients of none: target propagation).
FORWARD_MODES = ("isolated", "chained", "targets")
#: Rows of the default batch (the digits' training split).
DEFAULT_ROWS = 64


@dataclass(frozen=True)
class Check:
    """One row of the report: a check on one subject (a unit, a block or the whole method)."""

    check: str
    subject: str
    passed: bool | None  # None: not applicable
    detail: str
    #: What kind of leak a failure is (e.g. "gradient crosses blocks"); ``None`` when passed.
    leak: str | None = None
    #: The block groups a failure involves.
    blocks: tuple[str, ...] = ()

    @property
    def result(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class LocalityReport:
    """The checks run on one method: :attr:`passed` only if none failed."""

    method: str
    units: list[str]
    blocks: list[str]
    shared: list[str]
    forward: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def flagged(self, check: str, block: str | None = None) -> bool:
        """Whether ``check`` failed (naming ``block``, if given)."""
        return any(c.check == check and (block is None or block in c.blocks) for c in self.failures)

    def table(self) -> str:
        """The report as a plain-text table, one row per check."""
        head = (f"locality of {self.method}: {len(self.units)} unit(s); blocks: {_span(self.blocks)}; "
                f"shared: {', '.join(self.shared) or 'none'}; forward: {self.forward}")
        rows = [("check", "subject", "result", "detail")]
        rows += [(c.check, c.subject, c.result, c.detail) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [head, ""]
        lines += ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        failed = len(self.failures)
        lines += ["", f"{'FAILED' if failed else 'PASSED'}: {failed} of {len(self.checks)} checks failed"
                  if failed else f"PASSED: all {len(self.checks)} checks"]
        return "\n".join(lines)


def _span(names: Sequence[str]) -> str:
    if len(names) > 3:
        return f"{names[0]}..{names[-1]} ({len(names)})"
    return ", ".join(names) or "none"


# -- roles of the groups -----------------------------------------------------------------------
def shared_groups_of(method: Method, declared: Sequence[str] | None = None) -> list[str]:
    """The shared groups: ``declared``, else the method's ``locality_shared_groups``, else the
    group called ``shared`` and every group that two or more units name."""
    groups = list(method.parameter_groups())
    if declared is None:
        declared = method.locality_shared_groups
    if declared is not None:
        unknown = sorted(set(declared) - set(groups))
        if unknown:
            raise ValueError(f"shared group(s) {', '.join(unknown)} are not groups of {method.name} "
                             f"(its groups: {', '.join(groups)})")
        return [g for g in groups if g in declared]
    named: dict[str, int] = {}
    for unit in method.training_units():
        for g in unit.groups:
            named[g] = named.get(g, 0) + 1
    return [g for g in groups if g == "shared" or named.get(g, 0) > 1]


def forward_mode_of(method: Method, declared: str | None = None) -> str:
    """``declared``, else the method's own claim, :attr:`Method.locality_forward`."""
    mode = declared or method.locality_forward
    if mode not in FORWARD_MODES:
        raise ValueError(f"forward must be one of {', '.join(FORWARD_MODES)}; got {mode!r}")
    return mode


@dataclass
class _Roles:
    """The method's groups split into blocks (in order) and shared, and where each tensor lives."""

    method: Method
    blocks: list[str]
    shared: list[str]
    forward: str

    def __post_init__(self) -> None:
        self.groups = self.method.parameter_groups()
        self.units = self.method.training_units()
        self.buffers = group_buffers(self.method)

    def tensors(self, groups: Sequence[str]) -> list[Tensor]:
        """Parameters and buffers of ``groups``."""
        return [t for g in groups for t in (*self.groups.get(g, []), *self.buffers.get(g, []))]

    def own_blocks(self, unit: int) -> list[str]:
        return [g for g in self.units[unit].groups if g in self.blocks]

    def others(self, unit: int) -> list[str]:
        """Blocks another unit owns and ``unit`` does not name (chained: only the later ones;
        targets: none, since a target method reads every block's values)."""
        if self.forward == "targets":
            return []
        own = self.own_blocks(unit)
        others = [b for b in self.blocks if b not in self.units[unit].groups]
        if self.forward == "chained" and own:
            last = max(self.blocks.index(b) for b in own)
            others = [b for b in others if self.blocks.index(b) > last]
        return others


# -- evaluating a unit under perturbations -----------------------------------------------------
@contextlib.contextmanager
def _restored(method: Method) -> Iterator[None]:
    """Every parameter and buffer as it was on entry, afterwards (BatchNorm statistics included)."""
    saved = [(t, t.detach().clone()) for t in (*method.parameters(), *method.buffers())]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in saved:
                t.copy_(s)


@torch.no_grad()
def _perturb(tensors: Sequence[Tensor], seed: int) -> None:
    """Change every value (floating tensors: scaled and shifted, staying positive if positive)."""
    g = torch.Generator().manual_seed(seed)
    for t in tensors:
        if t.is_floating_point():
            noise = torch.rand(t.shape, generator=g).to(device=t.device, dtype=t.dtype)
            t.mul_(1.5).add_(0.1 + 0.1 * noise)
        elif t.dtype != torch.bool:
            t.add_(3)


@dataclass
class _Evaluation:
    loss: Tensor
    terms: dict[str, Tensor]
    grads: dict[int, Tensor | None]  # id(parameter) -> gradient


def _evaluate(method: Method, unit: int, x: Tensor, y: Tensor, seed: int) -> _Evaluation:
    """Unit's loss, terms and every parameter's gradient, from a fixed seed; the model is left as
    it was (BatchNorm statistics that train mode updates are put back) and without gradients."""
    method.zero_grad(set_to_none=True)
    with _restored(method):
        torch.manual_seed(seed)
        out = method.unit_loss(unit, x, y)
        out.loss.float().backward()
    grads = {id(p): (None if p.grad is None else p.grad.detach().clone()) for p in method.parameters()}
    method.zero_grad(set_to_none=True)
    terms = {k: v.detach().clone() for k, v in out.terms.items()}
    return _Evaluation(out.loss.detach().clone(), terms, grads)


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    """Bit-identical (NaN equal to NaN)."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())


def _perturbed(roles: _Roles, unit: int, x: Tensor, y: Tensor, seed: int, groups: Sequence[str]
               ) -> _Evaluation:
    with _restored(roles.method):
        _perturb(roles.tensors(groups), seed + 1)
        return _evaluate(roles.method, unit, x, y, seed)


@contextlib.contextmanager
def _gradient_doubled_through(roles: _Roles, groups: Sequence[str]) -> Iterator[None]:
    """Every module whose own parameters all belong to ``groups`` doubles the gradient that flows back
    through its output; forward values are untouched (a target read from it is unchanged)."""
    members = {id(p) for g in groups for p in roles.groups.get(g, [])}

    def double(module: nn.Module, args: Any, output: Any) -> None:
        for t in output if isinstance(output, tuple | list) else (output,):
            if isinstance(t, Tensor) and t.requires_grad:
                t.register_hook(lambda g: g * 2)

    handles = [m.register_forward_hook(double) for m in roles.method.modules()
               if (own := list(m.parameters(recurse=False))) and all(id(p) in members for p in own)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _gradient_probed(roles: _Roles, unit: int, x: Tensor, y: Tensor, seed: int, groups: Sequence[str]
                     ) -> _Evaluation:
    with _gradient_doubled_through(roles, groups):
        return _evaluate(roles.method, unit, x, y, seed)


def _culprits(roles: _Roles, unit: int, x: Tensor, y: Tensor, seed: int, candidates: Sequence[str],
              changed: Callable[[_Evaluation], bool]) -> list[str]:
    """The candidate groups whose perturbation alone changes the evaluation."""
    return [c for c in candidates if changed(_perturbed(roles, unit, x, y, seed, [c]))]


# -- the checks ---------------------------------------------------------------------------------
def check_groups(roles: _Roles) -> list[Check]:
    """Disjoint groups covering every trainable parameter; units name known groups."""
    method, checks = roles.method, []
    where: dict[int, str] = {}
    tied: list[tuple[str, str]] = []
    for g, params in roles.groups.items():
        for p in params:
            if id(p) in where and where[id(p)] != g:
                tied.append((where[id(p)], g))
            where.setdefault(id(p), g)
    for a, b in dict.fromkeys(tied):
        kind = "a trainable parameter shared between blocks" if {a, b} <= set(roles.blocks) else \
            "a parameter in two groups"
        checks.append(Check("groups", f"{a}, {b}", False, f"a parameter is in both {a} and {b}: {kind} "
                            "(gradient and optimizer state cross)", kind,
                            tuple(g for g in (a, b) if g in roles.blocks)))
    missing = [n for n, p in method.named_parameters() if p.requires_grad and id(p) not in where]
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        checks.append(Check("groups", "all", False, f"trainable parameters in no group: {shown}",
                            "ungrouped parameter"))
    unknown = sorted({g for u in roles.units for g in u.groups} - set(roles.groups))
    if unknown:
        checks.append(Check("groups", "all", False, f"units name unknown groups: {', '.join(unknown)}",
                            "unknown group"))
    if not checks:
        checks.append(Check("groups", "all", True, f"{len(roles.groups)} disjoint group(s) cover every "
                            "trainable parameter"))
    return checks


def check_gradient(roles: _Roles, x: Tensor, y: Tensor, seed: int) -> list[Check]:
    """Unit u's loss reaches only u's groups; within a unit over several blocks, each block's
    gradient does not depend on the other blocks (the loss is a sum of per-block terms)."""
    checks = []
    for u, unit in enumerate(roles.units):
        base = _evaluate(roles.method, u, x, y, seed)
        reached = [g for g, ps in roles.groups.items() if any(base.grads[id(p)] is not None for p in ps)]
        outside = [g for g in reached if g not in unit.groups]
        if outside:
            checks.append(Check(
                "gradient", unit.name, False,
                f"the loss of {unit.name} gives gradient to {', '.join(outside)}, which it does not "
                "own: gradient crosses blocks", "gradient crosses blocks",
                tuple(dict.fromkeys([*roles.own_blocks(u), *(g for g in outside if g in roles.blocks)]))))
            continue
        blocks = [g for g in reached if g in roles.blocks]
        if len(blocks) <= 1:
            checks.append(Check("gradient", unit.name, True, f"reaches {', '.join(reached) or 'nothing'} "
                                "only"))
            continue
        separable = _own_gradient_paths if roles.forward == "targets" else _separable
        checks.append(separable(roles, u, blocks, x, y, seed, base))
    return checks


def _separable(roles: _Roles, u: int, blocks: list[str], x: Tensor, y: Tensor, seed: int,
               base: _Evaluation) -> Check:
    """One unit's loss reaches several blocks: each block's gradient must stay bit-identical when
    the other blocks (chained: the later ones) are perturbed."""
    unit = roles.units[u]
    for b in blocks:
        index = roles.blocks.index(b)
        others = [c for c in roles.blocks if c != b
                  and (roles.forward == "isolated" or roles.blocks.index(c) > index)]
        params = roles.groups[b]

        def changed(ev: _Evaluation, params: list[nn.Parameter] = params) -> bool:
            return not all(_same(base.grads[id(p)], ev.grads[id(p)]) for p in params)

        if others and changed(_perturbed(roles, u, x, y, seed, others)):
            culprits = _culprits(roles, u, x, y, seed, others, changed)
            later = [c for c in culprits if roles.blocks.index(c) > index]
            kind = "gradient crosses blocks" if later or not culprits else "activation crosses blocks"
            how = ("back-propagation through the chain" if later
                   else "it reads their output (a forward leak)")
            return Check("gradient", unit.name, False,
                         f"one unit spans {len(blocks)} blocks ({_span(blocks)}) and the gradient of {b} "
                         f"depends on {', '.join(culprits) or 'the other blocks'}: {kind} ({how})",
                         kind, (b, *culprits))
    return Check("gradient", unit.name, True,
                 f"spans {len(blocks)} blocks ({_span(blocks)}); each block's gradient is its own "
                 "(unchanged when the other blocks are perturbed)")


def _own_gradient_paths(roles: _Roles, u: int, blocks: list[str], x: Tensor, y: Tensor, seed: int,
                        base: _Evaluation) -> Check:
    """A target method's unit over several blocks: block b may read the others' values, but its
    gradient must stay bit-identical when the gradient through every other block's modules is doubled."""
    unit = roles.units[u]
    for b in blocks:
        others = [c for c in roles.blocks if c != b]
        params = roles.groups[b]

        def changed(ev: _Evaluation, params: list[nn.Parameter] = params) -> bool:
            return not all(_same(base.grads[id(p)], ev.grads[id(p)]) for p in params)

        if others and changed(_gradient_probed(roles, u, x, y, seed, others)):
            culprits = [c for c in others if changed(_gradient_probed(roles, u, x, y, seed, [c]))]
            return Check("gradient", unit.name, False,
                         f"one unit spans {len(blocks)} blocks ({_span(blocks)}) and the gradient of {b} "
                         f"flows back through {', '.join(culprits) or 'the other blocks'}: gradient crosses "
                         "blocks (back-propagation through another block)", "gradient crosses blocks",
                         (b, *culprits))
    return Check("gradient", unit.name, True,
                 f"spans {len(blocks)} blocks ({_span(blocks)}); no block's gradient flows through another "
                 "(unchanged when the gradient through the other blocks is doubled)")


def check_forward(roles: _Roles, x: Tensor, y: Tensor, seed: int) -> list[Check]:
    """Perturbing the other units' own groups leaves unit u's loss, terms and gradients identical."""
    checks = []
    for u, unit in enumerate(roles.units):
        others = roles.others(u)
        if not others:
            why = ("a target method reads every block's values" if roles.forward == "targets"
                   else "no other unit owns a block" if len(roles.units) == 1 else "no later block")
            checks.append(Check("forward", unit.name, None, f"{why} (see the gradient check)"))
            continue
        base = _evaluate(roles.method, u, x, y, seed)

        def changed(ev: _Evaluation, base: _Evaluation = base) -> bool:
            return not (_same(base.loss, ev.loss) and base.terms.keys() == ev.terms.keys()
                        and all(_same(base.terms[k], ev.terms[k]) for k in base.terms)
                        and all(_same(base.grads[i], ev.grads[i]) for i in base.grads))

        if changed(_perturbed(roles, u, x, y, seed, others)):
            culprits = _culprits(roles, u, x, y, seed, others, changed)
            checks.append(Check(
                "forward", unit.name, False,
                f"perturbing {', '.join(culprits) or _span(others)} changes the loss or gradients of "
                f"{unit.name}: activation crosses blocks", "activation crosses blocks",
                tuple(dict.fromkeys([*roles.own_blocks(u), *culprits]))))
        else:
            checks.append(Check("forward", unit.name, True, f"bit-identical with {_span(others)} perturbed"))
    return checks


def _group_state(roles: _Roles, trainer: Trainer, groups: Sequence[str]) -> dict[str, list[Tensor]]:
    out = {}
    for g in groups:
        opt = trainer.optimizers.get(g)
        state = [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)] if opt else []
        out[g] = [t.detach().clone() for t in (*roles.tensors([g]), *state)]
    return out


def check_optimizer(roles: _Roles, trainer: Trainer, x: Tensor, y: Tensor, seed: int) -> list[Check]:
    """One optimizer per group, and a trainer step on unit u leaves the other units' parameters,
    buffers and optimizer state bit-identical (after a step on every unit left state behind)."""
    checks = []
    group_of = {id(p): g for g, ps in roles.groups.items() for p in ps}
    for name, opt in trainer.optimizers.items():
        spans = list(dict.fromkeys(group_of.get(id(p), "?") for pg in opt.param_groups for p in pg["params"]))
        if len(spans) > 1:
            checks.append(Check("optimizer", name, False,
                                f"the optimizer of {name} holds parameters of {_span(spans)}: one optimizer "
                                "across blocks (momentum and weight decay cross)", "global optimizer",
                                tuple(g for g in spans if g in roles.blocks)))
    if not checks:
        checks.append(Check("optimizer", "all", True, f"one optimizer per group ({len(trainer.optimizers)})"))
    grouped = {id(t) for ts in roles.buffers.values() for t in ts}
    loose = [b for b in roles.method.buffers() if id(b) not in grouped]
    with _restored(roles.method):
        for u in range(len(roles.units)):  # every optimizer gets state (moments, step counts)
            torch.manual_seed(seed + u)
            trainer.train_step(u, x, y)
        for u, unit in enumerate(roles.units):
            protected = [b for b in roles.blocks if b not in unit.groups]
            before = _group_state(roles, trainer, protected)
            loose_before = [b.clone() for b in loose]
            torch.manual_seed(seed + u)
            trainer.train_step(u, x, y)
            after = _group_state(roles, trainer, protected)
            moved = [g for g in protected if len(before[g]) != len(after[g])
                     or not all(_same(a, b) for a, b in zip(before[g], after[g], strict=True))]
            loose_moved = not all(_same(a, b) for a, b in zip(loose_before, loose, strict=True))
            if moved or loose_moved:
                what = ", ".join(moved) + (" and buffers outside every group" if loose_moved else "")
                checks.append(Check(
                    "optimizer", unit.name, False, f"a step on {unit.name} changed {what.strip(' ,')} "
                    "(parameters, buffers or optimizer state): state crosses blocks",
                    "optimizer state crosses blocks", tuple(dict.fromkeys([*roles.own_blocks(u), *moved]))))
            elif not protected:
                checks.append(Check("optimizer", unit.name, None, "no block outside this unit"))
            else:
                checks.append(Check("optimizer", unit.name, True, f"{_span(protected)} bit-identical "
                                    "(parameters, buffers, optimizer state)"))
    return checks


def check_trainer(trainer: Trainer, x: Tensor, y: Tensor, *, seed: int = 0,
                  shared_groups: Sequence[str] | None = None, forward: str | None = None) -> list[Check]:
    """The optimizer check on a trainer built elsewhere (e.g. with CUDA graphs): its optimizers and
    its own ``train_step``. The model, its buffers and gradients are put back afterwards."""
    method = trainer.method
    shared = shared_groups_of(method, shared_groups)
    roles = _Roles(method, [g for g in method.parameter_groups() if g not in shared], shared,
                   forward_mode_of(method, forward))
    return check_optimizer(roles, trainer, x, y, seed)


# -- entry points -------------------------------------------------------------------------------
def _as_data(data: ClassificationData | tuple[Tensor, Tensor] | None, config: RunConfig | None,
             spec_classes: int | None = None) -> ClassificationData:
    if isinstance(data, ClassificationData):
        return data
    if data is None:
        config = config or RunConfig()
        return load_dataset(config.dataset, config.data_dir, label_column=config.label_column, progress=False)
    x, y = data
    classes = spec_classes or int(y.max()) + 1
    return ClassificationData("batch", x, y, x, y, num_classes=classes)


def _run_config(method: Method, config: RunConfig | None, rows: int, device: str, cuda_graphs: bool
                ) -> RunConfig:
    """The run settings of the trainer the optimizer check steps (its own optimizers)."""
    fixed = {"device": device, "precision": "fp32", "epochs": 1, "batch_size": rows, "progress": False,
             "log_epochs": False, "cuda_graphs": cuda_graphs, "skip_nonfinite": False, "num_threads": None,
             "max_train_seconds": None, "parallel": "data"}
    if config is not None:
        return config.replace(**fixed)
    # a method not in the registry: the trainer needs some registered name, used only in results
    name = method.name if method.name in METHODS else "cnn"
    return RunConfig(method=name, optimizer=method.default_optimizer, **fixed)


def check_locality(
    method_or_config: Method | RunConfig | str | Mapping[str, Any],
    data: ClassificationData | tuple[Tensor, Tensor] | None = None,
    *,
    rows: int | None = None,
    seed: int = 0,
    shared_groups: Sequence[str] | None = None,
    forward: str | None = None,
    device: str = "cpu",
    nproc: int = 0,
    setup: str | None = None,
    cuda_graphs: bool = False,
) -> LocalityReport:
    """Check that ``method_or_config`` trains each block locally, on a real batch of ``data``.

    ``method_or_config``: a built method, a :class:`RunConfig`, a method name or a mapping of flat
    settings (``{"method": "dt", "encoder": "mypkg.nets:small"}``). ``data``: a dataset, an
    ``(x, y)`` batch, or ``None`` for the configured dataset (default: the digits); the first
    ``rows`` training rows are used (default: the run's batch size, at most 64).
    ``shared_groups`` and ``forward`` override the roles (see the module docstring). ``nproc``
    above 1 adds :func:`check_distributed` on that many gloo processes (``setup``: a
    ``module:function`` each process calls first, e.g. to register a method). ``cuda_graphs``
    (CUDA only): the optimizer check steps through the trainer's recorded CUDA graphs.
    """
    config: RunConfig | None = None
    if isinstance(method_or_config, str):
        method_or_config = {"method": method_or_config}
    if isinstance(method_or_config, Mapping):
        config = RunConfig(**{"device": device, **dict(method_or_config)})
    elif isinstance(method_or_config, RunConfig):
        config = method_or_config
    dataset = _as_data(data, config, method_or_config.spec.num_classes
                       if isinstance(method_or_config, Method) else None)
    if config is not None:
        config = config.replace(device=device)
        method = build_for(config, dataset)
        rows = rows or min(config.resolved().batch_size or DEFAULT_ROWS, DEFAULT_ROWS)
    else:
        assert isinstance(method_or_config, Method)
        method = method_or_config
    rows = min(rows or DEFAULT_ROWS, len(dataset.train_x))
    method = method.to(device)
    x, y = dataset.train_x[:rows].to(device), dataset.train_y[:rows].to(device)
    was_training = method.training
    method.train()
    shared = shared_groups_of(method, shared_groups)
    mode = forward_mode_of(method, forward)
    blocks = [g for g in method.parameter_groups() if g not in shared]
    roles = _Roles(method, blocks, shared, mode)
    report = LocalityReport(method.name, [u.name for u in roles.units], blocks, shared, mode)
    report.checks += check_groups(roles)
    report.checks += check_gradient(roles, x, y, seed)
    report.checks += check_forward(roles, x, y, seed)
    trainer = Trainer(method, dataset, _run_config(method, config, rows, device, cuda_graphs))
    report.checks += check_optimizer(roles, trainer, x, y, seed)
    method.train(was_training)
    if nproc > 1:
        if config is None:
            report.checks.append(Check("distributed", "all", None, "give a configuration (not a built "
                                       "method) to check distributed training: each process builds it"))
        else:
            report.checks += check_distributed(config, dataset, nproc=nproc, rows=rows, setup=setup,
                                               shared_groups=shared)
    return report


# -- distributed --------------------------------------------------------------------------------
def call_setup(setup: str | None) -> None:
    if setup:
        module, _, name = setup.partition(":")
        getattr(importlib.import_module(module), name or "setup")()


def _distributed_worker(config: RunConfig, data: ClassificationData, rows: int, setups: Sequence[str | None],
                        timeout_s: float) -> list[dict[str, Any]]:
    """One rank: for each of ``setups`` in turn (called first; their effects add up), what
    :func:`_measure_rank` sees, all in one process group."""
    from noprop.distributed.launch import process_group

    out = []
    with process_group("gloo", timeout_s) as info:
        for setup in setups:
            call_setup(setup)
            out.append(_measure_rank(config, data, rows, info, timeout_s))
    return out


def _measure_rank(config: RunConfig, data: ClassificationData, rows: int, info: Any, timeout_s: float
                  ) -> dict[str, Any]:
    """The gradients of this rank's units before and after the sync, and every collective a
    training step makes (operation, ranks, which groups its tensors are)."""
    from noprop.distributed.launch import rank_seed, rank_trainer

    trainer = rank_trainer(config, data, None, info, timeout_s=timeout_s)
    hooks = trainer.parallelism
    method = trainer.method
    method.train()
    layout = hooks.layout  # type: ignore[attr-defined]
    groups = method.parameter_groups()
    x, y = hooks.shard(data.train_x[:rows], data.train_y[:rows])
    synced = []
    for u in trainer.trained_units:
        method.zero_grad(set_to_none=True)
        torch.manual_seed(rank_seed(config.seed, info.rank, u))
        method.unit_loss(u, x, y).loss.float().backward()
        names = trainer.units[u].groups
        before = {g: [p.grad.clone() for p in groups[g] if p.grad is not None] for g in names}
        hooks.sync_gradients(method, names)
        after = {g: [p.grad.clone() for p in groups[g] if p.grad is not None] for g in names}
        synced.append({"unit": u, "before": before, "after": after})
    method.zero_grad(set_to_none=True)

    calls: list[dict[str, Any]] = []
    comm = hooks.comm  # type: ignore[attr-defined]

    def grad_owner(t: Tensor) -> str:
        return next((g for g, ps in groups.items() if any(p.grad is t for p in ps)), "?")

    def recorded(kind: str, fn: Callable[..., None]) -> Callable[..., None]:
        def call(op: str, tensors: Sequence[Tensor], *args: Any, **kwargs: Any) -> None:
            ranks = kwargs["ranks"] if "ranks" in kwargs else args[-2] if len(args) >= 2 else []
            calls.append({"kind": kind, "op": op, "ranks": list(ranks),
                          "grads": [grad_owner(t) for t in tensors],
                          "shapes": [tuple(t.shape) for t in tensors]})
            fn(op, tensors, *args, **kwargs)
        return call

    comm.all_reduce_mean = recorded("all_reduce", comm.all_reduce_mean)
    comm.broadcast = recorded("broadcast", comm.broadcast)
    hooks.begin_epoch(method)
    for u in trainer.trained_units:
        torch.manual_seed(rank_seed(config.seed, info.rank, 100 + u))
        trainer.train_step(u, x, y)
    shared = layout.shared_groups
    shared_buffers = [b for g in shared for b in group_buffers(method).get(g, []) if b.is_floating_point()]
    expected = [tuple(t.shape) for t in (*(p for g in shared for p in groups.get(g, [])), *shared_buffers)]
    return {"rank": info.rank, "slot": layout.slot, "slots": layout.slots, "replicas": layout.replicas,
            "slot_ranks": layout.slot_ranks(layout.slot), "units": list(trainer.trained_units),
            "unit_names": [u.name for u in trainer.units], "synced": synced, "calls": calls,
            "shared": shared, "expected_shared": expected, "owned": layout.owned_groups(layout.slot)}


def distributed_config(config: RunConfig, rows: int) -> RunConfig:
    """``config`` as the distributed check runs it: block parallel, interleaved, shared groups merged
    after every batch, on the CPU."""
    return config.replace(parallel="blocks", block_order="interleaved", device="cpu", precision="fp32",
                          shared_sync_every=1, progress=False, log_epochs=False, epochs=1, batch_size=rows)


def run_distributed(config: RunConfig, data: ClassificationData | None = None, *, nproc: int = 4,
                    rows: int = 32, setups: Sequence[str | None] = (None,), timeout_s: float = 120.0
                    ) -> list[list[dict[str, Any]]]:
    """What every rank of ``nproc`` spawned gloo processes saw, once per setup (in one spawn)."""
    from noprop.distributed.launch import spawn

    config = distributed_config(config, rows)
    data = data if data is not None else _as_data(None, config)
    per_rank = spawn(_distributed_worker, nproc, (config, data, rows, list(setups), timeout_s), threads=1)
    return [[rank[k] for rank in per_rank] for k in range(len(setups))]


def check_distributed(
    config: RunConfig,
    data: ClassificationData | None = None,
    *,
    nproc: int = 4,
    rows: int = 32,
    setup: str | None = None,
    shared_groups: Sequence[str] | None = None,
    timeout_s: float = 120.0,
) -> list[Check]:
    """Block-parallel training on ``nproc`` gloo processes exchanges only what it may.

    With 4 processes and 2 units the layout is 2 blocks x 2 replicas. Per rank and unit: the
    synced gradient equals the mean over the block's replica group (checked by value against the
    gradients every rank computed) and differs from the world mean; the gradient all-reduce carries
    only the unit's own groups' gradients over the block's replicas; a training step's other
    collectives carry only the shared groups (their sync points).
    """
    ranks = run_distributed(config, data, nproc=nproc, rows=rows, setups=(setup,), timeout_s=timeout_s)[0]
    return distributed_checks(ranks, shared_groups)


def _is_mean(tensors: list[Tensor], over: list[list[Tensor]]) -> bool | None:
    """Whether ``tensors`` are the element-wise mean of the lists ``over`` (``None``: shapes differ)."""
    if any(len(o) != len(tensors) or any(a.shape != b.shape for a, b in zip(o, tensors, strict=True))
           for o in over):
        return None
    return all(torch.allclose(t, torch.stack(parts).mean(0), rtol=1e-5, atol=1e-7)
               for t, parts in zip(tensors, zip(*over, strict=True), strict=True))


def distributed_checks(ranks: list[dict[str, Any]], shared_groups: Sequence[str] | None = None
                       ) -> list[Check]:
    """The checks of :func:`check_distributed` on what the ranks reported."""
    checks: list[Check] = []
    r0 = ranks[0]
    layout = f"{r0['slots']} block slot(s) x {r0['replicas']} replica(s)"
    shared = set(shared_groups if shared_groups is not None else r0["shared"])
    for rank in ranks:
        subject = f"rank {rank['rank']}"
        problems: list[str] = []
        blocks: list[str] = []
        for k, rec in enumerate(rank["synced"]):
            peers = [ranks[r]["synced"][k]["before"] for r in rank["slot_ranks"]]
            world = [list(r["synced"][k]["before"].values()) for r in ranks if len(r["synced"]) > k]
            for j, (g, after) in enumerate(rec["after"].items()):
                if _is_mean(after, [p[g] for p in peers]) is not True:
                    problems.append(f"the synced gradient of {g} is not the mean over its block's replicas "
                                    f"(ranks {rank['slot_ranks']})")
                    blocks.append(g)
                elif len(rank["slot_ranks"]) < len(ranks) and _is_mean(after, [w[j] for w in world]):
                    problems.append(f"the synced gradient of {g} is the mean over all ranks")
                    blocks.append(g)
        for call in rank["calls"]:
            if call["op"] == "gradient_all_reduce":
                unit_groups = set().union(*(rec["before"] for rec in rank["synced"]))
                foreign = sorted({g for g in call["grads"] if g not in unit_groups})
                if foreign:
                    problems.append(f"its gradient all-reduce carries {', '.join(foreign)}")
                    blocks += foreign
                if sorted(call["ranks"]) != sorted(rank["slot_ranks"]):
                    problems.append(f"its gradient all-reduce runs over ranks {call['ranks']}, not its "
                                    f"block's replicas {rank['slot_ranks']}")
                    blocks += [g for g in unit_groups if g not in shared]
            elif call["op"].startswith("shared_average"):
                if call["shapes"] != rank["expected_shared"]:
                    problems.append(f"{call['op']} carries {len(call['shapes'])} tensors, not the "
                                    f"{len(rank['expected_shared'])} of the shared groups")
                    blocks += rank["owned"]
            else:
                problems.append(f"a training step sends {call['op']} ({call['kind']})")
                blocks += rank["owned"]
        names = [rank["unit_names"][u] for u in rank["units"]]
        if problems:
            checks.append(Check("distributed", subject, False,
                                f"{layout}; trains {', '.join(names)}: " + "; ".join(dict.fromkeys(problems)),
                                "gradient crosses blocks (collective)",
                                tuple(dict.fromkeys(b for b in blocks if b not in shared))))
        else:
            checks.append(Check("distributed", subject, True,
                                f"{layout}; trains {', '.join(names)}; syncs only its block's replicas' "
                                "gradients and the shared groups"))
    return checks
