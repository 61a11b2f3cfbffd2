"""Typed settings: a dataclass field that knows its help text, its range and whether it fixes shapes.

Every configuration in the package (the run's :class:`~noprop.config.RunConfig`, each method's
own config) declares its fields with :func:`setting`. :func:`check_fields` turns what a user
wrote into the field's type and checks its range, so the command line, YAML files and the Python
API give the same one-line error::

    lr: 1e-3        # PyYAML reads the string "1e-3": accepted as the number 0.001
    lr: fast        # ConfigError: lr must be a number, got 'fast'

The command line builds its flags from the same fields (:mod:`noprop.commands.args`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and how to fix it."""


def setting(
    default: Any,
    help: str,
    *,
    shape: bool = False,
    choices: Sequence[str] | None = None,
    positive: bool = False,
    minimum: float | None = None,
    flags: Sequence[str] = (),
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its metadata.

    ``shape``: the value fixes parameter shapes (a checkpoint only loads into a config that agrees);
    ``positive``: ``> 0``; ``minimum``: ``>= minimum``; ``flags``: extra command-line spellings
    (``-T``); ``cli=False``: no command-line flag.
    """
    meta = {"help": help, "shape": shape, "choices": tuple(choices) if choices else None,
            "positive": positive, "minimum": minimum, "flags": tuple(flags), "metavar": metavar,
            "cli": cli}
    return dataclasses.field(default=default, metadata=meta)


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """``(base type, optional)`` of field ``name``: ``int | None`` gives ``(int, True)``."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return str, False
    return hint, False


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(name: str, base: type, value: Any) -> Any:
    """``value`` as a ``base`` (bool, int, float, str), accepting the strings people write."""
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if base is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(number):  # NaN slips past every range check; inf is no setting either
            raise ConfigError(f"{name} must be a finite number, got {number}")
        return number
    if base is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def check_value(f: dataclasses.Field, base: type, value: Any) -> None:
    """Raise :class:`ConfigError` if ``value`` is outside field ``f``'s range or choices."""
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{f.name} must be one of {', '.join(meta['choices'])}; got {value!r}")
    if meta.get("positive") and not value > 0:
        kind = "a positive integer" if base is int else "positive"
        raise ConfigError(f"{f.name} must be {kind}, got {value}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(f"{f.name} must be >= {meta['minimum']:g}, got {value}")


def check_fields(obj: Any) -> None:
    """Coerce and range-check every field of dataclass instance ``obj`` in place (frozen too)."""
    for f in dataclasses.fields(obj):
        if "help" not in f.metadata:
            continue
        base, optional = field_type(type(obj), f.name)
        value = getattr(obj, f.name)
        if value is None:
            if optional:
                continue
            raise ConfigError(f"{f.name} must be given")
        value = coerce(f.name, base, value)
        check_value(f, base, value)
        object.__setattr__(obj, f.name, value)


def setting_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` declared with :func:`setting`."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]
