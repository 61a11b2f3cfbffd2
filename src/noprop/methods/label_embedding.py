"""What every method that works in a class-embedding space shares: NoProp-DT/CT/FM and backprop.

Such a method denoises toward (or flows to) the rows ``u_y`` of a class embedding ``W_embed``
(:class:`~noprop.embeddings.ClassEmbedding`, of the kind and ``d`` its
:class:`~noprop.methods.config.EmbeddingConfig` names) and reads a class off a point ``z`` of that
space with a linear classifier. :class:`LabelEmbeddingMethod` owns that setup, written once::

    class Mine(LabelEmbeddingMethod):
        def __init__(self, spec, config=None, **settings):
            super().__init__(spec, config, **settings)
            self.schedule = CosineSchedule(4)              # any noising path (noprop.schedules)
            dim = self.add_embedding()                     # self.embedding: W_embed, C x d
            self.block = MyBlock(dim)
            self.add_classifier()                          # self.classifier: Linear(d, C)

        ...  u_hat = self.label_estimate(self.block(x, z))  # softmax(logits) @ W_embed

The two ``add_`` calls are separate so that each method keeps the order in which its modules are
built and registered (the random initialisations, ``state_dict`` and ``parameters()`` follow it).
:meth:`prepare` starts prototype embeddings from the training images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noprop.embeddings import ClassEmbedding, embedding_dim_for
from noprop.methods.base import Method
from noprop.methods.config import EmbeddingConfig


class LabelEmbeddingMethod(Method):
    """A :class:`Method` with a class embedding ``self.embedding`` and a linear ``self.classifier`` on z."""

    config_class = EmbeddingConfig
    config: EmbeddingConfig
    #: every such method predicts by running a sampler (or flow) from ``z_0 ~ N(0, I)``
    stochastic_prediction = True
    embedding: ClassEmbedding
    #: ``Linear(d, C)``; ``None`` where a method reads classes off ``z`` another way (FM, one-hot).
    #: Set by :meth:`add_classifier` (no class-level default: it would hide the registered module).
    classifier: nn.Linear | None

    def add_embedding(self) -> int:
        """Build ``self.embedding`` (``W_embed``, C x d) from the config; return ``d``."""
        c = self.config
        dim = embedding_dim_for(c.embedding, self.spec, c.embedding_dim)
        self.embedding = ClassEmbedding(c.embedding, self.spec.num_classes, dim)
        return dim

    def add_classifier(self) -> nn.Linear:
        """Build ``self.classifier``, the linear map from a point ``z`` of the embedding space to C logits."""
        self.classifier = nn.Linear(self.embedding.dim, self.spec.num_classes)
        return self.classifier

    @torch.no_grad()
    def init_classifier_as_readout(self, scale: float = 1.0) -> None:
        """Start the classifier as the embedding's readout, ``W_c = scale * u_c / |u_c|^2``, bias 0,
        so ``logit_c(u_y) = scale`` for ``c = y`` (one-hot: ``W = scale * I``). A classifier on a
        point of the simplex spanned by the embeddings otherwise starts with logits that barely
        differ (docs/methods.md, "The backprop baseline")."""
        assert self.classifier is not None
        w = self.embedding.weight
        self.classifier.weight.copy_(scale * w / w.pow(2).sum(1, keepdim=True))
        self.classifier.bias.zero_()

    def readout_parameters(self) -> list[nn.Parameter]:
        """The classifier's parameters, then the embedding's (none if one-hot): the usual ``shared`` group."""
        classifier = [] if self.classifier is None else list(self.classifier.parameters())
        return classifier + list(self.embedding.parameters())

    def prepare(self, train_x: Tensor, train_y: Tensor) -> None:
        """Start prototype embeddings at each class's medoid training image (others: nothing to do)."""
        if self.embedding.kind == "prototype":
            self.embedding.init_prototypes(train_x, train_y)

    def label_estimate(self, logits: Tensor) -> Tensor:
        """``u_hat = softmax(logits) @ W_embed``: a block's estimate of the clean label embedding."""
        return F.softmax(logits, dim=-1) @ self.embedding.weight
