"""Face attributes (paper section 4.5, Table 12) and face embeddings (section 4.7, Table 14),
each learnt by distillation from a larger MobileNet, shown on data sets derived from Fashion-MNIST.

The paper's data (a YFCC100M-like attribute set; FaceNet's faces) are not public, so two small
stand-ins are generated here, with the same structure:

* **Attributes** (``make_attribute_data``): each Fashion-MNIST image gets 11 binary attributes,
  5 from its class (``upper_body``, ``footwear``, ...) and 6 measured from its pixels (``dark``,
  ``wide``, ``textured``, ...; thresholds are medians on the labeled training images). They are
  correlated with the class but not one-to-one with it. Written as PNG files and CSVs
  (``image,attr1,attr2,...`` with 0/1 values) that ``load_attribute_csv`` reads back, as it reads
  any such CSV.
* **Identities** (``make_embedding_data``): each identity is one Fashion-MNIST image and its
  "photos" are random augmentations of it (scale, rotation, shift, brightness, noise).
  Verification pairs are same-identity pairs and different-identity pairs, half of them hard
  (two images of the same Fashion-MNIST class). Written as PNG files, CSVs (``image,identity``)
  and a pairs CSV (``image_a,image_b,same``).

Models: an attribute model is a MobileNet whose ``num_classes`` is the number of attributes (one
sigmoid per attribute); an embedding model (``EmbeddingNet``) is a MobileNet body, a linear layer
and L2 normalisation. Teachers are 1.0 MobileNets trained on the labels; students are smaller
MobileNets trained by ``distill`` to emulate the teacher on unlabeled images, as the paper does.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_path
from .data import (FASHION_MNIST_ROOT, TensorImageDataset, iterate_batches, load_fashion_mnist,
                   load_image)

# --------------------------------------------------------------------------- attribute definitions

#: Attributes that follow from the Fashion-MNIST class (ids: 0 T-shirt/top, 1 Trouser,
#: 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot).
CLASS_ATTRIBUTES: dict[str, tuple[int, ...]] = {
    "upper_body": (0, 2, 3, 4, 6),
    "footwear": (5, 7, 9),
    "long_sleeves": (2, 4, 6),
    "covers_legs": (1, 3),
    "covers_ankles": (1, 9),
}
#: Attributes measured from the pixels: present when the measure is above its threshold (the
#: median over the labeled training images, so each is present on about half of them).
PIXEL_ATTRIBUTES: dict[str, str] = {
    "dark": "255 minus the mean intensity of the ink pixels (> 25)",
    "large": "fraction of the image covered by ink",
    "wide": "width / height of the ink's bounding box",
    "textured": "mean absolute difference between neighbouring ink pixels / mean ink intensity",
    "top_heavy": "share of the ink's intensity in the upper half of the image",
    "high_contrast": "standard deviation of the ink pixels' intensities",
}
ATTRIBUTES: tuple[str, ...] = (*CLASS_ATTRIBUTES, *PIXEL_ATTRIBUTES)
_INK = 25  # a pixel above this intensity (of 255) is part of the garment


def pixel_measures(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The measures behind ``PIXEL_ATTRIBUTES`` for a batch of grayscale images.

    Args:
        images: uint8 tensor (N, 1, H, W) or (N, H, W), dark background (Fashion-MNIST).

    Returns:
        ``{name: float64 tensor (N,)}`` for every name of ``PIXEL_ATTRIBUTES``.

    Raises:
        ValueError: naming ``images`` if it is not a uint8 batch of single-channel images.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or \
            images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[1] != 1):
        raise ValueError("images must be a uint8 tensor (N, 1, H, W) or (N, H, W)")
    x = images.reshape(images.shape[0], images.shape[-2], images.shape[-1]).double()
    n, h, w = x.shape
    ink = x > _INK
    count = ink.sum((1, 2)).clamp(min=1)
    ink_mean = (x * ink).sum((1, 2)) / count
    rows, cols = ink.any(2), ink.any(1)
    ar_h, ar_w = torch.arange(h).expand(n, h), torch.arange(w).expand(n, w)
    height = (torch.where(rows, ar_h, -1).amax(1) - torch.where(rows, ar_h, h).amin(1) + 1).clamp(min=1)
    width = (torch.where(cols, ar_w, -1).amax(1) - torch.where(cols, ar_w, w).amin(1) + 1).clamp(min=1)
    dx = ((x[:, :, 1:] - x[:, :, :-1]).abs() * (ink[:, :, 1:] & ink[:, :, :-1])).sum((1, 2))
    dy = ((x[:, 1:] - x[:, :-1]).abs() * (ink[:, 1:] & ink[:, :-1])).sum((1, 2))
    total = (x * ink).sum((1, 2)).clamp(min=1)
    var = ((x - ink_mean[:, None, None]) ** 2 * ink).sum((1, 2)) / count
    return {"dark": 255 - ink_mean,
            "large": ink.double().mean((1, 2)),
            "wide": width.double() / height.double(),
            "textured": (dx + dy) / count / ink_mean.clamp(min=1),
            "top_heavy": (x[:, : h // 2] * ink[:, : h // 2]).sum((1, 2)) / total,
            "high_contrast": var.sqrt()}


def attribute_labels(images: torch.Tensor, classes: torch.Tensor,
                     thresholds: dict[str, float]) -> torch.Tensor:
    """The 0/1 attributes (``ATTRIBUTES`` order) of Fashion-MNIST images.

    Args:
        images: uint8 (N, 1, H, W) grayscale images.
        classes: Fashion-MNIST class ids (N,).
        thresholds: One threshold per name of ``PIXEL_ATTRIBUTES`` (see ``pixel_measures``).

    Returns:
        uint8 tensor (N, len(ATTRIBUTES)).

    Raises:
        ValueError: naming ``thresholds`` if one is missing.
    """
    missing = sorted(set(PIXEL_ATTRIBUTES) - set(thresholds))
    if missing:
        raise ValueError(f"thresholds is missing {missing}")
    measures = pixel_measures(images)
    cols = [torch.isin(classes, torch.tensor(ids)) for ids in CLASS_ATTRIBUTES.values()]
    cols += [measures[name] > thresholds[name] for name in PIXEL_ATTRIBUTES]
    return torch.stack(cols, 1).to(torch.uint8)


# --------------------------------------------------------------------------- writing data sets

def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image.reshape(image.shape[-2:]).numpy(), mode="L").save(path)


def _write_csv(path: Path, header: Sequence[str], rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _check_count(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _subset(n: int, first: int, count: int, seed: int) -> torch.Tensor:
    """``count`` indices of a seeded permutation of ``range(n)``, from position ``first``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if first + count > n:
        raise ValueError(f"asked for {first + count:,} images of a split of {n:,}")
    return order[first: first + count]


