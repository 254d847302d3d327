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
  Verification pairs are same-identity pairs and different-identity pairs, at least half of them
  hard (two images of the same Fashion-MNIST class). Written as PNG files, CSVs (``image,identity``)
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

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.fileio import atomic_path
from mobilenets.engine.data import (FASHION_MNIST_ROOT, TensorImageDataset, load_fashion_mnist,
    load_image)
from mobilenets.engine.train import TrainConfig

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
    height = torch.where(rows, ar_h, -1).amax(1) - torch.where(rows, ar_h, h).amin(1) + 1
    width = torch.where(cols, ar_w, -1).amax(1) - torch.where(cols, ar_w, w).amin(1) + 1
    height, width = height.clamp(min=1), width.clamp(min=1)
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


def _fashion_splits(root, train_name: str, train_count: int, test_name: str, test_count: int):
    """Fashion-MNIST's train and test splits, checked to hold ``train_count`` and ``test_count``
    images (each named in the error as ``train_name`` / ``test_name``)."""
    train_set, test_set = load_fashion_mnist("train", root), load_fashion_mnist("test", root)
    if train_count > len(train_set):
        raise ValueError(f"{train_name} = {train_count:,} exceeds the {len(train_set):,} "
                         "training images")
    if test_count > len(test_set):
        raise ValueError(f"{test_name} = {test_count:,} exceeds the {len(test_set):,} test images")
    return train_set, test_set


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
    train_set, test_set = _fashion_splits(root, "labeled + unlabeled", labeled + unlabeled,
                                          "test", test)
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
        if targets.shape != (len(images), len(attribute_names)):
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

    No paper value applies. The changes are mild enough that an identity's photos stay closer to
    each other than to other identities' (with sources at most ``max_source_cosine`` apart, see
    ``distinct_sources``): the raw-pixel median same-identity cosine is about 0.76 while the 1e-4
    quantile of different-identity pairs is about 0.89, so a false accept rate of 1e-4 measures the
    model rather than near-twin garments. The first version (zoom 0.85-1.15, 10 degrees, shift
    0.12, brightness 0.7-1.3, noise 12) put the median same-identity pair (0.53 raw, 0.81 for the
    teacher) below hundreds of different-identity pairs, and every model's TAR@1e-4 below 1%.
    """

    scale: tuple[float, float] = (0.92, 1.08)  # zoom of the source
    rotation_degrees: float = 5.0  # uniform in +-this
    shift: float = 0.05  # uniform in +-this fraction of the image side, each axis
    brightness: tuple[float, float] = (0.85, 1.15)  # multiplies the intensities
    noise_std: float = 6.0  # Gaussian pixel noise, in intensity levels (of 255)


def pixel_cosine_features(images: torch.Tensor) -> torch.Tensor:
    """Unit vectors of the mean-centred pixels of each image: their dot product is the raw-pixel
    cosine similarity (the pixel baseline of Table 14 and the measure of ``distinct_sources``).

    Args:
        images: (N, C, H, W) images, any dtype.

    Returns:
        float (N, C*H*W), each row of norm 1 (0 for a constant image).
    """
    x = images.float().flatten(1)
    return F.normalize(x - x.mean(1, keepdim=True), dim=1)


def distinct_sources(images: torch.Tensor, order: torch.Tensor, count: int,
                     max_cosine: float, chosen: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedily pick ``count`` images, in ``order``, none a near-twin of another: a candidate is
    rejected when its raw-pixel cosine (``pixel_cosine_features``) with an already chosen image
    (or a row of ``chosen``) exceeds ``max_cosine``.

    Args:
        images: (N, C, H, W) candidate images.
        order: Indices into ``images``, in the order to try them.
        count: Images to pick, >= 0.
        max_cosine: Largest allowed cosine between two picks, in (-1, 1]; 1 keeps every
            candidate (the first ``count`` of ``order``).
        chosen: Features (``pixel_cosine_features``) of images picked before (e.g. the training
            identities when picking test identities), or None.

    Returns:
        (picked indices into ``images``, ``chosen`` with their features appended).

    Raises:
        ValueError: if ``max_cosine`` is out of range or ``order`` runs out before ``count``.
    """
    if not (isinstance(max_cosine, (int, float)) and -1 < max_cosine <= 1):
        raise ValueError(f"max_cosine must be in (-1, 1], got {max_cosine!r}")
    bank = chosen if chosen is not None else torch.zeros(0, images[0].numel())
    picked: list[int] = []
    for start in range(0, len(order), 512):  # one matrix product per block of candidates
        if len(picked) == count:
            break
        block = pixel_cosine_features(images[order[start:start + 512]])
        ok = (block @ bank.T).amax(1) <= max_cosine if len(bank) else \
            torch.ones(len(block), dtype=torch.bool)
        new: list[int] = []  # picks of this block, checked one by one against each other
        for j in torch.nonzero(ok).flatten().tolist():
            if new and float((block[new] @ block[j]).max()) > max_cosine:
                continue
            new.append(j)
            if len(picked) + len(new) == count:
                break
        picked += [start + j for j in new]
        bank = torch.cat([bank, block[new]])
    if len(picked) < count:
        raise ValueError(f"only {len(picked):,} of the {len(order):,} candidates are at most "
                         f"max_cosine = {max_cosine} apart; {count:,} were asked for")
    return order[picked], bank


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

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo) + lo

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
    identities; half drawn with both identities of the same Fashion-MNIST class (hard pairs; at
    most half of those possible), the rest from any two identities (some of the same class too)."""
    n_id = len(identity_class)
    by_class = {int(c): torch.nonzero(identity_class == c).flatten()
                for c in identity_class.unique()}
    hard_pool = [ids for ids in by_class.values() if len(ids) > 1]
    pairs: set[tuple[int, int]] = set()
    possible = n_id * (n_id - 1) // 2 * photos ** 2
    if count > possible // 2:  # keep rejection sampling fast
        raise ValueError(f"negatives = {count:,} is more than half of the {possible:,} "
                         "different-identity pairs the test identities allow")
    possible_hard = sum(len(ids) * (len(ids) - 1) // 2 for ids in hard_pool) * photos ** 2
    want_hard = min(count // 2, possible_hard // 2)
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
                        root: str | os.PathLike = FASHION_MNIST_ROOT,
                        max_source_cosine: float = 0.9) -> dict:
    """Write the Fashion-MNIST identity data set: photos of identities, CSVs and verification pairs.

    An identity is one Fashion-MNIST image; its photos are ``make_photos`` of it. Training
    identities come from the training split (shuffled with ``seed``), test identities from the
    test split, so no test identity is seen in training. No two identities, training or test, are
    near-twins: ``distinct_sources`` skips an image whose raw-pixel cosine with an identity
    already chosen (training ones first) exceeds ``max_source_cosine``. The first ``unlabeled``
    training images of the shuffle that are not identities give one photo each, without identity
    (the unlabeled pool for distillation). Test pairs:
    every same-identity pair, and ``negatives`` different-identity pairs: half drawn among hard
    pairs (two identities of the same Fashion-MNIST class), the other half among all pairs.

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
        max_source_cosine: Largest raw-pixel cosine between two identities' source images, in
            (-1, 1]. Default 0.9: Fashion-MNIST has many near-twin garments (cosine 0.98-0.99)
            whose photos would otherwise be the hardest different-identity pairs; at 0.9 about
            30% (training) and 40% (test) of the candidates are skipped. 1 disables the check.

    Returns:
        The contents of ``identities.json`` (``max_source_cosine`` and the measured largest
        cosine between two sources, ``max_source_cosine_measured``, included).

    Raises:
        ValueError: naming a count or ``max_source_cosine`` that is out of range, or when too
            few sources are ``max_source_cosine`` apart.
        FileNotFoundError: if Fashion-MNIST is not found under ``root``.
    """
    for name, value, low in (("identities", identities, 2), ("photos", photos, 1),
                             ("unlabeled", unlabeled, 0), ("test_identities", test_identities, 2),
                             ("test_photos", test_photos, 2), ("negatives", negatives, 1)):
        _check_count(name, value, low)
    if not (isinstance(max_source_cosine, (int, float)) and -1 < max_source_cosine <= 1):
        raise ValueError(f"max_source_cosine must be in (-1, 1], got {max_source_cosine!r}")
    photo_cfg = photo_cfg or PhotoConfig()
    out = Path(out_dir)
    train_set, test_set = _fashion_splits(root, "identities + unlabeled", identities + unlabeled,
                                          "test_identities", test_identities)
    g = torch.Generator().manual_seed(seed)
    order = _subset(len(train_set), 0, len(train_set), seed)
    train_idx, bank = distinct_sources(train_set.images, order, identities, max_source_cosine)
    test_idx, bank = distinct_sources(test_set.images,
                                      _subset(len(test_set), 0, len(test_set), seed + 1),
                                      test_identities, max_source_cosine, bank)
    sims = bank @ bank.T
    sims.fill_diagonal_(-1.0)
    rest = order[~torch.isin(order, train_idx)]
    if unlabeled > len(rest):
        raise ValueError(f"identities + unlabeled = {identities + unlabeled:,} exceeds the "
                         f"{len(train_set):,} training images")
    splits = {"train": (train_set, train_idx, photos),
              "unlabeled": (train_set, rest[:unlabeled], 1),
              "test": (test_set, test_idx, test_photos)}
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
            "max_source_cosine": max_source_cosine,
            "max_source_cosine_measured": round(float(sims.max()), 4),
            "source_similarity": "cosine of the mean-centred pixels (pixel_cosine_features)",
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


# --------------------------------------------------------------------------- models

class EmbeddingNet(nn.Module):
    """A face-embedding network: a MobileNet body, its global pooling, a linear layer (with
    BatchNorm) and L2 normalisation, as FaceNet's embedding (Schroff et al. 2015) that section
    4.7 distils.

    Args:
        backbone: A MobileNet built with ``include_top=False`` (``MobileNetBase``); its
            ``forward_features`` and ``forward_head(pre_logits=True)`` give the pooled features.
        embedding_dim: Size of the embedding, >= 1. Default 128 (FaceNet's).

    ``forward(x)`` returns unit-length embeddings (N, embedding_dim). ``config`` describes the
    whole network (``from_config`` rebuilds it; ``checkpoint.save_model`` stores it).
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int = 128):
        super().__init__()
        _check_count("embedding_dim", embedding_dim)
        if getattr(backbone, "include_top", None) is not False:
            raise ValueError("backbone must be a MobileNet built with include_top=False")
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.embed = nn.Linear(backbone.num_features, embedding_dim)
        # Unit-variance weights: the output is normalised, so the weights' scale only sets how
        # far an optimizer step turns them; RMSprop's steps are ~lr per weight whatever the
        # gradient, so tiny weights (PyTorch's or TF-Slim's 0.01) would turn at random.
        nn.init.normal_(self.embed.weight, 0.0, 1.0)
        nn.init.zeros_(self.embed.bias)
        # Pooled ReLU features share a large positive mean, which would point every embedding
        # the same way; BatchNorm centres each dimension first (as ArcFace's FC-BN head).
        self.embed_bn = nn.BatchNorm1d(embedding_dim)
        self.in_channels = backbone.in_channels
        self.config = {"head": "embedding", "embedding_dim": embedding_dim,
                       "backbone": backbone.config,
                       "resolution": backbone.config.get("resolution")}

    @classmethod
    def from_config(cls, config: dict) -> "EmbeddingNet":
        """Rebuild a freshly initialised network from its ``config``.

        Raises:
            ValueError: naming ``config`` if it does not describe an ``EmbeddingNet``.
        """
        from mobilenets.models.registry import build_from_config

        if config.get("head") != "embedding" or "backbone" not in config:
            raise ValueError("config does not describe an EmbeddingNet (no head='embedding'); "
                             "is this an embedding model file?")
        net = cls(build_from_config(config["backbone"]), config["embedding_dim"])
        net.config["resolution"] = config.get("resolution")
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return F.normalize(self.embed_bn(self.embed(features)), dim=1)


