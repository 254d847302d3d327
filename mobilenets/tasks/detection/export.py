"""Shipping a detector: the exportable part of SSD/SSDLite (boxes and class probabilities), the
NMS applied outside the graph, the checked ONNX export, and drawing detections on an image."""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.ssd import SSD

from mobilenets.deploy.onnx_export import (INPUT_NAME, OPSET, ExportError, OnnxModule, add_metadata,
                                           fold_batchnorm, model_metadata)
from mobilenets.fileio import atomic_path, save_png
from mobilenets.tasks.detection.model import IMAGE_MEAN, IMAGE_STD


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
        res = model.config.resolution
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
        # exports this one far faster than the dynamo exporter (deploy.onnx_export); ONNX Runtime
        # checks the result either way.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(fold_batchnorm(copy.deepcopy(module)), (check_images[:2],),
                              str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=["boxes", "scores"],
                              dynamic_axes={k: {0: "batch"} for k in (INPUT_NAME, "boxes",
                                                                      "scores")})
        add_metadata(tmp, model_metadata(model, {"class_names": list(class_names), "outputs":
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
    return save_png(np.asarray(canvas), path)
