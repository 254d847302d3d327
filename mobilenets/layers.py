"""The one building block every model in this package is made of: Conv -> BN -> activation.

Quantization, detection heads and the ablation baselines reuse it by injection (``norm_layer``,
``activation``) instead of defining their own copies.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Activations a model may be built with. The paper uses ReLU; TF-Slim, Keras Applications and timm
#: ship MobileNet V1 with ReLU6, and MobileNetV2 uses ReLU6 by design.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}

#: Padding schemes. "symmetric" is PyTorch's (pad = dilation * (k - 1) // 2 on every side);
#: "tf_same" is TensorFlow's "SAME", which pads a strided convolution asymmetrically (more on the
#: bottom/right), needed to reproduce models trained in TensorFlow or Keras exactly.
PADDINGS = ("symmetric", "tf_same")


def check_choice(name: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for one spatial dimension, as (before, after).

    Args:
        size: Input length along this dimension.
        kernel: Kernel length.
        stride: Stride.
        dilation: Dilation rate.

    Returns:
        The zeros to add before and after; ``after`` is the larger when the total is odd.
    """
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class ConvBNAct(nn.Module):
    """Convolution, batch normalization and an optional activation: Figure 3 of the paper.

    Used for the full 3x3 convolutions (``groups=1``), the depthwise 3x3 convolutions
    (``groups=in_channels``), the pointwise 1x1 convolutions, and MobileNetV2's linear
    bottlenecks (``activation=None``). The convolution has no bias: BN provides it.

    Args:
        in_channels: Input channels; must be a positive integer.
        out_channels: Output channels; must be a positive integer.
        kernel_size: Square kernel size. Default 3.
        stride: Stride. Default 1.
        groups: Convolution groups; ``in_channels`` makes it depthwise. Default 1.
        dilation: Dilation rate (atrous convolution, used for ``output_stride`` < 32). Default 1.
        activation: ``"relu"``, ``"relu6"`` or ``None`` (linear). Default ``"relu"``.
        padding: ``"symmetric"`` (PyTorch) or ``"tf_same"`` (TensorFlow "SAME"). Default symmetric.
        norm_layer: Factory ``f(num_features) -> nn.Module``; default ``nn.BatchNorm2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: str | None = "relu",
        padding: str = "symmetric",
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        check_choice("padding", padding, PADDINGS)
        if activation is not None:
            check_choice("activation", activation, ACTIVATIONS)
        self.tf_same = padding == "tf_same"
        sym_pad = 0 if self.tf_same else dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, sym_pad,
                              dilation=dilation, groups=groups, bias=False)
        self.bn = (norm_layer or nn.BatchNorm2d)(out_channels)
        self.act = ACTIVATIONS[activation]() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            k, s, d = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
            top, bottom = tf_same_padding(x.shape[-2], k, s, d)
            left, right = tf_same_padding(x.shape[-1], k, s, d)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """Depthwise separable convolution (paper section 3.1): 3x3 depthwise then 1x1 pointwise,
    each followed by BN and the activation.

    Args:
        in_channels: Input channels M.
        out_channels: Output channels N.
        stride: Stride of the depthwise convolution (downsampling happens there). Default 1.
        dilation: Dilation of the depthwise convolution. Default 1.
        **block_kwargs: ``activation``, ``padding`` and ``norm_layer``, passed to both ``ConvBNAct``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 **block_kwargs):
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels,
                            dilation=dilation, **block_kwargs)
        self.pw = ConvBNAct(in_channels, out_channels, 1, **block_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))
