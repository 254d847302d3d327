"""Training a PlaNet geolocator: a MobileNet classifying photos into geocells, trained by
``tasks.classification.train.train`` on the photos linked into one folder per cell."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from mobilenets.engine.distributed import init_distributed
from mobilenets.engine.results import RunResult
from mobilenets.engine.runfolder import lock_run_folder
from mobilenets.tasks.classification.train import PRESETS, TrainConfig, train
from mobilenets.tasks.geo.cells import GeocellConfig, Geocells, build_geocells
from mobilenets.tasks.geo.data import photo_coordinates, read_geo_csv, write_cell_imagefolder

#: ``mobilenets geo train``'s recipes: the classification presets, writing to ``runs/geo``.
GEO_PRESETS = {name: replace(cfg, out_dir="runs/geo") for name, cfg in PRESETS.items()}


def train_geolocator(cfg: TrainConfig, train_csv: str | os.PathLike, val_csv: str | os.PathLike,
                     cells: str | os.PathLike | None = None,
                     cell_config: GeocellConfig | None = None, resume: bool = False) -> RunResult:
    """Partition the earth into geocells and train ``cfg``'s MobileNet to classify photos into
    them (paper section 4.4).

    The run folder ``cfg.out_dir`` holds, besides ``train``'s files, ``cells.json`` (the cells,
    which ``mobilenets geo eval`` reads beside the model) and ``data/`` (the training and
    validation photos linked into one folder per cell, the ImageFolder that ``train`` reads).
    A resumed run keeps both.

    Args:
        cfg: The recipe (``data`` and ``out_dir`` are set here from ``cfg.out_dir``).
        train_csv: ``image,latitude,longitude`` CSV of the training photos.
        val_csv: The validation photos (cell top-1 each epoch).
        cells: A cells JSON to use. Default None: built from the training photos with
            ``cell_config``.
        cell_config: How to build the cells. Default ``GeocellConfig()``.
        resume: Continue a killed run.

    Returns:
        ``train``'s ``RunResult``, with the ``Geocells`` as ``extra["cells"]``.

    Raises:
        FileNotFoundError, ValueError: for a missing or malformed CSV or cells file, or no photo
            in a kept cell.
    """
    out = Path(cfg.out_dir)
    cfg = replace(cfg, data=str(out / "data")).validate()
    if init_distributed().main:
        lock_run_folder(out)  # before its cells and data are written (fit keeps the lock)
    cells_path = out / "cells.json"
    if not (resume and cells_path.is_file()):
        if cells:
            found = Geocells.load(cells)
        else:
            photos = read_geo_csv(train_csv, check_images=False)
            found = build_geocells(*photo_coordinates(photos), cell_config)
        found.save(cells_path)
    found = Geocells.load(cells_path)
    if not (resume and (out / "data").is_dir()):
        splits = {"train": read_geo_csv(train_csv), "val": read_geo_csv(val_csv)}
        report = write_cell_imagefolder(out / "data", found, splits, overwrite=True)
        if init_distributed().main:
            print(", ".join(f"{split}: {r['images']} photos in cells, {r['outside_cells']} outside"
                            for split, r in report.items()), flush=True)
    return replace(train(cfg, resume=resume), extra={"cells": found})
