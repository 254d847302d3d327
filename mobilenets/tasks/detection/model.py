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

import json
import math
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.ssd import SSD, SSDHead, SSDScoringHead
from torchvision.ops import MultiScaleRoIAlign

from mobilenets.models.layers import ConvBNAct, DepthwiseSeparable, check_choice
from mobilenets.models.registry import ARCHS, arch_name, build_from_config

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
        is_v2 = base.config["arch"] == "mobilenet_v2"
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
            with ``checkpoint.load_model``; its classifier is dropped. Default None: fresh weights.

    Returns:
        The model (``MobileNetV1`` or ``MobileNetV2``).

    Raises:
        FileNotFoundError: if ``weights`` does not exist.
        ValueError: if ``weights`` holds another architecture than ``arch``, or an argument is bad.
    """
    arch = arch_name(arch)
    if weights is None:
        return ARCHS[arch](width_mult=width_mult, include_top=False)
    from mobilenets.models.modelfile import load_model

    base = load_model(weights)
    if base.config["arch"] != arch:
        raise ValueError(f"backbone weights {weights} hold a {base.config['arch']}, but arch="
                         f"{arch!r} was asked for")
    if base.config.get("output_stride", 32) != 32:
        base = load_model(weights, output_stride=32)
    return base.train()


def build_detector(detector: str = "ssdlite", arch: str = "v2", width_mult: float = 1.0,
                   num_classes: int = 90, resolution: int = 300,
                   backbone_weights: str | os.PathLike | None = None,
                   backbone_config: dict | None = None, min_scale: float = SSD_MIN_SCALE,
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
        backbone_config: A backbone config dict (as stored in a detector's config) to rebuild the
            backbone from, instead of ``arch``/``width_mult``; for ``load_detector``.
        min_scale: SSD default-box scale of the first map, as a fraction of the image. Default 0.2.
        max_scale: SSD default-box scale of the last map. Default 0.95.

    Returns:
        A torchvision ``SSD`` or ``FasterRCNN``: in training mode ``model(images, targets)`` gives
        the losses, in eval mode ``model(images)`` a list of ``{"boxes", "scores", "labels"}``
        (labels 1..num_classes). ``model.config`` holds what ``save_detector`` stores.

    Raises:
        ValueError: for an unknown ``detector`` or ``arch``, or a bad number.
        FileNotFoundError: if ``backbone_weights`` does not exist.
    """
    check_choice("detector", detector, DETECTORS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 64:
        raise ValueError(f"resolution must be an integer >= 64, got {resolution!r}")
    if backbone_config is not None:
        base = build_from_config({**backbone_config, "include_top": False})
    else:
        base = build_backbone(arch, width_mult, backbone_weights)
    backbone_cfg = {k: v for k, v in base.config.items() if k not in ("name", "resolution")}
    config = {"detector": detector, "backbone": backbone_cfg, "num_classes": num_classes,
              "resolution": resolution, "min_scale": min_scale, "max_scale": max_scale}
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


def save_detector(model: nn.Module, path: str | os.PathLike, class_names: Sequence[str] = ()
                  ) -> Path:
    """Save a detector built by ``build_detector`` (safetensors + config, atomically).

    Args:
        model: The detector.
        path: Destination ``.safetensors`` file.
        class_names: Names of labels 1..K, stored beside the weights. Default none.

    Returns:
        The path written.
    """
    from mobilenets.models.modelfile import save_model

    return save_model(model, path, extra={"class_names": list(class_names)})


def load_detector(path: str | os.PathLike) -> tuple[nn.Module, list[str]]:
    """Load a detector saved by ``save_detector``.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        ``(model in eval mode, class names)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a detector file, or its weights do not fit.
    """
    from mobilenets.models.modelfile import load_state_dict_checked, read_model_file

    config, state, extra = read_model_file(path)
    if "detector" not in config:
        raise ValueError(f"{path} holds a classification model, not a detector (save one with "
                         "`mobilenets detect train`)")
    model = detector_from_config(config)
    load_state_dict_checked(model, state, source=str(path))
    return model.eval(), list(extra.get("class_names", []))


def detector_from_config(config: dict) -> nn.Module:
    """Rebuild a detector (fresh weights) from its ``config`` dict."""
    return build_detector(config["detector"], num_classes=config["num_classes"],
                          resolution=config["resolution"], backbone_config=config["backbone"],
                          min_scale=config.get("min_scale", SSD_MIN_SCALE),
                          max_scale=config.get("max_scale", SSD_MAX_SCALE))


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
    res = cfg["resolution"]
    name = name or (f"{cfg['detector']}_{cfg['backbone']['arch']}_"
                    f"{cfg['backbone']['width_mult']}_{res}")
    rpn = getattr(model, "rpn", None)
    saved = rpn.nms_thresh if rpn is not None else None
    try:
        return profile_model(for_costing(model), (3, res, res), name=name)
    finally:
        if rpn is not None:
            rpn.nms_thresh = saved


# --------------------------------------------------------------------------- training

@dataclass
class DetectConfig:
    """One detector training run. Presets live in ``DETECT_PRESETS``; every field can be overridden.

    The ``paper`` preset is the TF Object Detection API's ``ssd_mobilenet_v1_coco.config`` and
    ``ssdlite_mobilenet_v2_coco.config`` (the configs behind Table 13 and the MobileNetV2 paper's
    Table 6): RMSprop (decay 0.9, momentum 0.9, epsilon 1.0), learning rate 0.004 decayed by 0.95
    every 800,720 steps, batch 24, L2 weight decay 4e-5, horizontal flips. ``synthetic`` sizes a
    run for the synthetic shapes on this 2-core CPU (see its comments).
    """

    # Model
    detector: str = "ssdlite"  # ssd | ssdlite | faster_rcnn
    arch: str = "v2"  # backbone: v1 | v2
    width_mult: float = 1.0  # alpha
    resolution: int = 300  # paper: 300x300 (Table 13; MobileNetV2 paper section 6.2)
    backbone_weights: str | None = None  # our .safetensors classification checkpoint
    min_scale: float = SSD_MIN_SCALE  # TF ssd_anchor_generator min_scale 0.2
    max_scale: float = SSD_MAX_SCALE  # TF max_scale 0.95
    # Data (COCO-format annotation files; images/ beside them)
    train_data: str = ""
    val_data: str | None = None
    train_images: str | None = None  # default: images/ beside the annotation file, else its folder
    val_images: str | None = None
    flip: bool = True  # TF config: random_horizontal_flip
    limit_val: int | None = None  # evaluate each epoch on the first N validation images
    # Optimisation
    epochs: float = 10
    batch_size: int = 24  # TF config: batch_size 24
    optimizer: str = "rmsprop"  # TF config: rms_prop_optimizer; or "sgd" (Nesterov), "adam"
    lr: float = 0.004  # TF config: initial_learning_rate 0.004
    lr_schedule: str = "exponential"  # TF: exponential_decay; or "cosine" (torchvision's SSDLite)
    lr_decay: float = 0.95  # TF config: decay_factor 0.95 ...
    lr_decay_steps: int = 800720  # ... every decay_steps 800720
    warmup_epochs: float = 0.0
    momentum: float = 0.9  # TF config: momentum_optimizer_value 0.9
    rmsprop_decay: float = 0.9  # TF config: decay 0.9
    eps: float = 1.0  # TF config: epsilon 1.0
    weight_decay: float = 4e-5  # TF config: l2_regularizer weight 0.00004
    grad_clip: float | None = None  # max gradient norm (none in the TF configs)
    # Run
    seed: int = 0
    out_dir: str = "runs/detect"
    checkpoint_every: int = 50  # steps
    eval_batch_size: int = 16
    log_every: int = 10  # steps between progress lines

    def validate(self) -> "DetectConfig":
        """Check every field; return self. Raises ``ValueError`` naming the field."""
        check_choice("detector", self.detector, DETECTORS)
        arch_name(self.arch)
        check_choice("optimizer", self.optimizer, ("rmsprop", "sgd", "adam"))
        check_choice("lr_schedule", self.lr_schedule, ("exponential", "cosine"))
        for name in ("epochs", "batch_size", "lr", "width_mult", "checkpoint_every",
                     "eval_batch_size", "lr_decay_steps", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
        if not isinstance(self.resolution, int) or self.resolution < 64:
            raise ValueError(f"resolution must be an integer >= 64, got {self.resolution!r}")
        if not self.train_data:
            raise ValueError("train_data (a COCO annotation file) is required")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        return self


#: Named recipes: "paper" (the TF configs, see ``DetectConfig``), "synthetic" (the CPU run on the
#: synthetic shapes), "smoke" (tests).
DETECT_PRESETS: dict[str, DetectConfig] = {
    "paper": DetectConfig(),
    # SSDLite on the synthetic shapes at 128x128 on one CPU thread: objects of 15-50% of the
    # image need default boxes from 0.1 (not 0.2) of it; 1,500 steps of batch 16 from a random
    # backbone. Adam (Kingma & Ba 2015) at 2e-3 with one quarter-epoch warm-up and a cosine decay
    # (torchvision's SSDLite recipe's schedule) instead of TF's RMSprop: in 100-step pilots on
    # synthetic shapes at 128x128, Adam reached a training loss of 10.4, RMSprop (TF, lr 0.01) 17.2.
    "synthetic": DetectConfig(resolution=128, width_mult=0.5, min_scale=0.1, max_scale=0.9,
                              epochs=6, batch_size=16, optimizer="adam", lr=2e-3,
                              lr_schedule="cosine", warmup_epochs=0.25, grad_clip=10.0),
    "smoke": DetectConfig(width_mult=0.25, resolution=64, min_scale=0.1, epochs=1, batch_size=4,
                          lr=0.01, lr_schedule="cosine", checkpoint_every=2, log_every=1000,
                          eval_batch_size=4),
}


def make_detect_config(preset: str = "synthetic", **overrides) -> DetectConfig:
    """A preset of ``DETECT_PRESETS`` with some fields replaced; unknown names or bad values raise
    ``ValueError``."""
    from mobilenets.engine.train import config_from_preset

    return config_from_preset(DETECT_PRESETS, preset, **overrides)


def detect_lr(step: int, steps_per_epoch: int, total_steps: int, cfg: DetectConfig) -> float:
    """The learning rate at ``step``: linear warm-up, then exponential (TF) or cosine decay."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_schedule == "cosine":
        t = (step - warmup) / max(total_steps - warmup, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return cfg.lr * cfg.lr_decay ** ((step - warmup) / cfg.lr_decay_steps)


def _detect_optimizer(model: nn.Module, cfg: DetectConfig):
    from mobilenets.engine.optim import RMSpropTF, param_groups

    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=cfg.lr, decay=cfg.rmsprop_decay, momentum=cfg.momentum,
                         eps=cfg.eps)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def train_detector(cfg: DetectConfig, resume: bool = False) -> dict:
    """Train a detector on COCO-format data, evaluating COCO mAP after every epoch.

    Writes to ``cfg.out_dir`` (each file atomically): ``config.json``, ``checkpoint.pt`` (every
    ``checkpoint_every`` steps and each epoch: model, optimizer, step, history), ``metrics.json``
    (per-epoch loss and mAP) and ``model.safetensors`` (``save_detector``, after each epoch).

    Args:
        cfg: The run (``make_detect_config``).
        resume: Continue from ``checkpoint.pt`` in ``cfg.out_dir`` (same batches, same result as
            an uninterrupted run). Without it an existing checkpoint is an error.

    Returns:
        ``{"history": [per-epoch records], "final": the last record, "out_dir": ...}``.

    Raises:
        ValueError / FileNotFoundError: for bad data or a config/checkpoint mismatch.
        train.NonFiniteLossError: if the loss stops being finite.
    """
    from mobilenets.tasks.detection.data import CocoDetection, collate, evaluate_detector
    from mobilenets.engine.train import NonFiniteLossError, load_checkpoint, save_checkpoint

    cfg.validate()
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise ValueError(f"{ckpt_path} exists: pass resume=True (--resume) or another out_dir")
    train_set = CocoDetection(cfg.train_data, cfg.train_images, flip=cfg.flip)
    val_set = CocoDetection(cfg.val_data, cfg.val_images) if cfg.val_data else None
    if val_set is not None and val_set.cat_ids != train_set.cat_ids:
        raise ValueError(f"val_data {cfg.val_data} has categories {val_set.cat_ids}, train_data "
                         f"{train_set.cat_ids}")
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.detector, cfg.arch, cfg.width_mult, len(train_set.class_names),
                           cfg.resolution, cfg.backbone_weights, min_scale=cfg.min_scale,
                           max_scale=cfg.max_scale)
    opt = _detect_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    step, history, loss_sum, loss_n = 0, [], 0.0, 0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if state["config"] != asdict(cfg):
            changed = sorted(k for k in state["config"] if state["config"][k] != asdict(cfg).get(k))
            raise ValueError(f"{ckpt_path} was written with other settings ({changed}); use the "
                             "same ones to resume, or another out_dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        loss_sum, loss_n = state["loss_sum"], state["loss_n"]
    from mobilenets.fileio import atomic_path

    with atomic_path(out / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(asdict(cfg), indent=2))

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "step": step, "history": history, "config": asdict(cfg),
                                    "loss_sum": loss_sum, "loss_n": loss_n})

    model.train()
    t0 = time.time()
    while step < total:
        epoch, i = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            cfg.seed * 100003 + epoch))
        torch.manual_seed(cfg.seed * 1000003 + step)  # the flips of this step
        images, targets = collate([train_set[int(j)] for j in
                                   order[i * cfg.batch_size:(i + 1) * cfg.batch_size]])
        images = [im.float() / 255 for im in images]
        for g in opt.param_groups:
            g["lr"] = detect_lr(step, steps_per_epoch, total, cfg)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at step {step}; the last checkpoint "
                                     f"in {out} is intact")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        if step % cfg.log_every == 0:
            print(f"step {step}/{total} epoch {epoch + 1} loss {loss.item():.4f} "
                  f"({', '.join(f'{k} {v.item():.3f}' for k, v in losses.items())}) "
                  f"lr {opt.param_groups[0]['lr']:.5f} {time.time() - t0:.0f}s", flush=True)
        end_of_epoch = step % steps_per_epoch == 0 or step == total
        if end_of_epoch:
            record = {"epoch": math.ceil(step / steps_per_epoch), "step": step,
                      "train_loss": loss_sum / loss_n, "seconds": round(time.time() - t0, 1)}
            if val_set is not None:
                metrics = evaluate_detector(model, val_set, cfg.eval_batch_size, cfg.limit_val)
                record.update({k: metrics[k] for k in ("AP", "AP50", "AP75", "AP_small",
                                                       "AP_medium", "AP_large", "images")})
                model.train()
            history.append(record)
            print(json.dumps(record), flush=True)
            loss_sum, loss_n = 0.0, 0
            save_detector(model, out / "model.safetensors", train_set.class_names)
            with atomic_path(out / "metrics.json") as tmp:
                Path(tmp).write_text(json.dumps(history, indent=2))
        if end_of_epoch or step % cfg.checkpoint_every == 0:
            save(step)
    return {"history": history, "final": history[-1] if history else {}, "out_dir": str(out)}


# --------------------------------------------------------------------------- export and drawing

class SSDExportModule(nn.Module):
    """The exportable part of an SSD/SSDLite: normalisation, backbone, head, box decoding and the
    class softmax. NMS is left out (torchvision's per-class loop of top-k and ``batched_nms`` does
    not export to ONNX with data-dependent shapes); ``select_detections`` applies it afterwards.

    Args:
        model: An ``ssd`` or ``ssdlite`` from ``build_detector``.

    ``forward(images)``: float (N, 3, R, R) in [0, 1], R the detector's resolution (resize first)
    -> ``(boxes (N, A, 4) xyxy in pixels, clipped to the image; scores (N, A, K + 1) class
    probabilities, column 0 the background)``, A default boxes (1917 at 300x300).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        from torchvision.models.detection.image_list import ImageList

        if not isinstance(model, SSD):
            raise ValueError("only ssd and ssdlite detectors export to ONNX; Faster R-CNN's "
                             "proposal stage is data-dependent")
        self.config = model.config
        res = model.config["resolution"]
        self.backbone, self.head, self.box_coder = model.backbone, model.head, model.box_coder
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1))
        with torch.no_grad():
            x = torch.zeros(1, 3, res, res)
            maps = list(model.backbone(x).values())
            anchors = model.anchor_generator(ImageList(x, [(res, res)]), maps)[0]
        self.register_buffer("anchors", anchors)
        self.resolution = res

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images - self.mean) / self.std
        out = self.head(list(self.backbone(x).values()))
        n, a = out["bbox_regression"].shape[:2]
        anchors = self.anchors.unsqueeze(0).expand(n, -1, -1).reshape(-1, 4)
        boxes = self.box_coder.decode_single(out["bbox_regression"].reshape(-1, 4), anchors)
        boxes = boxes.clamp(0, self.resolution).reshape(n, a, 4)
        return boxes, torch.softmax(out["cls_logits"], dim=-1)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float = 0.001,
                      nms_thresh: float = 0.55, topk: int = 300, max_detections: int = 300
                      ) -> list[dict]:
    """torchvision SSD's post-processing on ``SSDExportModule`` (or ONNX) outputs: per class, the
    ``topk`` boxes scoring over ``score_thresh``, then class-wise NMS at ``nms_thresh``, then the
    best ``max_detections``. Defaults are ``build_detector``'s.

    Args:
        boxes: (N, A, 4) xyxy pixels.
        scores: (N, A, K + 1) probabilities, column 0 the background.

    Returns:
        One ``{"boxes", "scores", "labels"}`` dict per image, as the torch detector returns.
    """
    from torchvision.ops import batched_nms

    out = []
    for b, s in zip(torch.as_tensor(boxes), torch.as_tensor(scores)):
        keep_boxes, keep_scores, keep_labels = [], [], []
        for label in range(1, s.shape[-1]):
            score = s[:, label]
            mask = score > score_thresh
            score, box = score[mask], b[mask]
            score, idx = score.topk(min(topk, score.numel()))
            keep_boxes.append(box[idx])
            keep_scores.append(score)
            keep_labels.append(torch.full_like(idx, label))
        b_all, s_all, l_all = torch.cat(keep_boxes), torch.cat(keep_scores), torch.cat(keep_labels)
        keep = batched_nms(b_all, s_all, l_all, nms_thresh)[:max_detections]
        out.append({"boxes": b_all[keep], "scores": s_all[keep], "labels": l_all[keep]})
    return out


