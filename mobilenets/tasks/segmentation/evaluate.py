"""Evaluating and showing segmentation: pixel accuracy, per-class IoU and mIoU, the report, colour
overlays of predictions, and the cost beside the MobileNetV2 paper's Table 7."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.checks import check_range
from mobilenets.engine.metrics import ConfusionMatrix
from mobilenets.fileio import save_png
from mobilenets.models.registry import load_model
from mobilenets.readers import read_json
from mobilenets.tasks.segmentation.data import (IGNORE_INDEX, SegmentationDataset, normalize,
                                                read_png)
from mobilenets.tasks.segmentation.model import MF_SCALES, DeepLabV3, create_segmenter

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
            "resolution": model.config.resolution, "multi_scale_flip": multi_scale_flip}


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
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    colours = palette(num_classes)[pred]
    blend = image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    out = np.where((pred > 0)[..., None], blend, image.astype(np.float32))
    return save_png(out.round().clip(0, 255).astype(np.uint8), path)


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
        arr = read_png(p, "RGB", None)
        x = normalize(torch.from_numpy(arr).permute(2, 0, 1)[None])
        pred = model.predict(x, multi_scale_flip=multi_scale_flip)[0].numpy()
        overlay = write_overlay(arr, pred, Path(out_dir) / f"{p.stem}_overlay.png",
                                model.num_classes, alpha)
        ids, counts = np.unique(pred, return_counts=True)
        rows.append({"image": str(p), "overlay": str(overlay),
                     "classes": {names[int(i)]: round(100.0 * c / pred.size, 2)
                                 for i, c in zip(ids, counts)}})
    return rows


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

    check_range("resolution", resolution)
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
        result = read_json(path, "evaluation file")
        try:
            info = result["model"]
        except (KeyError, TypeError):
            raise ValueError(f"{path} is not an evaluation written by `mobilenets segment "
                             "train` or `segment eval --format json`") from None
        model = load_model(info["file"], kind="segmenter", output_stride=info["output_stride"])
        res = info["resolution"]
        prof = profile_model(model, (3, res, res))
        cfg = model.config
        arch = "V1" if cfg.backbone.arch == "mobilenet_v1" else "V2*"
        rows.append({"backbone": f"ours {arch} {float(cfg.backbone.width_mult)}",
                     "head": cfg.head, "output_stride": info["output_stride"],
                     "mf": info["multi_scale_flip"], "madds_b": round(prof.total_madds / 1e9, 3),
                     "mf_madds_b": None, "params_m": round(prof.total_params / 1e6, 3),
                     "miou": None if result["miou"] is None else round(result["miou"], 2),
                     "paper_madds_b": None, "paper_params_m": None,
                     "paper_miou": None, "data": f"synthetic {res}x{res} ({path})"})
    return rows
