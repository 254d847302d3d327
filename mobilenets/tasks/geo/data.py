"""Geolocation data: ``image,latitude,longitude`` CSVs, photos linked into one folder per geocell
for training, and a geotagged data set derived from Fashion-MNIST whose images carry real
information about where they were taken (``GeoDataConfig``)."""
from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mobilenets.checks import check_int
from mobilenets.fileio import atomic_path, save_png, staging_dir, write_json
from mobilenets.readers import read_csv
from mobilenets.tasks.geo.cells import EARTH_RADIUS_KM, Geocells


@dataclass
class GeoPhoto:
    """One geotagged photo: its image file and where it was taken (degrees)."""

    image: Path
    latitude: float
    longitude: float


def _coordinate(text: str, name: str, bound: float, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} {text!r} is not a number") from None
    if not -bound <= value <= bound:
        raise ValueError(f"{where}: {name} {value} is outside [-{bound:g}, {bound:g}]")
    return value


def read_geo_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 check_images: bool = True) -> list[GeoPhoto]:
    """Read a CSV of geotagged photos with columns ``image,latitude,longitude`` (others ignored).

    Args:
        path: The CSV file (header row required).
        image_root: Folder that relative image paths are relative to. Default: the CSV's folder.
        check_images: Require every image file to exist. Default True.

    Returns:
        One ``GeoPhoto`` per row, in file order.

    Raises:
        FileNotFoundError: if the CSV, or (with ``check_images``) an image, does not exist; the
            message names it and the row.
        ValueError: for a missing column, an empty file, a non-numeric coordinate, a latitude
            outside [-90, 90] or a longitude outside [-180, 180], naming the file and row.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    reader = read_csv(path, dicts=True, what="geo CSV")
    missing = [c for c in ("image", "latitude", "longitude") if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; the header must name image, "
                         f"latitude, longitude (found {reader.fieldnames})")
    photos = []
    for n, row in enumerate(reader, start=2):
        where = f"{path} row {n}"
        if not row["image"]:
            raise ValueError(f"{where}: empty image")
        image = Path(row["image"])
        image = image if image.is_absolute() else root / image
        if check_images and not image.is_file():
            raise FileNotFoundError(f"{where}: image not found: {image}")
        photos.append(GeoPhoto(image, _coordinate(row["latitude"], "latitude", 90, where),
                               _coordinate(row["longitude"], "longitude", 180, where)))
    if not photos:
        raise ValueError(f"{path} has no rows")
    return photos


def write_geo_csv(path: str | os.PathLike, photos: Sequence[GeoPhoto], extra: dict | None = None,
                  relative_to: str | os.PathLike | None = None) -> Path:
    """Write photos as an ``image,latitude,longitude`` CSV, atomically.

    Args:
        path: The CSV to write.
        photos: The rows.
        extra: Optional more columns: ``{name: sequence of values, one per photo}``.
        relative_to: Write image paths relative to this folder. Default: the CSV's folder.
    """
    path = Path(path)
    base = Path(relative_to) if relative_to is not None else path.parent
    extra = extra or {}
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "latitude", "longitude", *extra])
            for i, p in enumerate(photos):
                image = os.path.relpath(Path(p.image).absolute(), base.absolute())
                w.writerow([image, f"{p.latitude:.6f}", f"{p.longitude:.6f}",
                            *(v[i] for v in extra.values())])
    return path


def photo_coordinates(photos: Sequence[GeoPhoto]) -> tuple[np.ndarray, np.ndarray]:
    """(latitudes, longitudes) of photos as float arrays, degrees."""
    return (np.array([p.latitude for p in photos], float), np.array([p.longitude for p in photos], float))


def read_csv_column(path: str | os.PathLike, column: str) -> list[str]:
    """One column of a CSV as strings, in row order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it has no such column (names the file and the columns it has).
    """
    path = Path(path)
    reader = read_csv(path, dicts=True)
    if column not in (reader.fieldnames or []):
        raise ValueError(f"{path} has no column {column!r} (columns: {reader.fieldnames})")
    return [row[column] for row in reader]


def class_folder(label: int) -> str:
    """The ImageFolder class folder of a cell label: ``c0000``, ``c0001``, ... (sorted = label
    order, so ``mobilenets train`` numbers the classes as the cells)."""
    return f"c{label:05d}"


def write_cell_imagefolder(out_dir: str | os.PathLike, cells: Geocells,
                           splits: dict[str, Sequence[GeoPhoto]], overwrite: bool = False) -> dict:
    """Lay photos out as an ImageFolder of cell labels for ``mobilenets train``: ``OUT/<split>/
    c00042/<n>.<ext>`` symbolic links to the images, photos outside every kept cell left out.

    Args:
        out_dir: Folder to create.
        cells: The cells (labels).
        splits: ``{"train": photos, "val": photos}``.
        overwrite: Replace an existing ``out_dir``. Default False.

    Returns:
        ``{split: {"images": kept, "outside_cells": left out}}``.
    """
    report = {}
    with staging_dir(out_dir, overwrite) as tmp:
        for split, photos in splits.items():
            labels = cells.assign(*photo_coordinates(photos))
            for label in np.unique(labels[labels >= 0]):
                (tmp / split / class_folder(int(label))).mkdir(parents=True)
            for n, (p, label) in enumerate(zip(photos, labels)):
                if label >= 0:
                    link = tmp / split / class_folder(int(label)) / f"{n:07d}{Path(p.image).suffix}"
                    link.symlink_to(Path(p.image).resolve())
            report[split] = {"images": int((labels >= 0).sum()), "outside_cells": int((labels < 0).sum())}
            if report[split]["images"] == 0:
                raise ValueError(f"no {split} photo lies in a kept cell")
    return report


#: Real cities (name, latitude, longitude), the home regions of the derived data set.
CITIES = (
    ("London", 51.5074, -0.1278), ("Paris", 48.8566, 2.3522), ("New York", 40.7128, -74.0060),
    ("Tokyo", 35.6762, 139.6503), ("Sydney", -33.8688, 151.2093), ("Cairo", 30.0444, 31.2357),
    ("Sao Paulo", -23.5505, -46.6333), ("Mumbai", 19.0760, 72.8777), ("Moscow", 55.7558, 37.6173),
    ("Los Angeles", 34.0522, -118.2437), ("Beijing", 39.9042, 116.4074), ("Lagos", 6.5244, 3.3792),
    ("Mexico City", 19.4326, -99.1332), ("Nairobi", -1.2921, 36.8219),
    ("Buenos Aires", -34.6037, -58.3816), ("Istanbul", 41.0082, 28.9784),
    ("Jakarta", -6.2088, 106.8456), ("Toronto", 43.6532, -79.3832), ("Rome", 41.9028, 12.4964),
    ("Cape Town", -33.9249, 18.4241),
)


@dataclass
class GeoDataConfig:
    """A geolocation data set derived from Fashion-MNIST, where the image tells where it was taken.

    The story: each garment class is sold in ``regions_per_class`` home cities (class c's region
    r is ``CITIES[(c * regions_per_class + r) % len(CITIES)]``, so some cities share classes); which
    of them a photo comes from is decided by how bright the garment is: the class's images are
    ranked by mean pixel value and cut into ``regions_per_class`` equal groups (quantiles within
    the class), darkest to the first city. A photo lies at a distance from its city drawn from a
    2-D Gaussian (Rayleigh distance) whose scale is the region's spread, cycling through
    ``spreads_km`` (region r gets ``spreads_km[r % len]``: some tight "landmark" regions, some
    wide ones), in a uniform direction. A share ``outlier_rate`` of photos are instead anywhere
    on earth (uniform on the sphere): no image can place them. A model that recognises the
    garment and judges its brightness localises best; the garment alone narrows it to a few
    cities; the image-blind prior is one city.

    Attributes:
        train_images: From Fashion-MNIST's training images (the first ones), >= 1.
        val_images: The next training images, for per-epoch validation, >= 1.
        test_images: From Fashion-MNIST's test images (the first ones), >= 1.
        regions_per_class: Home cities per class, 1-len(CITIES).
        spreads_km: Region scales (km), each > 0, cycled over regions.
        outlier_rate: Share of photos placed uniformly on the sphere, in [0, 1).
        seed: Seed of the locations.
    """

    train_images: int = 20000
    val_images: int = 2000
    test_images: int = 5000
    regions_per_class: int = 3
    spreads_km: tuple[float, ...] = (1.0, 15.0, 60.0)
    outlier_rate: float = 0.05
    seed: int = 0

    def validate(self) -> "GeoDataConfig":
        """Check the fields; returns self. Raises ``ValueError`` naming a bad field."""
        for name in ("train_images", "val_images", "test_images"):
            check_int(name, getattr(self, name))
        if self.train_images + self.val_images > 60000 or self.test_images > 10000:
            raise ValueError("train_images + val_images must be <= 60000 and test_images <= 10000 "
                             "(Fashion-MNIST's sizes)")
        if not 1 <= self.regions_per_class <= len(CITIES):
            raise ValueError(f"regions_per_class must be in 1-{len(CITIES)}, got {self.regions_per_class!r}")
        if not self.spreads_km or any(not s > 0 for s in self.spreads_km):
            raise ValueError(f"spreads_km must be positive numbers, got {self.spreads_km!r}")
        if not 0 <= self.outlier_rate < 1:
            raise ValueError(f"outlier_rate must be in [0, 1), got {self.outlier_rate!r}")
        return self


def offset_point(lat, lon, distance_km, bearing_rad) -> tuple[np.ndarray, np.ndarray]:
    """The point ``distance_km`` from (lat, lon) along the great circle with initial
    ``bearing_rad`` (clockwise from north); degrees in and out, longitude in [-180, 180)."""
    p1, l1 = np.radians(lat), np.radians(lon)
    d = np.asarray(distance_km, float) / EARTH_RADIUS_KM
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(bearing_rad))
    l2 = l1 + np.arctan2(np.sin(bearing_rad) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return np.degrees(p2), (np.degrees(l2) + 180) % 360 - 180


def derive_locations(images: torch.Tensor, labels: np.ndarray, cfg: GeoDataConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each image was "taken", by ``GeoDataConfig``'s story.

    Args:
        images: uint8 (N, 1, H, W).
        labels: Garment class ids (N,).
        cfg: The story's parameters.
        rng: Random generator (distances, directions, outliers).

    Returns:
        ``(latitudes, longitudes, region)``: degrees, and each photo's home-region index
        ``class * regions_per_class + r`` (-1 for an outlier).
    """
    k = cfg.regions_per_class
    brightness = images.float().mean(dim=(1, 2, 3)).numpy()
    region = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank = np.argsort(np.argsort(brightness[idx], kind="stable"), kind="stable")
        region[idx] = c * k + rank * k // len(idx)
    city = np.array([CITIES[r % len(CITIES)][1:] for r in region])
    spread = np.array(cfg.spreads_km, float)[(region % k) % len(cfg.spreads_km)]
    dist = spread * np.sqrt(-2 * np.log1p(-rng.random(len(labels))))  # Rayleigh(spread)
    lat, lon = offset_point(city[:, 0], city[:, 1], dist, rng.uniform(0, 2 * np.pi, len(labels)))
    outlier = rng.random(len(labels)) < cfg.outlier_rate
    lat[outlier] = np.degrees(np.arcsin(rng.uniform(-1, 1, outlier.sum())))
    lon[outlier] = rng.uniform(-180, 180, outlier.sum())
    region[outlier] = -1
    return lat, lon, region


