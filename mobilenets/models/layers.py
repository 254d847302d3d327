"""The one building block every model in this package is made of: Conv -> BN -> activation.

Quantization, detection heads and the ablation baselines reuse it by injection (``norm_layer``,
``activation``) instead of defining their own copies.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.checks import check_choice

#: Activations a model may be built with. The paper uses ReLU; TF-Slim, Keras Applications and timm
#: ship MobileNet V1 with ReLU6, and MobileNetV2 uses ReLU6 by design.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}

#: Padding schemes. "symmetric" is PyTorch's (pad = dilation * (k - 1) // 2 on every side);
#: "tf_same" is TensorFlow's "SAME", which pads a strided convolution asymmetrically (more on the
#: bottom/right when the total is odd), needed to reproduce models trained in TensorFlow exactly;
#: "keras" is Keras Applications' MobileNet (and MobileNetV2 built without a fixed input size):
#: "SAME" everywhere except strided depthwise convolutions, which pad ``k // 2 - 1`` zeros before
#: and ``k // 2`` after (``ZeroPadding2D(((0, 1), (0, 1)))`` for 3x3) then run unpadded. It equals
#: "tf_same" on even feature maps only: an odd map loses a row and a column more.
PADDINGS = ("symmetric", "tf_same", "keras")


def keras_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Keras Applications' padding of a strided depthwise convolution, as (before, after): its
    ``ZeroPadding2D`` then ``"valid"`` (``imagenet_utils.correct_pad`` for an unknown input size).
    Unstrided layers are "SAME" (``tf_same_padding``)."""
    if stride == 1:
        return tf_same_padding(size, kernel, stride, dilation)
    half = dilation * (kernel - 1) // 2
    return half - 1, half


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


def pad_tf_same(x: torch.Tensor, kernel: int, stride: int, dilation: int = 1,
                rule=tf_same_padding) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded as TensorFlow's "SAME" pads it for a square window
    (``rule``: another (before, after) rule of the same signature, e.g. ``keras_padding``)."""
    top, bottom = rule(x.shape[-2], kernel, stride, dilation)
    left, right = rule(x.shape[-1], kernel, stride, dilation)
    return F.pad(x, (left, right, top, bottom))


@lru_cache(maxsize=None)
def _tap_index(h: int, w: int, k: int, stride: tuple, padding: tuple, dilation: tuple):
    """For each (output pixel, input pixel) pair, the kernel tap linking them (``k*k``: none)."""
    ho = (h + 2 * padding[0] - dilation[0] * (k - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (k - 1) - 1) // stride[1] + 1
    idx = torch.full((ho * wo, h * w), k * k, dtype=torch.long)
    for oh in range(ho):
        for ow in range(wo):
            for i in range(k):
                for j in range(k):
                    ih = oh * stride[0] - padding[0] + i * dilation[0]
                    iw = ow * stride[1] - padding[1] + j * dilation[1]
                    if 0 <= ih < h and 0 <= iw < w:
                        idx[oh * wo + ow, ih * w + iw] = i * k + j
    return idx, ho, wo


def small_map_depthwise(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """Depthwise conv2d (no bias, zero padding) as a dense per-channel product over a few pixels.

    ``out[n, c, o] = sum_i x[n, c, i] * M[c, o, i]``, where ``M`` gathers the kernel tap linking
    input pixel ``i`` to output pixel ``o`` (or 0): the convolution's own sums, in another order.
    Worth it only for tiny maps (the 2x2 and 1x1 maps of a 32x32 input), where oneDNN's depthwise
    kernel is far slower forward + backward on CPU (docs/results/deployment.md, "Training
    throughput").

    Args:
        x: Input, ``(N, C, H, W)``, NCHW or channels_last (the result keeps the layout).
        weight: Depthwise kernel, ``(C, 1, k, k)``.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)`` zeros on each side.
        dilation: ``(dh, dw)``.

    Returns:
        The convolution's output, ``(N, C, Ho, Wo)``.
    """
    n, c, h, w = x.shape
    k = weight.shape[-1]
    idx, ho, wo = _tap_index(h, w, k, tuple(stride), tuple(padding), tuple(dilation))
    taps = torch.cat([weight.reshape(c, k * k), weight.new_zeros(c, 1)], 1)  # (C, k*k + 1)
    m = taps[:, idx.to(x.device)]  # (C, O, I)
    if x.is_contiguous(memory_format=torch.channels_last):
        xv = x.permute(0, 2, 3, 1).reshape(n, 1, h * w, c)  # a view for channels_last input
        out = (xv * m.permute(1, 2, 0).unsqueeze(0)).sum(2)  # (N, O, C)
        return out.view(n, ho, wo, c).permute(0, 3, 1, 2)  # channels_last result
    out = (x.reshape(n, c, 1, h * w) * m.unsqueeze(0)).sum(-1)  # (N, C, O)
    return out.view(n, c, ho, wo)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` for depthwise convolutions (same parameters and state_dict) that computes maps
    of at most ``small_map_pixels`` input pixels with :func:`small_map_depthwise`.

    Tracing, ``torch.compile`` and export always take ``nn.Conv2d``'s path, so exported graphs hold
    a plain convolution. Set ``small_map_pixels = 0`` (on the class or one instance) to disable.
    """

    small_map_pixels = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[-2] * x.shape[-1] > self.small_map_pixels or self.bias is not None
                or self.padding_mode != "zeros" or isinstance(self.padding, str)
                or torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.compiler.is_compiling()):
            return super().forward(x)
        return small_map_depthwise(x, self.weight, self.stride, self.padding, self.dilation)


