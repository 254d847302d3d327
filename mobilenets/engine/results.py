"""What training leaves behind, as records: ``RunResult``, the one record of a finished (or
fitted) run that ``engine.loop.fit`` and every task's training function return; and the sweep CSV,
one row per trained model of an alpha x rho grid (``tasks.classification.sweep.run_sweep`` writes
it; ``deploy.pick`` reads its accuracies).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mobilenets.fileio import atomic_path
from mobilenets.readers import read_csv


@dataclass
class RunResult:
    """One training run: what ``engine.loop.fit`` returns, and what every task's training
    function (``train``, ``train_detector``, ``train_segmenter``, the face models, ``distill``,
    ``train_geolocator``) returns once the run folder's outputs are written
    (``engine.loop.write_run_outputs`` fills ``summary``, ``metrics``, ``evaluation`` and
    ``model_path``).

    Attributes:
        model: The trained model (the EMA weights when EMA is on).
        out_dir: The run folder.
        history: One record per epoch, as in ``metrics.jsonl`` (``epoch``, ``step``, ``lr``,
            ``train_loss``, ``seconds``, the task's ``val_*`` numbers...).
        steps: Optimizer steps of the whole run (all sessions).
        epochs: ``steps`` in epochs.
        session_seconds: Training time of this session (a resumed run's earlier sessions left
            out), evaluations included.
        images_per_second: Training images per second of this session, all processes together.
        summary: The run's facts as ``summary.json`` holds them. From ``fit``: ``steps``,
            ``epochs``, ``train_seconds`` (all sessions), ``images_per_second_last_session``,
            ``world_size``; a task adds its final metrics and facts.
        metrics: The task's final evaluation as numbers: ``top1``/``top5`` (classification),
            ``AP``... (detection), ``pixel_accuracy``/``miou`` (segmentation), ``mean_ap`` (face
            attributes), ``tar``... (face embeddings), ``emulation_loss`` (distillation without
            labels). Empty before the final evaluation.
        evaluation: The whole final evaluation as ``eval.json`` holds it (per class, confusion
            matrix, ...); None when the run wrote none.
        model_path: The model file (``model.safetensors``); None until it is written.
        extra: Objects a task hands back beside the run, e.g. geolocation's ``cells``.
    """

    model: nn.Module
    out_dir: str
    history: list[dict]
    steps: int
    epochs: float
    session_seconds: float
    images_per_second: float
    summary: dict
    metrics: dict = field(default_factory=dict)
    evaluation: dict | None = None
    model_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train_seconds(self) -> float:
        """Training time of the whole run, all sessions (``summary.json``'s)."""
        return self.summary["train_seconds"]

    @property
    def last_epoch(self) -> dict:
        """The last epoch's record (``{}`` before the first epoch ends)."""
        return self.history[-1] if self.history else {}


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
