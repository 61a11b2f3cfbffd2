"""What a model needs to know about its data: the shape of one input and the number of classes.

An input is an image ``(channels, height, width)`` or a vector of features ``(D,)`` (a table's
row); any other shape is allowed for a user's own encoder. Encoders that need images (the paper's
conv block, the ResNet) ask :attr:`DataSpec.channels` and friends, which fail in one line for
inputs that are not images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noprop.settings import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """Shape of one example (``input_shape``) and the number of classes."""

    input_shape: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"input shape must be non-empty and positive, got {shape}")
        if self.num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {self.num_classes}")

    @classmethod
    def image(cls, channels: int, height: int, width: int, num_classes: int) -> DataSpec:
        """The spec of ``channels x height x width`` images in ``num_classes`` classes."""
        return cls((channels, height, width), num_classes)

    @classmethod
    def vector(cls, features: int, num_classes: int) -> DataSpec:
        """The spec of feature vectors of length ``features`` (a table's rows)."""
        return cls((features,), num_classes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSpec:
        """From :meth:`to_dict`, or from an older checkpoint's ``channels/height/width``."""
        if "input_shape" in d:
            return cls(tuple(d["input_shape"]), int(d["num_classes"]))
        return cls.image(int(d["channels"]), int(d["height"]), int(d["width"]), int(d["num_classes"]))

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes}

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def _image_dim(self, axis: int) -> int:
        if not self.is_image:  # a user's data meeting image-only code: a setting to change, in one line
            raise ConfigError(f"inputs of {self.describe()} are not images (channels x height x width)")
        return self.input_shape[axis]

    @property
    def channels(self) -> int:
        return self._image_dim(0)

    @property
    def height(self) -> int:
        return self._image_dim(1)

    @property
    def width(self) -> int:
        return self._image_dim(2)

    @property
    def input_size(self) -> int:
        """Number of values in one input (the prototype embedding dimension)."""
        return math.prod(self.input_shape)

    def describe(self) -> str:
        """``3x32x32`` for images, ``30 features`` for vectors."""
        if len(self.input_shape) == 1:
            return f"{self.input_shape[0]} features"
        return "x".join(map(str, self.input_shape))