class ConvBNAct(nn.Module):
    """Convolution, batch normalization and an optional activation: Figure 3 of the paper.

    Used for the full 3x3 convolutions (``groups=1``), the depthwise 3x3 convolutions
    (``groups=in_channels``), the pointwise 1x1 convolutions, and MobileNetV2's linear
    bottlenecks (``activation=None``). The convolution has no bias: BN provides it. Depthwise
    convolutions are :class:`DepthwiseConv2d` (faster on tiny maps, same state_dict).

    Args:
        in_channels: Input channels; must be a positive integer.
        out_channels: Output channels; must be a positive integer.
        kernel_size: Square kernel size. Default 3.
        stride: Stride. Default 1.
        groups: Convolution groups; ``in_channels`` makes it depthwise. Default 1.
        dilation: Dilation rate (atrous convolution, used for ``output_stride`` < 32). Default 1.
        activation: ``"relu"``, ``"relu6"`` or ``None`` (linear). Default ``"relu"``.
        padding: ``"symmetric"`` (PyTorch), ``"tf_same"`` (TensorFlow "SAME") or ``"keras"``
            (Keras Applications': see ``PADDINGS``; only strided depthwise convolutions differ
            from "tf_same"). Default symmetric.
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
        depthwise = groups > 1 and groups == in_channels == out_channels
        # The explicit padding of forward(): (before, after) as a function of the input length.
        self.pad_rule = {"tf_same": tf_same_padding, "symmetric": None,
                         "keras": keras_padding if depthwise else tf_same_padding}[padding]
        self.tf_same = self.pad_rule is not None
        sym_pad = 0 if self.tf_same else dilation * (kernel_size - 1) // 2
        self.conv = (DepthwiseConv2d if depthwise else nn.Conv2d)(
            in_channels, out_channels, kernel_size, stride, sym_pad,
            dilation=dilation, groups=groups, bias=False)
        self.bn = (norm_layer or nn.BatchNorm2d)(out_channels)
        self.act = ACTIVATIONS[activation]() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            x = pad_tf_same(x, self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0],
                            self.pad_rule)
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


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck residual block (its Table 1): a 1x1 expansion by ``t`` with the
    activation, a 3x3 depthwise convolution with stride ``s`` and the activation, and a linear 1x1
    projection (no activation: the linear bottleneck). The input is added to the output when the
    stride is 1 and the channel counts agree (the inverted residual).

    With ``t == 1`` there is no expansion layer (as in the paper's first block, TF-Slim, Keras and
    torchvision): the depthwise convolution works on the input directly.

    Args:
        in_channels: Input channels k.
        out_channels: Output channels k'.
        stride: Stride s of the depthwise convolution. Default 1.
        expand_ratio: Expansion factor t >= 1; the inner layers have ``round(k * t)`` channels.
            Default 6 (the paper's).
        dilation: Dilation of the depthwise convolution (``output_stride`` < 32). Default 1.
        **block_kwargs: ``activation`` (default ``"relu6"``), ``padding`` and ``norm_layer``,
            passed to each ``ConvBNAct`` (the projection always gets ``activation=None``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 expand_ratio: float = 6, dilation: int = 1, **block_kwargs):
        super().__init__()
        block_kwargs.setdefault("activation", "relu6")
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (ConvBNAct(in_channels, hidden, 1, **block_kwargs)
                       if expand_ratio != 1 else None)
        self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, dilation=dilation,
                            **block_kwargs)
        self.project = ConvBNAct(hidden, out_channels, 1, **{**block_kwargs, "activation": None})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x) if self.expand is not None else x))
        return x + y if self.use_residual else y


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle (its Figure 1c): the channels, ``groups`` groups of ``n``, are
    reshaped to ``(groups, n)``, transposed and flattened, so that every group of the next group
    convolution reads channels from every group of the previous one.

    Runs ``torch.nn.functional.channel_shuffle``, which keeps a channels_last input channels_last
    and exports to ONNX as Reshape -> Transpose -> Reshape.

    Args:
        groups: The group count g of the convolution before it, >= 1 (1: the identity).
    """

    def __init__(self, groups: int):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % self.groups:
            raise ValueError(f"channel shuffle: {x.shape[1]} channels do not split into "
                             f"{self.groups} groups")
        return F.channel_shuffle(x, self.groups) if self.groups > 1 else x

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class Pool2d(nn.Module):
    """3x3-style max or average pooling that pads as ``ConvBNAct`` does.

    ``"symmetric"`` pads ``kernel_size // 2`` zeros on every side (PyTorch); ``"tf_same"`` pads
    as TensorFlow's "SAME" (more on the bottom/right). Both pad with zeros and average pooling
    counts them (PyTorch's ``count_include_pad=True``): for max pooling that equals padding with
    -inf only on non-negative inputs, which is where the ShuffleNet places it (after a ReLU).

    Args:
        kind: ``"max"`` or ``"avg"``.
        kernel_size: Square window. Default 3.
        stride: Stride. Default 2.
        padding: ``"symmetric"`` or ``"tf_same"``. Default symmetric.
    """

    def __init__(self, kind: str, kernel_size: int = 3, stride: int = 2,
                 padding: str = "symmetric"):
        super().__init__()
        check_choice("kind", kind, ("max", "avg"))
        self.tf_same = check_choice("padding", padding, PADDINGS) == "tf_same"
        # Zeros padded explicitly, not by the pool: a padded average pool falls off ExecuTorch's
        # XNNPACK delegate, and a padded max pool becomes LiteRT's PADV2 (-inf), off its delegate.
        self.explicit_pad = 0 if self.tf_same else kernel_size // 2
        self.pool = (nn.MaxPool2d(kernel_size, stride) if kind == "max"
                     else nn.AvgPool2d(kernel_size, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            x = pad_tf_same(x, self.pool.kernel_size, self.pool.stride)
        elif self.explicit_pad:
            x = F.pad(x, (self.explicit_pad,) * 4)
        return self.pool(x)


class ShuffleUnit(nn.Module):
    """ShuffleNet's unit (its Figure 2b and c; the slides' Figure 2): a 1x1 group convolution to
    the bottleneck (``out_channels // 4``) with BN and the activation, a channel shuffle, a 3x3
    depthwise convolution with BN (no activation), and a 1x1 group convolution with BN; then the
    input is added (2b), or, in a stage's first unit (2c), a 3x3 average pool of the input with
    the unit's stride is concatenated in front, and the activation follows either.

    Args:
        in_channels: Input channels.
        out_channels: Output channels; the concatenating unit's branch makes
            ``out_channels - in_channels`` of them.
        groups: g of the group convolutions; the bottleneck and the branch's output channels
            must divide by it.
        stride: Stride of the depthwise convolution and the shortcut's pooling. Default 1.
        dilation: Dilation of the depthwise convolution (``output_stride`` < 32). Default 1.
        concat: Concatenate the pooled input (2c) instead of adding it (2b). Default: when the
            stride is 2 or the channel counts differ.
        first_groups: Groups of the first 1x1 convolution; the paper's Stage 2 starts with a
            dense one (1) "because the number of input channels is relatively small". Default
            ``groups``. With 1 there are no groups to mix and the shuffle is the identity.
        **block_kwargs: ``activation`` (default ``"relu"``), ``padding`` and ``norm_layer``,
            passed to each ``ConvBNAct``.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int = 1,
                 dilation: int = 1, concat: bool | None = None, first_groups: int | None = None,
                 **block_kwargs):
        super().__init__()
        activation = block_kwargs.setdefault("activation", "relu")
        first_groups = groups if first_groups is None else first_groups
        self.concat = stride > 1 or in_channels != out_channels if concat is None else concat
        branch = out_channels - in_channels if self.concat else out_channels
        mid = out_channels // 4
        if branch < 1 or mid < 1 or mid % groups or branch % groups or in_channels % first_groups:
            raise ValueError(
                f"a ShuffleNet unit {in_channels}->{out_channels} with groups={groups} needs the "
                f"bottleneck (out/4 = {mid}) and the branch's output ({branch}) to be positive "
                f"multiples of groups, and the input to divide by {first_groups}")
        linear = {**block_kwargs, "activation": None}
        self.compress = ConvBNAct(in_channels, mid, 1, groups=first_groups, **block_kwargs)
        self.shuffle = ChannelShuffle(first_groups)
        self.dw = ConvBNAct(mid, mid, 3, stride, groups=mid, dilation=dilation, **linear)
        self.expand = ConvBNAct(mid, branch, 1, groups=groups, **linear)
        self.shortcut = (Pool2d("avg", 3, stride, block_kwargs.get("padding", "symmetric"))
                         if self.concat else None)
        self.act = ACTIVATIONS[activation]() if activation else nn.Identity()
        # Not in place on the sum or concatenation: PT2E's int8 annotation fails on it.
        if hasattr(self.act, "inplace"):
            self.act.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.dw(self.shuffle(self.compress(x))))
        return self.act(torch.cat([self.shortcut(x), y], 1) if self.concat else x + y)
