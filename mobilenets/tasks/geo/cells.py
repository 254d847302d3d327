"""PlaNet geolocation with MobileNet (paper section 4.4, Table 11).

PlaNet (Weyand et al., 2016) casts "where on earth was this photo taken?" as classification: the
earth is divided into cells adapted to the density of the training photos, a network classifies a
photo into a cell, and the predicted location is that cell's centre. Table 11 reports the share of
test photos localised within 1, 25, 200, 750 and 2,500 km of the truth.

**Cells.** PlaNet uses Google's S2 cells (a quadtree on the faces of a cube). No S2 library is
installed here, so ``build_geocells`` uses an equal-area quadtree with the same rules: the map is
projected with the Lambert cylindrical equal-area projection, ``x = longitude``, ``z =
sin(latitude)``, in which equal rectangles are equal areas on the sphere; the rectangle
[-180, 180) x [-1, 1] is cut into ``root_cols`` x ``root_rows`` root cells; a cell holding more
than ``max_photos`` training photos is split into four equal quarters (halving both x and z),
recursively, down to ``max_level``; finally cells holding fewer than ``min_photos`` are dropped
(PlaNet: t1 = 10,000 and t2 = 50 on 91M photos). Every cell at one level has the same area, 4 pi
R^2 / (root_cols * root_rows * 4^level). A cell is ``(level, ix, iz)``: column ``ix`` and row
``iz`` of the regular grid of that level; its token is ``"level/ix/iz"``.

**Prediction.** ``predict_locations`` takes the argmax cell's centre (PlaNet), or refines it: the
probability-weighted mean (on the sphere) of the centres of the cells within ``refine_km`` of
the argmax cell's. Centres are the mean of the cell's training photos (``"photo_mean"``, the
default) or its geometric centre in the equal-area projection (``"geometric"``).

**Data.** ``read_geo_csv`` reads ``image,latitude,longitude`` CSVs. ``make_geo_data`` derives a
geolocation set from Fashion-MNIST whose images carry real information about where they were
taken (see ``GeoDataConfig``).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mobilenets.fileio import atomic_path

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
#: Table 11's scales: (name, kilometres).
TABLE11_SCALES = (("Street", 1.0), ("City", 25.0), ("Region", 200.0), ("Country", 750.0),
                  ("Continent", 2500.0))
#: Table 11 as printed (Im2GPS test set), shares in % for each scale above, per system.
TABLE11_PAPER = {"Im2GPS": (2.5, 21.9, 32.1, 35.4, 51.9), "PlaNet": (11.0, 31.7, 51.1, 64.0, 77.6),
                 "PlaNet MobileNet": (11.4, 31.7, 45.2, 60.3, 79.3)}


# --------------------------------------------------------------------------- distances

def haversine_km(lat1, lon1, lat2, lon2, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Great-circle distance on a sphere by the haversine formula (numerically safe for small
    and antipodal distances), elementwise with numpy broadcasting.

    Args:
        lat1, lon1: First points, degrees (scalars or arrays).
        lat2, lon2: Second points, degrees.
        radius_km: Sphere radius. Default the earth's mean radius, 6371.0088 km.

    Returns:
        Distances in km (float64 array, or a 0-d array for scalars).
    """
    p1, p2 = np.radians(np.asarray(lat1, float)), np.radians(np.asarray(lat2, float))
    dp, dl = p2 - p1, np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _to_xyz(lat, lon) -> np.ndarray:
    lat, lon = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def _to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True).clip(1e-12)
    return (np.degrees(np.arcsin(np.clip(xyz[..., 2], -1, 1))),
            np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0])))


def spherical_mean(lat, lon, weights=None) -> tuple[float, float]:
    """The (weighted) mean direction of points on the sphere: mean of their unit vectors,
    projected back to the surface. Unlike averaging degrees it is right across the date line.

    Args:
        lat, lon: Degrees (1-D arrays of equal length, not empty).
        weights: Non-negative weights, one per point; default equal.

    Returns:
        ``(latitude, longitude)`` in degrees.
    """
    xyz = _to_xyz(lat, lon).reshape(-1, 3)
    w = np.ones(len(xyz)) if weights is None else np.asarray(weights, float).reshape(-1)
    lat_m, lon_m = _to_latlon((xyz * w[:, None]).sum(0))
    return float(lat_m), float(lon_m)


