"""Training methods behind one interface (:class:`noprop.methods.base.Method`), found by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noprop.methods.auglocal import AugLocal
from noprop.methods.backprop import BackpropChain, PlainCNN
from noprop.methods.base import LossOutput, Method, TrainingUnit
from noprop.methods.ccl import CounterCurrentLearning
from noprop.methods.config import MethodConfig
from noprop.methods.ct import NoPropCT
from noprop.methods.ct_adjoint import AdjointCT
from noprop.methods.dt import NoPropDT
from noprop.methods.dtp import DifferenceTargetPropagation
from noprop.methods.fg import ForwardGradient
from noprop.methods.fm import NoPropFM
from noprop.methods.forward_forward import ForwardForward
from noprop.methods.local import LocalLearning
from noprop.methods.predsim import PredSim
from noprop.spec import DataSpec

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (NoPropDT, NoPropCT, NoPropFM)}

#: Baselines (docs/benchmarks.md): back-propagation and earlier backprop-free methods.
METHODS.update({cls.name: cls for cls in (BackpropChain, PlainCNN, ForwardForward, LocalLearning,
                                          PredSim, ForwardGradient, DifferenceTargetPropagation,
                                          AdjointCT, CounterCurrentLearning, AugLocal)})


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None


def build_method(name: str, spec: DataSpec, config: MethodConfig | Mapping[str, Any] | None = None) -> Method:
    """Method ``name`` built from its config (or a mapping of its settings; others are refused)."""
    cls = method_class(name)
    if isinstance(config, MethodConfig):
        return cls(spec, config)
    return cls(spec, cls.config_class.build(name, config or {}))


__all__ = ["METHODS", "LossOutput", "Method", "MethodConfig", "NoPropCT", "NoPropDT", "NoPropFM",
           "TrainingUnit", "build_method", "method_class"]
