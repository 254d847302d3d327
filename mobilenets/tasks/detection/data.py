"""COCO-format detection data (an images folder + an annotation JSON) and COCO mAP through
pycocotools.

The annotation file is the COCO one (``images``, ``annotations`` with ``bbox`` [x, y, w, h] in
pixels, ``categories``); ``mobilenets synth`` writes such sets. Category ids may be any integers
(COCO's run 1..90 with gaps): the dataset maps them, in increasing order, to the contiguous
training labels 1..K (0 is the detectors' background) and back for evaluation.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from mobilenets.readers import check_regular_file, read_json

#: Slack, in pixels, allowed for a box edge outside its image (rounding in annotation tools).
BOX_SLACK = 1.0

#: The figures of ``COCOeval.stats``, in its order.
COCO_METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


class CocoDetection(torch.utils.data.Dataset):
    """Images and their boxes from a COCO annotation file, checked when opened.

    Args:
        annotations: The COCO JSON file.
        images_dir: Folder the ``file_name`` entries are relative to. Default: ``images/`` beside
            the annotation file (``mobilenets synth``'s layout) if it exists, else its folder.

    Items are ``(image, target)``: image uint8 (3, H, W); target ``{"boxes": float (N, 4) xyxy,
    "labels": int64 (N,) in 1..K, "image_id": int}``. Crowd annotations (``iscrowd`` 1) are left
    out of the targets but kept for evaluation, as COCO does.

    Attributes:
        class_names: Category names in label order (label ``i`` is ``class_names[i - 1]``).
        cat_ids: COCO category id of each label, same order.
        coco: The parsed JSON (dict).

    Raises:
        FileNotFoundError: naming the annotation file or the first missing image.
        ValueError: naming the file and record for malformed JSON or a schema error
            (``check_coco``: missing, null or mistyped fields, empty lists, duplicate ids, NaN
            boxes), an image whose file has another size, an unknown category, a box with no
            area or outside its image, or an annotation of an unknown image.
    """

    def __init__(self, annotations: str | os.PathLike, images_dir: str | os.PathLike | None = None):
        path = Path(annotations)
        coco = read_json(path, "annotation file")
        images, anns, cats = check_coco(coco, path)
        if images_dir is None:
            beside = path.parent / "images"
            images_dir = beside if beside.is_dir() else path.parent
        self.root, self.path, self.coco = Path(images_dir), path, coco
        cats = sorted(cats, key=lambda c: c["id"])
        self.cat_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        label_of = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.images = sorted(images, key=lambda im: im["id"])
        by_id = {im["id"]: im for im in self.images}
        for im in self.images:
            check_image_size(self.root / im["file_name"], im, path)
        self.boxes: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in anns:
            where = f"{path}: annotation {a['id']}"
            if a["image_id"] not in by_id:
                raise ValueError(f"{where} refers to unknown image_id {a['image_id']!r}")
            if a["category_id"] not in label_of:
                raise ValueError(f"{where} has unknown category_id {a['category_id']!r}; "
                                 f"the categories are {self.cat_ids}")
            im = by_id[a["image_id"]]
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                raise ValueError(f"{where} has a box with no area: bbox {a['bbox']}")
            if (x < -BOX_SLACK or y < -BOX_SLACK or x + w > im["width"] + BOX_SLACK
                    or y + h > im["height"] + BOX_SLACK):
                raise ValueError(f"{where}: bbox {a['bbox']} lies outside its image "
                                 f"{im['file_name']} ({im['width']}x{im['height']})")
            if not a.get("iscrowd", 0):
                self.boxes[im["id"]].append((min(max(x, 0.0), im["width"]),
                                             min(max(y, 0.0), im["height"]),
                                             min(x + w, im["width"]), min(y + h, im["height"]),
                                             label_of[a["category_id"]]))

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, i: int) -> torch.Tensor:
        """Image ``i`` as uint8 (3, H, W), RGB (``read_rgb``)."""
        return read_rgb(self.root / self.images[i]["file_name"])

    def target(self, i: int) -> dict:
        """The training target of image ``i`` (see the class)."""
        rows = self.boxes[self.images[i]["id"]]
        data = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)
        return {"boxes": data[:, :4], "labels": data[:, 4].long(),
                "image_id": int(self.images[i]["id"])}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        return self.load_image(i), self.target(i)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_records(path: Path, key: str, records, fields: dict) -> None:
    """Each record of ``records`` (the file's ``key`` list) is an object whose ``fields`` hold
    values passing their checks; ids are unique."""
    if not isinstance(records, list):
        raise ValueError(f"{path}: '{key}' must be a list, got {type(records).__name__}")
    seen: dict = {}
    for i, r in enumerate(records):
        where = f"{path}: {key}[{i}]"
        if not isinstance(r, dict):
            raise ValueError(f"{where} must be an object, got {type(r).__name__}")
        if "id" in r:
            where += f" (id {r['id']!r})"
        for name, (check, wanted, required) in fields.items():
            if name not in r:
                if required:
                    raise ValueError(f"{where} has no '{name}' field")
                continue
            if not check(r[name]):
                raise ValueError(f"{where}: '{name}' must be {wanted}, got {r[name]!r}")
        if r.get("id") in seen:
            singular = {"categories": "category"}.get(key, key[:-1])
            raise ValueError(f"{path}: duplicate {singular} id {r['id']!r} ({key}"
                             f"[{seen[r['id']]}] and {key}[{i}])")
        seen[r.get("id")] = i


def check_coco(coco, path: Path) -> tuple[list, list, list]:
    """Validate a COCO detection file's schema up front: ``(images, annotations, categories)``.

    Every image needs an integer ``id``, a ``file_name`` and positive integer ``width`` and
    ``height``; every category an integer ``id`` (and a string ``name`` if any); every annotation
    an integer ``id``, ``image_id`` and ``category_id``, and a ``bbox`` of four finite numbers.
    Ids are unique within each list, and no list is empty.

    Raises:
        ValueError: naming the file and the record (its list, index and id) and what is wrong.
    """
    if not isinstance(coco, dict):
        raise ValueError(f"{path} is not a COCO annotation file: a JSON object with images, "
                         f"annotations and categories, got a {type(coco).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in coco]
    if missing:
        raise ValueError(f"{path} is not a COCO annotation file: no {', '.join(missing)}")
    is_int, positive = _is_int, lambda v: _is_int(v) and v > 0
    text = lambda v: isinstance(v, str) and bool(v)  # noqa: E731
    box = lambda v: (isinstance(v, list) and len(v) == 4  # noqa: E731
                     and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                             and math.isfinite(c) for c in v))
    _check_records(path, "images", coco["images"], {
        "id": (is_int, "an integer", True), "file_name": (text, "a file name", True),
        "width": (positive, "a positive integer", True),
        "height": (positive, "a positive integer", True)})
    _check_records(path, "categories", coco["categories"], {
        "id": (is_int, "an integer", True), "name": (lambda v: isinstance(v, str), "a string",
                                                     False)})
    _check_records(path, "annotations", coco["annotations"], {
        "id": (is_int, "an integer", True), "image_id": (is_int, "an integer", True),
        "category_id": (is_int, "an integer", True),
        "bbox": (box, "[x, y, width, height] of four finite numbers", True),
        "iscrowd": (lambda v: v in (0, 1) and not isinstance(v, bool), "0 or 1", False)})
    for key in ("images", "categories", "annotations"):
        if not coco[key]:
            raise ValueError(f"{path} lists no {key}")
    return coco["images"], coco["annotations"], coco["categories"]


def check_image_size(file: Path, image: dict, path: Path) -> None:
    """The image file exists and its size is the one the annotation file gives it (read from
    the file's header, without decoding it).

    Raises:
        FileNotFoundError: naming the image, its id and the annotation file if it is missing.
        ValueError: if its size disagrees, or it cannot be opened.
    """
    from PIL import Image

    where = f"image {file} (id {image['id']}) listed in {path}"
    if not file.exists():
        raise FileNotFoundError(f"{where} not found")
    try:
        with Image.open(check_regular_file(file, "image")) as im:
            size = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{where} cannot be read: {e}") from None
    if size != (image["width"], image["height"]):
        raise ValueError(f"{where} is {size[0]}x{size[1]}, but the file gives "
                         f"width {image['width']} and height {image['height']}")


def flip_horizontally(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """An image (C, H, W) and its target mirrored left to right (boxes too)."""
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def detection_augment(flip: bool = True):
    """``fit``'s ``augment`` for detection batches (lists of uint8 images and targets): random
    horizontal flips drawn from the step's generator (the TF configs' only augmentation), and the
    images scaled to [0, 1] floats, as torchvision's detectors take them."""
    def augment(batch, generator: torch.Generator):
        images, targets = batch
        if flip:
            draws = torch.rand(len(images), generator=generator) < 0.5
            pairs = [flip_horizontally(im, t) if f else (im, t)
                     for im, t, f in zip(images, targets, draws.tolist())]
            images, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        return [im.float() / 255 for im in images], list(targets)
    return augment


def read_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file as uint8 (3, H, W), RGB, at its own size (``engine.data.open_rgb``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it cannot be decoded.
    """
    from mobilenets.engine.data import open_rgb

    arr = np.asarray(open_rgb(path), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def collate(batch: Sequence) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists (torchvision's detectors take them so)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def to_coco_results(detections: Sequence[dict], image_ids: Sequence[int],
                    cat_ids: Sequence[int]) -> list[dict]:
    """Detections (``boxes`` xyxy, ``scores``, ``labels`` 1..K) as COCO result entries
    (``bbox`` [x, y, w, h], ``category_id`` mapped back through ``cat_ids``)."""
    out = []
    for det, image_id in zip(detections, image_ids):
        boxes = det["boxes"].detach().cpu().double()
        boxes[:, 2:] -= boxes[:, :2]
        for box, score, label in zip(boxes.tolist(), det["scores"].tolist(),
                                     det["labels"].tolist()):
            out.append({"image_id": int(image_id), "category_id": int(cat_ids[label - 1]),
                        "bbox": [round(v, 2) for v in box], "score": float(score)})
    return out


def coco_map(ground_truth: dict, results: list[dict]) -> dict:
    """COCO box mAP with pycocotools.

    Args:
        ground_truth: A COCO annotation dict (``images``, ``annotations``, ``categories``).
        results: COCO result entries (``to_coco_results``).

    Returns:
        ``COCO_METRICS`` -> value in [0, 1] (``AP`` is AP@[.5:.95], ``AP50``, ``AP75``, by size;
        -1 where COCO has nothing to average, e.g. no large objects), plus ``"detections"``.
        With no detections every AP and AR is 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {**{k: 0.0 for k in COCO_METRICS}, "detections": 0}
    gt = COCO()
    # pycocotools reads area and iscrowd, which COCO-format files from other tools may lack
    anns = [{"iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a}
            for a in ground_truth["annotations"]]
    gt.dataset = {"images": ground_truth["images"], "annotations": anns,
                  "categories": ground_truth["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {**{k: float(v) for k, v in zip(COCO_METRICS, ev.stats)}, "detections": len(results)}


@torch.no_grad()
def evaluate_detector(model: nn.Module, dataset: CocoDetection, batch_size: int = 16,
                      limit: int | None = None) -> dict:
    """Run a detector over a data set and score it with ``coco_map``.

    Args:
        model: A detector (``detection.build_detector``); run in eval mode, its mode restored.
        dataset: The ``CocoDetection`` to evaluate on (its ``flip`` is ignored).
        batch_size: Images per forward pass, >= 1. Default 16.
        limit: Evaluate only the first N images (and their ground truth). Default: all.

    Returns:
        ``coco_map``'s dict plus ``"images"``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, n, batch_size):
            idx = range(start, min(start + batch_size, n))
            images = [dataset.load_image(i).float() / 255 for i in idx]
            ids = [dataset.images[i]["id"] for i in idx]
            results += to_coco_results(model(images), ids, dataset.cat_ids)
    finally:
        model.train(was_training)
    keep = {im["id"] for im in dataset.images[:n]}
    gt = {"images": dataset.images[:n], "categories": dataset.coco["categories"],
          "annotations": [a for a in dataset.coco["annotations"] if a["image_id"] in keep]}
    return {**coco_map(gt, results), "images": n}
