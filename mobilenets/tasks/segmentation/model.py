"""DeepLabv3 on a MobileNet backbone (MobileNetV2 paper, section 6.3 and its Table 7).

The model is the backbone's body run with atrous convolution at ``output_stride`` 16 or 8, a
DeepLabv3 head and a bilinear upsampling of the logits to the input size:

* ``head="aspp"``: Atrous Spatial Pyramid Pooling (DeepLabv3, section 3.3): a 1x1 convolution,
  three 3x3 convolutions with rates (6, 12, 18) at output stride 16 (doubled at 8), and image
  pooling, each with 256 channels, concatenated and projected by a 1x1 convolution.
* ``head="lite"``: the MobileNetV2 paper's on-device head (bold in its Table 7): only the 1x1
  branch and image pooling, "for computational efficiency" (section 6.3).

MobileNetV2 feeds the head its *second last* feature map (Table 7's "MNet V2*": the 320-channel
output of the last bottleneck, without the 1x1 convolution to 1280); MobileNetV1 its last.
Every convolution, the heads' included, is ``models.layers.ConvBNAct`` except the final 1x1
classifier (a biased ``nn.Conv2d``, as DeepLab's logits layer). Data, training and evaluation
live beside this module (``data``, ``train``, ``evaluate``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.checks import check_choice
from mobilenets.models.base import AtrousStride, MobileNetBase
from mobilenets.models.config import ModelConfig, TaskConfig
from mobilenets.models.layers import ConvBNAct
from mobilenets.models.registry import (ARCHS, arch_name, build_from_config, load_model,
                                        register_builder)

#: The two DeepLabv3 heads (see the module docstring).
HEADS = ("aspp", "lite")
#: ASPP rates at each output stride: (6, 12, 18) at 16, doubled at 8 (DeepLabv3, section 3.3).
ASPP_RATES = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}
#: Channels of every head branch and of the projection (DeepLabv3, section 3.3: "256 filters").
HEAD_CHANNELS = 256
#: DeepLabv3's multi-scale test inputs (its section 4.3; Table 7's "MF" adds left-right flips).
MF_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(kw_only=True, slots=True)
class DeepLabV3Config(TaskConfig):
    """``DeepLabV3``'s config: its arguments (see there; ``backbone`` the MobileNet's config,
    its ``name`` None), with ``aspp_rates`` the rates its head uses (none for the lite head)."""

    arch: str = "deeplabv3"
    num_classes: int
    head: str
    aspp_rates: list[int]
    head_channels: int
    dropout: float

    def replace(self, **changes) -> "DeepLabV3Config":
        """A copy with some fields changed; ``output_stride`` (8, 16 or 32) rebuilds the backbone
        at that stride with the same weight shapes, as DeepLab trains at 16 and evaluates at 8,
        and gives an ASPP head the new stride's rates (``load_model(path, output_stride=8)``).
        """
        stride = changes.pop("output_stride", None)
        config = ModelConfig.replace(self, **changes)
        if stride is not None and stride != config.backbone.output_stride:
            AtrousStride(stride)  # checks it
            config.backbone = config.backbone.replace(output_stride=stride)
            if config.head == "aspp":
                config.aspp_rates = list(ASPP_RATES[stride])
        return config


class DeepLabHead(nn.Module):
    """DeepLabv3's head: parallel branches on the backbone's map, concatenated, projected, then
    per-pixel logits at the map's resolution.

    Args:
        in_channels: Channels of the backbone's map, >= 1.
        num_classes: Logit channels (background included), >= 1.
        rates: Dilation rates of the 3x3 ASPP branches; ``()`` gives the lite head (the 1x1 branch
            and image pooling only). Each an integer >= 1.
        channels: Channels of each branch and of the projection. Default 256 (``HEAD_CHANNELS``).
        dropout: Dropout before the classifier, in [0, 1). Default 0.1 (TF DeepLab's
            ``concat_projection`` keeps 0.9).
        activation: Of every branch and the projection. Default ``"relu"`` (DeepLab's).

    Raises:
        ValueError: naming the argument that breaks a constraint above.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (),
                 channels: int = HEAD_CHANNELS, dropout: float = 0.1, activation: str = "relu"):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("channels", channels), *(("rates", r) for r in rates)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be {'integers' if name == 'rates' else 'an integer'}"
                                 f" >= 1, got {v!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [ConvBNAct(in_channels, channels, 1, activation=activation)]
            + [ConvBNAct(in_channels, channels, 3, dilation=r, activation=activation)
               for r in self.rates])
        # Image-level features (DeepLabv3, section 3.3): global average pooling, a 1x1
        # convolution, then upsampled (here: broadcast) to the map's size.
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                        ConvBNAct(in_channels, channels, 1, activation=activation))
        self.project = ConvBNAct(channels * (len(self.rates) + 2), channels, 1,
                                 activation=activation)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone map (N, in_channels, h, w) -> logits (N, num_classes, h, w)."""
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        y = torch.cat([b(x) for b in self.branches] + [pooled], dim=1)
        return self.classifier(self.dropout(self.project(y)))


def body_of(net: MobileNetBase) -> tuple[nn.Sequential, int]:
    """The layers of a MobileNet the head reads, and their output channels: MobileNetV2 without
    its last 1x1 convolution (Table 7's "MNet V2*: second last feature map"), V1 whole."""
    layers = list(net.features)
    if net.config.arch == "mobilenet_v2":
        layers = layers[:-1]
    body = nn.Sequential(*layers)
    channels = [m for m in body.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    return body, channels


class DeepLabV3(nn.Module):
    """DeepLabv3 on a MobileNet (MobileNetV2 paper, section 6.3).

    Build it with ``create_segmenter``; this constructor takes an already built backbone.

    Args:
        backbone: A ``MobileNetV1`` or ``MobileNetV2`` built with the wanted ``output_stride``
            (8, 16 or 32); its body is kept (without V2's last 1x1 convolution), its classifier
            dropped. Its weights are kept as they are.
        num_classes: Classes including background (index 0), >= 1. Default 21 (PASCAL VOC).
        head: ``"aspp"`` or ``"lite"``. Default ``"lite"``.
        aspp_rates: Rates of ASPP's 3x3 branches. Default None: ``ASPP_RATES[output_stride]``.
            Ignored by the lite head.
        head_channels: Channels of the head's branches. Default 256.
        dropout: Dropout before the classifier, in [0, 1). Default 0.1.

    ``forward`` returns logits (N, num_classes, H, W) at the input's size (bilinear upsampling of
    the head's output, which is H / output_stride); ``predict`` the per-pixel class ids.

    Raises:
        ValueError: for an unknown ``head`` or a backbone that is not a MobileNet.
    """

    # The backbone's input checks (4-D, channels, >= 32 pixels), with its message.
    _check_input = MobileNetBase._check_input

    def __init__(self, backbone: MobileNetBase, num_classes: int = 21, head: str = "lite",
                 aspp_rates: Sequence[int] | None = None, head_channels: int = HEAD_CHANNELS,
                 dropout: float = 0.1):
        super().__init__()
        if not isinstance(backbone, MobileNetBase):
            raise ValueError(f"backbone must be a MobileNetV1 or MobileNetV2, got "
                             f"{type(backbone).__name__}")
        check_choice("head", head, HEADS)
        self.output_stride = backbone.config.output_stride
        self.in_channels = backbone.in_channels
        rates = () if head == "lite" else tuple(aspp_rates or ASPP_RATES[self.output_stride])
        self.backbone, channels = body_of(backbone)
        self.head = DeepLabHead(channels, num_classes, rates, head_channels, dropout)
        self.num_classes = num_classes
        self.config = DeepLabV3Config(backbone=backbone.config.replace(name=None),
                                      num_classes=num_classes, head=head, aspp_rates=list(rates),
                                      head_channels=head_channels, dropout=dropout)
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        # Small logits at the start, as DeepLab's logits layer (truncated normal, std 0.01).
        nn.init.normal_(self.head.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, multi_scale_flip: bool = False,
                scales: Sequence[float] = MF_SCALES) -> torch.Tensor:
        """Per-pixel class ids (N, H, W), in eval mode.

        Args:
            x: Normalised images (N, C, H, W), H and W >= 32.
            multi_scale_flip: Average the softmax over ``scales`` and left-right flips (Table 7's
                "MF"). Default False: one pass at the input's size.
            scales: Input scales for ``multi_scale_flip``; a scaled side below 32 is raised to 32.
                Default ``MF_SCALES``.
        """
        was_training = self.training
        self.eval()
        try:
            if not multi_scale_flip:
                return self.forward(x).argmax(1)
            size = x.shape[-2:]
            probs = 0
            for s in scales:
                hw = [max(32, round(v * s)) for v in size]
                xs = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
                for flip in (False, True):
                    out = self.forward(xs.flip(-1) if flip else xs)
                    out = out.flip(-1) if flip else out
                    probs = probs + torch.softmax(F.interpolate(
                        out, size=size, mode="bilinear", align_corners=False), 1)
            return probs.argmax(1)
        finally:
            self.train(was_training)


def create_segmenter(backbone: str = "v2", width_mult: float = 1.0, num_classes: int = 21,
                     head: str = "lite", output_stride: int = 16, init_from: str | None = None,
                     aspp_rates: Sequence[int] | None = None, head_channels: int = HEAD_CHANNELS,
                     dropout: float = 0.1, in_channels: int = 3) -> DeepLabV3:
    """Build DeepLabv3 on a MobileNet, optionally starting from our trained weights.

    Args:
        backbone: ``"v1"``/``"v2"`` (or ``"mobilenet_v1"``/``"mobilenet_v2"``). Default ``"v2"``.
            Ignored with ``init_from`` (the file names its architecture).
        width_mult: alpha of the backbone, > 0. Default 1.0. Ignored with ``init_from``.
        num_classes: Classes including background, >= 1. Default 21 (PASCAL VOC).
        head: ``"aspp"`` or ``"lite"``. Default ``"lite"``.
        output_stride: 8, 16 or 32: input size over the head's map size (atrous convolution in
            the later blocks). Default 16.
        init_from: A classifier saved by this package (``.safetensors`` from ``mobilenets train``
            or ``convert``), loaded with ``registry.load_model``; its body initialises the
            backbone, its classifier is dropped. Default None: random initialisation.
        aspp_rates: ASPP's rates. Default None: ``ASPP_RATES[output_stride]``.
        head_channels: Channels of the head. Default 256.
        dropout: Dropout before the classifier, in [0, 1). Default 0.1.
        in_channels: Input channels, >= 1 (ignored with ``init_from``). Default 3.

    Returns:
        The model, in training mode.

    Raises:
        FileNotFoundError: if ``init_from`` does not exist.
        ValueError: for a bad argument (named) or a file that is not one of our models.
    """
    if init_from:
        net = load_model(init_from, output_stride=output_stride)
        if not isinstance(net, MobileNetBase):
            raise ValueError(f"init_from {init_from} is not a MobileNet classifier")
    else:
        AtrousStride(output_stride)  # checks it
        net = ARCHS[arch_name(backbone)](width_mult=width_mult, in_channels=in_channels,
                                         output_stride=output_stride, include_top=False)
    return DeepLabV3(net, num_classes, head, aspp_rates, head_channels, dropout).train()


def build_segmenter(config: DeepLabV3Config) -> DeepLabV3:
    """A fresh ``DeepLabV3`` from its ``config``; the registry's builder for
    ``arch="deeplabv3"``."""
    model = DeepLabV3(build_from_config(config.backbone), config.num_classes, config.head,
                      config.aspp_rates, config.head_channels, config.dropout)
    model.config.resolution, model.config.name = config.resolution, config.name
    return model


register_builder("deeplabv3", build_segmenter, kind="segmenter", config_class=DeepLabV3Config)
