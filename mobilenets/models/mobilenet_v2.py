"""MobileNetV2 (Sandler et al., 2018) as its Tables 1 and 2: inverted residuals and linear
bottlenecks, with the width multiplier (``width_mult``) and any input resolution >= 32."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

from torch import nn

from mobilenets.checks import check_int
from mobilenets.models.base import AtrousStride, MobileNetBase, check_rows
from mobilenets.models.config import ClassifierConfig
from mobilenets.models.layers import ConvBNAct, InvertedResidual

#: Channels of the first layer, a full 3x3 convolution with stride 2 (Table 2, row 1).
V2_STEM_CHANNELS = 32

#: Channels of the last 1x1 convolution (Table 2, "conv2d 1x1, 1280"). Width multipliers below 1
#: keep it (the paper: "we apply width multiplier to all layers except the very last
#: convolutional layer", which "improves performance for smaller models"); above 1 scale it.
V2_LAST_CHANNELS = 1280

#: The body of Table 2 between the stem and the last 1x1 convolution. Each row is ``n`` bottleneck
#: residual blocks (``InvertedResidual``) with expansion factor ``t`` and ``c`` output channels; the
#: first block of the row has stride ``s``, the others stride 1.
V2_BLOCKS = [
    # t, c, n, s
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to the nearest multiple of ``divisor``, as TF-Slim's
    MobileNetV2, Keras Applications and torchvision do (``_make_divisible``).

    Never below ``divisor``, and never more than 10% below ``value`` (then one ``divisor`` more).

    Args:
        value: The channel count times the width multiplier.
        divisor: The multiple, >= 1. Default 8 (torchvision's ``round_nearest``).

    Returns:
        The rounded channel count.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def v2_channels(width_mult: float, blocks: Sequence[Sequence[int]] = V2_BLOCKS,
                round_nearest: int = 8) -> tuple[int, list[int], int]:
    """The channel counts of MobileNetV2 at a width multiplier.

    Args:
        width_mult: alpha, > 0.
        blocks: The ``[t, c, n, s]`` rows. Default ``V2_BLOCKS`` (Table 2).
        round_nearest: Round every count to a multiple of this (``make_divisible``). Default 8.

    Returns:
        ``(stem, [c of each row], last)``: the first layer's channels, each row's output channels
        and the last 1x1 convolution's (1280, scaled only when ``width_mult`` > 1).
    """
    return (make_divisible(V2_STEM_CHANNELS * width_mult, round_nearest),
            [make_divisible(c * width_mult, round_nearest) for _, c, _, _ in blocks],
            make_divisible(V2_LAST_CHANNELS * max(1.0, width_mult), round_nearest))


@dataclass(kw_only=True, slots=True)
class MobileNetV2Config(ClassifierConfig):
    """``MobileNetV2``'s config (a ``ClassifierConfig``): its constructor's arguments, with the
    same defaults."""

    arch: str = "mobilenet_v2"
    dropout: float = 0.2
    blocks: list[list[int]] = field(default_factory=lambda: [list(row) for row in V2_BLOCKS])
    activation: str = "relu6"
    round_nearest: int = 8


_DEFAULT = MobileNetV2Config()  # the constructor's defaults: the config's


class MobileNetV2(MobileNetBase):
    """MobileNetV2 (Sandler et al., 2018), Table 2.

    A full 3x3 convolution with stride 2, 17 bottleneck residual blocks (``InvertedResidual``:
    1x1 expansion by t, 3x3 depthwise, linear 1x1 projection, a shortcut where the shapes allow),
    a 1x1 convolution to 1280 channels, global average pooling, dropout and a fully connected
    classifier. ``forward`` returns logits; ``predict`` applies the softmax. The layers and their
    parameter names line up one to one with torchvision's ``mobilenet_v2`` and Keras Applications'
    ``MobileNetV2`` (``mobilenets.deploy.convert`` imports both).

    Args:
        width_mult: alpha, the width multiplier; any number > 0 (0.35, 0.5, 0.75, 1.0, 1.3, 1.4
            in the paper). Every layer's channels are ``c * alpha`` rounded to a multiple of
            ``round_nearest`` (``make_divisible``), the stem's included; the last 1x1 convolution
            keeps 1280 channels for alpha < 1 and is scaled above 1 (1792 at 1.4). Default 1.0.
        num_classes: Classifier outputs, >= 1. Default 1000.
        in_channels: Input image channels, >= 1. Default 3.
        dropout: Dropout probability before the classifier, in [0, 1). Default 0.2 (torchvision;
            TF-Slim uses 0.2 too, Keras Applications none).
        include_top: If False there is no pooling or classifier and ``forward`` returns the last
            feature map (N, 1280, H/32, W/32) after the last 1x1 convolution, as Keras
            Applications does. Default True.
        blocks: The body as ``[t, c, n, s]`` rows. Default ``V2_BLOCKS`` (Table 2).
        activation: ``"relu6"`` (the paper) or ``"relu"``. Default relu6.
        padding: ``"symmetric"``, ``"tf_same"`` (TensorFlow's asymmetric padding of strided
            convolutions) or ``"keras"`` (Keras Applications' own padding of strided depthwise
            convolutions): to reproduce TF or Keras weights exactly. Default symmetric.
        bn_eps: BatchNorm epsilon. Default 1e-5 (PyTorch, torchvision); TF-Slim and Keras use 1e-3.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention). Default 0.1.
        output_stride: 8, 16 or 32: the ratio of input to final feature-map size. Below 32, the
            later strided blocks keep stride 1 and their depthwise convolutions, and all later
            ones, dilate instead (TF-Slim's ``output_stride``, the paper's DeepLabv3 setting).
            Default 32.
        background_class: If True the classifier has ``num_classes + 1`` outputs, index 0 being
            TF-Slim's background class, and ``forward`` drops it. Default False.
        round_nearest: Channel counts are multiples of this, >= 1. Default 8 (TF-Slim, Keras,
            torchvision); 1 disables the rounding (``int(round(c * alpha))``, at least 1).
        norm_layer: Factory ``f(num_features) -> nn.Module`` replacing BatchNorm2d (e.g. frozen BN
            for detection). Default None: ``nn.BatchNorm2d(eps=bn_eps, momentum=bn_momentum)``.

    Raises:
        ValueError: for any argument outside the constraints above.
    """

    config_class = MobileNetV2Config

    def __init__(
        self,
        width_mult: float = _DEFAULT.width_mult,
        num_classes: int = _DEFAULT.num_classes,
        in_channels: int = _DEFAULT.in_channels,
        dropout: float = _DEFAULT.dropout,
        include_top: bool = _DEFAULT.include_top,
        blocks: Sequence[Sequence[int]] = _DEFAULT.blocks,
        activation: str = _DEFAULT.activation,
        padding: str = _DEFAULT.padding,
        bn_eps: float = _DEFAULT.bn_eps,
        bn_momentum: float = _DEFAULT.bn_momentum,
        output_stride: int = _DEFAULT.output_stride,
        background_class: bool = _DEFAULT.background_class,
        round_nearest: int = _DEFAULT.round_nearest,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        # Everything needed to rebuild this model (save_model stores it with the weights).
        self.config = MobileNetV2Config(
            width_mult=width_mult, num_classes=num_classes, in_channels=in_channels,
            dropout=dropout, include_top=include_top,
            blocks=[list(row) for row in blocks], activation=activation, padding=padding,
            bn_eps=bn_eps, bn_momentum=bn_momentum, output_stride=output_stride,
            background_class=background_class, round_nearest=round_nearest,
        )
        self._check_args(width_mult, num_classes, in_channels, dropout)
        atrous = AtrousStride(output_stride)
        check_rows("blocks", blocks, "t, c, n, s")
        check_int("round_nearest", round_nearest)
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        block_kwargs = dict(activation=activation, padding=padding, norm_layer=norm_layer)

        # Walk Table 2 as MobileNetV1 walks its Table 1 (TF-Slim's output_stride rule).
        channels, row_channels, last = v2_channels(width_mult, blocks, round_nearest)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, atrous.step(2)[0],
                                             **block_kwargs)]
        for (t, _, n, s), out in zip(blocks, row_channels):
            for i in range(n):
                layer_stride, layer_dilation = atrous.step(s if i == 0 else 1)
                layers.append(InvertedResidual(channels, out, layer_stride, t, layer_dilation,
                                               **block_kwargs))
                channels = out
                self._record_feature(len(layers) - 1, channels, atrous.stride, atrous.dilation)
        layers.append(ConvBNAct(channels, last, 1, **block_kwargs))
        self._record_feature(len(layers) - 1, last, atrous.stride, atrous.dilation)
        self.features = nn.Sequential(*layers)
        self._build_head(last, include_top, num_classes, background_class, dropout)
        self._init_weights()

    def _init_conv(self, conv: nn.Conv2d) -> None:
        # torchvision's MobileNetV2 init: He normal over PyTorch's fan_out (out * k * k).
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