def export_detector_onnx(model: nn.Module, path: str | os.PathLike, class_names: Sequence[str] = (),
                         tolerance: float = 1e-4, check_images: torch.Tensor | None = None,
                         score_thresh: float = 0.3) -> dict:
    """Export an SSD/SSDLite to ONNX (``SSDExportModule``: boxes and scores, dynamic batch) and
    check it with ONNX Runtime, atomically (nothing is written if a check fails).

    Two checks: (1) ONNX Runtime's boxes and scores against torch's, within ``tolerance`` (boxes
    relative to the image side); (2) ``select_detections`` on the torch export module's outputs
    reproduces the torch detector's own detections (the NMS done outside the graph is the same).

    Args:
        model: An ``ssd`` or ``ssdlite`` detector.
        path: Destination ``.onnx`` file.
        class_names: Stored in the file's metadata. Default none.
        tolerance: Largest allowed |ONNX - torch| of the scores and of boxes / resolution.
            Default 1e-4.
        check_images: float (N, 3, R, R) in [0, 1] to check on (real images make the second check
            meaningful); default two uniform-noise images.
        score_thresh: The second check compares the detections scoring above this. Default 0.3.

    Returns:
        ``{"path", "max_abs_diff_scores", "max_abs_diff_boxes", "detections_compared", "bytes"}``.

    Raises:
        ValueError: for a Faster R-CNN, or a check failing (``deploy.ExportError``).
    """
    import copy

    from mobilenets.fileio import atomic_path
    from mobilenets.deploy.onnx_export import (INPUT_NAME, OPSET, ExportError, OnnxModule,
        _add_metadata, _metadata, fold_batchnorm)

    module = SSDExportModule(copy.deepcopy(model).float().eval()).eval()
    res = module.resolution
    if check_images is None:
        check_images = torch.rand(2, 3, res, res, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    with torch.no_grad():
        ref_boxes, ref_scores = module(check_images)
        dets = model.eval()(list(check_images))
    ours = select_detections(ref_boxes, ref_scores, model.score_thresh, model.nms_thresh,
                             model.topk_candidates, model.detections_per_img)
    compared = 0
    for a, b in zip(ours, dets):
        ka, kb = a["scores"] > score_thresh, b["scores"] > score_thresh
        if ka.sum() != kb.sum() or not torch.allclose(a["boxes"][ka], b["boxes"][kb], atol=1e-3):
            raise ExportError("select_detections does not reproduce the torch detector's "
                              "detections; not written")
        compared += int(ka.sum())
    with atomic_path(path) as tmp:
        # The TorchScript exporter: the graph is static (fixed size, anchors as a constant) and it
        # exports this one in ~1 s of CPU, where the dynamo exporter (deploy._torch_export) takes
        # ~20 s; ONNX Runtime checks the result either way.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(fold_batchnorm(copy.deepcopy(module)), (check_images[:2],),
                              str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=["boxes", "scores"],
                              dynamic_axes={k: {0: "batch"} for k in (INPUT_NAME, "boxes",
                                                                      "scores")})
        _add_metadata(tmp, _metadata(model, {"class_names": list(class_names), "outputs":
                                             "boxes xyxy pixels (N, A, 4); scores (N, A, K+1), "
                                             "column 0 background; apply NMS "
                                             "(mobilenets.tasks.detection.model.select_detections)"}))
        session = OnnxModule(tmp).session
        diffs = {"boxes": 0.0, "scores": 0.0}
        for batch in (check_images[:1], check_images):
            got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
            with torch.no_grad():
                want = module(batch)
            diffs["boxes"] = max(diffs["boxes"], float((torch.from_numpy(got[0]) - want[0])
                                                        .abs().max()) / res)
            diffs["scores"] = max(diffs["scores"], float((torch.from_numpy(got[1]) - want[1])
                                                          .abs().max()))
        if max(diffs.values()) > tolerance:
            raise ExportError(f"ONNX export of {path.name} disagrees with torch: max |diff| "
                              f"boxes/resolution {diffs['boxes']:.3g}, scores "
                              f"{diffs['scores']:.3g} > {tolerance:g}; not written")
    return {"path": str(path), "max_abs_diff_boxes": diffs["boxes"] * res,
            "max_abs_diff_scores": diffs["scores"], "detections_compared": compared,
            "bytes": path.stat().st_size}


def draw_detections(image: torch.Tensor, detection: dict, class_names: Sequence[str],
                    path: str | os.PathLike, score_thresh: float = 0.3) -> Path:
    """Draw boxes with their label and score on an image and write it as PNG, atomically.

    Args:
        image: uint8 (3, H, W).
        detection: ``{"boxes", "scores", "labels"}`` in the image's pixels.
        class_names: Names of labels 1..K (a missing name prints the label number).
        path: The PNG to write.
        score_thresh: Draw only detections scoring at least this. Default 0.3.

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw

    from mobilenets.fileio import atomic_path

    canvas = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(canvas)
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
               (145, 30, 180), (70, 240, 240), (240, 50, 230)]
    for box, score, label in zip(detection["boxes"].tolist(), detection["scores"].tolist(),
                                 detection["labels"].tolist()):
        if score < score_thresh:
            continue
        colour = palette[label % len(palette)]
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        draw.rectangle(box, outline=colour, width=2)
        text = f"{name} {score:.2f}"
        tx, ty = box[0], max(0, box[1] - 11)
        draw.rectangle(draw.textbbox((tx, ty), text), fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
