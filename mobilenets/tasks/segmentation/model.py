"""Semantic segmentation: DeepLabv3 on a MobileNet backbone (MobileNetV2 paper, section 6.3 and
its Table 7), its metrics (pixel accuracy, per-class IoU, mIoU), data, training and cost.

The model is the backbone's body run with atrous convolution at ``output_stride`` 16 or 8, a
DeepLabv3 head and a bilinear upsampling of the logits to the input size:

* ``head="aspp"``: Atrous Spatial Pyramid Pooling (DeepLabv3, section 3.3): a 1x1 convolution,
  three 3x3 convolutions with rates (6, 12, 18) at output stride 16 (doubled at 8), and image
  pooling, each with 256 channels, concatenated and projected by a 1x1 convolution.
* ``head="lite"``: the MobileNetV2 paper's on-device head (bold in its Table 7): only the 1x1
  branch and image pooling, "for computational efficiency" (section 6.3).

MobileNetV2 feeds the head its *second last* feature map (Table 7's "MNet V2*": the 320-channel
output of the last bottleneck, without the 1x1 convolution to 1280); MobileNetV1 its last.
Every convolution, the heads' included, is :class:`~mobilenets.models.layers.ConvBNAct` except the final
1x1 classifier (a biased ``nn.Conv2d``, as DeepLab's logits layer).

A run lives in one folder like ``train.train``'s: ``config.json``, ``checkpoint.pt`` (resume),
``metrics.jsonl``, then ``model.safetensors``, ``eval.json`` and ``summary.json``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.models.base import AtrousStride, MobileNetBase
from mobilenets.fileio import atomic_path
from mobilenets.models.modelfile import (load_model, load_state_dict_checked, read_model_file,
    save_model)
from mobilenets.engine.data import epoch_batches
from mobilenets.models.layers import ConvBNAct, check_choice
from mobilenets.engine.metrics import ConfusionMatrix
from mobilenets.engine.optim import param_groups
from mobilenets.models.registry import ARCHS, arch_name, build_from_config
from mobilenets.engine.train import (NonFiniteLossError, _rng_state, _set_rng_state,
    _step_generator, config_from_preset, load_checkpoint, save_checkpoint)

#: The two DeepLabv3 heads (see the module docstring).
HEADS = ("aspp", "lite")
#: Pixels whose label is this are left out of the loss and of every metric (PASCAL VOC's
#: object borders; our augmentation's padding).
IGNORE_INDEX = 255
#: ASPP rates at each output stride: (6, 12, 18) at 16, doubled at 8 (DeepLabv3, section 3.3).
ASPP_RATES = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}
#: Channels of every head branch and of the projection (DeepLabv3, section 3.3: "256 filters").
HEAD_CHANNELS = 256
#: DeepLabv3's multi-scale test inputs (its section 4.3; Table 7's "MF" adds left-right flips).
MF_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

#: MobileNetV2 paper, Table 7: DeepLabv3 on PASCAL VOC 2012 val (512x512 images, 21 classes,
#: pretrained on COCO). ``mf``: multi-scale and flipped test inputs. Mult-Adds in billions.
PAPER_TABLE7 = [
    dict(backbone="MNet V1", head="aspp", output_stride=16, mf=False, miou=75.29,
         params_m=11.15, madds_b=14.25),
    dict(backbone="MNet V1", head="aspp", output_stride=8, mf=True, miou=78.56,
         params_m=11.15, madds_b=941.9),
    dict(backbone="MNet V2*", head="aspp", output_stride=16, mf=False, miou=75.70,
         params_m=4.52, madds_b=5.8),
    dict(backbone="MNet V2*", head="aspp", output_stride=8, mf=True, miou=78.42,
         params_m=4.52, madds_b=387.0),
    dict(backbone="MNet V2*", head="lite", output_stride=16, mf=False, miou=75.32,
         params_m=2.11, madds_b=2.75),
    dict(backbone="MNet V2*", head="lite", output_stride=8, mf=True, miou=77.33,
         params_m=2.11, madds_b=152.6),
    dict(backbone="ResNet-101", head="aspp", output_stride=16, mf=False, miou=80.49,
         params_m=58.16, madds_b=81.0),
    dict(backbone="ResNet-101", head="aspp", output_stride=8, mf=True, miou=82.70,
         params_m=58.16, madds_b=4870.6),
]


# --------------------------------------------------------------------------- model

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


def _body(net: MobileNetBase) -> tuple[nn.Sequential, int]:
    """The layers of a MobileNet the head reads, and their output channels: MobileNetV2 without
    its last 1x1 convolution (Table 7's "MNet V2*: second last feature map"), V1 whole."""
    layers = list(net.features)
    if net.config["arch"] == "mobilenet_v2":
        layers = layers[:-1]
    body = nn.Sequential(*layers)
    channels = [m for m in body.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    return body, channels


class DeepLabV3(nn.Module):
    """DeepLabv3 on a MobileNet (MobileNetV2 paper, section 6.3).

    Build it with :func:`create_segmenter`; this constructor takes an already built backbone.

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
        self.output_stride = backbone.config["output_stride"]
        self.in_channels = backbone.in_channels
        rates = () if head == "lite" else tuple(aspp_rates or ASPP_RATES[self.output_stride])
        self.backbone, channels = _body(backbone)
        self.head = DeepLabHead(channels, num_classes, rates, head_channels, dropout)
        self.num_classes = num_classes
        backbone_config = {k: v for k, v in backbone.config.items() if k not in ("name",)}
        self.config = dict(arch="deeplabv3", backbone=backbone_config, num_classes=num_classes,
                           head=head, aspp_rates=list(rates), head_channels=head_channels,
                           dropout=dropout)
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
            or ``convert``), loaded with ``checkpoint.load_model``; its body initialises the
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


def build_segmenter(config: dict) -> DeepLabV3:
    """A fresh ``DeepLabV3`` from its ``config`` dict (as ``save_model`` stores it)."""
    config = dict(config)
    if config.pop("arch", None) != "deeplabv3" or "backbone" not in config:
        raise ValueError("config is not a DeepLabV3 config (arch 'deeplabv3' with a backbone)")
    net = build_from_config(config.pop("backbone"))
    extra = {k: config.pop(k) for k in ("resolution", "name") if k in config}
    model = DeepLabV3(net, **config)
    model.config.update(extra)
    return model


def load_segmenter(path: str | os.PathLike, output_stride: int | None = None
                   ) -> tuple[DeepLabV3, dict]:
    """Load a segmenter saved by :func:`train_segmenter` (or ``save_model``).

    Args:
        path: Its ``.safetensors`` file.
        output_stride: Rebuild the backbone at another output stride (8, 16 or 32) with the same
            weights, as DeepLab trains at 16 and evaluates at 8. An ASPP head gets the rates of
            the new stride. Default None: as saved.

    Returns:
        ``(model in eval mode, extra metadata: class_names, seg_config, ...)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a segmenter written by this package.
    """
    config, state, extra = read_model_file(path)
    if config.get("arch") != "deeplabv3":
        raise ValueError(f"{path} holds a {config.get('arch')!r} model, not a DeepLabV3 "
                         "segmenter (train one with `mobilenets segment train`)")
    if output_stride is not None and output_stride != config["backbone"]["output_stride"]:
        AtrousStride(output_stride)
        config["backbone"] = {**config["backbone"], "output_stride": output_stride}
        if config["head"] == "aspp":
            config["aspp_rates"] = list(ASPP_RATES[output_stride])
    model = build_segmenter(config)
    load_state_dict_checked(model, state, source=str(path))
    return model.eval(), extra


# --------------------------------------------------------------------------- metrics

def iou_from_confusion(matrix: torch.Tensor) -> dict:
    """Pixel accuracy, per-class IoU and mIoU from a confusion matrix.

    Args:
        matrix: (K, K) counts, rows true class, columns predicted (``ConfusionMatrix.matrix``).

    Returns:
        ``{"pixel_accuracy": %, "miou": %, "iou": [% or None per class], "accuracy": [% or None
        per class (recall)], "pixels": [true pixels per class]}``. A class's IoU is
        ``tp / (tp + fp + fn)``; it is None when the class is in neither the labels nor the
        predictions, and mIoU averages the others (as DeepLab and the VOC devkit do). None
        everywhere before any pixel.

    Raises:
        ValueError: naming ``matrix`` if it is not square 2-D.
    """
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be a square (K, K) tensor, got "
                         f"{tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else matrix!r}")
    m = matrix.double()
    tp, support = m.diagonal(), m.sum(1)
    union = support + m.sum(0) - tp
    iou = [100.0 * float(t / u) if u > 0 else None for t, u in zip(tp, union)]
    acc = [100.0 * float(t / s) if s > 0 else None for t, s in zip(tp, support)]
    present = [v for v in iou if v is not None]
    total = float(m.sum())
    return {"pixel_accuracy": 100.0 * float(tp.sum()) / total if total else None,
            "miou": sum(present) / len(present) if present else None,
            "iou": iou, "accuracy": acc, "pixels": [int(s) for s in support]}


class SegmentationMetrics:
    """Pixel accuracy, per-class IoU and mIoU over batches, through a ``metrics.ConfusionMatrix``
    over pixels; pixels labelled ``ignore_index`` are left out.

    Args:
        num_classes: K (background included), >= 1.
        ignore_index: The label to skip. Default 255.

    Example:
        >>> m = SegmentationMetrics(2)
        >>> m.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [0, 255]]]))
        >>> round(m.result()["miou"], 2)  # class 0: 1/2, class 1: 1/2
        50.0
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.confusion = ConfusionMatrix(num_classes)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.loss_sum, self.loss_pixels = 0.0, 0

    def update(self, logits_or_preds: torch.Tensor, targets: torch.Tensor,
               loss: float | None = None) -> None:
        """Add a batch.

        Args:
            logits_or_preds: Logits (N, K, H, W) (argmax taken) or class ids (N, H, W).
            targets: Labels (N, H, W): class ids in [0, K) or ``ignore_index``.
            loss: Optional mean loss over the batch's labelled pixels, for the mean loss.

        Raises:
            ValueError: naming ``logits_or_preds`` or ``targets`` for a bad shape or value.
        """
        x = logits_or_preds
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            raise ValueError("logits_or_preds must be logits (N, K, H, W) or class ids (N, H, W)")
        preds = x.argmax(1) if x.ndim == 4 else x
        if not isinstance(targets, torch.Tensor) or targets.shape != preds.shape:
            raise ValueError(f"targets must be a tensor of shape {tuple(preds.shape)}, got "
                             f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else targets!r}")
        keep = targets != self.ignore_index
        self.confusion.update(preds[keep].long(), targets[keep].long())
        if loss is not None:
            self.loss_sum += float(loss) * int(keep.sum())
            self.loss_pixels += int(keep.sum())

    def result(self, class_names: Sequence[str] | None = None) -> dict:
        """The metrics so far, JSON-ready: ``pixel_accuracy`` and ``miou`` in percent, ``loss``,
        ``pixels``, ``per_class`` (name, IoU %, accuracy %, pixels) and ``confusion_matrix``.

        Raises:
            ValueError: naming ``class_names`` if it does not hold exactly K names.
        """
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"class_names has {len(names)} names, expected {self.num_classes}")
        s = iou_from_confusion(self.confusion.matrix)
        return {"pixel_accuracy": s["pixel_accuracy"], "miou": s["miou"],
                "loss": self.loss_sum / self.loss_pixels if self.loss_pixels else None,
                "pixels": self.confusion.num_samples,
                "per_class": [{"name": n, "iou": i, "accuracy": a, "pixels": p} for n, i, a, p
                              in zip(names, s["iou"], s["accuracy"], s["pixels"])],
                "confusion_matrix": self.confusion.matrix.tolist()}


