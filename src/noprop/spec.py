"""What a model needs to know about its data: the image shape and the number of classes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    """Shape of one example (``channels x height x width``) and the number of classes."""

    channels: int
    height: int
    width: int
    num_classes: int

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {self.num_classes}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def image_size(self) -> int:
        """Number of values in one image (the prototype embedding dimension)."""
        return self.channels * self.height * self.width
