"""The contract every registered method keeps: disjoint, complete parameter groups, and a step on a
unit moves only that unit's groups, with real optimizer state carried from the step before.

A single global optimizer (one AdamW over everything, grads zeroed instead of dropped) breaks the
second property through momentum and weight decay; the test shows the check catches it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from noprop.config import RunConfig
from noprop.methods import METHODS, Method, build_method
from noprop.methods.forward_forward import ForwardForward
from noprop.training.trainer import Trainer

#: Small settings, given to the methods that take them.
SMALL = {"num_blocks": 3, "inference_steps": 4, "ode_steps": 8}


#: The user's own encoder (tests/user_encoders.py), in the variants marked ``@user``.
USER_ENCODER = "user_encoders:conv_for"


def make_method(name: str, spec) -> Method:
    name, _, encoder = name.partition("@")
    if encoder:
        base = "dt" if name == "dt-fused" else name
        extra = {"fused": True} if name == "dt-fused" else {}
        return build_method(base, spec, {**small_settings(base), **extra, "encoder": USER_ENCODER})
    if name == "dt-fused":
        return build_method("dt", spec, {**small_settings("dt"), "fused": True})
    if name == "ff":
        return ForwardForward(spec, num_layers=2, layer_width=32)  # the paper's 4 x 2000 is slow to step here
    return build_method(name, spec, small_settings(name))


def small_settings(name: str) -> dict:
    takes = METHODS[name].config_class.names()
    return {k: v for k, v in SMALL.items() if k in takes}


VARIANTS = [*sorted(METHODS), "dt-fused",
            *(f"{m}@user" for m in ("dt", "dt-fused", "ct", "fm", "backprop", "cnn"))]


def _trainer(name: str, blobs) -> Trainer:
    torch.manual_seed(0)
    method = make_method(name, blobs.spec)
    method.prepare(blobs.train_x, blobs.train_y)
    base = name.partition("@")[0]
    config = RunConfig(method="dt" if base == "dt-fused" else base, epochs=1, batch_size=16,
                       progress=False, device="cpu")
    return Trainer(method, blobs, config)


def _snapshot(method: Method) -> dict[str, list[torch.Tensor]]:
    return {g: [p.detach().clone() for p in ps] for g, ps in method.parameter_groups().items()}


def groups_moved_outside(method: Method, unit: int, step: Callable[[int], object]) -> list[str]:
    """The groups that ``step(unit)`` changed although ``unit`` does not own them."""
    before = _snapshot(method)
    step(unit)
    after = _snapshot(method)
    owned = set(method.training_units()[unit].groups)
    return sorted(g for g in before if g not in owned
                  and not all(torch.equal(a, b) for a, b in zip(before[g], after[g], strict=True)))


def _units_for_two_steps(method: Method) -> tuple[int, int]:
    """Two different units where the method has them (else the one unit twice)."""
    n = len(method.training_units())
    return (0, 1) if n > 1 else (0, 0)


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_groups_are_disjoint_and_cover_every_trainable_parameter(name: str, blobs) -> None:
    method = make_method(name, blobs.spec)
    seen: dict[int, str] = {}
    for group, params in method.parameter_groups().items():
        for p in params:
            assert id(p) not in seen, f"a parameter is in both {seen[id(p)]} and {group}"
            seen[id(p)] = group
    missing = [n for n, p in method.named_parameters() if p.requires_grad and id(p) not in seen]
    assert not missing, f"parameters in no group: {missing}"
    groups = set(method.parameter_groups())
    for unit in method.training_units():
        assert set(unit.groups) <= groups, f"unit {unit.name} names unknown groups"
    assert {g for u in method.training_units() for g in u.groups} == groups, "a group no unit trains"


@pytest.mark.parametrize("name", VARIANTS)
def test_a_step_on_a_unit_moves_only_its_groups_after_another_units_step(name: str, blobs) -> None:
    trainer = _trainer(name, blobs)
    x, y = blobs.train_x[:16], blobs.train_y[:16]
    first, second = _units_for_two_steps(trainer.method)
    trainer.train_step(first, x, y)  # leaves optimizer state (Adam moments) behind
    moved = groups_moved_outside(trainer.method, second, lambda u: trainer.train_step(u, x, y))
    assert moved == [], f"{name}: a step on unit {second} moved {moved}"


def test_the_locality_check_fails_a_single_global_optimizer(blobs) -> None:
    """The deliberately broken variant: one AdamW over all parameters, grads zeroed (not dropped)."""
    trainer = _trainer("dt", blobs)
    method = trainer.method
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3, weight_decay=1e-3)
    x, y = blobs.train_x[:16], blobs.train_y[:16]

    def global_step(unit: int) -> None:
        method.unit_loss(unit, x, y).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    global_step(0)
    assert "block1" in groups_moved_outside(method, 1, global_step)
