"""Table 11: the share of test photos localised within 1, 25, 200, 750 and 2,500 km, for our
models and for baselines that need no image (the class prior, a prior given a CSV column)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from mobilenets.tasks.geo.cells import Geocells, haversine_km, predict_locations
from mobilenets.tasks.geo.data import GeoPhoto, photo_coordinates, read_csv_column, read_geo_csv

#: Table 11's scales: (name, kilometres).
TABLE11_SCALES = (("Street", 1.0), ("City", 25.0), ("Region", 200.0), ("Country", 750.0),
                  ("Continent", 2500.0))
#: Table 11 as printed (Im2GPS test set), shares in % for each scale above, per system.
TABLE11_PAPER = {"Im2GPS": (2.5, 21.9, 32.1, 35.4, 51.9), "PlaNet": (11.0, 31.7, 51.1, 64.0, 77.6),
                 "PlaNet MobileNet": (11.4, 31.7, 45.2, 60.3, 79.3)}


#: Table 11's scales: (name, kilometres).
TABLE11_SCALES = (("Street", 1.0), ("City", 25.0), ("Region", 200.0), ("Country", 750.0),
                  ("Continent", 2500.0))


#: Table 11 as printed (Im2GPS test set), shares in % for each scale above, per system.
TABLE11_PAPER = {"Im2GPS": (2.5, 21.9, 32.1, 35.4, 51.9), "PlaNet": (11.0, 31.7, 51.1, 64.0, 77.6),
                 "PlaNet MobileNet": (11.4, 31.7, 45.2, 60.3, 79.3)}


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
        model: A classifier over ``cells`` (``model.config.resolution`` sets the input size).
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

    res = model.config.input_size
    probs = model_probs(model, photos, res, eval_crop)
    if probs.shape[1] != len(cells):
        raise ValueError(f"the model {name or ''} has {probs.shape[1]} classes but the cells "
                         f"file has {len(cells)} cells")
    prof = profile_model(model, (getattr(model, "in_channels", 3), res, res))
    classifier = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    cost = {"model": name, "madds_m": round(prof.total_madds / 1e6, 2),
            "params_m": round(prof.layer_params / 1e6, 3),
            "classifier_params_m": round(classifier / 1e6, 3), "cells": len(cells)}
    label = f"{model.config.width_mult:g} MobileNet-{res}"
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