def accuracy_at_km(distances_km, thresholds: Sequence[float] = tuple(k for _, k in TABLE11_SCALES)
                   ) -> dict[float, float]:
    """Share (%) of predictions within each distance of the truth, as Table 11.

    Args:
        distances_km: Great-circle errors, one per test photo (not empty, no NaN).
        thresholds: Distances in km. Default Table 11's 1, 25, 200, 750, 2500.

    Returns:
        ``{threshold: percent}``; a distance equal to the threshold counts as within.

    Raises:
        ValueError: for an empty input or NaN distances.
    """
    d = np.asarray(distances_km, float).reshape(-1)
    if d.size == 0 or np.isnan(d).any():
        raise ValueError("distances_km must be a non-empty array without NaN")
    return {float(t): round(100.0 * float((d <= t).mean()), 4) for t in thresholds}


# --------------------------------------------------------------------------- CSV input

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
    if not path.is_file():
        raise FileNotFoundError(f"geo CSV not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
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
    if not path.is_file():
        raise FileNotFoundError(f"CSV not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no column {column!r} (columns: {reader.fieldnames})")
        return [row[column] for row in reader]


# --------------------------------------------------------------------------- geocells

@dataclass
class GeocellConfig:
    """The adaptive partition (PlaNet section 3, with equal-area quadtree cells instead of S2).

    Attributes:
        max_photos: Split a cell holding more training photos than this (PlaNet's t1 = 10,000 on
            91M photos), >= 1.
        min_photos: Drop cells holding fewer (PlaNet's t2 = 50), >= 1, <= max_photos.
        max_level: Deepest level; a cell there is not split further even if full (identical
            coordinates cannot be separated). Level 20 cells are about 40 m wide. 0-24.
        root_cols: Root cells across longitude, >= 1. Default 4 (90 degrees each).
        root_rows: Root cells across sin(latitude), >= 1. Default 2 (the hemispheres).
    """

    max_photos: int = 1000  # PlaNet: 10,000 for 91M photos; scaled to thousands of photos
    min_photos: int = 20  # PlaNet: 50
    max_level: int = 20
    root_cols: int = 4
    root_rows: int = 2

    def validate(self) -> "GeocellConfig":
        """Check the fields; returns self. Raises ``ValueError`` naming a bad field."""
        for name in ("max_photos", "min_photos", "root_cols", "root_rows"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.min_photos > self.max_photos:
            raise ValueError(f"min_photos ({self.min_photos}) must be <= max_photos ({self.max_photos})")
        if not isinstance(self.max_level, int) or not 0 <= self.max_level <= 24:
            raise ValueError(f"max_level must be an integer in 0-24, got {self.max_level!r}")
        return self


@dataclass
class Geocell:
    """A kept cell: its grid position, bounds, training-photo count and centres."""

    level: int
    ix: int
    iz: int
    count: int
    lon_min: float
    lon_max: float
    z_min: float  # sin(latitude)
    z_max: float
    mean_lat: float  # spherical mean of its training photos
    mean_lon: float

    @property
    def token(self) -> str:
        """``"level/ix/iz"``, the cell's name (as an S2 token names an S2 cell)."""
        return f"{self.level}/{self.ix}/{self.iz}"

    @property
    def center(self) -> tuple[float, float]:
        """Geometric centre in the equal-area projection, (latitude, longitude) in degrees."""
        return (math.degrees(math.asin((self.z_min + self.z_max) / 2)),
                (self.lon_min + self.lon_max) / 2)

    @property
    def area_km2(self) -> float:
        """Area on the sphere: R^2 * (longitude span in radians) * (sin-latitude span)."""
        return EARTH_RADIUS_KM ** 2 * math.radians(self.lon_max - self.lon_min) * (self.z_max - self.z_min)

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point (degrees) lies in the cell (lower bounds inclusive)."""
        z, lon = math.sin(math.radians(lat)), (lon + 180) % 360 - 180
        return (self.lon_min <= lon < self.lon_max or (self.lon_max == 180 and lon == 180)) and \
            (self.z_min <= z < self.z_max or (self.z_max == 1 and z == 1))


class Geocells:
    """A kept set of geocells: the classes of a PlaNet model, in label order.

    Build with ``build_geocells``; ``save``/``load`` as JSON. ``assign`` maps coordinates to
    labels (-1 where no kept cell covers them).
    """

    def __init__(self, cells: Sequence[Geocell], config: GeocellConfig):
        self.cells, self.config = list(cells), config.validate()
        self._index = {(c.level, c.ix, c.iz): i for i, c in enumerate(self.cells)}

    def __len__(self) -> int:
        return len(self.cells)

    def _grid(self, lat, lon, level: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        return _grid_index(lat, lon, level, cfg.root_cols, cfg.root_rows)

    def assign(self, lat, lon) -> np.ndarray:
        """Label (cell index) of each point; -1 where the point's cell was dropped.

        Args:
            lat, lon: Degrees, 1-D arrays (latitude in [-90, 90]).

        Returns:
            int64 array of labels in [-1, len(self)).
        """
        lat, lon = np.asarray(lat, float).reshape(-1), np.asarray(lon, float).reshape(-1)
        labels = np.full(len(lat), -1, np.int64)
        for level in sorted({c.level for c in self.cells}):
            ix, iz = self._grid(lat, lon, level)
            for n in np.flatnonzero(labels < 0):
                labels[n] = self._index.get((level, int(ix[n]), int(iz[n])), -1)
        return labels

    def centers(self, kind: str = "photo_mean") -> tuple[np.ndarray, np.ndarray]:
        """Cell centres as (latitudes, longitudes) arrays in label order.

        Args:
            kind: ``"photo_mean"`` (spherical mean of the cell's training photos, default) or
                ``"geometric"`` (the centre of the cell in the equal-area projection).
        """
        if kind == "photo_mean":
            pts = [(c.mean_lat, c.mean_lon) for c in self.cells]
        elif kind == "geometric":
            pts = [c.center for c in self.cells]
        else:
            raise ValueError(f"centers kind must be 'photo_mean' or 'geometric', got {kind!r}")
        arr = np.array(pts, float).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    @property
    def tokens(self) -> list[str]:
        """The cells' tokens in label order."""
        return [c.token for c in self.cells]

    def to_dict(self) -> dict:
        """The JSON-ready form written by ``save``: format tag, config and cells."""
        return {"format": "mobilenets-geocells", "config": asdict(self.config),
                "cells": [asdict(c) for c in self.cells]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cells as JSON, atomically."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Geocells":
        """Read cells written by ``save``.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if it is not a geocells JSON file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"geocells file not found: {path}")
        try:
            data = json.loads(path.read_text())
            assert data.get("format") == "mobilenets-geocells"
            return cls([Geocell(**c) for c in data["cells"]], GeocellConfig(**data["config"]))
        except (AssertionError, KeyError, TypeError, json.JSONDecodeError):
            raise ValueError(f"{path} is not a geocells file written by `mobilenets geo cells`") from None


def _grid_index(lat, lon, level: int, root_cols: int, root_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row of each point in the regular equal-area grid of ``level``."""
    cols, rows = root_cols << level, root_rows << level
    lon = (np.asarray(lon, float) + 180.0) % 360.0  # 180 wraps to -180
    z = np.sin(np.radians(np.asarray(lat, float)))
    ix = np.clip(np.floor(lon / 360.0 * cols), 0, cols - 1).astype(np.int64)
    iz = np.clip(np.floor((z + 1.0) / 2.0 * rows), 0, rows - 1).astype(np.int64)
    return ix, iz


def build_geocells(lat, lon, config: GeocellConfig | None = None) -> Geocells:
    """Partition the earth adaptively to the density of training photos (PlaNet's procedure).

    Starting from the root cells, every cell holding more than ``max_photos`` photos is split into
    its four equal-area quarters, level by level, until none holds more (or ``max_level``); then
    cells holding fewer than ``min_photos`` are dropped. Cells are ordered by (level, ix, iz): that
    order is the class order.

    Args:
        lat, lon: The training photos' coordinates, degrees (1-D arrays of equal length).
        config: The thresholds; default ``GeocellConfig()``.

    Returns:
        The kept ``Geocells``.

    Raises:
        ValueError: for a bad config, mismatched or out-of-range coordinates, or if every cell
            is dropped.
    """
    cfg = (config or GeocellConfig()).validate()
    lat, lon = np.asarray(lat, float).reshape(-1), np.asarray(lon, float).reshape(-1)
    if lat.shape != lon.shape or lat.size == 0:
        raise ValueError(f"lat and lon must be non-empty and of equal length, got {lat.size} and {lon.size}")
    if np.isnan(lat).any() or np.abs(lat).max() > 90 or np.isnan(lon).any() or np.abs(lon).max() > 180:
        raise ValueError("lat must be in [-90, 90] and lon in [-180, 180]")
    active = np.arange(lat.size)
    leaves: list[tuple[int, int, int, np.ndarray]] = []
    for level in range(cfg.max_level + 1):
        ix, iz = _grid_index(lat[active], lon[active], level, cfg.root_cols, cfg.root_rows)
        keys = ix * (cfg.root_rows << level) + iz
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        split = (counts > cfg.max_photos) & (level < cfg.max_level)
        for k in np.flatnonzero(~split):
            members = active[inverse == k]
            leaves.append((level, int(ix[inverse == k][0]), int(iz[inverse == k][0]), members))
        active = active[split[inverse]]
        if active.size == 0:
            break
    cells = []
    for level, ix, iz, members in sorted(leaves, key=lambda t: t[:3]):
        if len(members) < cfg.min_photos:
            continue
        cols, rows = cfg.root_cols << level, cfg.root_rows << level
        mlat, mlon = spherical_mean(lat[members], lon[members])
        cells.append(Geocell(level, ix, iz, len(members), -180 + 360 * ix / cols,
                             -180 + 360 * (ix + 1) / cols, -1 + 2 * iz / rows,
                             -1 + 2 * (iz + 1) / rows, round(mlat, 6), round(mlon, 6)))
    if not cells:
        raise ValueError(f"every cell holds fewer than min_photos={cfg.min_photos} photos; "
                         "lower min_photos or add photos")
    return Geocells(cells, cfg)


# --------------------------------------------------------------------------- prediction and report

def predict_locations(probs, cells: Geocells, mode: str = "argmax", centers: str = "photo_mean",
                      refine_km: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    """Locations predicted from cell probabilities.

    Args:
        probs: (N, K) cell probabilities (rows sum to 1; a tensor or array), K = ``len(cells)``.
        cells: The model's cells.
        mode: ``"argmax"``: the most probable cell's centre (PlaNet). ``"weighted"``: the
            probability-weighted spherical mean of the centres of all cells within ``refine_km``
            of the argmax cell's centre (it included), a refinement that stays in one region.
        centers: ``"photo_mean"`` (default) or ``"geometric"``, see ``Geocells.centers``.
        refine_km: Neighbourhood radius of the weighted mode, > 0. Default 500 km.

    Returns:
        ``(latitudes, longitudes)`` arrays of length N, degrees.

    Raises:
        ValueError: for a shape that does not match the cells, or an unknown mode.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, float)
    if p.ndim != 2 or p.shape[1] != len(cells):
        raise ValueError(f"probs must be (N, {len(cells)}) for these cells, got {p.shape}")
    if refine_km <= 0:
        raise ValueError(f"refine_km must be > 0, got {refine_km!r}")
    clat, clon = cells.centers(centers)
    top = p.argmax(1)
    if mode == "argmax":
        return clat[top], clon[top]
    if mode != "weighted":
        raise ValueError(f"mode must be 'argmax' or 'weighted', got {mode!r}")
    near = haversine_km(clat[:, None], clon[:, None], clat[None, :], clon[None, :]) <= refine_km
    xyz = _to_xyz(clat, clon)
    w = p * near[top]  # (N, K): each row's weights on the cells near its argmax cell
    return _to_latlon(w @ xyz)


def geo_report(pred_lat, pred_lon, true_lat, true_lon) -> dict:
    """Table 11 for one system: errors and the share (%) within each scale.

    Returns:
        ``{"images": N, "median_km": float, "within": {"Street (1 km)": %, ...}}``.
    """
    d = haversine_km(pred_lat, pred_lon, true_lat, true_lon)
    shares = accuracy_at_km(d)
    return {"images": int(d.size), "median_km": round(float(np.median(d)), 2),
            "within": {f"{name} ({km:g} km)": shares[km] for name, km in TABLE11_SCALES}}


def prior_probs(cells: Geocells, n: int) -> np.ndarray:
    """The "class prior" baseline: every image gets the cells' training-photo frequencies, so its
    prediction is the most populous cell whatever the image shows."""
    counts = np.array([c.count for c in cells.cells], float)
    return np.tile(counts / counts.sum(), (n, 1))


def group_prior_locations(cells: Geocells, train_csv: str | os.PathLike, test_csv: str | os.PathLike,
                          column: str, centers: str = "photo_mean") -> tuple[np.ndarray, np.ndarray]:
    """A baseline that knows one attribute of each photo (e.g. the garment class) but not the
    image: each test photo gets the centre of the most populous cell among the training photos
    with the same ``column`` value (the overall most populous cell for an unseen value).

    Args:
        cells: The cells.
        train_csv, test_csv: CSVs with ``latitude``, ``longitude`` and ``column``.
        column: The attribute's column name.
        centers: ``"photo_mean"`` (default) or ``"geometric"``.

    Returns:
        ``(latitudes, longitudes)`` of the test photos' predictions.

    Raises:
        ValueError: if a CSV lacks ``column``.
    """
    train_groups = read_csv_column(train_csv, column)
    labels = cells.assign(*photo_coordinates(read_geo_csv(train_csv, check_images=False)))
    overall = int(np.argmax([c.count for c in cells.cells]))
    best = {}
    for g in set(train_groups):
        mine = labels[(np.array(train_groups) == g) & (labels >= 0)]
        best[g] = int(np.bincount(mine).argmax()) if mine.size else overall
    pick = np.array([best.get(g, overall) for g in read_csv_column(test_csv, column)])
    clat, clon = cells.centers(centers)
    return clat[pick], clon[pick]


def table11_rows(columns: Sequence[dict], paper: bool = False) -> list[dict]:
    """Table 11's layout: one row per scale (and the median error, and cost where known), one
    column per system, from ``geo_report`` records each with a ``"system"`` name (and optionally
    ``madds_m``, ``params_m``, ``classifier_params_m``, ``cells``).

    Args:
        columns: The systems' records (``evaluate_model``, ``baseline_columns``).
        paper: Add the paper's three columns (``TABLE11_PAPER``, on Im2GPS). Default False.
    """
    rows = [{"scale": scale, **{c["system"]: c["within"][scale] for c in columns}}
            for scale in reversed(list(columns[0]["within"]))]
    if paper:
        index = {f"{name} ({km:g} km)": i for i, (name, km) in enumerate(TABLE11_SCALES)}
        for row in rows:
            i = index[row["scale"]]
            row.update({f"paper: {name}": shares[i] for name, shares in TABLE11_PAPER.items()})
    rows.append({"scale": "median error (km)", **{c["system"]: c["median_km"] for c in columns}})
    for key, name in (("madds_m", "Mult-Adds (M)"), ("params_m", "params (M)"),
                      ("classifier_params_m", "of which classifier (M)"), ("cells", "cells")):
        if any(key in c for c in columns):
            rows.append({"scale": name, **{c["system"]: c.get(key) for c in columns}})
    keys = list(rows[0])
    return [{k: r.get(k) for k in keys} for r in rows]  # every row has every column


@torch.no_grad()
def model_probs(model: torch.nn.Module, photos: Sequence[GeoPhoto], resolution: int,
                eval_crop: float = 1.0, batch_size: int = 256) -> torch.Tensor:
    """Softmax outputs of ``model`` for each photo's image, preprocessed as ``mobilenets eval``
    does (decode, resize, center crop ``eval_crop``, scale to [-1, 1]).

    Returns:
        (N, K) float tensor.
    """
    from mobilenets.engine.data import BatchTransform, load_image, stored_size

    tf = BatchTransform(resolution, False, eval_crop=eval_crop,
                        out_channels=getattr(model, "in_channels", 3))
    size = stored_size(resolution, eval_crop)
    model.eval()
    out = []
    for i in range(0, len(photos), batch_size):
        images = torch.stack([load_image(p.image, size) for p in photos[i: i + batch_size]])
        out.append(torch.softmax(model(tf(images)).float(), 1))
    return torch.cat(out)


def evaluate_model(model: torch.nn.Module, photos: Sequence[GeoPhoto], cells: Geocells,
                   modes: Sequence[str] = ("argmax", "weighted"), centers: str = "photo_mean",
                   refine_km: float = 500.0, eval_crop: float = 1.0, name: str | None = None
                   ) -> list[dict]:
    """Table 11 columns of one PlaNet model: one ``geo_report`` per prediction mode, with the
    model's cost (Mult-Adds, conv + FC parameters, of which the classifier's) and cell count.

    Args:
        model: A classifier over ``cells`` (``model.config["resolution"]`` sets the input size).
        photos: Test photos.
        cells: The model's cells (its class order).
        modes: Prediction modes (see ``predict_locations``). Default both.
        centers: Cell centres, ``"photo_mean"`` (default) or ``"geometric"``.
        refine_km: Neighbourhood of the weighted mode. Default 500.
        eval_crop: Evaluation center crop the model was trained with. Default 1.0.
        name: Recorded as ``"model"`` (e.g. the file). Default None.

    Returns:
        One dict per mode: ``system`` ("1 MobileNet-32 (argmax)"), ``model``, ``madds_m``,
        ``params_m``, ``classifier_params_m``, ``cells`` and the ``geo_report`` fields.

    Raises:
        ValueError: if the model's class count differs from the number of cells.
    """
    from mobilenets.cost.profiler import profile_model

    res = model.config.get("resolution", 224)
    probs = model_probs(model, photos, res, eval_crop)
    if probs.shape[1] != len(cells):
        raise ValueError(f"the model {name or ''} has {probs.shape[1]} classes but the cells "
                         f"file has {len(cells)} cells")
    prof = profile_model(model, (getattr(model, "in_channels", 3), res, res))
    classifier = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    cost = {"model": name, "madds_m": round(prof.total_madds / 1e6, 2),
            "params_m": round(prof.layer_params / 1e6, 3),
            "classifier_params_m": round(classifier / 1e6, 3), "cells": len(cells)}
    label = f"{model.config.get('width_mult', 1.0):g} MobileNet-{res}"
    true_lat, true_lon = photo_coordinates(photos)
    columns = []
    for mode in modes:
        lat, lon = predict_locations(probs, cells, mode, centers, refine_km)
        columns.append({"system": f"{label} ({mode})", **cost,
                        **geo_report(lat, lon, true_lat, true_lon)})
    return columns


def baseline_columns(photos: Sequence[GeoPhoto], cells: Geocells,
                     given: tuple[str, str, str] | None = None, centers: str = "photo_mean"
                     ) -> list[dict]:
    """Table 11 columns of the image-blind baselines: the class prior (the most populous cell for
    every photo) and, with ``given = (train_csv, test_csv, column)``, the prior given an
    attribute (``group_prior_locations``); ``test_csv`` must list ``photos`` in order."""
    true_lat, true_lon = photo_coordinates(photos)
    lat, lon = predict_locations(prior_probs(cells, len(photos)), cells, "argmax", centers)
    columns = [{"system": "class prior", **geo_report(lat, lon, true_lat, true_lon)}]
    if given:
        train_csv, test_csv, column = given
        lat, lon = group_prior_locations(cells, train_csv, test_csv, column, centers)
        columns.append({"system": f"prior given {column}", **geo_report(lat, lon, true_lat, true_lon)})
    return columns


# --------------------------------------------------------------------------- ImageFolder for training

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
    from mobilenets.tasks.finegrained.data import staging_dir

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


# --------------------------------------------------------------------------- a data set from Fashion-MNIST

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
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
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
    from mobilenets.tasks.finegrained.data import save_png, staging_dir

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
        with atomic_path(tmp / "geo_data.json") as f:
            f.write_text(json.dumps(record, indent=2) + "\n")
    return record
