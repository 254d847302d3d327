"""What training leaves behind, as records: the sweep CSV, one row per trained model of an
alpha x rho grid (``tasks.classification.sweep.run_sweep`` writes it; ``deploy.pick`` reads its
accuracies).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from mobilenets.fileio import atomic_path, read_csv

#: The sweep CSV's columns. ``arch`` came with MobileNetV2: CSVs without it are MobileNet V1 sweeps.
SWEEP_FIELDS = ["label", "arch", "width_mult", "resolution", "seed", "madds", "params", "top1",
                "top5", "epochs", "train_seconds", "model_path"]
#: Columns a sweep CSV may lack (older sweeps): ``arch`` (V1), ``seed`` (0), the rest unused.
SWEEP_OPTIONAL_FIELDS = ("label", "arch", "seed", "model_path")


def read_sweep_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a sweep CSV, numbers parsed ([] if the file does not exist).

    Raises:
        ValueError: naming the file and what is wrong: columns of ``SWEEP_FIELDS`` missing (but
            ``SWEEP_OPTIONAL_FIELDS``), or a cell that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        return []
    reader = read_csv(path, dicts=True, what="sweep CSV")
    missing = [k for k in SWEEP_FIELDS
               if k not in SWEEP_OPTIONAL_FIELDS and k not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{path} is not a sweep CSV written by `mobilenets sweep`: it lacks the "
                         f"columns {', '.join(missing)}")
    rows = list(reader)
    for line, r in enumerate(rows, start=2):
        r["arch"] = r.get("arch") or "mobilenet_v1"
        r["seed"] = r.get("seed") or "0"  # CSVs before seeds: one run per point, seed 0
        try:
            for k, kind in (*((k, float) for k in ("width_mult", "top1", "top5", "epochs",
                                                   "train_seconds")),
                            *((k, int) for k in ("resolution", "madds", "params", "seed"))):
                r[k] = kind(r[k])
        except (TypeError, ValueError):
            raise ValueError(f"{path} line {line}: column {k} holds {r[k]!r}, not a number"
                             ) from None
    return rows


def write_sweep_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with the ``SWEEP_FIELDS``) as a sweep CSV, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SWEEP_FIELDS)
            w.writeheader()
            w.writerows(rows)
