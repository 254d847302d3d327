"""Object detection on MobileNet backbones: SSD, SSDLite and Faster R-CNN (paper section 4.6,
Table 13; MobileNetV2 paper section 6.2, Table 6), built from torchvision's detection components.

Detectors:

- ``ssd``: SSD 300 as in the TF Object Detection API's ``ssd_mobilenet_v1_coco`` (the paper's
  COCO setup, whose Table 13 it reproduces): the stride-16 and stride-32 maps of the backbone
  (19x19 and 10x10 at 300x300), four extra layers (1x1 convolution to half depth, 3x3 stride-2
  convolution to depths 512, 256, 256, 128, times alpha), 1x1 box predictors, 1917 default boxes
  (3 in the lowest layer, 6 elsewhere).
- ``ssdlite``: the same with every 3x3 convolution of the extra layers and of the predictors made
  depthwise separable (MobileNetV2 paper, section 6.2). On MobileNetV2 the first map is the
  expansion (1x1) layer of the first stride-32 block, as in the paper ("attached to the expansion of
  layer 15").
- ``faster_rcnn``: Faster R-CNN as in the TF Object Detection API's ``faster_rcnn_mobilenet``:
  the RPN on the stride-16 map (one 3x3 convolution, 12 anchors per position), 300 proposals per
  image, 14x14 RoIAlign crops, and the backbone's stride-32 layers (Conv 12 and 13) as the
  per-proposal box head, then average pooling and the class / box layers.

Every detector is a torchvision ``SSD`` or ``FasterRCNN`` (their losses, box coding, matching,
anchor generators and NMS) around our backbone, built from ``ConvBNAct`` and ``DepthwiseSeparable``.
Images enter in [0, 1] and are normalised to [-1, 1] like the classification models' inputs.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
from torchvision.models.detection.ssd import SSD, SSDHead, SSDScoringHead
from torchvision.ops import MultiScaleRoIAlign

from mobilenets.checks import check_choice, check_int
from mobilenets.models.config import ClassifierConfig, TaskConfig
from mobilenets.models.layers import ConvBNAct, DepthwiseSeparable
from mobilenets.models.registry import (ARCHS, arch_name, build_from_config, load_model,
                                        register_builder)

#: The detector kinds ``build_detector`` makes.
DETECTORS = ("ssd", "ssdlite", "faster_rcnn")

#: Depths of the four extra SSD feature layers at alpha = 1 (TF Object Detection API,
#: ``ssd_mobilenet_v1_feature_extractor.py``: ``layer_depth [-1, -1, 512, 256, 256, 128]``; the
#: same in ``ssd_mobilenet_v2_feature_extractor.py``), scaled by alpha with a floor of
#: ``EXTRA_MIN_DEPTH`` (its ``min_depth``).
EXTRA_DEPTHS = (512, 256, 256, 128)
EXTRA_MIN_DEPTH = 16

#: Default-box scales of SSD's six maps: evenly spaced from 0.2 to 0.95 of the image (TF Object
#: Detection API ``ssd_anchor_generator``: ``min_scale: 0.2, max_scale: 0.95``; SSD paper eq. 4).
SSD_MIN_SCALE, SSD_MAX_SCALE = 0.2, 0.95


@dataclass(kw_only=True, slots=True)
class DetectorConfig(TaskConfig):
    """A detector's config (``build_detector``'s arguments; ``arch`` is the detector, ``backbone``
    the MobileNet's config, its ``include_top`` False, ``name`` and ``resolution`` None).

    Attributes:
        num_classes: Object classes, without the background.
        resolution: Square input side the images are resized to.
        min_scale: SSD default-box scale of the first map. Default ``SSD_MIN_SCALE``.
        max_scale: SSD default-box scale of the last map. Default ``SSD_MAX_SCALE``.
        detector: ``arch`` again, as files written before configs named an ``arch`` held it.
    """

    num_classes: int
    resolution: int
    min_scale: float = SSD_MIN_SCALE
    max_scale: float = SSD_MAX_SCALE
    detector: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.detector = self.arch

#: Faster R-CNN anchors: scales (0.25, 0.5, 1, 2) x 256 pixels at 600x600 input, aspect ratios
#: 0.5, 1, 2 (TF Object Detection API ``faster_rcnn`` configs, ``grid_anchor_generator``), scaled
#: with the input size.
RCNN_ANCHOR_SIZES_600 = (64, 128, 256, 512)
RCNN_ASPECT_RATIOS = (0.5, 1.0, 2.0)
#: Proposals kept per image, in training and at test time (paper, section 4.6: "300 RPN proposal
#: boxes"; TF ``first_stage_max_proposals: 300``).
RCNN_PROPOSALS = 300
#: RoIAlign crop side on the stride-16 map (TF ``initial_crop_size: 14``); the box head's own
#: stride-2 layer halves it to 7x7.
RCNN_CROP = 14

#: Normalisation to [-1, 1] from [0, 1] inputs: ``data.BatchTransform``'s ``x / 127.5 - 1``.
IMAGE_MEAN, IMAGE_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _split_at_stride16(base: nn.Module, lite_v2: bool) -> tuple[nn.Sequential, nn.Sequential, int]:
    """Split a MobileNet body into the layers up to the stride-16 map and the rest.

    For MobileNetV2 with ``lite_v2`` the split falls inside the first stride-32 block, after its
    expansion layer (MobileNetV2 paper, section 6.2). Returns ``(to16, to32, channels at 16)``.
    """
    known = {f["reduction"]: f for f in base.feature_info}
    if 16 not in known or 32 not in known:
        raise ValueError("the backbone needs output_stride=32 (stride-16 and stride-32 maps) for "
                         "detection")
    i16 = known[16]["index"]
    layers = list(base.features)
    nxt = layers[i16 + 1]
    if lite_v2 and getattr(nxt, "expand", None) is not None:
        to16 = nn.Sequential(*layers[:i16 + 1], nxt.expand)
        to32 = nn.Sequential(nxt.dw, nxt.project, *layers[i16 + 2:])
        return to16, to32, nxt.expand.conv.out_channels
    return nn.Sequential(*layers[:i16 + 1]), nn.Sequential(*layers[i16 + 1:]), known[16]["channels"]


def _last_channels(layers: nn.Sequential) -> int:
    return [m for m in layers.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def extra_depths(width_mult: float) -> list[int]:
    """The extra layers' depths at ``width_mult``: ``max(16, int(d * alpha))`` (TF's rule)."""
    return [max(EXTRA_MIN_DEPTH, int(d * width_mult)) for d in EXTRA_DEPTHS]


class SSDBackbone(nn.Module):
    """A MobileNet body plus SSD's extra layers; ``forward`` returns the six maps.

    Args:
        base: A ``MobileNetV1`` or ``MobileNetV2`` (its classifier is not used).
        lite: Depthwise separable 3x3 convolutions in the extra layers (SSDLite). Default False.

    Attributes:
        out_channels: Channels of the six maps.
    """

    def __init__(self, base: nn.Module, lite: bool = False):
        super().__init__()
        is_v2 = base.config.arch == "mobilenet_v2"
        self.to16, self.to32, c16 = _split_at_stride16(base, lite_v2=lite and is_v2)
        channels = _last_channels(self.to32)
        self.out_channels = [c16, channels]
        extras = []
        # TF Object Detection API: every extra layer is Conv 1x1 (depth / 2) + BN + ReLU6, then a
        # stride-2 3x3 convolution (SSDLite: depthwise separable) + BN + ReLU6.
        for depth in extra_depths(base.width_mult):
            down = (DepthwiseSeparable(depth // 2, depth, stride=2, activation="relu6") if lite
                    else ConvBNAct(depth // 2, depth, 3, stride=2, activation="relu6"))
            squeeze = ConvBNAct(channels, depth // 2, 1, activation="relu6")
            extras.append(nn.Sequential(squeeze, down))
            channels = depth
            self.out_channels.append(depth)
        self.extras = nn.ModuleList(extras)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = [self.to16(x)]
        maps.append(self.to32(maps[-1]))
        for layer in self.extras:
            maps.append(layer(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class SSDBoxGenerator(DefaultBoxGenerator):
    """torchvision's ``DefaultBoxGenerator`` with the TF Object Detection API's lowest layer:
    3 boxes there (scale 0.1 at ratio 1; the layer's scale at ratios 2 and 1/2,
    ``reduce_boxes_in_lowest_layer: true``) and 6 on the others (ratios 1, 2, 1/2, 3, 1/3 and the
    scale between this layer's and the next at ratio 1). 1917 boxes at 300x300.

    Args:
        num_maps: Feature maps, >= 2. Default 6.
        min_scale: Box scale of the first map (fraction of the image side). Default 0.2.
        max_scale: Box scale of the last map. Default 0.95.
    """

    def __init__(self, num_maps: int = 6, min_scale: float = SSD_MIN_SCALE,
                 max_scale: float = SSD_MAX_SCALE):
        if not 0 < min_scale < max_scale <= 1.5:
            raise ValueError(f"need 0 < min_scale < max_scale, got min_scale={min_scale}, "
                             f"max_scale={max_scale}")
        super().__init__([[2, 3]] * num_maps, min_ratio=min_scale, max_ratio=max_scale)
        lowest = self.scales[0]
        s2 = math.sqrt(2.0)
        self._wh_pairs[0] = torch.tensor([[lowest / 2, lowest / 2], [lowest * s2, lowest / s2],
                                          [lowest / s2, lowest * s2]])

    def num_anchors_per_location(self) -> list[int]:
        return [3] + [6] * (len(self.aspect_ratios) - 1)


def _predictor(channels: int, outputs: int, lite: bool) -> nn.Module:
    """One box predictor: 1x1 convolution (SSD: TF ``kernel_size: 1``), or for SSDLite a 3x3
    depthwise convolution + BN + ReLU6 then the 1x1 convolution (MobileNetV2 paper, section 6.2)."""
    conv = nn.Conv2d(channels, outputs, 1)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    if not lite:
        return conv
    depthwise = ConvBNAct(channels, channels, 3, groups=channels, activation="relu6")
    return nn.Sequential(depthwise, conv)


class MobileSSDHead(SSDHead):
    """torchvision's ``SSDHead`` (classification and box-regression ``SSDScoringHead``) with
    ``_predictor`` layers: 1x1 for SSD, depthwise separable for SSDLite.

    Args:
        in_channels: Channels of each map.
        num_anchors: Default boxes per position of each map.
        num_classes: Classes including the background (index 0).
        lite: SSDLite predictors. Default False.
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 lite: bool = False):
        nn.Module.__init__(self)
        self.classification_head = SSDScoringHead(nn.ModuleList(
            _predictor(c, a * num_classes, lite) for c, a in zip(in_channels, num_anchors)),
            num_classes)
        self.regression_head = SSDScoringHead(nn.ModuleList(
            _predictor(c, a * 4, lite) for c, a in zip(in_channels, num_anchors)), 4)