def format_seg_report(result: dict) -> str:
    """A text report of a :meth:`SegmentationMetrics.result`: totals, then IoU per class."""
    pct = lambda v: "-" if v is None else f"{v:.2f}%"  # noqa: E731
    out = [f"pixels:         {result['pixels']:,}",
           f"pixel accuracy: {pct(result['pixel_accuracy'])}",
           f"mIoU:           {pct(result['miou'])}",
           f"loss:           {'-' if result.get('loss') is None else format(result['loss'], '.4f')}",
           "", "per class:"]
    w = max([5, *(len(p["name"]) for p in result["per_class"])])
    out.append(f"  {'class':<{w}}  {'IoU':>8}  {'accuracy':>8}  {'pixels':>10}")
    out += [f"  {p['name']:<{w}}  {pct(p['iou']):>8}  {pct(p['accuracy']):>8}  {p['pixels']:>10,}"
            for p in result["per_class"]]
    return "\n".join(out)


# --------------------------------------------------------------------------- data

def _read_png(path: Path, mode: str, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if mode == "RGB":
                im = im.convert("RGB")
            elif im.mode not in ("L", "P"):
                raise ValueError(f"a mask must be a single-channel (L or P) PNG, got mode {im.mode}")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR if mode == "RGB" else Image.NEAREST)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