def make_geo_data(out_dir: str | os.PathLike, cfg: GeoDataConfig | None = None,
                  fashion_mnist_root: str | os.PathLike | None = None, overwrite: bool = False) -> dict:
    """Write the derived geolocation data set: ``OUT/images/{train,val,test}/<n>.png`` and
    ``OUT/{train,val,test}.csv`` (``image,latitude,longitude,garment,region``; image paths
    relative to OUT), plus ``OUT/geo_data.json`` (the config and counts). Complete or absent.

    Args:
        out_dir: Folder to create.
        cfg: The story; default ``GeoDataConfig()``.
        fashion_mnist_root: Folder of Fashion-MNIST's IDX files; default Debian's.
        overwrite: Replace an existing ``out_dir``. Default False.

    Returns:
        The ``geo_data.json`` record.
    """
    from mobilenets.engine.data import FASHION_MNIST_ROOT, load_fashion_mnist

    cfg = (cfg or GeoDataConfig()).validate()
    root = fashion_mnist_root or FASHION_MNIST_ROOT
    train, test = load_fashion_mnist("train", root), load_fashion_mnist("test", root)
    rng = np.random.default_rng(cfg.seed)
    n_tr, n_va = cfg.train_images, cfg.val_images
    parts = {"train": (train, slice(0, n_tr)), "val": (train, slice(n_tr, n_tr + n_va)),
             "test": (test, slice(0, cfg.test_images))}
    record = {"config": asdict(cfg), "cities": [c[0] for c in CITIES], "images": {}}
    with staging_dir(out_dir, overwrite) as tmp:
        for split, (ds, sl) in parts.items():
            images, labels = ds.images[sl], ds.labels[sl].numpy()
            lat, lon, region = derive_locations(images, labels, cfg, rng)
            (tmp / "images" / split).mkdir(parents=True)
            photos = []
            for n, img in enumerate(images):
                path = tmp / "images" / split / f"{n:06d}.png"
                save_png(img, path)
                photos.append(GeoPhoto(path, float(lat[n]), float(lon[n])))
            write_geo_csv(tmp / f"{split}.csv", photos, {"garment": labels.tolist(),
                                                          "region": region.tolist()})
            record["images"][split] = len(photos)
        write_json(tmp / "geo_data.json", record)
    return record
