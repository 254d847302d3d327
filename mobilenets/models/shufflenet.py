"""ShuffleNet V1 (Zhang, Zhou, Lin and Sun, 2018) as its Table 1: pointwise group convolutions
and the channel shuffle, with the group count g (``groups``) and the scale factor s
(``width_mult``), the network the MobileNetV2 slides compare with (their Tables 3 and 4)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

from torch import nn

from mobilenets.checks import check_int
from mobilenets.models.base import AtrousStride, MobileNetBase, check_rows
from mobilenets.models.config import ClassifierConfig
from mobilenets.models.layers import ConvBNAct, Pool2d, ShuffleUnit
from mobilenets.models.mobilenet_v2 import make_divisible

#: Channels of Conv1, the full 3x3 convolution with stride 2 before the 3x3 max pool (Table 1).
SHUFFLENET_STEM_CHANNELS = 24

#: Table 1's output channels of Stages 2, 3 and 4 for each group count g: the widths that keep
#: the complexity near 140M Mult-Adds whatever g (143, 140, 137, 133, 137M for g = 1, 2, 3, 4, 8).
SHUFFLENET_STAGE_CHANNELS = {
    # g: (Stage 2, Stage 3, Stage 4)
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}

#: Units per stage and the stride of the first (Table 1's "Repeat" column: one unit with stride 2,
#: then 3, 7 and 3 with stride 1).
SHUFFLENET_STAGES = [
    # n, s
    [4, 2],  # Stage 2: 28x28 at 224
    [8, 2],  # Stage 3: 14x14
    [4, 2],  # Stage 4: 7x7
]


def shufflenet_blocks(groups: int) -> list[list[int]]:
    """Table 1's body for ``groups`` as ``[c, n, s]`` rows (``c`` at scale 1).

    Raises:
        ValueError: if Table 1 has no column for ``groups`` (it has 1, 2, 3, 4 and 8).
    """
    if groups not in SHUFFLENET_STAGE_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(SHUFFLENET_STAGE_CHANNELS)} (Table 1's "
                         f"columns), got {groups!r}; other counts need explicit blocks")
    return [[c, n, s] for c, (n, s) in zip(SHUFFLENET_STAGE_CHANNELS[groups], SHUFFLENET_STAGES)]


def shufflenet_channels(width_mult: float, groups: int, blocks: Sequence[Sequence[int]]
                        ) -> tuple[int, list[int]]:
    """The channel counts of ShuffleNet s× (``width_mult`` = s) with ``groups`` groups.

    Every stage's output is ``c * s`` rounded to the nearest multiple of ``4 * groups``
    (``make_divisible``, as MobileNetV2 rounds to multiples of 8), so that
    the bottleneck (a quarter of it) divides into the groups; every width of Table 1 is such a
    multiple already. The paper scales "the number of filters" but does not say what becomes of
    Conv1's 24: here it is 24 times the largest power of two <= s, at least 12 (12 below 1×, 24
    at 1× and 1.5×, 48 at 2×), rounded to a multiple of ``groups`` (the first unit's branch makes
    ``c - stem`` channels in g groups). That is Megvii's reference implementation
    (github.com/megvii-model/ShuffleNet-Series, ShuffleNetV1/network.py: 12 or 16 at 0.5×, 24 at
    1× and 1.5×, 48 at 2×, with these stage widths); it gives the papers' 292M at 1.5× (36
    channels would give 300M), the slides' 48 channels at 56x56 for 2× (their Table 3) and,
    at 0.25×, Table 2's 13M (6 channels would give 11M).

    Args:
        width_mult: s, > 0.
        groups: g, >= 1.
        blocks: The ``[c, n, s]`` rows at scale 1.

    Returns:
        ``(stem, [c of each row])``.
    """
    stages = [make_divisible(c * width_mult, 4 * groups) for c, _, _ in blocks]
    stem = max(12, int(SHUFFLENET_STEM_CHANNELS * 2.0 ** math.floor(math.log2(width_mult))))
    return make_divisible(stem, groups), stages


@dataclass(kw_only=True, slots=True)
class ShuffleNetV1Config(ClassifierConfig):
    """``ShuffleNetV1``'s config (a ``ClassifierConfig``): its constructor's arguments, with the
    same defaults."""

    arch: str = "shufflenet_v1"
    groups: int = 3
    dropout: float = 0.0
    blocks: list[list[int]] | None = None
    activation: str = "relu"
    zero_init_residual: bool = True


_DEFAULT = ShuffleNetV1Config()  # the constructor's defaults: the config's


class ShuffleNetV1(MobileNetBase):
    """ShuffleNet V1 (Zhang et al., 2018), Table 1.

    A full 3x3 convolution with stride 2 (24 channels) and a 3x3 max pool with stride 2, then
    three stages of ``ShuffleUnit`` (4, 8 and 4 units; each stage's first unit has stride 2 and
    concatenates an average-pooled shortcut, the others add the input), global average pooling,
    dropout and a fully connected classifier. The first unit's first 1x1 convolution is not
    grouped (the paper: "the number of input channels is relatively small"). ``forward`` returns
    logits; ``predict`` applies the softmax. The options, ``feature_info``, ``extract_features``,
    ``reset_classifier`` and ``include_top`` are MobileNet V1's and V2's (``MobileNetBase``).

    Args:
        width_mult: s, the paper's scale factor ("ShuffleNet s×"): every layer's channels times s
            (``shufflenet_channels``); any number > 0 (0.25, 0.5, 1, 1.5, 2 in the papers).
            Default 1.0.
        groups: g, the group count of the pointwise convolutions: 1, 2, 3, 4 or 8 (Table 1's
            columns), any integer >= 1 with explicit ``blocks``. Default 3.
        num_classes: Classifier outputs, >= 1. Default 1000.
        in_channels: Input image channels, >= 1. Default 3.
        dropout: Dropout probability before the classifier, in [0, 1). Default 0 (the paper
            uses none).
        include_top: If False there is no pooling or classifier and ``forward`` returns the last
            feature map (N, C, H/32, W/32). Default True.
        blocks: The body as ``[c, n, s]`` rows (``c`` at scale 1; the first of the ``n`` units
            has stride ``s`` and concatenates). Default ``shufflenet_blocks(groups)`` (Table 1).
        activation: ``"relu"`` (the paper) or ``"relu6"``. Default relu.
        padding: ``"symmetric"`` or ``"tf_same"`` (TensorFlow's "SAME", for convolutions and
            pools alike). Default symmetric.
        bn_eps: BatchNorm epsilon. Default 1e-5.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention). Default 0.1.
        output_stride: 8, 16 or 32: the ratio of input to final feature-map size; below 32 the
            later strided units keep stride 1 and dilate their depthwise convolutions instead
            (TF-Slim's rule, as MobileNet V1 and V2). Default 32.
        background_class: If True the classifier has ``num_classes + 1`` outputs, index 0 being
            a background class that ``forward`` drops. Default False.
        norm_layer: Factory ``f(num_features) -> nn.Module`` replacing BatchNorm2d. Default None:
            ``nn.BatchNorm2d(eps=bn_eps, momentum=bn_momentum)``.
        zero_init_residual: Start the last BatchNorm scale of every adding unit at 0, so that each
            unit starts as the identity (Goyal et al., 2017; torchvision's ResNet option). The
            paper does not give its initialisation; with this package's RMSprop recipe (lr 0.06)
            ShuffleNet's loss spikes during the warm-up without it and a short Fashion-MNIST run
            ends far less accurate (docs/results/shufflenet.md). Default True.

    Raises:
        ValueError: for any argument outside the constraints above.
    """

    config_class = ShuffleNetV1Config

    def __init__(
        self,
        width_mult: float = _DEFAULT.width_mult,
        groups: int = _DEFAULT.groups,
        num_classes: int = _DEFAULT.num_classes,
        in_channels: int = _DEFAULT.in_channels,
        dropout: float = _DEFAULT.dropout,
        include_top: bool = _DEFAULT.include_top,
        blocks: Sequence[Sequence[int]] | None = _DEFAULT.blocks,
        activation: str = _DEFAULT.activation,
        padding: str = _DEFAULT.padding,
        bn_eps: float = _DEFAULT.bn_eps,
        bn_momentum: float = _DEFAULT.bn_momentum,
        output_stride: int = _DEFAULT.output_stride,
        background_class: bool = _DEFAULT.background_class,
        norm_layer: Callable[[int], nn.Module] | None = None,
        zero_init_residual: bool = _DEFAULT.zero_init_residual,
    ):
        super().__init__()
        # Everything needed to rebuild this model (save_model stores it with the weights).
        self.config = ShuffleNetV1Config(
            width_mult=width_mult, groups=groups, num_classes=num_classes,
            in_channels=in_channels, dropout=dropout, include_top=include_top,
            blocks=None if blocks is None else [list(row) for row in blocks],
            activation=activation, padding=padding, bn_eps=bn_eps, bn_momentum=bn_momentum,
            output_stride=output_stride, background_class=background_class,
            zero_init_residual=zero_init_residual,
        )
        self._check_args(width_mult, num_classes, in_channels, dropout)
        self.groups = check_int("groups", groups)
        blocks = shufflenet_blocks(groups) if blocks is None else blocks
        check_rows("blocks", blocks, "c, n, s")
        atrous = AtrousStride(output_stride)
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        block_kwargs = dict(activation=activation, padding=padding, norm_layer=norm_layer)

        # Conv1 and the max pool, then Table 1's stages, walked as MobileNet V1 walks its Table 1
        # (TF-Slim's output_stride rule).
        channels, row_channels = shufflenet_channels(self.width_mult, groups, blocks)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, atrous.step(2)[0],
                                             **block_kwargs)]
        self._record_feature(0, channels, atrous.stride, atrous.dilation)
        layers.append(Pool2d("max", 3, atrous.step(2)[0], padding))
        self._record_feature(1, channels, atrous.stride, atrous.dilation)
        for row, ((_, n, s), out) in enumerate(zip(blocks, row_channels)):
            for i in range(n):
                layer_stride, layer_dilation = atrous.step(s if i == 0 else 1)
                layers.append(ShuffleUnit(
                    channels, out, groups, layer_stride, layer_dilation,
                    concat=i == 0 and (s > 1 or channels != out),
                    first_groups=1 if row == 0 and i == 0 else groups, **block_kwargs))
                channels = out
                self._record_feature(len(layers) - 1, channels, atrous.stride, atrous.dilation)
        self.features = nn.Sequential(*layers)
        self._build_head(channels, include_top, num_classes, background_class, dropout)
        self._init_weights()
        for unit in layers[2:] if zero_init_residual else ():
            bn_weight = getattr(unit.expand.bn, "weight", None)
            if not unit.concat and bn_weight is not None:
                nn.init.zeros_(bn_weight)
