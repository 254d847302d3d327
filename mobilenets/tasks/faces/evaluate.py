"""Tables 12 and 14: mean average precision of attribute models and verification (true accept
rate at a false accept rate) of embedding models, with their cost."""
from __future__ import annotations

import math
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.engine.data import BatchTransform, stored_size
from mobilenets.tasks.faces.metrics import average_precision_per_column, tar_at_far
from mobilenets.models.registry import load_model
from mobilenets.tasks.faces.data import (MultiLabelDataset, data_csv, load_attribute_csv,
                                         load_identity_csv, load_pairs_csv)


def attribute_names(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """The attribute names a classifier's model file records (``model.metadata``), one per output.

    Raises:
        ValueError: naming the file if it records none, or not one per output.
    """
    names = model.metadata.get("class_names")
    if not names or len(names) != model.config.num_classes:
        raise ValueError(f"{path} does not record its {model.config.num_classes} attribute "
                         "names; use a model written by `mobilenets attributes train|distill`")
    return list(names)


def model_outputs(model: nn.Module, dataset, resolution: int, eval_crop: float = 1.0,
                  batch_size: int = 256) -> torch.Tensor:
    """The model's outputs (logits or embeddings) for every image of ``dataset``, in order,
    through the evaluation transform (distillation's ``teacher_outputs`` without a cache)."""
    from mobilenets.tasks.distillation.train import teacher_outputs

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


def _row_label(config, resolution: int) -> str:
    """Table 12/14's model label, e.g. ``0.5 MobileNet-32`` or ``1.0 MobileNet-32``."""
    alpha = f"{getattr(config, 'backbone', config).width_mult:g}"
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
    rows, cache = [], {}
    for path in model_files:
        model = load_model(path, kind="classifier")
        attribute_names(model, path)
        train_cfg = model.metadata.get("train_config", {})
        res = model.config.input_size
        crop = float(train_cfg.get("eval_crop", 1.0))
        size = stored_size(res, crop)
        if size not in cache:
            cache[size] = load_attribute_csv(data_csv(data_dir, "test.csv"), size)
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
    rows, cache = [], {}
    for path in model_files:
        model = load_model(path, kind="embedding")
        train_cfg = model.metadata.get("train_config", {})
        res = model.config.input_size
        crop = float(train_cfg.get("eval_crop", 1.0))
        size = stored_size(res, crop)
        if size not in cache:
            test_set = load_identity_csv(data_csv(data_dir, "test.csv"), size)
            cache[size] = (test_set, load_pairs_csv(data_csv(data_dir, "pairs.csv"), test_set.paths))
        result = evaluate_verification(model, *cache[size], res, far, crop)
        rows.append({"model": _row_label(model.config, res), "trained_on": _how(train_cfg),
                     f"tar_at_far_{far:g}": round(result["tar"], 2),
                     **{k: round(v, 2) for k, v in result.items() if k.startswith("tar_at_far")},
                     **cost(model, res), "file": str(path)})
    return rows
