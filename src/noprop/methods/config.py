"""A method's own configuration: a frozen dataclass of its hyperparameters, owned by its module.

Each method module declares ``XConfig(MethodConfig)`` with :func:`~noprop.settings.setting`
fields (help text, range, ``shape=True`` where the value fixes parameter shapes). The method is
built from ``(spec, config)``, keeps it as ``method.config``, and a checkpoint saves it, so a
loaded run is rebuilt from exactly the values it trained with. Building a config refuses a
setting the method does not take, naming the ones it does::

    >>> DTConfig.build("dt", {"num_blocks": 5, "eta": "0.1"})   # "0.1" from YAML: a number
    DTConfig(conv_padding='auto', embedding='onehot', embedding_dim=20, num_blocks=5, eta=0.1, ...)
    >>> CTConfig.build("ct", {"num_blocks": 5})
    ConfigError: method ct does not take num_blocks; it takes: conv_padding, embedding, ...

The shared pieces below (the encoder; the class embedding; a fully connected network's layers)
are bases, so a default such as the paper's ``embedding_dim = 20`` is written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from noprop.embeddings import EMBEDDING_KINDS
from noprop.encoders import EncoderFactory, check_encoder_name, factory_path
from noprop.settings import ConfigError, check_fields, setting, setting_fields
from noprop.spec import DataSpec

C = TypeVar("C", bound="MethodConfig")


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's config; a method without hyperparameters uses it as is."""

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def names(cls) -> list[str]:
        """The settings this config takes, sorted."""
        return sorted(f.name for f in setting_fields(cls))

    @classmethod
    def shape_names(cls) -> list[str]:
        """The settings that fix parameter shapes (a checkpoint must agree on them)."""
        return [f.name for f in setting_fields(cls) if f.metadata["shape"]]

    @classmethod
    def refusal(cls, method: str, names: list[str]) -> ConfigError:
        """The one-line error for settings ``names`` that method ``method`` does not take."""
        takes = ", ".join(cls.names()) or "no settings of its own"
        return ConfigError(f"method {method} does not take {', '.join(sorted(names))}; it takes: {takes}")

    @classmethod
    def build(cls: type[C], method: str, settings: Mapping[str, Any]) -> C:
        """The config from ``settings`` (``None`` values: the default); unknown names refused."""
        given = {k: v for k, v in settings.items() if v is not None}
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            raise cls.refusal(method, unknown)
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ConvPaddingConfig(MethodConfig):
    """Methods built on the paper's conv stack (``local`` cuts it into stages; the rest use it as
    their ``paper`` encoder)."""

    conv_padding: str = setting(
        "auto", "conv padding of the paper's conv stack (other encoders ignore it): valid (the paper's), "
        "same, or auto (valid unless images are under 16 px)", choices=("auto", "valid", "same"), shape=True)


@dataclass(frozen=True)
class EncoderConfig(ConvPaddingConfig):
    """Methods whose blocks read the input through an encoder (:mod:`noprop.encoders`).

    ``encoder`` may also be given as a callable (Python API); it is kept as its import path,
    which is what the run's config and checkpoint record.
    """

    encoder: str = setting("auto", "the blocks' input encoder: auto (paper for images, mlp for feature "
                           "vectors), paper (the paper's conv stack), mlp (feature vectors), resnet "
                           "(images), or package.module:factory", shape=True, metavar="NAME")
    encoder_width: int | None = setting(None, "mlp: hidden units (256); resnet: channels of the first "
                                        "stage (16)", positive=True, shape=True)
    encoder_depth: int | None = setting(None, "mlp: hidden layers (2); resnet: depth 6n+2 (20)",
                                        positive=True, shape=True)
    def __post_init__(self) -> None:
        if callable(self.encoder):
            object.__setattr__(self, "encoder", factory_path(self.encoder))
        super().__post_init__()
        check_encoder_name(self.encoder, self.encoder_width, self.encoder_depth)

    def encoder_factory(self, spec: DataSpec, *, batch_norm: bool) -> EncoderFactory:
        """What builds this method's encoders for ``spec`` (one fresh module per call of build)."""
        return EncoderFactory(self.encoder, spec, batch_norm, self.encoder_width, self.encoder_depth,
                              self.conv_padding)


@dataclass(frozen=True)
class EmbeddingConfig(EncoderConfig):
    """Methods that denoise (or flow to) a class embedding ``W_embed`` of dimension d."""

    embedding: str = setting("onehot", "class embedding: onehot (d = C), learned (d = embedding_dim), "
                             "prototype (d = image size)", choices=EMBEDDING_KINDS, shape=True)
    embedding_dim: int = setting(20, "d of learned embeddings (the paper's 20); onehot and prototype "
                                 "fix d themselves and ignore it", positive=True, shape=True)


def layer_stack_config(num_layers: int, layer_width: int) -> type[MethodConfig]:
    """The config base of a fully connected method (ff, dtp, ccl): ``num_layers`` hidden layers of
    ``layer_width`` units, the defaults its paper's network::

        @dataclass(frozen=True)
        class DTPConfig(layer_stack_config(num_layers=7, layer_width=240)): ...
    """
    layers, width = num_layers, layer_width  # in the class body the fields shadow these names

    @dataclass(frozen=True)
    class LayerStackConfig(MethodConfig):
        num_layers: int = setting(layers, "hidden layers of the fully connected network", positive=True,
                                  shape=True)
        layer_width: int = setting(width, "units per hidden layer of the fully connected network",
                                   positive=True, shape=True)

        def layer_sizes(self, inputs: int, outputs: int | None = None) -> list[int]:
            """``[inputs, layer_width, ..., layer_width(, outputs)]``: each layer's input and output size."""
            return [inputs, *[self.layer_width] * self.num_layers, *([] if outputs is None else [outputs])]

    return LayerStackConfig