def make_attribute_data(out_dir: str | os.PathLike, labeled: int = 10_000,
                        unlabeled: int = 50_000, test: int = 10_000, seed: int = 0,
                        root: str | os.PathLike = FASHION_MNIST_ROOT) -> dict:
    """Write the Fashion-MNIST attribute data set: PNG images and attribute CSVs.

    The training split is shuffled with ``seed``; its first ``labeled`` images get attributes
    (``train.csv``), the next ``unlabeled`` are written without any (``unlabeled.csv``, one
    ``image`` column: the unlabeled pool that distillation learns from). ``test`` images of the
    test split go to ``test.csv``. Pixel thresholds are the medians over the labeled images.

    Files: ``images/{train,test}/NNNNN.png`` (NNNNN = the index in the Fashion-MNIST split),
    ``train.csv``, ``unlabeled.csv``, ``test.csv`` (image paths relative to ``out_dir``) and
    ``attributes.json`` (definitions, thresholds, positive rates; written last).

    Args:
        out_dir: Destination folder (created).
        labeled: Labeled training images, >= 2. Default 10,000.
        unlabeled: Unlabeled training images, >= 0; ``labeled + unlabeled`` <= 60,000.
            Default 50,000 (the rest of the training split).
        test: Test images, 1 to 10,000. Default 10,000.
        seed: Seed of the shuffle. Default 0.
        root: Fashion-MNIST folder (see ``data.load_fashion_mnist``).

    Returns:
        The contents of ``attributes.json``.

    Raises:
        ValueError: naming a count that is out of range.
        FileNotFoundError: if Fashion-MNIST is not found under ``root``.
    """
    _check_count("labeled", labeled, 2)
    _check_count("unlabeled", unlabeled, 0)
    _check_count("test", test, 1)
    out = Path(out_dir)
    train_set, test_set = load_fashion_mnist("train", root), load_fashion_mnist("test", root)
    if labeled + unlabeled > len(train_set):
        raise ValueError(f"labeled + unlabeled = {labeled + unlabeled:,} exceeds the "
                         f"{len(train_set):,} training images")
    if test > len(test_set):
        raise ValueError(f"test = {test:,} exceeds the {len(test_set):,} test images")
    lab_idx = _subset(len(train_set), 0, labeled, seed)
    unl_idx = _subset(len(train_set), labeled, unlabeled, seed)
    test_idx = torch.arange(test)
    measures = pixel_measures(train_set.images[lab_idx])
    thresholds = {k: float(v.median()) for k, v in measures.items()}
    rates = {}
    for split, ds, idx, csv_name in (("train", train_set, lab_idx, "train.csv"),
                                     ("train", train_set, unl_idx, "unlabeled.csv"),
                                     ("test", test_set, test_idx, "test.csv")):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        names = [f"images/{split}/{int(i):05d}.png" for i in idx]
        for name, i in zip(names, idx):
            _save_png(ds.images[i], out / name)
        if csv_name == "unlabeled.csv":
            _write_csv(out / csv_name, ["image"], ([n] for n in names))
            continue
        labels = attribute_labels(ds.images[idx], ds.labels[idx], thresholds)
        rates[csv_name] = dict(zip(ATTRIBUTES, labels.double().mean(0).tolist()))
        _write_csv(out / csv_name, ["image", *ATTRIBUTES],
                   ([n, *row] for n, row in zip(names, labels.tolist())))
    meta = {"source": "Fashion-MNIST", "seed": seed, "labeled": labeled, "unlabeled": unlabeled,
            "test": test, "attributes": list(ATTRIBUTES),
            "class_attributes": {k: list(v) for k, v in CLASS_ATTRIBUTES.items()},
            "pixel_attributes": PIXEL_ATTRIBUTES, "ink_threshold": _INK,
            "pixel_thresholds": thresholds, "positive_rates": rates}
    _write_json(out / "attributes.json", meta)
    return meta


