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

Data (``data``), training (``train``) and Table 11 (``evaluate``) live beside this module.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mobilenets.checks import check_int
from mobilenets.fileio import atomic_path
from mobilenets.readers import read_json

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)


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


def to_xyz(lat, lon) -> np.ndarray:
    lat, lon = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    xyz = to_xyz(lat, lon).reshape(-1, 3)
    w = np.ones(len(xyz)) if weights is None else np.asarray(weights, float).reshape(-1)
    lat_m, lon_m = to_latlon((xyz * w[:, None]).sum(0))
    return float(lat_m), float(lon_m)


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
            check_int(name, getattr(self, name))
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
        return grid_index(lat, lon, level, cfg.root_cols, cfg.root_rows)

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
        data = read_json(path, "geocells file")
        try:
            assert data.get("format") == "mobilenets-geocells"
            return cls([Geocell(**c) for c in data["cells"]], GeocellConfig(**data["config"]))
        except (AssertionError, AttributeError, KeyError, TypeError):
            raise ValueError(f"{path} is not a geocells file written by `mobilenets geo cells`") from None


def grid_index(lat, lon, level: int, root_cols: int, root_rows: int) -> tuple[np.ndarray, np.ndarray]:
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
        ix, iz = grid_index(lat[active], lon[active], level, cfg.root_cols, cfg.root_rows)
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


# --------------------------------------------------------------------------- prediction

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
    xyz = to_xyz(clat, clon)
    w = p * near[top]  # (N, K): each row's weights on the cells near its argmax cell
    return to_latlon(w @ xyz)
