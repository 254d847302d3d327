"""MobileNet V1 exactly as Table 1 of the paper, with the width multiplier alpha (``width_mult``),
the resolution multiplier rho (set implicitly by the input size) and the two ablation baselines."""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from .layers import ConvBNAct, DepthwiseSeparable, check_choice

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


def check_width_mult(width_mult) -> float:
    """Return ``width_mult`` as a float, or raise ``ValueError`` if it is not a number > 0."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ValueError(f"width_mult (alpha) must be a number > 0, got {width_mult!r}")
    return float(width_mult)


def check_positive_int(name: str, value) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class MobileNetV1(nn.Module):
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
        padding: ``"symmetric"`` or ``"tf_same"`` (TensorFlow's asymmetric padding of strided
            convolutions, to reproduce TF/Keras weights exactly). Default symmetric.
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

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.001,
        include_top: bool = True,
        block: str = "separable",
        blocks: Sequence[Sequence[int]] = V1_BLOCKS,
        activation: str = "relu",
        padding: str = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        output_stride: int = 32,
        background_class: bool = False,
        min_channels: int = 8,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        # Everything needed to rebuild this model (saved beside the weights by checkpoint.save_model).
        self.config = dict(
            arch="mobilenet_v1", width_mult=width_mult, num_classes=num_classes,
            in_channels=in_channels, dropout=dropout, include_top=include_top, block=block,
            blocks=[list(row) for row in blocks], activation=activation, padding=padding,
            bn_eps=bn_eps, bn_momentum=bn_momentum, output_stride=output_stride,
            background_class=background_class, min_channels=min_channels,
        )
        self.width_mult = check_width_mult(width_mult)
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_positive_int("num_classes", num_classes)
        check_choice("block", block, BLOCK_TYPES)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        for row in blocks:
            if len(row) != 3 or not all(isinstance(v, int) and v >= 1 for v in row):
                raise ValueError(f"blocks rows must be [c, n, s] positive integers, got {row!r}")
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        block_kwargs = dict(activation=activation, padding=padding, norm_layer=norm_layer)

        # Walk Table 1, tracking the stride so far; once it reaches output_stride, strided layers
        # keep stride 1 and dilate all later depthwise convolutions instead (TF-Slim's rule).
        channels = scale_channels(V1_STEM_CHANNELS, width_mult, min_channels)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, 2, **block_kwargs)]
        self.feature_info: list[dict] = []
        stride, dilation = 2, 1
        for c, n, s in blocks:
            out = scale_channels(c, width_mult, min_channels)
            for i in range(n):
                layer_stride = s if i == 0 else 1
                if layer_stride > 1 and stride >= output_stride:
                    layer_dilation, dilation, layer_stride = dilation, dilation * layer_stride, 1
                else:
                    layer_dilation = dilation
                if block == "separable":
                    layers.append(DepthwiseSeparable(channels, out, layer_stride, layer_dilation,
                                                     **block_kwargs))
                else:
                    layers.append(ConvBNAct(channels, out, 3, layer_stride, dilation=layer_dilation,
                                            **block_kwargs))
                stride *= layer_stride
                channels = out
                self._record_feature(len(layers) - 1, channels, stride, dilation)
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.include_top = include_top
        self.background_class = background_class
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier: nn.Module | None = None
        if include_top:
            self.reset_classifier(num_classes, background_class)
        self._init_weights()

    def _record_feature(self, index: int, channels: int, stride: int, dilation: int) -> None:
        # feature_info holds the last layer at each nominal reduction (input size / map size with
        # no dilation): 2, 4, 8, 16, 32. With output_stride < 32 the later maps keep their size.
        reduction = stride * dilation
        entry = {"index": index, "reduction": reduction, "stride": stride, "channels": channels}
        if self.feature_info and self.feature_info[-1]["reduction"] == reduction:
            self.feature_info[-1] = entry
        else:
            self.feature_info.append(entry)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init over fan-out per group (as TF and timm): PyTorch's own fan_out ignores
                # groups, which makes depthwise filters ~sqrt(C) too small.
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int, background_class: bool = False) -> None:
        """Replace the classifier with a new, freshly initialised one.

        Args:
            num_classes: New class count; 0 removes the classifier, so that ``forward`` returns the
                pooled features (N, C), as timm does.
            background_class: Add TF-Slim's background output at index 0 (see the class). Default
                False.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.include_top = True
        self.background_class = background_class and num_classes > 0
        self.num_classes = num_classes
        self.config.update(include_top=True, num_classes=num_classes,
                           background_class=self.background_class)
        if num_classes == 0:
            self.classifier = nn.Identity()
            return
        self.classifier = nn.Linear(self.num_features, num_classes + int(self.background_class))
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"input must be a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels but the model was built with "
                             f"in_channels={self.in_channels}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"input resolution must be at least 32x32, got {tuple(x.shape[-2:])}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body: input (N, in_channels, H, W) to the last feature map."""
        self._check_input(x)
        return self.features(x)

    def extract_features(self, x: torch.Tensor, reductions: Sequence[int] = (8, 16, 32)
                         ) -> "OrderedDict[int, torch.Tensor]":
        """The last feature map at each requested reduction (stride), for detection and segmentation.

        Args:
            x: Input batch (N, in_channels, H, W), H and W >= 32.
            reductions: Any of 2, 4, 8, 16, 32: the nominal input-to-map size ratio of the layers
                wanted (with ``output_stride`` < 32 the deeper maps keep the size of that stride).
                Default (8, 16, 32): at 300x300 input, the 38x38, 19x19 and 10x10 maps.

        Returns:
            An ordered dict ``reduction -> tensor``.
        """
        known = {f["reduction"]: f["index"] for f in self.feature_info}
        for r in reductions:
            if r not in known:
                raise ValueError(f"reductions must be among {sorted(known)}, got {r!r}")
        self._check_input(x)
        wanted = {known[r]: r for r in reductions}
        out: OrderedDict[int, torch.Tensor] = OrderedDict()
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if len(out) == len(wanted):
                break
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout and classifier; ``pre_logits=True`` stops before the classifier."""
        x = self.dropout(torch.flatten(self.pool(x), 1))
        if pre_logits or self.classifier is None:
            return x
        x = self.classifier(x)
        return x[:, 1:] if self.background_class else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x) if self.include_top else x

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities: the softmax of Table 1's last row, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self.forward(x), dim=1)
        finally:
            self.train(was_training)