# --------------------------------------------------------------------------- reading CSVs

def _read_csv(csv_path: str | os.PathLike, first: str) -> tuple[Path, list[str], list[list[str]]]:
    """(path, header, rows) of a CSV whose first column is ``first``; every row as long as the
    header."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or not lines[0] or lines[0][0].strip() != first:
        raise ValueError(f"{path}: the header's first column must be {first!r}, got "
                         f"{(lines[0][:1] if lines else 'an empty file')!r}")
    header = [h.strip() for h in lines[0]]
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: duplicate column names in the header {header}")
    rows = []
    for line_no, row in enumerate(lines[1:], start=2):
        if not row:
            continue  # blank line
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line_no}: {len(row)} fields, but the header has "
                             f"{len(header)}")
        rows.append([c.strip() for c in row])
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    return path, header, rows


def _load_images(paths: Sequence[Path], size: int, csv_path: Path) -> torch.Tensor:
    """Decode every image at ``size`` (``data.load_image``) into one uint8 tensor; a single
    channel when every image is gray."""
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p} (listed in {csv_path})")
    images = torch.stack([load_image(p, size) for p in paths])
    if (images[:, :1] == images[:, 1:]).all():
        images = images[:, :1].contiguous()
    return images


def _image_paths(csv_path: Path, rows, image_root) -> list[Path]:
    root = Path(image_root) if image_root is not None else csv_path.parent
    return [root / r[0] for r in rows]


class MultiLabelDataset(TensorImageDataset):
    """Images in memory with a float vector of attribute labels each (NaN: unlabeled).

    Args:
        images: uint8 (N, C, H, W).
        targets: float32 (N, A): 0., 1. or NaN.
        attribute_names: A names, in column order.
        paths: The image files, for reports (optional).

    ``dataset[i]`` is ``(image, target vector)``; ``batch(indices)`` gives many at once, so
    ``data.iterate_batches`` reads it straight from memory.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor,
                 attribute_names: Sequence[str], paths: Sequence[str] = ()):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if targets.ndim != 2 or len(targets) != len(images) or targets.shape[1] != len(attribute_names):
            raise ValueError(f"targets must be (N={len(images)}, A={len(attribute_names)}), got "
                             f"{tuple(targets.shape)}")
        self.images, self.labels = images, targets.float()
        self.class_names = self.attribute_names = list(attribute_names)
        self.paths = list(paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def load_attribute_csv(csv_path: str | os.PathLike, size: int, image_root=None,
                       attribute_names: Sequence[str] | None = None) -> MultiLabelDataset:
    """Read an attribute CSV and its images.

    The CSV's header is ``image,attr1,attr2,...``; each row names an image file (relative to
    ``image_root``) and gives 0 or 1 for every attribute. A CSV with the ``image`` column only is
    an unlabeled set: its targets are NaN (``attribute_names`` then says how many).

    Args:
        csv_path: The CSV file.
        size: Stored image size: each image is resized (shorter side) and center-cropped to
            ``size`` x ``size`` (``data.load_image``; use ``data.stored_size(resolution)``).
        image_root: Folder the image paths are relative to. Default: the CSV's folder.
        attribute_names: The attributes expected, in order (e.g. the training set's). Default:
            the CSV's header. Required for an image-only CSV.

    Returns:
        A ``MultiLabelDataset``.

    Raises:
        FileNotFoundError: naming the CSV or a missing image file.
        ValueError: naming the file and line for a ragged row, a value other than 0/1, a header
            that does not start with ``image`` or does not match ``attribute_names``.
    """
    path, header, rows = _read_csv(csv_path, "image")
    names = header[1:]
    if not names and attribute_names is None:
        raise ValueError(f"{path} has only an image column: pass attribute_names to read it "
                         "as unlabeled images")
    if names and attribute_names is not None and list(attribute_names) != names:
        raise ValueError(f"{path}: its attributes {names} differ from the expected "
                         f"{list(attribute_names)}")
    names = names or list(attribute_names)
    targets = torch.full((len(rows), len(names)), float("nan"))
    if header[1:]:
        for r, row in enumerate(rows):
            for a, value in enumerate(row[1:]):
                if value not in ("0", "1"):
                    raise ValueError(f"{path}, line {r + 2}: attribute {names[a]!r} must be 0 "
                                     f"or 1, got {value!r}")
                targets[r, a] = float(value)
    paths = _image_paths(path, rows, image_root)
    return MultiLabelDataset(_load_images(paths, size, path), targets, names,
                             [r[0] for r in rows])


def load_identity_csv(csv_path: str | os.PathLike, size: int, image_root=None,
                      identities: Sequence[str] | None = None) -> TensorImageDataset:
    """Read an identity CSV (``image,identity``) and its images; or an image-only CSV
    (unlabeled images, label -1).

    Args:
        csv_path: The CSV file.
        size: Stored image size (see ``load_attribute_csv``).
        image_root: Folder the image paths are relative to. Default: the CSV's folder.
        identities: The identity names to number by (e.g. the training set's). Default: the
            CSV's identities, sorted. An identity not among them is an error.

    Returns:
        A ``data.TensorImageDataset``: labels are identity ids (-1 for unlabeled images),
        ``class_names`` the identity names, ``paths`` the image column.

    Raises:
        FileNotFoundError: naming the CSV or a missing image file.
        ValueError: naming the file and line for a ragged row, an empty identity, an unknown
            identity, or a header other than ``image[,identity]``.
    """
    path, header, rows = _read_csv(csv_path, "image")
    if header[1:] not in ([], ["identity"]):
        raise ValueError(f"{path}: the header must be 'image,identity' (or 'image' for unlabeled "
                         f"images), got {','.join(header)}")
    labeled = len(header) == 2
    for r, row in enumerate(rows):
        if labeled and not row[1]:
            raise ValueError(f"{path}, line {r + 2}: empty identity")
    names = list(identities) if identities is not None else (
        sorted({row[1] for row in rows}) if labeled else [])
    ids = {n: i for i, n in enumerate(names)}
    labels = []
    for r, row in enumerate(rows):
        if labeled and row[1] not in ids:
            raise ValueError(f"{path}, line {r + 2}: identity {row[1]!r} is not among the "
                             f"{len(names)} known identities")
        labels.append(ids[row[1]] if labeled else -1)
    ds = TensorImageDataset(_load_images(_image_paths(path, rows, image_root), size, path),
                            torch.tensor(labels, dtype=torch.int64), names)
    ds.paths = [r[0] for r in rows]
    return ds


# --------------------------------------------------------------------------- identities and pairs

@dataclass
class PhotoConfig:
    """How the "photos" of an identity differ from its source image (``make_photos``).

    No paper value applies: these make a verification task that is neither trivial nor hopeless
    for a 32-pixel MobileNet (about 1 in 10 hard different-identity pairs is mistaken for a
    same-identity one by the 1.0 teacher at a false accept rate of 1e-4).
    """

    scale: tuple[float, float] = (0.85, 1.15)  # zoom of the source
    rotation_degrees: float = 10.0  # uniform in +-this
    shift: float = 0.12  # uniform in +-this fraction of the image side, each axis
    brightness: tuple[float, float] = (0.7, 1.3)  # multiplies the intensities
    noise_std: float = 12.0  # Gaussian pixel noise, in intensity levels (of 255)


def make_photos(images: torch.Tensor, cfg: PhotoConfig, generator: torch.Generator) -> torch.Tensor:
    """One random "photo" of each source image: a zoom, rotation and shift, a brightness change
    and pixel noise.

    Args:
        images: uint8 (N, C, H, W) source images.
        cfg: The ranges of the changes.
        generator: Seeded generator (the photos are a pure function of its state).

    Returns:
        uint8 (N, C, H, W).
    """
    n = images.shape[0]
    u = lambda lo, hi: torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo) + lo  # noqa: E731
    scale = u(*cfg.scale)
    angle = u(-cfg.rotation_degrees, cfg.rotation_degrees) * math.pi / 180
    tx, ty = u(-cfg.shift, cfg.shift) * 2, u(-cfg.shift, cfg.shift) * 2  # grid units: side = 2
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos() / scale, -angle.sin() / scale
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin() / scale, angle.cos() / scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta.float(), list(images.shape), align_corners=False)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    x = x * u(*cfg.brightness).float()[:, None, None, None]
    x = x + torch.randn(x.shape, generator=generator) * cfg.noise_std
    return x.round().clamp(0, 255).to(torch.uint8)


