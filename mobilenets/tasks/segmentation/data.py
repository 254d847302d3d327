"""Segmentation data: a folder of images and masks held in memory, and DeepLab's augmentation."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mobilenets.checks import check_int, check_range
from mobilenets.engine.data import open_rgb
from mobilenets.readers import check_regular_file, read_json

#: Pixels whose label is this are left out of the loss and of every metric (PASCAL VOC's
#: object borders; our augmentation's padding).
IGNORE_INDEX = 255


def read_png(path: Path, mode: str, size: int | None) -> np.ndarray:
    """A PNG as uint8 (H, W, 3) (``mode="RGB"``) or a single-channel mask (H, W), resized to a
    ``size`` square (bilinear; masks nearest) if given.

    Raises:
        ValueError: naming the file if it cannot be read or a mask has several channels.
    """
    from PIL import Image

    if mode == "RGB":
        im = open_rgb(path)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()
    try:
        with Image.open(check_regular_file(path, "mask")) as im:
            if im.mode not in ("L", "P"):
                raise ValueError(f"a mask must be a single-channel (L or P) PNG, got mode {im.mode}")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.NEAREST)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(str(e) if str(path) in str(e) else f"cannot read {path}: {e}") from None


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
        if resolution is not None:
            check_range("resolution", resolution)
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
            images.append(read_png(f, "RGB", resolution))
            masks.append(read_png(mask_path, "L", resolution))
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
                by_id = {int(c["id"]): str(c["name"])
                         for c in read_json(ann, "annotation file")["categories"]}
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"cannot read categories from {ann}: {e}") from None
        if num_classes is None:
            labelled = self.masks[self.masks != IGNORE_INDEX]
            found = int(labelled.max()) + 1 if labelled.numel() else 1
            num_classes = max(by_id, default=0) + 1 if by_id else found
        check_int("num_classes", num_classes)
        return ["background"] + [by_id.get(i, str(i)) for i in range(1, num_classes)]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, H, W) and masks (B, H, W) of ``indices``."""
        return self.images[indices], self.masks[indices]


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
