"""Denormal floats are flushed to zero during CPU training, so long runs keep their speed.

The seeded state below makes denormals certain: the inputs are all zero, so the first layer's
weights get exactly zero gradient, and Adam's first moment of those weights, seeded at 2e-38,
shrinks by beta1 = 0.9 per step into the denormal range (< 1.18e-38) within a few steps.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from noprop import device
from noprop.config import RunConfig
from noprop.data import ClassificationData
from noprop.device import flushed_denormals
from noprop.run import build_trainer
from noprop.training.optimizers import optimizer_state
from noprop.training.trainer import Trainer

TINY = torch.finfo(torch.float32).tiny


def _denormals(tensors) -> int:
    return sum(int(((t != 0) & (t.abs() < TINY)).sum()) for t in tensors if t.is_floating_point())


def _zero_input_data() -> ClassificationData:
    y = torch.arange(96) % 4
    return ClassificationData("zeros", torch.zeros(96, 1, 8, 8), y, torch.zeros(32, 1, 8, 8), y[:32],
                              num_classes=4)


def _train_with_seeded_moments(flush: bool) -> Trainer:
    data = _zero_input_data()
    config = RunConfig(method="dt", num_blocks=2, epochs=1, batch_size=16, progress=False,
                       flush_denormal=flush)
    trainer = build_trainer(config, data)
    trainer.fit()  # creates the optimizer state
    for opt in trainer.optimizers.values():
        for state in opt.state.values():
            state["exp_avg"].fill_(2e-38)
    trainer.config = trainer.config.replace(epochs=2)
    trainer.fit()
    return trainer


def _state_tensors(trainer: Trainer) -> list[torch.Tensor]:
    return [*trainer.method.parameters(), *optimizer_state(trainer.optimizers.values())]


@pytest.mark.usefixtures("one_thread")
def test_cpu_training_leaves_no_denormals_in_parameters_or_optimizer_state() -> None:
    with flushed_denormals() as supported:
        pass
    if not supported:
        pytest.skip("this CPU cannot flush denormals")
    trainer = _train_with_seeded_moments(flush=True)
    assert _denormals(_state_tensors(trainer)) == 0
    assert trainer.denormals_flushed


@pytest.mark.usefixtures("one_thread")
def test_without_flushing_the_same_steps_create_denormals() -> None:
    """The control: the seeded steps do create denormals, so the test above could fail."""
    trainer = _train_with_seeded_moments(flush=False)
    assert _denormals(_state_tensors(trainer)) > 0
    assert not trainer.denormals_flushed


def test_flushing_is_restored_after_the_outermost_block() -> None:
    tiny = torch.tensor([1e-30])
    with flushed_denormals() as on:
        with flushed_denormals():
            pass
        inner = (tiny * 1e-10).item()  # still flushed after the nested block ended
    after = (tiny * 1e-10).item()
    if on:
        assert inner == 0.0
    assert after != 0.0


def test_flushing_reaches_every_thread_of_an_op_whose_threads_started_before_it() -> None:
    """The flags are per thread: torch's OpenMP threads started before the flush must get it too
    (without that, half of a two-thread op's results stayed denormal and a run slowed 10x)."""
    with contextlib.suppress(ImportError):  # brings a second libgomp whose threads are not torch's
        import sklearn  # noqa: F401
    device._openmp_parallel.cache_clear()  # choose the runtime again, with both loaded
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.full((1 << 22,), 1e-20)  # large enough to be split between the two threads
        assert _denormals([x * 1e-20]) == x.numel()  # the team exists now, flags off
        with flushed_denormals() as on:
            inside = _denormals([x * 1e-20])
        after = _denormals([x * 1e-20])
    finally:
        torch.set_num_threads(threads)
    if not on:
        pytest.skip("this CPU cannot flush denormals")
    assert inside == 0
    assert after == x.numel()  # off again in every thread
