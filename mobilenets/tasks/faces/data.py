"""Reading the face data sets: attribute CSVs, identity CSVs and verification pairs, and the
folders ``make_data`` writes. Face attributes (paper section 4.5, Table 12) and face embeddings
(section 4.7, Table 14) are each learnt by distillation from a larger MobileNet, shown on data
sets derived from Fashion-MNIST.

The paper's data (a YFCC100M-like attribute set; FaceNet's faces) are not public, so two small
stand-ins are generated here, with the same structure:

* **Attributes** (``make_data.make_attribute_data``): each Fashion-MNIST image gets 11 binary attributes,
  5 from its class (``upper_body``, ``footwear``, ...) and 6 measured from its pixels (``dark``,
  ``wide``, ``textured``, ...; thresholds are medians on the labeled training images). They are
  correlated with the class but not one-to-one with it. Written as PNG files and CSVs
  (``image,attr1,attr2,...`` with 0/1 values) that ``load_attribute_csv`` reads back, as it reads
  any such CSV.
* **Identities** (``make_data.make_embedding_data``): each identity is one Fashion-MNIST image and its
  "photos" are random augmentations of it (scale, rotation, shift, brightness, noise).
  Verification pairs are same-identity pairs and different-identity pairs, at least half of them
  hard (two images of the same Fashion-MNIST class). Written as PNG files, CSVs (``image,identity``)
  and a pairs CSV (``image_a,image_b,same``).

The models (``model``), their training by distillation (``train``) and Tables 12 and 14
(``evaluate``) live beside this module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from mobilenets.engine.data import TensorImageDataset, limit_dataset, load_image
from mobilenets.readers import read_csv

# --------------------------------------------------------------------------- reading CSVs

def _read_csv(csv_path: str | os.PathLike, first: str) -> tuple[Path, list[str], list[list[str]]]:
    """(path, header, rows) of a CSV whose first column is ``first``; every row as long as the
    header."""
    path = Path(csv_path)
    lines = list(read_csv(path))
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


# --------------------------------------------------------------------------- opening a folder


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


def data_csv(data_dir, name: str) -> Path:
    """``data_dir/name``, or a FileNotFoundError saying what ``--data`` must hold."""
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
    train_set = load_attribute_csv(data_csv(data_dir, "train.csv"), size)
    test_set = load_attribute_csv(data_csv(data_dir, "test.csv"), size,
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
    train_set = load_identity_csv(data_csv(data_dir, "train.csv"), size)
    test_set = load_identity_csv(data_csv(data_dir, "test.csv"), size)
    pairs = load_pairs_csv(data_csv(data_dir, "pairs.csv"), test_set.paths)
    if unlabeled and (Path(data_dir) / "unlabeled.csv").is_file():
        pool = load_identity_csv(Path(data_dir) / "unlabeled.csv", size)
        pool.class_names = train_set.class_names
        train_set = _concat([train_set, pool])
    return train_set, test_set, pairs


def limit_splits(cfg, *datasets):
    """Apply ``cfg.limit_train`` and ``cfg.limit_val`` (first N images) to (train, test) sets."""
    for ds, limit in zip(datasets, (cfg.limit_train, cfg.limit_val)):
        if limit:
            limit_dataset(ds, limit)
            if getattr(ds, "paths", None):
                ds.paths = ds.paths[:limit]
    return datasets
