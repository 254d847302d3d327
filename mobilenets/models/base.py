"""What MobileNetV1 and MobileNetV2 share: argument checks, TF-Slim's ``output_stride`` rule,
``feature_info``, the head (pooling, dropout, classifier) and the forward API.

Each model builds its own body (``self.features``, an ``nn.Sequential``) from its paper's table;
everything around the body lives here once.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from mobilenets.checks import check_int, check_range
from mobilenets.models.config import ClassifierConfig


def check_rows(name: str, rows: Sequence[Sequence[int]], header: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless every row has ``len(header)`` positive integers.

    Args:
        name: The argument, e.g. ``"blocks"``.
        rows: The architecture table, e.g. ``[[64, 1, 1], ...]``.
        header: The row's fields in the papers' letters, e.g. ``"c, n, s"`` or ``"t, c, n, s"``.
    """
    width = len(header.split(","))
    for row in rows:
        if len(row) != width or not all(isinstance(v, int) and v >= 1 for v in row):
            raise ValueError(f"{name} rows must be [{header}] positive integers, got {row!r}")


class AtrousStride:
    """TF-Slim's ``output_stride`` rule, walked layer by layer.

    Once the running stride reaches ``output_stride``, a layer that would stride keeps stride 1
    and every later layer dilates by the stride it skipped, so the feature map keeps its size and
    the receptive field grows as it would have (atrous convolution, for dense prediction).

    Args:
        output_stride: 8, 16 or 32.

    Attributes:
        stride: The stride of the input so far (the input-to-map size ratio).
        dilation: The dilation the next non-strided layer gets.
    """

    def __init__(self, output_stride: int):
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.output_stride = output_stride
        self.stride, self.dilation = 1, 1

    def step(self, stride: int) -> tuple[int, int]:
        """(stride, dilation) for the next layer, whose nominal stride is ``stride``."""
        if stride > 1 and self.stride >= self.output_stride:
            dilation, self.dilation = self.dilation, self.dilation * stride
            return 1, dilation
        self.stride *= stride
        return stride, self.dilation


class MobileNetBase(nn.Module):
    """The parts of a MobileNet around its body.

    A subclass names its config's class in ``config_class`` (a ``ClassifierConfig`` whose fields
    are its constructor's arguments), sets ``self.config`` to one, calls ``_check_args``, builds
    ``self.features`` (calling ``_record_feature`` after each layer that ends a stage), then
    ``_build_head`` and ``_init_weights``. ``_init_conv`` may be overridden to initialise
    convolutions differently.
    """

    config_class: type[ClassifierConfig]
    config: ClassifierConfig

    def _check_args(self, width_mult, num_classes, in_channels, dropout) -> None:
        self.width_mult = float(check_range("width_mult", width_mult))
        self.in_channels = check_int("in_channels", in_channels)
        check_int("num_classes", num_classes)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.feature_info: list[dict] = []

    def _record_feature(self, index: int, channels: int, stride: int, dilation: int) -> None:
        # feature_info holds the last layer at each nominal reduction (input size / map size with
        # no dilation): 2, 4, 8, 16, 32. With output_stride < 32 the later maps keep their size.
        reduction = stride * dilation
        entry = {"index": index, "reduction": reduction, "stride": stride, "channels": channels}
        if self.feature_info and self.feature_info[-1]["reduction"] == reduction:
            self.feature_info[-1] = entry
        else:
            self.feature_info.append(entry)

    def _build_head(self, num_features: int, include_top: bool, num_classes: int,
                    background_class: bool, dropout: float) -> None:
        self.num_features = num_features
        self.include_top = include_top
        self.background_class = background_class
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier: nn.Module | None = None
        if include_top:
            self.reset_classifier(num_classes, background_class)

    def _init_conv(self, conv: nn.Conv2d) -> None:
        # He init over fan-out per group (as TF and timm): PyTorch's own fan_out ignores
        # groups, which makes depthwise filters ~sqrt(C) too small.
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
        nn.init.normal_(conv.weight, 0.0, (2.0 / fan_out) ** 0.5)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                self._init_conv(m)
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
        self.config.include_top, self.config.num_classes = True, num_classes
        self.config.background_class = self.background_class
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
        """Class probabilities: the softmax of the logits, in eval mode.

        Raises:
            ValueError: if some are not finite (NaN or infinite: weights that overflow float32),
                rather than returning them as probabilities.
        """
        was_training = self.training
        self.eval()
        try:
            probs = torch.softmax(self.forward(x), dim=1)
        finally:
            self.train(was_training)
        bad = int((~probs.isfinite()).any(dim=1).sum())
        if bad:
            raise ValueError(f"the model's outputs are not finite (NaN or infinite) for {bad} of "
                             f"{len(probs)} images: its weights overflow float32")
        return probs
