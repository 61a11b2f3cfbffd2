"""Encoders: the part of a block that reads the input ``x`` and returns features ``(batch, F)``.

The paper's block is one encoder (its conv stack, :class:`ImageBranch`) joined
to a label path, a time path (CT/FM) and a head; only the encoder changes with the data. Every
method's config names its encoder (``encoder`` setting):

* ``paper``  - the paper's conv stack, FC(256) and BatchNorm (DT) or ReLU (CT/FM); the default;
* ``mlp``    - for feature vectors (a table's rows): ``[Linear(W) - BN (DT) - ReLU] x depth``;
* ``resnet`` - a CIFAR-style residual network (He et al. 2016, Sec. 4.2: depth 6n+2, stages of
  W, 2W, 4W channels, global average pooling; 0.27 M parameters at depth 20, W = 16);
* ``package.module:factory`` - the user's own: a callable taking no arguments, or the
  :class:`~noprop.spec.DataSpec`, that returns an ``nn.Module`` mapping a batch of inputs to
  ``(batch, features)``. Its feature size is found by running it once on zeros.

A method calls :meth:`EncoderFactory.build` once per block, so NoProp-DT's blocks never share
an encoder; :func:`check_unshared` refuses a factory that hands out one module twice (a gradient
would cross blocks through it), unless every shared parameter is frozen (``requires_grad=False``):
a frozen feature extractor in front of the blocks is allowed.

The paper's image path (v1 Fig. 6 / v2 Fig. 5, both kinds of block)::

    conv3x3(32)-ReLU-maxpool2-dropout(0.2)
    conv3x3(64)-ReLU-dropout(0.2)
    conv3x3(128)-ReLU-maxpool2-dropout(0.2)
    flatten-FC(256)-[BN for DT | ReLU for CT/FM]

Its convolutions are unpadded ("valid"): only that reproduces the paper's parameter counts (v2
Table 5, 0.92 M per MNIST one-hot DT block). Images too small for three valid convolutions (e.g.
the 8x8 digits) use padding 1 instead; ``conv_padding="auto"`` picks.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from noprop.dropout import Dropout
from noprop.settings import ConfigError
from noprop.spec import DataSpec

Padding = Literal["auto", "valid", "same"]
HIDDEN = 256
DROPOUT = 0.2


def resolve_padding(padding: Padding, spec: DataSpec) -> int:
    """Conv padding in pixels: 0 ("valid", the paper's) unless the image is too small for it."""
    if padding == "valid":
        return 0
    if padding == "same":
        return 1
    if padding != "auto":
        raise ValueError(f"conv padding must be auto, valid or same, got {padding!r}")
    return 0 if min(spec.height, spec.width) >= 16 else 1


def conv_stack_output(size: int, padding: int) -> int:
    """Side length after the image branch's conv-pool-conv-conv-pool (0: the image does not fit)."""
    for op in ("conv", "pool", "conv", "conv", "pool"):
        if op == "conv":
            if size + 2 * padding < 3:
                return 0
            size = size + 2 * padding - 2
        else:
            if size < 2:
                return 0
            size //= 2
    return size


def smallest_image(padding: int) -> int:
    """The smallest side length the image branch accepts at ``padding``."""
    return next(s for s in range(1, 64) if conv_stack_output(s, padding) > 0)


def check_image_fits(spec: DataSpec, padding: int) -> None:
    """A one-line error, instead of a convolution's traceback, for images too small for the block."""
    if min(conv_stack_output(spec.height, padding), conv_stack_output(spec.width, padding)) > 0:
        return
    kind = "valid (unpadded)" if padding == 0 else "padded"
    hint = (f"use --conv-padding same (needs {smallest_image(1)}x{smallest_image(1)}) or larger images"
            if padding == 0 else "use larger images")
    side = smallest_image(padding)
    raise ConfigError(f"{spec.height}x{spec.width} images are too small for the paper's block with {kind} "
                      f"convolutions, which needs at least {side}x{side}; {hint}")


class ImageBranch(nn.Module):
    """Conv stack of the paper's block ending in FC(256) and either BatchNorm (DT) or ReLU (CT/FM)."""

    def __init__(self, spec: DataSpec, *, padding: int, batch_norm: bool) -> None:
        super().__init__()
        check_image_fits(spec, padding)
        self.spec = spec
        # pooling before the ReLU computes the paper's ReLU-then-pool, values and gradients bit for
        # bit (max commutes with the monotone ReLU, and a window whose maximum is <= 0 passes no
        # gradient either way), on a quarter of the elements
        self.features = nn.Sequential(
            nn.Conv2d(spec.channels, 32, 3, padding=padding),
            nn.MaxPool2d(2),
            nn.ReLU(),
            Dropout(DROPOUT),
            nn.Conv2d(32, 64, 3, padding=padding),
            nn.ReLU(),
            Dropout(DROPOUT),
            nn.Conv2d(64, 128, 3, padding=padding),
            nn.MaxPool2d(2),
            nn.ReLU(),
            Dropout(DROPOUT),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *spec.input_shape)).shape[1]
        self.project = nn.Linear(flat, HIDDEN)
        self.out = nn.BatchNorm1d(HIDDEN) if batch_norm else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(batch, C, H, W)``, or flat ``(batch, C*H*W)`` for a prototype-shaped label."""
        if x.dim() == 2:
            x = x.reshape(x.shape[0], *self.spec.input_shape)
        return self.out(self.project(self.features(x)))


BUILTIN_ENCODERS: tuple[str, ...] = ("auto", "paper", "mlp", "resnet")
#: The sizing arguments of the built-ins that take them: (width, depth) defaults.
SIZED_DEFAULTS: dict[str, tuple[int, int]] = {"mlp": (HIDDEN, 2), "resnet": (16, 20)}


def factory_path(factory: Callable[..., nn.Module]) -> str:
    """``module:qualname`` of a user's factory, checked to import back to the same object.

    The path is what the run's config and checkpoint record, so a loaded run can rebuild the
    encoder; a lambda or a function defined inside another one has no such path.
    """
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if module is None or "<" in qualname:
        raise ConfigError(f"encoder {factory!r} has no import path (a lambda or a nested function); "
                          "define the factory with def or class at module level")
    path = f"{module}:{qualname}"
    if resolve_factory(path) is not factory:
        raise ConfigError(f"encoder {path} does not import back to the factory given")
    return path


def unportable_encoder(path: str | None) -> str | None:
    """A one-line warning when a saved run's encoder only imports in the process that made it
    (defined in the script run as ``__main__``): saving works, loading elsewhere cannot."""
    if not path or path.partition(":")[0] != "__main__":
        return None
    return (f"encoder {path} is defined in the script being run, so this saved model will not load "
            "in another process (cannot import __main__); move the encoder into an importable module "
            "and pass it from there")


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """The callable that ``package.module:factory`` names; a one-line error if it cannot be had."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"encoder must be one of {', '.join(BUILTIN_ENCODERS)} or "
                          f"package.module:factory, got {path!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # `noprop train --encoder mymodule:f` finds ./mymodule.py
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import encoder {path}: {err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"cannot import encoder {path}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"encoder {path} is not callable")
    return obj  # type: ignore[return-value]


def check_encoder_name(name: str, width: int | None, depth: int | None) -> None:
    """Refuse settings that do not apply to encoder ``name`` (one line each). ``conv_padding`` is
    not refused for other encoders: the paper's presets set it, and ``--encoder`` overrides a preset."""
    if name not in BUILTIN_ENCODERS:
        resolve_factory(name)
    for setting, value in (("encoder_width", width), ("encoder_depth", depth)):
        if value is not None and name not in SIZED_DEFAULTS:
            raise ConfigError(f"{setting} applies to the {' and '.join(SIZED_DEFAULTS)} encoders, "
                              f"not to {name}: choose one with --encoder")
    if name == "resnet" and depth is not None and (depth - 2) % 6:
        raise ConfigError(f"resnet depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}")


class MLPEncoder(nn.Module):
    """``[Linear(width) - BatchNorm (if asked) - ReLU] x depth`` on the flattened input."""

    def __init__(self, in_features: int, width: int, depth: int, *, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers.append(nn.Linear(in_features if i == 0 else width, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """``ReLU(x + BN(conv(ReLU(BN(conv(x))))))``; a 1x1 strided projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNetEncoder(nn.Module):
    """CIFAR ResNet of depth ``6n+2``: conv(W), three stages of n blocks (W, 2W, 4W; stride 2 at
    the second and third), global average pooling: ``4W`` features. Any image size of 4+ pixels."""

    def __init__(self, channels: int, width: int, depth: int) -> None:
        super().__init__()
        n = (depth - 2) // 6
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU()]
        cin = width
        for stage in range(3):
            cout = width * 2**stage
            for i in range(n):
                layers.append(BasicBlock(cin, cout, 2 if stage and i == 0 else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _needs_images(name: str, spec: DataSpec) -> None:
    if not spec.is_image:
        raise ConfigError(f"the {name} encoder reads images (channels x height x width); these inputs "
                          f"are {spec.describe()}: use --encoder mlp or your own")


@dataclass(frozen=True)
class EncoderFactory:
    """Builds fresh encoders for one model: ``build()`` returns a new module with new parameters.

    ``batch_norm``: the paper's DT blocks normalise their features, its CT/FM block does not;
    ``paper`` and ``mlp`` follow that (the ResNet keeps its BatchNorm, which reads only ``x``).
    """

    name: str
    spec: DataSpec
    batch_norm: bool
    width: int | None = None
    depth: int | None = None
    conv_padding: str = "auto"

    @property
    def resolved(self) -> str:
        """The encoder ``auto`` stands for: the paper's conv stack for images, the MLP for vectors."""
        if self.name != "auto":
            return self.name
        return "paper" if self.spec.is_image else "mlp"

    def build(self) -> nn.Module:
        spec, name = self.spec, self.resolved
        if name == "paper":
            _needs_images("paper", spec)
            return ImageBranch(spec, padding=resolve_padding(self.conv_padding, spec),  # type: ignore[arg-type]
                               batch_norm=self.batch_norm)
        if name in SIZED_DEFAULTS:
            width, depth = (v if v is not None else d
                            for v, d in zip((self.width, self.depth), SIZED_DEFAULTS[name], strict=True))
            if name == "mlp":
                return MLPEncoder(spec.input_size, width, depth, batch_norm=self.batch_norm)
            _needs_images("resnet", spec)
            return ResNetEncoder(spec.channels, width, depth)
        factory = resolve_factory(self.name)
        try:
            module = factory(spec) if _takes_argument(factory) else factory()
        except Exception as err:  # the user's code: one line on the CLI, the chain kept in Python
            raise ConfigError(f"encoder {self.name} raised {type(err).__name__}: {err}") from err
        if not isinstance(module, nn.Module):
            raise ConfigError(f"encoder {self.name} returned {type(module).__name__}, not an nn.Module")
        return module

    def features(self, encoder: nn.Module) -> int:
        """F of ``encoder``'s ``(batch, F)`` output, from one pass on zeros (eval mode, no grad)."""
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                out = encoder(torch.zeros(2, *self.spec.input_shape))
        except Exception as err:  # a user's module: report what it could not take, in one line
            raise ConfigError(f"encoder {self.name} fails on inputs of {self.spec.describe()}: "
                              f"{type(err).__name__}: {err}") from None
        finally:
            encoder.train(was_training)
        if not isinstance(out, Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(f"encoder {self.name} must return (batch, features), returned {shape} "
                              "for a batch of 2: end it with nn.Flatten() or a pooling layer")
        return out.shape[1]


def _takes_argument(factory: Callable[..., nn.Module]) -> bool:
    """Whether ``factory`` needs a positional argument (then it gets the DataSpec)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.default is inspect.Parameter.empty and
               p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def check_unshared(blocks: Iterable[nn.Module], name: str) -> None:
    """Refuse trainable parameters held by two blocks: their gradients would cross blocks."""
    owner: dict[int, int] = {}
    for t, block in enumerate(blocks, start=1):
        for p in block.parameters():
            if not p.requires_grad:
                continue
            if owner.setdefault(id(p), t) != t:
                raise ConfigError(f"encoder {name} gives blocks {owner[id(p)]} and {t} the same trainable "
                                  "parameters; each block needs its own (return a new module per call, or "
                                  "freeze a shared feature extractor with requires_grad_(False))")


def trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters an optimizer should see (a frozen, possibly shared extractor excluded)."""
    return [p for p in params if p.requires_grad]