class SegmentationDataset:
    """A folder of images and semantic masks, held in memory as uint8 tensors.

    The layout is the synthetic generator's (``mobilenets synth``): ``root/images/NAME.png``
    with ``root/masks/NAME.png`` (uint8, 0 background, 1..K the category id, 255 ignored), and
    optionally ``root/annotations.json`` (COCO) whose ``categories`` name the classes.

    Args:
        root: The folder.
        resolution: Resize every image (bilinear) and mask (nearest) to this square size, >= 32.
            Default None: keep the stored size (all images must then share it).
        num_classes: Classes including background. Default None: from ``annotations.json``'s
            categories, else the largest id found in the masks plus one.
        limit: Use only the first N images (sorted by name). Default None: all.

    Attributes:
        images: uint8 (N, 3, H, W). masks: uint8 (N, H, W). class_names: K names,
        ``"background"`` first. files: the image paths.

    Raises:
        FileNotFoundError: if ``root/images`` or an image's mask is missing.
        ValueError: for an unreadable file, mixed sizes without ``resolution``, or a mask value
            that is neither a class id nor 255 (the file is named).
    """

    def __init__(self, root: str | os.PathLike, resolution: int | None = None,
                 num_classes: int | None = None, limit: int | None = None):
        root = Path(root)
        if not (root / "images").is_dir():
            raise FileNotFoundError(f"segmentation data folder {root} has no images/ folder "
                                    "(write one with `mobilenets synth`)")
        if resolution is not None and (not isinstance(resolution, int) or resolution < 32):
            raise ValueError(f"resolution must be an integer >= 32, got {resolution!r}")
        self.files = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() == ".png")
        if limit:
            self.files = self.files[:limit]
        if not self.files:
            raise ValueError(f"{root / 'images'} holds no PNG image")
        images, masks = [], []
        for f in self.files:
            mask_path = root / "masks" / f.name
            if not mask_path.is_file():
                raise FileNotFoundError(f"mask not found for {f.name}: {mask_path}")
            images.append(_read_png(f, "RGB", resolution))
            masks.append(_read_png(mask_path, "L", resolution))
            if images[-1].shape[:2] != masks[-1].shape or images[-1].shape != images[0].shape:
                raise ValueError(f"{f} and its mask must share one size with every other image "
                                 f"(got {images[-1].shape[:2]} / {masks[-1].shape}); pass "
                                 "resolution to resize")
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.masks = torch.from_numpy(np.stack(masks))
        self.class_names = self._class_names(root, num_classes)
        labelled = self.masks[self.masks != IGNORE_INDEX]
        if labelled.numel() and int(labelled.max()) >= len(self.class_names):
            bad = int(labelled.max())
            i = int((self.masks == bad).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"mask {root / 'masks' / self.files[i].name} holds class id {bad}, "
                             f"but there are {len(self.class_names)} classes")

    def _class_names(self, root: Path, num_classes: int | None) -> list[str]:
        by_id: dict[int, str] = {}
        ann = root / "annotations.json"
        if ann.is_file():
            try:
                by_id = {int(c["id"]): str(c["name"]) for c in json.loads(ann.read_text())["categories"]}
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"cannot read categories from {ann}: {e}") from None
        if num_classes is None:
            labelled = self.masks[self.masks != IGNORE_INDEX]
            found = int(labelled.max()) + 1 if labelled.numel() else 1
            num_classes = max(by_id, default=0) + 1 if by_id else found
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        return ["background"] + [by_id.get(i, str(i)) for i in range(1, num_classes)]

    def __len__(self) -> int:
        return len(self.images)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float in [-1, 1], as ``data.BatchTransform`` scales classifier inputs."""
    return images.float() / 127.5 - 1.0


@dataclass
class SegAugment:
    """DeepLab's training augmentation on a batch: a random scale in [``min_scale``,
    ``max_scale``] (zoom in above 1, out below), a random position, a left-right flip, applied
    to images (bilinear) and masks (nearest) with one ``grid_sample`` each. Pixels outside the
    image are 0 after normalisation in the image and ``IGNORE_INDEX`` in the mask.

    Args:
        min_scale: Smallest scale, > 0. Default 0.5 (DeepLabv3, section 4: 0.5 to 2.0).
        max_scale: Largest scale, >= min_scale. Default 2.0.
        flip: Random left-right flips. Default True.
    """

    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True

    def __post_init__(self):
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, "
                             f"{self.max_scale}")

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, H, W) and (B, H, W) -> float (B, 3, H, W) in [-1, 1], int64 (B, H, W)."""
        b = images.shape[0]
        g = dict(generator=generator)
        log_s = torch.empty(b).uniform_(math.log(self.min_scale), math.log(self.max_scale), **g)
        side = (-log_s).exp()  # the sampled window, as a fraction of the image side
        cx = (torch.rand(b, **g) * 2 - 1) * (1 - side).abs()
        cy = (torch.rand(b, **g) * 2 - 1) * (1 - side).abs()
        sign = torch.where(torch.rand(b, **g) < 0.5, -1.0, 1.0) if self.flip else torch.ones(b)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = side * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = side, cy
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        x = F.grid_sample(normalize(images), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        # Labels + 1, zero-padded, minus 1: outside pixels become -1, then IGNORE_INDEX.
        y = F.grid_sample(masks[:, None].float() + 1, grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].long() - 1
        y[y < 0] = IGNORE_INDEX
        return x.contiguous(), y


# --------------------------------------------------------------------------- training

@dataclass
class SegConfig:
    """One segmentation run. Presets live in ``SEG_PRESETS``; every field can be overridden.

    Paper values and their sources: the lite head at output stride 16 on MobileNetV2's second
    last feature map (MobileNetV2 paper, section 6.3 and Table 7); ASPP with 256 channels and
    rates (6, 12, 18) at stride 16 (DeepLabv3, section 3.3); SGD with momentum 0.9, the "poly"
    schedule ``(1 - step / steps) ** 0.9`` from learning rate 0.007, batch 16 of 513x513 crops,
    random scales 0.5-2.0 and left-right flips (DeepLabv3, section 4); weight decay 4e-5 and none
    on depthwise filters (the MobileNet recipe, ``train.TrainConfig``).
    """

    # Model
    backbone: str = "v2"  # "v1" or "v2" (Table 7's MNet V1 / MNet V2*)
    width_mult: float = 1.0  # alpha of the backbone
    head: str = "lite"  # MobileNetV2 paper 6.3: the on-device candidate; "aspp" for the full head
    output_stride: int = 16  # Table 7: 16 (trained); 8 at evaluation for its MF rows
    aspp_rates: tuple[int, ...] | None = None  # None: DeepLabv3's (6, 12, 18) at 16, x2 at 8
    head_channels: int = HEAD_CHANNELS  # DeepLabv3 3.3
    dropout: float = 0.1  # TF DeepLab concat_projection keep_prob 0.9
    init_from: str | None = None  # our classifier .safetensors for the backbone
    # Data
    data: str = "runs/synth/train"  # a folder with images/ and masks/
    val_data: str | None = "runs/synth/val"  # held-out folder; None: no evaluation
    resolution: int | None = None  # resize images to this square; None: as stored (paper: 513)
    min_scale: float = 0.5  # DeepLabv3 4
    max_scale: float = 2.0  # DeepLabv3 4
    flip: bool = True  # DeepLabv3 4
    limit_train: int | None = None
    limit_val: int | None = None
    # Optimisation
    epochs: float = 10
    batch_size: int = 16  # DeepLabv3 4
    lr: float = 0.007  # DeepLabv3 4
    lr_power: float = 0.9  # DeepLabv3 4: "poly" schedule
    momentum: float = 0.9  # DeepLabv3 4
    weight_decay: float = 4e-5  # MobileNet recipe (TrainConfig)
    depthwise_weight_decay: float = 0.0  # MobileNet paper 3.2
    # Run
    seed: int = 0
    out_dir: str = "runs/segment"
    checkpoint_every: int = 50  # steps
    eval_every_epoch: bool = True
    progress: bool = True

    def validate(self) -> "SegConfig":
        """Check every field; return self.

        Raises:
            ValueError: naming the first field that is out of range.
        """
        arch_name(self.backbone)
        check_choice("head", self.head, HEADS)
        AtrousStride(self.output_stride)
        for name in ("epochs", "batch_size", "lr", "checkpoint_every", "width_mult"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 32):
            raise ValueError(f"resolution must be an integer >= 32, got {self.resolution!r}")
        if not 0 <= self.momentum < 1 or self.lr_power < 0:
            raise ValueError(f"need 0 <= momentum < 1 and lr_power >= 0, got {self.momentum}, "
                             f"{self.lr_power}")
        SegAugment(self.min_scale, self.max_scale)
        return self


#: Named recipes: "paper" is DeepLabv3's (section 4) with the lite head; "synthetic" sizes a run
#: for the synthetic scenes on one CPU thread (a larger learning rate for the short schedule);
#: "smoke" is for tests.
SEG_PRESETS: dict[str, SegConfig] = {
    "paper": SegConfig(),
    "synthetic": SegConfig(width_mult=0.5, resolution=128, epochs=8, batch_size=16, lr=0.05,
                           min_scale=0.75, max_scale=1.5, checkpoint_every=25),
    "smoke": SegConfig(width_mult=0.25, resolution=32, epochs=1, batch_size=4, lr=0.05,
                       checkpoint_every=2, progress=False),
}


def make_seg_config(preset: str = "synthetic", **overrides) -> SegConfig:
    """A preset of ``SEG_PRESETS`` with some fields replaced (``train.config_from_preset``).

    Raises:
        ValueError: for an unknown preset or field name, or an invalid value (named).
    """
    return config_from_preset(SEG_PRESETS, preset, **overrides)


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, dataset: SegmentationDataset, batch_size: int = 16,
                       multi_scale_flip: bool = False, class_names: Sequence[str] | None = None
                       ) -> dict:
    """Pixel accuracy, per-class IoU, mIoU and the mean loss over a dataset.

    Args:
        model: A ``DeepLabV3``; run in eval mode, its mode restored afterwards.
        dataset: A ``SegmentationDataset`` at the model's input size.
        batch_size: Images per forward pass, >= 1. Default 16.
        multi_scale_flip: Table 7's "MF" test (``DeepLabV3.predict``); the loss is then not
            reported. Default False.
        class_names: Names for the report. Default: the dataset's.

    Returns:
        ``SegmentationMetrics.result()``.
    """
    names = list(class_names or dataset.class_names)
    metrics = SegmentationMetrics(len(names))
    was_training = model.training
    model.eval()
    for i in range(0, len(dataset), batch_size):
        x = normalize(dataset.images[i: i + batch_size])
        y = dataset.masks[i: i + batch_size].long()
        if multi_scale_flip:
            metrics.update(model.predict(x, multi_scale_flip=True), y)
            continue
        logits = model(x)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        metrics.update(logits, y, None if torch.isnan(loss) else float(loss))
    model.train(was_training)
    return metrics.result(names)


