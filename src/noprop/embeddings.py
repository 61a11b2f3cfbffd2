"""Class embeddings ``W_embed`` (C x d): the clean targets ``u_y`` that NoProp blocks denoise toward.

Three kinds (paper Sec. 2.2.1 and Table 1):

* ``onehot``    - fixed identity, ``d = C``; nothing to learn.
* ``learned``   - trainable, ``d = embedding_dim`` (paper: 20); orthogonal initialisation when
  ``d >= C``, otherwise random normal.
* ``prototype`` - trainable, ``d`` = the flattened image size; each class starts from the training
  image with the smallest median distance to the other images of its class. Blocks treat the noisy
  label as an image (see :mod:`noprop.blocks`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from noprop.spec import DataSpec

EmbeddingKind = Literal["onehot", "learned", "prototype"]
EMBEDDING_KINDS: tuple[str, ...] = ("onehot", "learned", "prototype")


def embedding_dim_for(kind: EmbeddingKind, spec: DataSpec, learned_dim: int) -> int:
    """``d`` for each embedding kind: C (one-hot), ``learned_dim``, or the image size (prototype)."""
    return {"onehot": spec.num_classes, "learned": learned_dim, "prototype": spec.input_size}[kind]


class ClassEmbedding(nn.Module):
    """The matrix ``W_embed`` with rows ``u_y``; trainable unless one-hot."""

    def __init__(self, kind: EmbeddingKind, num_classes: int, dim: int | None = None) -> None:
        super().__init__()
        if kind not in EMBEDDING_KINDS:
            raise ValueError(f"unknown embedding kind {kind!r}; choose one of {EMBEDDING_KINDS}")
        self.kind = kind
        self.num_classes = num_classes
        if kind == "onehot":
            self.register_buffer("weight", torch.eye(num_classes))
            return
        if dim is None or dim < 1:
            raise ValueError(f"{kind} embeddings need a positive dim, got {dim}")
        weight = torch.empty(num_classes, dim)
        if kind == "learned" and dim >= num_classes:
            nn.init.orthogonal_(weight)
        else:
            nn.init.normal_(weight)
        self.weight = nn.Parameter(weight)

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @property
    def trainable(self) -> bool:
        return isinstance(self.weight, nn.Parameter)

    def forward(self, y: Tensor) -> Tensor:
        """``u_y`` for integer labels ``y`` (shape ``(batch,)`` -> ``(batch, d)``)."""
        return self.weight[y]

    @torch.no_grad()
    def init_prototypes(self, images: Tensor, labels: Tensor, max_per_class: int = 1000) -> None:
        """Set each row to the class medoid: the image with the smallest median distance to the rest.

        Euclidean distance on the normalised, flattened images. At most ``max_per_class`` images
        per class are compared (the first ones), which keeps this O(n^2) step cheap.
        """
        if self.kind != "prototype":
            raise ValueError("init_prototypes is only for prototype embeddings")
        flat = images.reshape(images.shape[0], -1).float()
        if flat.shape[1] != self.dim:
            raise ValueError(f"images have {flat.shape[1]} values, embeddings have dim {self.dim}")
        for c in range(self.num_classes):
            members = flat[labels == c][:max_per_class]
            if len(members) == 0:
                raise ValueError(f"class {c} has no training images to take a prototype from")
            distances = torch.cdist(members, members)
            self.weight[c] = members[distances.median(dim=1).values.argmin()]