def build_backbone(arch: str = "v1", width_mult: float = 1.0,
                   weights: str | os.PathLike | None = None) -> nn.Module:
    """A MobileNet classification model whose body a detector uses.

    Args:
        arch: ``"v1"``, ``"v2"`` (or ``"mobilenet_v1"``, ``"mobilenet_v2"``). Default v1.
        width_mult: alpha, > 0. Default 1.0. Ignored when ``weights`` is given (the file's is used).
        weights: Our ``.safetensors`` (from ``mobilenets train`` or ``mobilenets convert``), loaded
            with ``registry.load_model``; its classifier is dropped. Default None: fresh weights.

    Returns:
        The model (``MobileNetV1`` or ``MobileNetV2``).

    Raises:
        FileNotFoundError: if ``weights`` does not exist.
        ValueError: if ``weights`` holds another architecture than ``arch``, or an argument is bad.
    """
    arch = arch_name(arch)
    if weights is None:
        return ARCHS[arch](width_mult=width_mult, include_top=False)
    base = load_model(weights, kind="classifier")
    if base.config.arch != arch:
        raise ValueError(f"backbone weights {weights} hold a {base.config.arch}, but arch="
                         f"{arch!r} was asked for")
    if base.config.output_stride != 32:
        base = load_model(weights, output_stride=32)
    return base.train()