def _sample_negatives(identity_class: torch.Tensor, photos: int, count: int,
                      generator: torch.Generator) -> list[tuple[int, int]]:
    """``count`` distinct unordered pairs of photos (``id * photos + k``) of different
    identities; half with both identities of the same Fashion-MNIST class (hard pairs)."""
    n_id = len(identity_class)
    by_class = {int(c): torch.nonzero(identity_class == c).flatten() for c in identity_class.unique()}
    hard_pool = [ids for ids in by_class.values() if len(ids) > 1]
    pairs: set[tuple[int, int]] = set()
    want_hard = count // 2 if hard_pool else 0
    max_pairs = (n_id * photos) ** 2 // 4
    if count > max_pairs:
        raise ValueError(f"negatives = {count:,} is more than the identities allow")
    while len(pairs) < count:
        hard = len(pairs) < want_hard
        if hard:
            ids = hard_pool[int(torch.randint(len(hard_pool), (1,), generator=generator))]
            pick = torch.randperm(len(ids), generator=generator)[:2]
            a, b = int(ids[pick[0]]), int(ids[pick[1]])
        else:
            a, b = (int(v) for v in torch.randint(n_id, (2,), generator=generator))
            if a == b:
                continue
        ka, kb = (int(v) for v in torch.randint(photos, (2,), generator=generator))
        pa, pb = a * photos + ka, b * photos + kb
        pairs.add((min(pa, pb), max(pa, pb)))
    return sorted(pairs)


