"""The face models of sections 4.5 and 4.7: an attribute model is a MobileNet whose
``num_classes`` is the number of attributes (one sigmoid per attribute); an embedding model
(``EmbeddingNet``) is a MobileNet body, a linear layer and L2 normalisation. Teachers are 1.0
MobileNets trained on the labels; students are smaller MobileNets trained to emulate them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.checks import check_int
from mobilenets.models.config import TaskConfig
from mobilenets.models.registry import build_from_config, create_model, register_builder


@dataclass(kw_only=True, slots=True)
class EmbeddingNetConfig(TaskConfig):
    """``EmbeddingNet``'s config: ``backbone`` the MobileNet's config, ``embedding_dim`` the
    embedding's size and ``resolution`` the backbone's; ``head`` names the kind, as files written
    before configs named an ``arch`` did."""

    arch: str = "embedding_net"
    embedding_dim: int
    head: str = field(init=False, default="embedding")


class EmbeddingNet(nn.Module):
    """A face-embedding network: a MobileNet body, its global pooling, a linear layer (with
    BatchNorm) and L2 normalisation, as FaceNet's embedding (Schroff et al. 2015) that section
    4.7 distils.

    Args:
        backbone: A MobileNet built with ``include_top=False`` (``MobileNetBase``); its
            ``forward_features`` and ``forward_head(pre_logits=True)`` give the pooled features.
        embedding_dim: Size of the embedding, >= 1. Default 128 (FaceNet's).

    ``forward(x)`` returns unit-length embeddings (N, embedding_dim). ``config`` describes the
    whole network (``from_config`` rebuilds it; ``modelfile.save_model`` stores it).
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int = 128):
        super().__init__()
        check_int("embedding_dim", embedding_dim)
        if getattr(backbone, "include_top", None) is not False:
            raise ValueError("backbone must be a MobileNet built with include_top=False")
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.embed = nn.Linear(backbone.num_features, embedding_dim)
        # Unit-variance weights: the output is normalised, so the weights' scale only sets how
        # far an optimizer step turns them; RMSprop's steps are ~lr per weight whatever the
        # gradient, so tiny weights (PyTorch's or TF-Slim's 0.01) would turn at random.
        nn.init.normal_(self.embed.weight, 0.0, 1.0)
        nn.init.zeros_(self.embed.bias)
        # Pooled ReLU features share a large positive mean, which would point every embedding
        # the same way; BatchNorm centres each dimension first (as ArcFace's FC-BN head).
        self.embed_bn = nn.BatchNorm1d(embedding_dim)
        self.in_channels = backbone.in_channels
        self.config = EmbeddingNetConfig(backbone=backbone.config.replace(),
                                         embedding_dim=embedding_dim,
                                         resolution=backbone.config.resolution)

    @classmethod
    def from_config(cls, config: EmbeddingNetConfig) -> "EmbeddingNet":
        """Rebuild a freshly initialised network from its ``config``."""
        net = cls(build_from_config(config.backbone), config.embedding_dim)
        net.config.resolution = config.resolution
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return F.normalize(self.embed_bn(self.embed(features)), dim=1)


class IdentityClassifier(nn.Module):
    """Identity logits from unit embeddings: ``scale * (W e + b)``, the teacher's training head.

    Normalising the features (not the weights) and scaling them is NormFace's feature
    normalisation (Wang et al. 2017); the classifier is dropped after training and the unit
    embedding kept.

    Args:
        embedding_dim: Size of the embeddings.
        num_classes: Number of training identities.
        scale: The logits' scale s > 0 (a unit embedding alone gives logits too small for
            1,000 identities).
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float):
        super().__init__()
        self.scale = scale
        self.linear = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(embeddings)


def build_backbone(cfg, include_top: bool = False, num_classes: int = 1000) -> nn.Module:
    """The MobileNet of a run config (``model``, ``width_mult``, ``dropout``, input size), with or
    without its classifier."""
    kwargs = {"dropout": cfg.dropout, "include_top": include_top, "num_classes": num_classes}
    if cfg.width_mult is not None:
        kwargs["width_mult"] = cfg.width_mult
    model = create_model(cfg.model, **kwargs)
    model.config.resolution = cfg.input_size
    return model


register_builder("embedding_net", EmbeddingNet.from_config, kind="embedding",
                 config_class=EmbeddingNetConfig)