def build_detector(detector: str = "ssdlite", arch: str = "v2", width_mult: float = 1.0,
                   num_classes: int = 90, resolution: int = 300,
                   backbone_weights: str | os.PathLike | None = None,
                   backbone_config: ClassifierConfig | None = None,
                   min_scale: float = SSD_MIN_SCALE,
                   max_scale: float = SSD_MAX_SCALE) -> nn.Module:
    """Build a detector on a MobileNet backbone.

    Args:
        detector: ``"ssd"``, ``"ssdlite"`` or ``"faster_rcnn"`` (see the module docstring).
            Default ssdlite.
        arch: Backbone, ``"v1"`` or ``"v2"``. Default v2.
        width_mult: alpha of the backbone (and of SSD's extra layers), > 0. Default 1.0.
        num_classes: Object classes, without the background, >= 1. Default 90 (COCO's ids).
        resolution: Square input side the images are resized to, >= 64. Default 300 (Table 13's
            SSD 300 and Faster R-CNN 300; 600 for Faster R-CNN 600).
        backbone_weights: Our ``.safetensors`` classification checkpoint to start the backbone
            from (``build_backbone``); its arch and alpha replace ``arch`` and ``width_mult``.
            Default None (fresh weights).
        backbone_config: A backbone's config (as a detector's config stores it) to rebuild the
            backbone from, instead of ``arch``/``width_mult``; for ``detector_from_config``.
        min_scale: SSD default-box scale of the first map, as a fraction of the image. Default 0.2.
        max_scale: SSD default-box scale of the last map. Default 0.95.

    Returns:
        A torchvision ``SSD`` or ``FasterRCNN``: in training mode ``model(images, targets)`` gives
        the losses, in eval mode ``model(images)`` a list of ``{"boxes", "scores", "labels"}``
        (labels 1..num_classes). ``model.config`` holds what ``save_model`` stores.

    Raises:
        ValueError: for an unknown ``detector`` or ``arch``, or a bad number.
        FileNotFoundError: if ``backbone_weights`` does not exist.
    """
    check_choice("detector", detector, DETECTORS)
    check_int("num_classes", num_classes)
    check_int("resolution", resolution, 64)
    if backbone_config is not None:
        base = build_from_config(backbone_config.replace(include_top=False))
    else:
        base = build_backbone(arch, width_mult, backbone_weights)
    config = DetectorConfig(arch=detector, backbone=base.config.replace(name=None, resolution=None),
                            num_classes=num_classes, resolution=resolution, min_scale=min_scale,
                            max_scale=max_scale)
    size = (resolution, resolution)
    if detector == "faster_rcnn":
        model = _faster_rcnn(base, num_classes, resolution)
    else:
        lite = detector == "ssdlite"
        backbone = SSDBackbone(base, lite=lite)
        anchors = SSDBoxGenerator(len(backbone.out_channels), min_scale, max_scale)
        head = MobileSSDHead(backbone.out_channels, anchors.num_anchors_per_location(),
                             num_classes + 1, lite)
        # Post-processing: torchvision's ssdlite320 settings (score 0.001, NMS IoU 0.55, 300
        # candidates per class, 300 detections); COCO evaluation reads the best 100.
        model = SSD(backbone, anchors, size, num_classes + 1, image_mean=IMAGE_MEAN,
                    image_std=IMAGE_STD, head=head, score_thresh=0.001, nms_thresh=0.55,
                    detections_per_img=300, topk_candidates=300)
    model.config = config
    return model


