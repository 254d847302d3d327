"""MobileNet V1 exactly as Table 1 of the paper, with the width multiplier alpha (``width_mult``),
the resolution multiplier rho (set implicitly by the input size) and the two ablation baselines."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

from torch import nn

from mobilenets.checks import check_choice
from mobilenets.models.base import AtrousStride, MobileNetBase, check_rows
from mobilenets.models.config import ClassifierConfig
from mobilenets.models.layers import ConvBNAct, DepthwiseSeparable

#: Channels of the first layer, a full 3x3 convolution with stride 2 (Table 1, row 1).
V1_STEM_CHANNELS = 32

#: The body of Table 1 after the first layer. Each row is ``n`` depthwise separable blocks with ``c``
#: output channels; the first block of the row has depthwise stride ``s``, the others stride 1.
#: Table 1 prints the last depthwise layer as "s2" on a 7x7 input; it is stride 1 (the 7x7 average
#: pool that follows, TF-Slim, Keras and timm all agree): see docs/paper-discrepancies.md.
V1_BLOCKS = [
    # c, n, s
    [64, 1, 1],
    [128, 2, 2],
    [256, 2, 2],
    [512, 6, 2],  # 1 strided block + the "5x" 14x14x512 blocks
    [1024, 2, 2],
]

#: Table 5's Shallow MobileNet: the five 14x14x512 separable blocks removed.
V1_SHALLOW_BLOCKS = [
    # c, n, s
    [64, 1, 1],
    [128, 2, 2],
    [256, 2, 2],
    [512, 1, 2],
    [1024, 2, 2],
]

BLOCK_TYPES = ("separable", "full")


@dataclass(kw_only=True, slots=True)
class MobileNetV1Config(ClassifierConfig):
    """``MobileNetV1``'s config (a ``ClassifierConfig``): its constructor's arguments, with the
    same defaults."""

    arch: str = "mobilenet_v1"
    dropout: float = 0.001
    block: str = "separable"
    blocks: list[list[int]] = field(default_factory=lambda: [list(row) for row in V1_BLOCKS])
    activation: str = "relu"
    min_channels: int = 8


_DEFAULT = MobileNetV1Config()  # the constructor's defaults: the config's


def scale_channels(channels: int, width_mult: float, min_channels: int = 8) -> int:
    """Apply the width multiplier to a layer's channel count.

    The rule is TF-Slim's ``max(int(channels * alpha), min_depth)``: truncate, never below
    ``min_channels``. For the typical alphas (0.25, 0.5, 0.75, 1.0, and timm's 1.25) every layer of
    Table 1 gives the same count as Keras Applications (``int(channels * alpha)``), TF-Slim and timm
    (round to a multiple of 8), because ``channels * alpha`` is then already a multiple of 8.

    Args:
        channels: The channel count at alpha = 1 (Table 1).
        width_mult: alpha, > 0.
        min_channels: Lower bound after scaling. Default 8 (TF-Slim's ``min_depth``).

    Returns:
        The scaled channel count.
    """
    return max(min_channels, int(channels * width_mult))


class MobileNetV1(MobileNetBase):
    """MobileNet V1 (Howard et al., 2017), Table 1.

    A full 3x3 convolution with stride 2, then 13 depthwise separable blocks, global average
    pooling, dropout and a fully connected classifier; 28 convolution layers when depthwise and
    pointwise count apart. ``forward`` returns logits; ``predict`` applies the softmax.

    Args:
        width_mult: alpha, the width multiplier applied uniformly to every layer; any number > 0
            (0.25, 0.5, 0.75, 1.0 typical). Channels follow ``scale_channels``. Default 1.0.
        num_classes: Classifier outputs, >= 1. Default 1000.
        in_channels: Input image channels, >= 1. Default 3.
        dropout: Dropout probability before the classifier, in [0, 1). Default 0.001
            (TF-Slim's ``dropout_keep_prob=0.999`` and Keras Applications' ``dropout=1e-3``).
        include_top: If False there is no pooling or classifier and ``forward`` returns the last
            feature map (N, C, H/32, W/32), as Keras Applications does. Default True.
        block: ``"separable"`` (MobileNet) or ``"full"``: Table 4's Conv MobileNet, every separable
            block replaced by a full 3x3 convolution with the same stride and output channels.
        blocks: The body as ``[c, n, s]`` rows. Default ``V1_BLOCKS`` (Table 1);
            ``V1_SHALLOW_BLOCKS`` gives Table 5's Shallow MobileNet.
        activation: ``"relu"`` (the paper) or ``"relu6"`` (TF-Slim, Keras, timm). Default relu.
        padding: ``"symmetric"``, ``"tf_same"`` (TensorFlow's asymmetric padding of strided
            convolutions) or ``"keras"`` (Keras Applications' own padding of strided depthwise
            convolutions): to reproduce TF or Keras weights exactly. Default symmetric.
        bn_eps: BatchNorm epsilon. Default 1e-5 (PyTorch); TF-Slim and Keras use 1e-3.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention). Default 0.1.
        output_stride: 8, 16 or 32: the ratio of input to final feature-map size. Below 32, the
            later strided layers keep stride 1 and dilate instead (TF-Slim's ``output_stride``),
            for dense prediction. Default 32.
        background_class: If True the classifier has ``num_classes + 1`` outputs, index 0 being
            TF-Slim's background class, and ``forward`` drops it, so a 1001-way TF-Slim head loads
            as is and the logits line up with the usual 1000 classes. Default False.
        min_channels: Lower bound of ``scale_channels``. Default 8.
        norm_layer: Factory ``f(num_features) -> nn.Module`` replacing BatchNorm2d (e.g. frozen BN
            for detection). Default None: ``nn.BatchNorm2d(eps=bn_eps, momentum=bn_momentum)``.

    Raises:
        ValueError: for any argument outside the constraints above.
    """

    config_class = MobileNetV1Config

    def __init__(
        self,
        width_mult: float = _DEFAULT.width_mult,
        num_classes: int = _DEFAULT.num_classes,
        in_channels: int = _DEFAULT.in_channels,
        dropout: float = _DEFAULT.dropout,
        include_top: bool = _DEFAULT.include_top,
        block: str = _DEFAULT.block,
        blocks: Sequence[Sequence[int]] = _DEFAULT.blocks,
        activation: str = _DEFAULT.activation,
        padding: str = _DEFAULT.padding,
        bn_eps: float = _DEFAULT.bn_eps,
        bn_momentum: float = _DEFAULT.bn_momentum,
        output_stride: int = _DEFAULT.output_stride,
        background_class: bool = _DEFAULT.background_class,
        min_channels: int = _DEFAULT.min_channels,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        # Everything needed to rebuild this model (save_model stores it with the weights).
        self.config = MobileNetV1Config(
            width_mult=width_mult, num_classes=num_classes, in_channels=in_channels,
            dropout=dropout, include_top=include_top, block=block,
            blocks=[list(row) for row in blocks], activation=activation, padding=padding,
            bn_eps=bn_eps, bn_momentum=bn_momentum, output_stride=output_stride,
            background_class=background_class, min_channels=min_channels,
        )
        self._check_args(width_mult, num_classes, in_channels, dropout)
        check_choice("block", block, BLOCK_TYPES)
        atrous = AtrousStride(output_stride)
        check_rows("blocks", blocks, "c, n, s")
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        block_kwargs = dict(activation=activation, padding=padding, norm_layer=norm_layer)

        # Walk Table 1, tracking the stride so far; once it reaches output_stride, strided layers
        # keep stride 1 and dilate all later depthwise convolutions instead (TF-Slim's rule).
        channels = scale_channels(V1_STEM_CHANNELS, width_mult, min_channels)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, atrous.step(2)[0],
                                             **block_kwargs)]
        for c, n, s in blocks:
            out = scale_channels(c, width_mult, min_channels)
            for i in range(n):
                layer_stride, layer_dilation = atrous.step(s if i == 0 else 1)
                if block == "separable":
                    layers.append(DepthwiseSeparable(channels, out, layer_stride, layer_dilation,
                                                     **block_kwargs))
                else:
                    layers.append(ConvBNAct(channels, out, 3, layer_stride, dilation=layer_dilation,
                                            **block_kwargs))
                channels = out
                self._record_feature(len(layers) - 1, channels, atrous.stride, atrous.dilation)
        self.features = nn.Sequential(*layers)
        self._build_head(channels, include_top, num_classes, background_class, dropout)
        self._init_weights()