def model_info(path: str | os.PathLike, model: DeepLabV3, multi_scale_flip: bool = False) -> dict:
    """What an evaluation file records of the model it measured (``table7_rows`` reads it)."""
    return {"file": str(path), "output_stride": model.output_stride,
            "resolution": model.config.get("resolution"), "multi_scale_flip": multi_scale_flip}


def train_segmenter(cfg: SegConfig, resume: bool = False) -> dict:
    """Train DeepLabv3 end to end (backbone and head) on a folder of images and masks.

    Args:
        cfg: The recipe (see ``SegConfig``, ``make_seg_config``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists. The data order and every
            augmentation are pure functions of (seed, epoch, step), so a killed and resumed run
            ends with the weights of an uninterrupted one.

    Returns:
        ``{"val": evaluation dict or None, "steps", "epochs", "train_seconds",
        "images_per_second", "model_path", "history", "model"}``.

    Raises:
        FileNotFoundError: for a missing data folder or ``init_from``.
        ValueError: for a bad config or data.
        NonFiniteLossError: if the loss becomes NaN or infinite (the last checkpoint stays).
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    train_set = SegmentationDataset(cfg.data, cfg.resolution, limit=cfg.limit_train)
    names = train_set.class_names
    val_set = (SegmentationDataset(cfg.val_data, cfg.resolution, len(names), cfg.limit_val)
               if cfg.val_data else None)
    model = create_segmenter(cfg.backbone, cfg.width_mult, len(names), cfg.head,
                             cfg.output_stride, cfg.init_from, cfg.aspp_rates, cfg.head_channels,
                             cfg.dropout)
    model.config["resolution"] = int(train_set.images.shape[-1])
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.depthwise_weight_decay),
                                lr=cfg.lr, momentum=cfg.momentum)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(train_set)} "
                         f"training images")
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.0, 1 - s / total_steps) ** cfg.lr_power)
    augment = SegAugment(cfg.min_scale, cfg.max_scale, cfg.flip)
    step, history, loss_sum, prior_seconds = 0, [], [0.0, 0], 0.0
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, history, loss_sum = state["step"], state["history"], state["epoch_loss"]
        prior_seconds = state["train_seconds"]
        print(f"resumed from {ckpt_path} at step {step}/{total_steps}", flush=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        with atomic_path(out / "config.json") as tmp:
            tmp.write_text(json.dumps(asdict(cfg), indent=2))

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": _rng_state(), "step": step,
            "history": history, "epoch_loss": loss_sum, "config": asdict(cfg),
            "train_seconds": prior_seconds + time.perf_counter() - t_start})

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, desc="segment")
    t_start, images_seen = time.perf_counter(), 0
    model.train()
    while step < total_steps:
        epoch = step // steps_per_epoch
        batches = epoch_batches(len(train_set), cfg.batch_size, epoch, cfg.seed)
        for idx in batches[step - epoch * steps_per_epoch:]:
            x, y = augment(train_set.images[idx], train_set.masks[idx],
                           _step_generator(cfg.seed, epoch, step, 0))
            loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at step {step}; stopped. The last good checkpoint "
                    f"is {ckpt_path if ckpt_path.exists() else 'not written yet'}; lower lr "
                    f"(now {cfg.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            images_seen += len(idx)
            loss_sum = [loss_sum[0] + loss.item() * len(idx), loss_sum[1] + len(idx)]
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.4g}")
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if end_of_epoch:
                record = {"epoch": round(step / steps_per_epoch, 4), "step": step,
                          "train_loss": loss_sum[0] / max(loss_sum[1], 1)}
                if val_set is not None and cfg.eval_every_epoch:
                    r = evaluate_segmenter(model, val_set, class_names=names)
                    record.update(val_pixel_accuracy=r["pixel_accuracy"], val_miou=r["miou"],
                                  val_loss=r["loss"])
                history.append(record)
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                loss_sum = [0.0, 0]
                msg = f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f}" + (
                    f", val mIoU {record['val_miou']:.2f}%" if "val_miou" in record else "")
                if bar:
                    bar.write(msg)
            if end_of_epoch or step % cfg.checkpoint_every == 0:
                checkpoint()
            if step >= total_steps:
                break
    seconds = time.perf_counter() - t_start
    if bar:
        bar.close()
    result = evaluate_segmenter(model, val_set, class_names=names) if val_set is not None else None
    model_path = out / "model.safetensors"
    if result is not None:
        result["model"] = model_info(model_path, model)
    save_model(model, model_path, extra={"class_names": names, "seg_config": asdict(cfg),
                                         "val_miou": result and result["miou"]})
    if result is not None:
        with atomic_path(out / "eval.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    summary = {"pixel_accuracy": result and result["pixel_accuracy"],
               "miou": result and result["miou"], "steps": step,
               "epochs": step / steps_per_epoch, "train_seconds": round(prior_seconds + seconds, 1),
               "images_per_second_last_session": round(images_seen / max(seconds, 1e-9), 2)}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return {"val": result, "steps": step, "epochs": step / steps_per_epoch,
            "train_seconds": prior_seconds + seconds,
            "images_per_second": images_seen / max(seconds, 1e-9), "model_path": str(model_path),
            "history": history, "model": model}


# --------------------------------------------------------------------------- prediction

def palette(num_classes: int) -> np.ndarray:
    """PASCAL VOC's colour map: (num_classes, 3) uint8, class 0 black, 1 dark red, 2 green...

    Each class id's bits are spread over the high bits of R, G and B (the VOC devkit's
    ``labelcolormap``).
    """
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, rgb = i, [0, 0, 0]
        for bit in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << bit
            c >>= 3
        out[i] = rgb
    return out


def write_overlay(image: np.ndarray, pred: np.ndarray, path: str | os.PathLike,
                  num_classes: int, alpha: float = 0.5) -> Path:
    """Blend a prediction's colours over an image and write it as PNG, atomically.

    Args:
        image: uint8 (H, W, 3).
        pred: Class ids (H, W); background (0) pixels keep the image's colour.
        path: The PNG to write.
        num_classes: Classes of the model (sets the palette).
        alpha: Weight of the class colour, in [0, 1]. Default 0.5.

    Returns:
        The path written.
    """
    from PIL import Image

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    colours = palette(num_classes)[pred]
    blend = image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    out = np.where((pred > 0)[..., None], blend, image.astype(np.float32))
    with atomic_path(path) as tmp:
        Image.fromarray(out.round().clip(0, 255).astype(np.uint8)).save(tmp, format="PNG")
    return Path(path)


def predict_files(model: DeepLabV3, images: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  alpha: float = 0.5, multi_scale_flip: bool = False,
                  class_names: Sequence[str] | None = None) -> list[dict]:
    """Segment image files at their own size; write ``out_dir/NAME_overlay.png`` for each.

    Args:
        model: A ``DeepLabV3``.
        images: Image paths (any size >= 32x32; decoded as RGB).
        out_dir: Where the overlays go (created if missing).
        alpha: Colour weight of the overlay, in [0, 1]. Default 0.5.
        multi_scale_flip: Table 7's "MF" test. Default False.
        class_names: Names for the per-image class shares. Default: class ids.

    Returns:
        One ``{"image", "overlay", "classes": {name: share of pixels in %}}`` per image.

    Raises:
        FileNotFoundError: for a missing image. ValueError: for an unreadable one.
    """
    names = list(class_names or [str(i) for i in range(model.num_classes)])
    rows = []
    for p in images:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
        arr = _read_png(p, "RGB", None)
        x = normalize(torch.from_numpy(arr).permute(2, 0, 1)[None])
        pred = model.predict(x, multi_scale_flip=multi_scale_flip)[0].numpy()
        overlay = write_overlay(arr, pred, Path(out_dir) / f"{p.stem}_overlay.png",
                                model.num_classes, alpha)
        ids, counts = np.unique(pred, return_counts=True)
        rows.append({"image": str(p), "overlay": str(overlay),
                     "classes": {names[int(i)]: round(100.0 * c / pred.size, 2)
                                 for i, c in zip(ids, counts)}})
    return rows


# --------------------------------------------------------------------------- cost (Table 7)

def table7_rows(resolution: int = 512, num_classes: int = 21,
                evals: Sequence[str | os.PathLike] = ()) -> list[dict]:
    """Our DeepLabv3 models' cost beside the MobileNetV2 paper's Table 7.

    Every MobileNet row of Table 7 is built at width 1.0 with ``num_classes`` outputs and profiled
    (``profiler.profile_model``) at ``resolution`` x ``resolution``: Mult-Adds of one
    single-scale pass, and for the "MF" rows also the sum over ``MF_SCALES`` and both flips
    (what the paper's MF figures count). Evaluations given in ``evals`` add rows for our trained
    models: their cost at their own input size and output stride, and their measured mIoU.

    Args:
        resolution: Input side, >= 32. Default 512 (PASCAL VOC's, as the paper states).
        num_classes: Classes including background. Default 21 (PASCAL VOC).
        evals: Evaluation JSON files: a run's ``eval.json`` (``mobilenets segment train``) or
            the output of ``mobilenets segment eval --format json``.

    Returns:
        One dict per row: ``backbone, head, output_stride, mf, madds_b, mf_madds_b, params_m,
        miou, paper_madds_b, paper_params_m, paper_miou, data``.

    Raises:
        FileNotFoundError: for a missing evaluation file. ValueError: for a bad ``resolution``
        or an evaluation file that does not name its model.
    """
    from mobilenets.cost.profiler import profile_model

    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"resolution must be an integer >= 32, got {resolution!r}")
    rows = []
    arch_of = {"MNet V1": "v1", "MNet V2*": "v2"}
    for p in PAPER_TABLE7:
        row = {"backbone": p["backbone"], "head": p["head"], "output_stride": p["output_stride"],
               "mf": p["mf"], "madds_b": None, "mf_madds_b": None, "params_m": None,
               "miou": None, "paper_madds_b": p["madds_b"], "paper_params_m": p["params_m"],
               "paper_miou": p["miou"],
               "data": f"paper: PASCAL VOC; ours: cost at {resolution}x{resolution}"}
        if p["backbone"] in arch_of:
            model = create_segmenter(arch_of[p["backbone"]], 1.0, num_classes, p["head"],
                                     p["output_stride"])
            prof = profile_model(model, (3, resolution, resolution))
            row.update(madds_b=round(prof.total_madds / 1e9, 3),
                       params_m=round(prof.total_params / 1e6, 3))
            if p["mf"]:
                sides = [max(32, round(resolution * s)) for s in MF_SCALES]
                total = sum(profile_model(model, (3, n, n)).total_madds for n in sides)
                row["mf_madds_b"] = round(2 * total / 1e9, 1)  # two flips per scale
        rows.append(row)
    for path in evals:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation file not found: {path}")
        try:
            result = json.loads(path.read_text())
            info = result["model"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is not an evaluation written by `mobilenets segment "
                             "train` or `segment eval --format json`") from None
        model, _ = load_segmenter(info["file"], info["output_stride"])
        res = info["resolution"]
        prof = profile_model(model, (3, res, res))
        cfg = model.config
        arch = "V1" if cfg["backbone"]["arch"] == "mobilenet_v1" else "V2*"
        rows.append({"backbone": f"ours {arch} {float(cfg['backbone']['width_mult'])}",
                     "head": cfg["head"], "output_stride": info["output_stride"],
                     "mf": info["multi_scale_flip"], "madds_b": round(prof.total_madds / 1e9, 3),
                     "mf_madds_b": None, "params_m": round(prof.total_params / 1e6, 3),
                     "miou": None if result["miou"] is None else round(result["miou"], 2),
                     "paper_madds_b": None, "paper_params_m": None,
                     "paper_miou": None, "data": f"synthetic {res}x{res} ({path})"})
    return rows