def _faster_rcnn(base: nn.Module, num_classes: int, resolution: int) -> FasterRCNN:
    to16, to32, c16 = _split_at_stride16(base, lite_v2=False)
    to16.out_channels = c16
    scale = resolution / 600
    sizes = tuple(max(8, int(round(s * scale))) for s in RCNN_ANCHOR_SIZES_600)
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=(RCNN_ASPECT_RATIOS,))
    pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=RCNN_CROP, sampling_ratio=2)
    box_head = nn.Sequential(to32, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    predictor = FastRCNNPredictor(_last_channels(to32), num_classes + 1)
    return FasterRCNN(to16, num_classes=None, min_size=resolution, max_size=resolution,
                      image_mean=IMAGE_MEAN, image_std=IMAGE_STD, rpn_anchor_generator=anchors,
                      rpn_post_nms_top_n_train=RCNN_PROPOSALS,
                      rpn_post_nms_top_n_test=RCNN_PROPOSALS, box_roi_pool=pool,
                      box_head=box_head, box_predictor=predictor,
                      size_divisible=1)  # torchvision pads to multiples of 32 (300 -> 320); TF not


def detector_from_config(config: DetectorConfig) -> nn.Module:
    """Rebuild a detector (fresh weights) from its ``config``: the registry's builder for
    ``ssd``, ``ssdlite`` and ``faster_rcnn`` (``registry.load_model`` loads a detector file)."""
    return build_detector(config.arch, num_classes=config.num_classes,
                          resolution=config.resolution, backbone_config=config.backbone,
                          min_scale=config.min_scale, max_scale=config.max_scale)


def for_costing(model: nn.Module) -> nn.Module:
    """Set a detector up to be profiled as the paper counts it, in place, and return it.

    Faster R-CNN: the RPN's NMS threshold becomes 1.0 (no proposal suppressed), so the box head
    always runs on exactly ``RCNN_PROPOSALS`` (300) proposals, whatever the input (a blank profiling
    image gives many equal scores). SSD and SSDLite are unchanged.
    """
    rpn = getattr(model, "rpn", None)
    if rpn is not None:
        rpn.nms_thresh = 1.0
    return model


def profile_detector(model: nn.Module, name: str | None = None):
    """Mult-Adds and parameters of one image through a detector, as Table 13 counts them.

    Counted (hooks on convolutions and fully connected layers, ``profiler.profile_model``): the
    backbone, SSD's extra layers and box predictors; for Faster R-CNN the RPN (3x3 convolution and
    1x1 predictors), and the box head and class/box layers over all 300 proposals (``for_costing``).
    Not counted (no multiply-accumulates in the paper's sense, or data-dependent): resizing and
    normalising the input, anchor generation, box decoding, RoIAlign, softmax, NMS and top-k.

    Args:
        model: A detector from ``build_detector``; its RPN settings are restored afterwards.
        name: Label for the report. Default: detector, arch and alpha.

    Returns:
        A ``profiler.Profile`` at the detector's resolution.
    """
    from mobilenets.cost.profiler import profile_model

    cfg = model.config
    res = cfg.resolution
    name = name or f"{cfg.arch}_{cfg.backbone.arch}_{cfg.backbone.width_mult}_{res}"
    rpn = getattr(model, "rpn", None)
    saved = rpn.nms_thresh if rpn is not None else None
    try:
        return profile_model(for_costing(model), (3, res, res), name=name)
    finally:
        if rpn is not None:
            rpn.nms_thresh = saved


for _detector in DETECTORS:
    register_builder(_detector, detector_from_config, kind="detector", config_class=DetectorConfig)