class IdentityClassifier(nn.Module):
    """Identity logits from unit embeddings: ``scale * (W e + b)``, the teacher's training head.

    Normalising the features (not the weights) and scaling them is NormFace's feature
    normalisation (Wang et al. 2017); the classifier is dropped after training and the unit
    embedding kept.

    Args:
        embedding_dim: Size of the embeddings.
        num_classes: Number of training identities.
        scale: The logits' scale s > 0 (a unit embedding alone gives logits too small for
            1,000 identities).
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float):
        super().__init__()
        self.scale = scale
        self.linear = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(embeddings)


def build_backbone(cfg, include_top: bool = False, num_classes: int = 1000) -> nn.Module:
    """The MobileNet of a run config (``model``, ``width_mult``, ``dropout``, input size), with or
    without its classifier."""
    from mobilenets.models.registry import create_model

    kwargs = {"dropout": cfg.dropout, "include_top": include_top, "num_classes": num_classes}
    if cfg.width_mult is not None:
        kwargs["width_mult"] = cfg.width_mult
    model = create_model(cfg.model, **kwargs)
    model.config["resolution"] = cfg.input_size
    return model


def load_embedding_model(path: str | os.PathLike) -> EmbeddingNet:
    """Load an ``EmbeddingNet`` saved by ``mobilenets embeddings train|distill``, in eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is not an embedding model.
    """
    from mobilenets.models.modelfile import load_state_dict_checked, read_model_file

    config, state, _ = read_model_file(path)
    if config.get("head") != "embedding":
        raise ValueError(f"{path} is not an embedding model (it has no embedding head); use "
                         "`mobilenets embeddings train` or `distill` to make one")
    model = EmbeddingNet.from_config(config)
    load_state_dict_checked(model, state, source=str(path))
    return model.eval()


def load_attribute_model(path: str | os.PathLike) -> tuple[nn.Module, list[str], dict]:
    """(model in eval mode, attribute names, training config) of a multi-label model file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is an embedding model or lacks attribute names.
    """
    from mobilenets.models.modelfile import load_state_dict_checked, read_model_file
    from mobilenets.models.registry import build_from_config

    config, state, extra = read_model_file(path)
    if config.get("head") == "embedding":
        raise ValueError(f"{path} is an embedding model, not an attribute classifier")
    names = extra.get("class_names")
    if not names or len(names) != config.get("num_classes"):
        raise ValueError(f"{path} does not record its {config.get('num_classes')} attribute "
                         "names; use a model written by `mobilenets attributes train|distill`")
    model = build_from_config(config)
    load_state_dict_checked(model, state, source=str(path))
    return model.eval(), list(names), extra.get("train_config", {})


# --------------------------------------------------------------------------- recipes

@dataclass
class EmbeddingTrainConfig(TrainConfig):
    """The embedding teacher's run: every ``TrainConfig`` field plus its identity head.

    The paper distils FaceNet (trained with a triplet loss, Schroff et al. 2015) and gives no
    recipe for it; this teacher is a MobileNet trained as an identity classifier on its unit
    embedding (``IdentityClassifier``), which needs far less tuning than triplets.
    """

    embedding_dim: int = 128  # FaceNet's embedding size (Schroff et al. 2015), Table 14's teacher
    logit_scale: float = 16.0  # NormFace (Wang et al. 2017) scales unit features by s ~ 16-64

    def validate(self) -> "EmbeddingTrainConfig":
        super().validate()
        _check_count("embedding_dim", self.embedding_dim)
        if not (isinstance(self.logit_scale, (int, float)) and self.logit_scale > 0):
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale!r}")
        return self


def _recipes() -> dict:
    from dataclasses import asdict, replace

    from mobilenets.engine.distill import DistillConfig
    from mobilenets.engine.train import PRESETS

    # The Fashion-MNIST recipe (the paper's RMSprop, train.PRESETS) at 32 pixels, the smallest
    # input the models take (Fashion-MNIST is 28x28), so every run fits a small CPU.
    base = replace(PRESETS["fashion-mnist"], resolution=32, num_workers=0, eval_crop=1.0)
    # Teacher outputs are computed once on the un-augmented images, so a student sees the same
    # view as its target: no flips, whole-image crops.
    student = dict(flip=False, min_crop_area=1.0,
                   weight_decay=0.0,  # section 4.5: distillation "requires no regularization"
                   hard_weight=0.0,  # section 4.5: the teacher's outputs "instead of" labels
                   lr_decay=0.3, epochs=2)  # distill helper's 32-pixel sweep recipe, 2 epochs
    return {
        "attributes-teacher": replace(base, model="mobilenet_v1_1.0_224", epochs=8,
                                      min_crop_area=0.8,  # pixel attributes measure size/shape
                                      out_dir="runs/attributes/teacher"),
        "attributes-student": DistillConfig(**{**asdict(base), **student,
                                               "model": "mobilenet_v1_0.5_224", "loss": "sigmoid",
                                               "out_dir": "runs/attributes/student"}),
        "embeddings-teacher": EmbeddingTrainConfig(**{**asdict(base), "epochs": 12,
                                                      "model": "mobilenet_v1_1.0_224",
                                                      "out_dir": "runs/embeddings/teacher"}),
        "embeddings-student": DistillConfig(**{**asdict(base), **student,
                                               "model": "mobilenet_v1_0.5_224", "loss": "embedding",
                                               "out_dir": "runs/embeddings/student"}),
    }


def faces_config(recipe: str, **overrides):
    """A recipe of this module with fields replaced.

    Args:
        recipe: ``"attributes-teacher"`` (a ``TrainConfig``), ``"attributes-student"`` and
            ``"embeddings-student"`` (``distill.DistillConfig``), ``"embeddings-teacher"``
            (``EmbeddingTrainConfig``).
        **overrides: Fields of that config class.

    Returns:
        The validated config.

    Raises:
        ValueError: naming an unknown recipe or field, or a bad value.
    """
    from mobilenets.engine.train import config_from_preset

    return config_from_preset(_recipes(), recipe, what="recipe", **overrides)


# --------------------------------------------------------------------------- evaluation

def model_outputs(model: nn.Module, dataset, resolution: int, eval_crop: float = 1.0,
                  batch_size: int = 256) -> torch.Tensor:
    """The model's outputs (logits or embeddings) for every image of ``dataset``, in order,
    through the evaluation transform (``distill.teacher_outputs`` without a cache)."""
    from mobilenets.engine.data import BatchTransform
    from mobilenets.engine.distill import teacher_outputs

    tf = BatchTransform(resolution, False, eval_crop=eval_crop,
                        out_channels=getattr(model, "in_channels", 3))
    return teacher_outputs(model, dataset, tf, batch_size)


def evaluate_attributes(model: nn.Module, dataset: MultiLabelDataset, resolution: int,
                        eval_crop: float = 1.0) -> dict:
    """Average precision per attribute and their mean (Table 12's "mean AP"), in percent.

    Args:
        model: Images -> one logit per attribute.
        dataset: Labeled images (every target 0 or 1).
        resolution: Input size.
        eval_crop: Center-crop fraction. Default 1.0 (the whole image).

    Returns:
        ``{"mean_ap": float, "per_attribute": {name: AP}, "num_images": N}``.

    Raises:
        ValueError: if the dataset has unlabeled targets or the model's output count differs.
    """
    from mobilenets.engine.metrics import average_precision_per_column

    if torch.isnan(dataset.labels).any():
        raise ValueError("the evaluation set has unlabeled (NaN) targets: evaluate on a "
                         "labeled CSV such as test.csv")
    scores = model_outputs(model, dataset, resolution, eval_crop)
    if scores.shape[1] != dataset.labels.shape[1]:
        raise ValueError(f"the model has {scores.shape[1]} outputs but the data "
                         f"{dataset.labels.shape[1]} attributes")
    ap = average_precision_per_column(scores, dataset.labels)
    defined = ap[~torch.isnan(ap)]
    return {"mean_ap": 100 * float(defined.mean()) if len(defined) else None,
            "per_attribute": {n: (None if math.isnan(v) else 100 * v)
                              for n, v in zip(dataset.attribute_names, ap.tolist())},
            "num_images": len(dataset)}


def evaluate_verification(model: nn.Module, dataset, pairs, resolution: int,
                          far: float = 1e-4, eval_crop: float = 1.0) -> dict:
    """Verification on pairs: true accept rate at a false accept rate (Table 14), in percent.

    The score of a pair is the cosine similarity of its two embeddings (for unit embeddings,
    a monotone function of their squared distance).

    Args:
        model: Images -> embeddings.
        dataset: The images the pairs refer to.
        pairs: ``(index_a, index_b, same)`` from ``load_pairs_csv``.
        resolution: Input size.
        far: The false accept rate, in (0, 1). Default 1e-4 (Table 14).
        eval_crop: Center-crop fraction. Default 1.0.

    Returns:
        ``metrics.tar_at_far``'s dict with ``tar`` and ``far`` in percent, ``tar`` again as
        ``tar_at_far_<far>`` (e.g. ``tar_at_far_0.0001``, the name of ``eval``'s column) and, for
        context, ``tar_at_far_0.001``, ``tar_at_far_0.01`` and ``tar_at_far_0.1`` (percent) for
        those of 1e-3, 1e-2 and 1e-1 that are above ``far``.

    Raises:
        ValueError: from ``metrics.tar_at_far``, e.g. with too few negative pairs for ``far``.
    """
    from mobilenets.engine.metrics import tar_at_far

    emb = F.normalize(model_outputs(model, dataset, resolution, eval_crop), dim=1)
    a, b, same = pairs
    scores = (emb[a] * emb[b]).sum(1)
    result = tar_at_far(scores[same], scores[~same], far)
    result.update(tar=100 * result["tar"], far=100 * result["far"])
    result[f"tar_at_far_{far:g}"] = result["tar"]  # the name `eval`'s table and CSV use
    for context in (1e-3, 1e-2, 1e-1):
        if context > far:
            result[f"tar_at_far_{context:g}"] = 100 * tar_at_far(scores[same], scores[~same],
                                                                 context)["tar"]
    return result


def cost(model: nn.Module, resolution: int) -> dict:
    """Mult-Adds and parameters (millions) of a model at ``resolution`` (``profile_model``)."""
    from mobilenets.cost.profiler import profile_model

    prof = profile_model(model, (getattr(model, "in_channels", 3), resolution, resolution))
    return {"madds_m": round(prof.total_madds / 1e6, 2),
            "params_m": round(prof.total_params / 1e6, 3)}


# --------------------------------------------------------------------------- training

def _stored(cfg) -> int:
    from mobilenets.engine.data import stored_size

    return stored_size(cfg.input_size, cfg.eval_crop)


def _concat(datasets: Sequence[TensorImageDataset]):
    """One in-memory dataset from several of the same image size and kind."""
    first = datasets[0]
    shapes = {tuple(ds.images.shape[1:]) for ds in datasets}
    if len(shapes) != 1:
        raise ValueError(f"the CSVs' images differ in channels or size: {sorted(shapes)}")
    images = torch.cat([ds.images for ds in datasets])
    labels = torch.cat([ds.labels for ds in datasets])
    paths = [p for ds in datasets for p in getattr(ds, "paths", [])]
    if isinstance(first, MultiLabelDataset):
        return MultiLabelDataset(images, labels, first.attribute_names, paths)
    out = TensorImageDataset(images, labels, first.class_names)
    out.paths = paths
    return out


def _csv(data_dir, name: str) -> Path:
    path = Path(data_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --data must be a folder written by "
                                "`make-data` (or holding the same CSV files)")
    return path


def open_attribute_data(data_dir: str | os.PathLike, size: int, unlabeled: bool = False
                        ) -> tuple[MultiLabelDataset, MultiLabelDataset]:
    """(training set, test set) of an attribute folder: ``train.csv`` (plus ``unlabeled.csv``
    when ``unlabeled``, targets NaN) and ``test.csv``, images stored at ``size``.

    Raises:
        FileNotFoundError: naming a missing CSV or image. ValueError: see ``load_attribute_csv``.
    """
    train_set = load_attribute_csv(_csv(data_dir, "train.csv"), size)
    test_set = load_attribute_csv(_csv(data_dir, "test.csv"), size,
                                  attribute_names=train_set.attribute_names)
    if unlabeled and (Path(data_dir) / "unlabeled.csv").is_file():
        pool = load_attribute_csv(Path(data_dir) / "unlabeled.csv", size,
                                  attribute_names=train_set.attribute_names)
        train_set = _concat([train_set, pool])
    return train_set, test_set


def open_identity_data(data_dir: str | os.PathLike, size: int, unlabeled: bool = False):
    """(training set, test set, test pairs) of an identity folder: ``train.csv`` (plus
    ``unlabeled.csv`` when ``unlabeled``, label -1), ``test.csv`` and ``pairs.csv``.

    Raises:
        FileNotFoundError: naming a missing CSV or image. ValueError: see ``load_identity_csv``
            and ``load_pairs_csv``.
    """
    train_set = load_identity_csv(_csv(data_dir, "train.csv"), size)
    test_set = load_identity_csv(_csv(data_dir, "test.csv"), size)
    pairs = load_pairs_csv(_csv(data_dir, "pairs.csv"), test_set.paths)
    if unlabeled and (Path(data_dir) / "unlabeled.csv").is_file():
        pool = load_identity_csv(Path(data_dir) / "unlabeled.csv", size)
        pool.class_names = train_set.class_names
        train_set = _concat([train_set, pool])
    return train_set, test_set, pairs


def _limited(cfg, *datasets):
    """Apply ``cfg.limit_train`` and ``cfg.limit_val`` (first N images) to (train, test) sets."""
    from mobilenets.engine.train import _limit

    for ds, limit in zip(datasets, (cfg.limit_train, cfg.limit_val)):
        if limit:
            _limit(ds, limit)
            if getattr(ds, "paths", None):
                ds.paths = ds.paths[:limit]
    return datasets


def _check_far(pairs, far: float) -> None:
    """Fail before training, not after, when the pairs cannot measure ``far``."""
    from mobilenets.engine.metrics import tar_at_far

    tar_at_far(torch.zeros(1), torch.zeros(int((~pairs[2]).sum())), far)


def _finish(cfg, model: nn.Module, run_summary: dict, result: dict, extra: dict) -> dict:
    from mobilenets.engine.train import write_run_outputs

    summary = {**{k: v for k, v in result.items() if isinstance(v, (int, float))},
               **cost(model, cfg.input_size), **run_summary}
    summary["model_path"] = str(write_run_outputs(cfg, model, summary, eval_result=result,
                                                  extra=extra))
    return summary


def train_attributes(cfg, data_dir: str | os.PathLike, resume: bool = False) -> dict:
    """Train a multi-label MobileNet (one sigmoid per attribute) on ``train.csv``'s labels: the
    attribute teacher (binary cross-entropy, mean over attributes and images).

    Args:
        cfg: A ``TrainConfig`` (``faces_config("attributes-teacher", ...)``): model, width,
            resolution, optimiser, schedule, augmentation, ``out_dir``.
        data_dir: A folder written by ``make_attribute_data`` (or with the same CSVs).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.

    Returns:
        The summary (also ``summary.json``): ``mean_ap`` on ``test.csv`` (percent),
        ``madds_m``, ``params_m``, steps, seconds, ``model_path``; ``eval.json`` holds the AP
        of every attribute.
    """
    from mobilenets.engine.train import fit

    cfg.validate()
    torch.manual_seed(cfg.seed)
    train_set, test_set = _limited(cfg, *open_attribute_data(data_dir, _stored(cfg)))
    model = build_backbone(cfg, include_top=True, num_classes=len(train_set.attribute_names))

    def loss_fn(net, x, targets, indices):
        return F.binary_cross_entropy_with_logits(net(x).float(), targets)

    def epoch_eval(m):
        r = evaluate_attributes(m, test_set, cfg.input_size, cfg.eval_crop)
        return {"val_mean_ap": r["mean_ap"]}

    run = fit(cfg, model, train_set, loss_fn, epoch_eval, resume=resume)
    result = evaluate_attributes(run["model"], test_set, cfg.input_size, cfg.eval_crop)
    return _finish(cfg, run["model"], {**run["summary"], "trained_on": "labels",
                                       "labeled_images": len(train_set)},
                   result, {"class_names": train_set.attribute_names, "data": str(data_dir)})


def distill_attributes(cfg, data_dir: str | os.PathLike, teacher: str | os.PathLike,
                       resume: bool = False) -> dict:
    """Distil an attribute teacher into a (smaller) MobileNet on ``train.csv`` and
    ``unlabeled.csv`` images: the paper's section 4.5 (per-attribute sigmoid cross-entropy
    against the teacher's probabilities; labels used only with ``cfg.hard_weight`` > 0).

    Args:
        cfg: A ``distill.DistillConfig`` with ``loss="sigmoid"``
            (``faces_config("attributes-student", ...)``).
        data_dir: The attribute folder.
        teacher: The teacher's model file (from ``train_attributes``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.

    Returns:
        ``distill``'s summary with ``mean_ap`` on ``test.csv``, ``madds_m``, ``params_m``.

    Raises:
        ValueError: if ``cfg.loss`` is not "sigmoid" or the teacher's attributes differ from
            the data's.
    """
    from mobilenets.engine.distill import distill

    cfg.validate()
    if cfg.loss != "sigmoid":
        raise ValueError(f"loss must be 'sigmoid' for attributes, got {cfg.loss!r}")
    teacher_model, names, teacher_cfg = load_attribute_model(teacher)
    torch.manual_seed(cfg.seed)
    train_set, test_set = _limited(cfg, *open_attribute_data(data_dir, _stored(cfg),
                                                             unlabeled=True))
    if names != train_set.attribute_names:
        raise ValueError(f"teacher {teacher} predicts {names}, but the data has "
                         f"{train_set.attribute_names}")
    student = build_backbone(cfg, include_top=True, num_classes=len(names))
    summary = distill(cfg, student, teacher_model, train_set, resume=resume,
                      evaluate_fn=lambda m: evaluate_attributes(m, test_set, cfg.input_size,
                                                                cfg.eval_crop),
                      summary_extra={"teacher": str(teacher), "trained_on": "teacher",
                                     **cost(student, cfg.input_size)})
    return summary


def train_embeddings(cfg: EmbeddingTrainConfig, data_dir: str | os.PathLike,
                     resume: bool = False, far: float = 1e-4) -> dict:
    """Train the embedding teacher: an ``EmbeddingNet`` classifying ``train.csv``'s identities
    through an ``IdentityClassifier`` (cross-entropy); the classifier is dropped at the end.

    Args:
        cfg: An ``EmbeddingTrainConfig`` (``faces_config("embeddings-teacher", ...)``).
        data_dir: A folder written by ``make_embedding_data``.
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        far: False accept rate of the evaluation. Default 1e-4 (Table 14; needs >= 10,000
            negative pairs).

    Returns:
        The summary: ``tar`` (percent, at the false accept rate ``far`` on ``pairs.csv``),
        the context rates of ``evaluate_verification``, ``madds_m``, ``params_m``, steps, seconds, ``model_path``.
    """
    from mobilenets.engine.train import fit

    cfg.validate()
    torch.manual_seed(cfg.seed)
    train_set, test_set, pairs = open_identity_data(data_dir, _stored(cfg))
    _check_far(pairs, far)
    _limited(cfg, train_set)
    embedder = EmbeddingNet(build_backbone(cfg), cfg.embedding_dim)
    net = nn.Sequential(embedder, IdentityClassifier(cfg.embedding_dim,
                                                     len(train_set.class_names), cfg.logit_scale))

    def loss_fn(model, x, targets, indices):
        return F.cross_entropy(model(x).float(), targets)

    def verify(m):
        return evaluate_verification(m[0] if isinstance(m, nn.Sequential) else m, test_set, pairs,
                                     cfg.input_size, far, cfg.eval_crop)

    run = fit(cfg, net, train_set, loss_fn, lambda m: {"val_tar": verify(m)["tar"]}, resume=resume)
    final = run["model"][0]
    return _finish(cfg, final, {**run["summary"], "trained_on": "identities",
                                "identities": len(train_set.class_names)},
                   verify(final), {"data": str(data_dir)})


def distill_embeddings(cfg, data_dir: str | os.PathLike, teacher: str | os.PathLike,
                       resume: bool = False, far: float = 1e-4) -> dict:
    """Distil an embedding teacher into a (smaller) ``EmbeddingNet`` on ``train.csv`` and
    ``unlabeled.csv`` images by the squared distance of the embeddings: the paper's section 4.7.

    Args:
        cfg: A ``distill.DistillConfig`` with ``loss="embedding"``
            (``faces_config("embeddings-student", ...)``).
        data_dir: The identity folder.
        teacher: The teacher's model file (from ``train_embeddings``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        far: False accept rate of the evaluation. Default 1e-4 (Table 14).

    Returns:
        ``distill``'s summary with ``tar`` (percent at ``far``), the context rates, ``madds_m``,
        ``params_m``.
    """
    from mobilenets.engine.distill import distill

    cfg.validate()
    if cfg.loss != "embedding":
        raise ValueError(f"loss must be 'embedding' for embeddings, got {cfg.loss!r}")
    teacher_model = load_embedding_model(teacher)
    torch.manual_seed(cfg.seed)
    train_set, test_set, pairs = open_identity_data(data_dir, _stored(cfg), unlabeled=True)
    _check_far(pairs, far)
    _limited(cfg, train_set)
    student = EmbeddingNet(build_backbone(cfg), teacher_model.embedding_dim)
    return distill(cfg, student, teacher_model, train_set, resume=resume,
                   evaluate_fn=lambda m: evaluate_verification(m, test_set, pairs, cfg.input_size,
                                                               far, cfg.eval_crop),
                   summary_extra={"teacher": str(teacher), "trained_on": "teacher",
                                  **cost(student, cfg.input_size)})


# --------------------------------------------------------------------------- Tables 12 and 14

def _row_label(config: dict, resolution: int) -> str:
    """Table 12/14's model label, e.g. ``0.5 MobileNet-32`` or ``1.0 MobileNet-32``."""
    alpha = f"{config.get('backbone', config).get('width_mult', 1.0):g}"
    return f"{alpha if '.' in alpha else alpha + '.0'} MobileNet-{resolution}"


def _how(train_cfg: dict) -> str:
    if "loss" in train_cfg:
        return "distilled" if not train_cfg.get("hard_weight") else "distilled + labels"
    return "labels"


def attribute_report(model_files: Sequence[str | os.PathLike], data_dir: str | os.PathLike
                     ) -> list[dict]:
    """Table 12's rows for attribute models on ``data_dir/test.csv``: width multiplier and
    resolution, mean AP, Mult-Adds and parameters (millions), how it was trained, and the AP of
    every attribute (percent).

    Args:
        model_files: Files written by ``mobilenets attributes train`` or ``distill``.
        data_dir: The attribute folder (its ``test.csv`` is evaluated).

    Raises:
        FileNotFoundError, ValueError: for a missing or unsuitable model file or data.
    """
    from mobilenets.engine.data import stored_size

    rows, cache = [], {}
    for path in model_files:
        model, names, train_cfg = load_attribute_model(path)
        res = int(model.config.get("resolution") or 224)
        crop = float(train_cfg.get("eval_crop", 1.0))
        size = stored_size(res, crop)
        if size not in cache:
            cache[size] = load_attribute_csv(_csv(data_dir, "test.csv"), size)
        result = evaluate_attributes(model, cache[size], res, crop)
        rows.append({"model": _row_label(model.config, res), "trained_on": _how(train_cfg),
                     "mean_ap": round(result["mean_ap"], 2), **cost(model, res),
                     **{f"ap_{k}": None if v is None else round(v, 2)
                        for k, v in result["per_attribute"].items()},
                     "file": str(path)})
    return rows


def embedding_report(model_files: Sequence[str | os.PathLike], data_dir: str | os.PathLike,
                     far: float = 1e-4) -> list[dict]:
    """Table 14's rows for embedding models on ``data_dir``'s test pairs: model, true accept
    rate at ``far`` (and at the larger context rates of ``evaluate_verification``; percent),
    Mult-Adds and parameters (millions), how it was trained.

    Args:
        model_files: Files written by ``mobilenets embeddings train`` or ``distill``.
        data_dir: The identity folder (``test.csv`` and ``pairs.csv``).
        far: False accept rate. Default 1e-4 (Table 14).

    Raises:
        FileNotFoundError, ValueError: for a missing or unsuitable model file or data, or too
            few negative pairs for ``far``.
    """
    from mobilenets.models.modelfile import read_model_file
    from mobilenets.engine.data import stored_size

    rows, cache = [], {}
    for path in model_files:
        model = load_embedding_model(path)
        train_cfg = read_model_file(path)[2].get("train_config", {})
        res = int(model.config.get("resolution") or 224)
        crop = float(train_cfg.get("eval_crop", 1.0))
        size = stored_size(res, crop)
        if size not in cache:
            test_set = load_identity_csv(_csv(data_dir, "test.csv"), size)
            cache[size] = (test_set, load_pairs_csv(_csv(data_dir, "pairs.csv"), test_set.paths))
        result = evaluate_verification(model, *cache[size], res, far, crop)
        rows.append({"model": _row_label(model.config, res), "trained_on": _how(train_cfg),
                     f"tar_at_far_{far:g}": round(result["tar"], 2),
                     **{k: round(v, 2) for k, v in result.items() if k.startswith("tar_at_far")},
                     **cost(model, res), "file": str(path)})
    return rows