def make_embedding_data(out_dir: str | os.PathLike, identities: int = 1000, photos: int = 10,
                        unlabeled: int = 20_000, test_identities: int = 600,
                        test_photos: int = 6, negatives: int = 50_000, seed: int = 0,
                        photo_cfg: PhotoConfig | None = None,
                        root: str | os.PathLike = FASHION_MNIST_ROOT) -> dict:
    """Write the Fashion-MNIST identity data set: photos of identities, CSVs and verification pairs.

    An identity is one Fashion-MNIST image; its photos are ``make_photos`` of it. Training
    identities come from the training split (shuffled with ``seed``); the next ``unlabeled``
    training images give one photo each, without identity (the unlabeled pool for distillation).
    Test identities come from the test split, so no test identity is seen in training. Test pairs:
    every same-identity pair, and ``negatives`` different-identity pairs, half of them hard
    (two identities of the same Fashion-MNIST class).

    Files: ``images/{train,unlabeled,test}/*.png``, ``train.csv`` and ``test.csv``
    (``image,identity``), ``unlabeled.csv`` (``image``), ``pairs.csv``
    (``image_a,image_b,same`` over the test images) and ``identities.json`` (written last).

    Args:
        out_dir: Destination folder (created).
        identities: Training identities, >= 2. Default 1,000.
        photos: Photos per training identity, >= 1. Default 10.
        unlabeled: Unlabeled training photos, >= 0. Default 20,000.
        test_identities: Test identities, >= 2. Default 600.
        test_photos: Photos per test identity, >= 2. Default 6 (600 x 15 = 9,000 positive pairs).
        negatives: Different-identity test pairs, >= 1. Default 50,000 (a false accept rate of
            1e-4 then allows 5 false accepts; ``metrics.tar_at_far`` needs >= 10,000).
        seed: Seed of the shuffles, photos and pairs. Default 0.
        photo_cfg: The photo changes. Default ``PhotoConfig()``.
        root: Fashion-MNIST folder.

    Returns:
        The contents of ``identities.json``.

    Raises:
        ValueError: naming a count that is out of range.
        FileNotFoundError: if Fashion-MNIST is not found under ``root``.
    """
    for name, value, low in (("identities", identities, 2), ("photos", photos, 1),
                             ("unlabeled", unlabeled, 0), ("test_identities", test_identities, 2),
                             ("test_photos", test_photos, 2), ("negatives", negatives, 1)):
        _check_count(name, value, low)
    photo_cfg = photo_cfg or PhotoConfig()
    out = Path(out_dir)
    train_set, test_set = load_fashion_mnist("train", root), load_fashion_mnist("test", root)
    if identities + unlabeled > len(train_set):
        raise ValueError(f"identities + unlabeled = {identities + unlabeled:,} exceeds the "
                         f"{len(train_set):,} training images")
    if test_identities > len(test_set):
        raise ValueError(f"test_identities = {test_identities:,} exceeds the {len(test_set):,} "
                         "test images")
    g = torch.Generator().manual_seed(seed)
    splits = {"train": (train_set, _subset(len(train_set), 0, identities, seed), photos),
              "unlabeled": (train_set, _subset(len(train_set), identities, unlabeled, seed), 1),
              "test": (test_set, _subset(len(test_set), 0, test_identities, seed + 1), test_photos)}
    names: dict[str, list[str]] = {}
    for split, (ds, idx, k) in splits.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        sources = ds.images[idx].repeat_interleave(k, 0)
        shots = make_photos(sources, photo_cfg, g) if len(sources) else sources
        tag = "src" if split == "unlabeled" else "id"
        names[split] = [f"images/{split}/{tag}{int(i):05d}_{j}.png" for i in idx for j in range(k)]
        for name, img in zip(names[split], shots):
            _save_png(img, out / name)
        if split == "unlabeled":
            _write_csv(out / "unlabeled.csv", ["image"], ([n] for n in names[split]))
        else:
            ids = [f"{split}{int(i):05d}" for i in idx for _ in range(k)]
            _write_csv(out / f"{split}.csv", ["image", "identity"], zip(names[split], ids))
    test_idx = splits["test"][1]
    positives = [(i * test_photos + a, i * test_photos + b) for i in range(test_identities)
                 for a in range(test_photos) for b in range(a + 1, test_photos)]
    neg = _sample_negatives(test_set.labels[test_idx], test_photos, negatives, g)
    test_names = names["test"]
    _write_csv(out / "pairs.csv", ["image_a", "image_b", "same"],
               [*((test_names[a], test_names[b], 1) for a, b in positives),
                *((test_names[a], test_names[b], 0) for a, b in neg)])
    meta = {"source": "Fashion-MNIST", "seed": seed, "identities": identities, "photos": photos,
            "unlabeled": unlabeled, "test_identities": test_identities,
            "test_photos": test_photos, "positive_pairs": len(positives),
            "negative_pairs": len(neg),
            "hard_negative_pairs": sum(int(test_set.labels[test_idx[a // test_photos]] ==
                                           test_set.labels[test_idx[b // test_photos]])
                                       for a, b in neg),
            "photo_config": {k: v for k, v in vars(photo_cfg).items()}}
    _write_json(out / "identities.json", meta)
    return meta


def load_pairs_csv(csv_path: str | os.PathLike, images: Sequence[str]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read a verification pairs CSV (``image_a,image_b,same``) against a list of images.

    Args:
        csv_path: The CSV file; ``same`` is 1 for a same-identity pair, 0 otherwise.
        images: The image paths as the identity CSV lists them (its ``paths``), in dataset order.

    Returns:
        ``(index_a, index_b, same)``: int64, int64 and bool tensors (P,).

    Raises:
        FileNotFoundError: naming a missing CSV.
        ValueError: naming the file and line for a ragged row, an image not in ``images``, or a
            ``same`` other than 0/1.
    """
    path, header, rows = _read_csv(csv_path, "image_a")
    if header != ["image_a", "image_b", "same"]:
        raise ValueError(f"{path}: the header must be 'image_a,image_b,same', got "
                         f"{','.join(header)}")
    index = {p: i for i, p in enumerate(images)}
    a, b, same = [], [], []
    for r, (ia, ib, s) in enumerate(rows):
        for image in (ia, ib):
            if image not in index:
                raise ValueError(f"{path}, line {r + 2}: image {image!r} is not in the "
                                 "evaluated image list")
        if s not in ("0", "1"):
            raise ValueError(f"{path}, line {r + 2}: same must be 0 or 1, got {s!r}")
        a.append(index[ia])
        b.append(index[ib])
        same.append(s == "1")
    return torch.tensor(a), torch.tensor(b), torch.tensor(same)
