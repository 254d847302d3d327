"""Distillation (paper sections 4.5 and 4.7): a student MobileNet trained to emulate a larger
teacher's outputs instead of (or beside) labels, so it can learn from unlabeled images.

Three losses, one per kind of teacher output:

- ``"soft"``: soft targets with a temperature (Hinton et al. 2015) for a classifier teacher;
  labeled images add the usual cross-entropy, weighted by ``hard_weight``.
- ``"sigmoid"``: per-attribute binary cross-entropy against the teacher's probabilities, for
  multi-label outputs (section 4.7's attribute classifier and its emulation quality measure).
- ``"embedding"``: the squared distance between student and teacher embeddings (the FaceNet
  case of section 4.7).

The teacher runs once over the training images (evaluation transform, in order) and its outputs
are kept, optionally in a cache file that is reused while the teacher and the images are the
same; ``teacher_mode="online"`` instead runs it on every augmented batch. Training reuses
``engine.loop.fit``: the paper's optimizer (no weight decay on depthwise filters), the learning-rate
schedule, batched seeded augmentation, atomic checkpoints and resume, ``summary.json``.

A task of its own, not a part of classification: ``mobilenets distill`` distils classifiers, and
the face models (``tasks.faces``) distil attribute classifiers and embedding networks with the same
``distill``. Its config extends classification's ``TrainConfig`` (model, data, augmentation).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilenets.checks import check_choice, check_range
from mobilenets.engine.data import BatchTransform, TensorImageDataset, iterate_batches
from mobilenets.engine.distributed import Dist, init_distributed
from mobilenets.engine.loop import fit, write_run_outputs
from mobilenets.engine.results import RunResult
from mobilenets.engine.runfolder import lock_run_folder
from mobilenets.fileio import atomic_path
from mobilenets.models.config import ModelConfig
from mobilenets.models.registry import load_model
from mobilenets.readers import check_regular_file
from mobilenets.tasks.classification.train import (PRESETS, TrainConfig, build_model, evaluate,
                                                   open_splits, train_augment,
                                                   write_labeled_subset)

LOSSES = ("soft", "sigmoid", "embedding")
TEACHER_MODES = ("precomputed", "online")


# --------------------------------------------------------------------------- losses

def _check_pair(student: Tensor, teacher: Tensor, names: tuple[str, str]) -> None:
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"{names[0]} and {names[1]} must both be (batch, outputs) of the same "
                         f"shape, got {tuple(student.shape)} and {tuple(teacher.shape)}")


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0,
                     reduction: str = "mean") -> Tensor:
    """Hinton et al. 2015: KL(softmax(teacher/T) || softmax(student/T)) * T**2, mean over the batch.

    The ``T**2`` factor keeps the gradient's scale independent of the temperature, so the soft
    term can be mixed with a hard-label cross-entropy without retuning its weight.

    Args:
        student_logits: (batch, classes) logits of the student.
        teacher_logits: (batch, classes) logits of the teacher (no gradient flows into them).
        temperature: T > 0; higher values soften both distributions. Default 4.0.
        reduction: ``"mean"`` over the batch (default) or ``"none"`` (one value per example).

    Returns:
        The loss: a scalar, or (batch,) with ``reduction="none"``. Zero when the logits agree.

    Raises:
        ValueError: on a non-positive temperature or mismatched shapes.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    _check_pair(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return _reduce(kl * temperature ** 2, reduction)


def sigmoid_emulation_loss(student_logits: Tensor, teacher_probs: Tensor,
                           reduction: str = "mean") -> Tensor:
    """Per-attribute binary cross-entropy of sigmoid(student_logits) against the teacher's
    probabilities (0/1 labels work too), mean over attributes and batch (paper section 4.7).

    Args:
        student_logits: (batch, attributes) logits of the student.
        teacher_probs: (batch, attributes) teacher probabilities in [0, 1] (no gradient).
        reduction: ``"mean"`` over attributes and batch (default) or ``"none"`` (the mean over
            attributes, one value per example).

    Returns:
        The loss: a scalar, or (batch,) with ``reduction="none"``.

    Raises:
        ValueError: on mismatched shapes or probabilities outside [0, 1].
    """
    _check_pair(student_logits, teacher_probs, ("student_logits", "teacher_probs"))
    target = teacher_probs.detach().float()
    if target.numel() and (target.min() < 0 or target.max() > 1):
        raise ValueError("teacher_probs must lie in [0, 1] (pass probabilities, not logits)")
    bce = F.binary_cross_entropy_with_logits(student_logits.float(), target, reduction="none")
    return _reduce(bce.mean(dim=1), reduction)


def embedding_loss(student_emb: Tensor, teacher_emb: Tensor, reduction: str = "mean") -> Tensor:
    """Squared L2 distance between student and teacher embeddings, mean over the batch (FaceNet,
    4.7).

    Args:
        student_emb: (batch, dim) student embeddings.
        teacher_emb: (batch, dim) teacher embeddings (no gradient).
        reduction: ``"mean"`` over the batch (default) or ``"none"`` (one distance per example).

    Returns:
        The loss: a scalar, or (batch,) with ``reduction="none"``.

    Raises:
        ValueError: on mismatched shapes.
    """
    _check_pair(student_emb, teacher_emb, ("student_emb", "teacher_emb"))
    return _reduce((student_emb.float() - teacher_emb.detach().float()).pow(2).sum(dim=1), reduction)


def distillation_loss(loss: str, student_out: Tensor, teacher_out: Tensor, targets: Tensor | None,
                      temperature: float = 4.0, hard_weight: float = 1.0) -> Tensor:
    """The teacher term for every example plus ``hard_weight`` times the label term for the
    labeled ones, averaged over the batch.

    Args:
        loss: ``"soft"`` (``teacher_out`` are logits), ``"sigmoid"`` (``teacher_out`` are
            probabilities) or ``"embedding"``.
        student_out: (batch, outputs) student outputs.
        teacher_out: (batch, outputs) teacher outputs for the same images.
        targets: ``"soft"``: (batch,) class ids, -1 for an unlabeled image; ``"sigmoid"``:
            (batch, attributes) floats in [0, 1], NaN where unlabeled (per attribute);
            ignored for ``"embedding"`` and whenever ``hard_weight`` is 0.
        temperature: Soft-target temperature (``"soft"`` only). Default 4.0.
        hard_weight: Weight of the label term (cross-entropy at T=1 for ``"soft"``, binary
            cross-entropy for ``"sigmoid"``); 0 trains on the teacher alone. Default 1.0.

    Returns:
        Scalar loss. An unlabeled example contributes only its teacher term.

    Raises:
        ValueError: on an unknown ``loss`` or targets of the wrong shape.
    """
    check_choice("loss", loss, LOSSES)
    if loss == "soft":
        per_example = soft_target_loss(student_out, teacher_out, temperature, reduction="none")
    elif loss == "sigmoid":
        per_example = sigmoid_emulation_loss(student_out, teacher_out, reduction="none")
    else:
        return embedding_loss(student_out, teacher_out)
    if hard_weight == 0 or targets is None:
        return per_example.mean()
    if loss == "soft":
        if targets.ndim != 1 or targets.is_floating_point():
            raise ValueError(f"soft targets must be (batch,) class ids with -1 for unlabeled, got "
                             f"{targets.dtype} {tuple(targets.shape)}")
        hard = F.cross_entropy(student_out.float(), targets, ignore_index=-1, reduction="none")
    else:
        if targets.shape != student_out.shape:
            raise ValueError(f"sigmoid targets must be (batch, attributes) = "
                             f"{tuple(student_out.shape)}, got {tuple(targets.shape)}")
        known = ~torch.isnan(targets)
        bce = F.binary_cross_entropy_with_logits(student_out.float(), torch.nan_to_num(targets.float()),
                                                 reduction="none") * known
        hard = bce.sum(dim=1) / known.sum(dim=1).clamp(min=1)
    return (per_example + hard_weight * hard).mean()


# --------------------------------------------------------------------------- config

@dataclass
class DistillConfig(TrainConfig):
    """A distillation run: every ``TrainConfig`` field (optimizer, schedule, augmentation, data,
    ``label_fraction``, run folder, seed), with the student as ``model``, plus the teacher.

    The paper (sections 4.5, 4.7) gives no distillation hyper-parameters; the defaults below are
    Hinton et al. 2015's practice.
    """

    loss: str = "soft"  # "soft" | "sigmoid" | "embedding"
    temperature: float = 4.0  # Hinton et al. 2015 use T in [2, 20]; soft loss only
    hard_weight: float = 1.0  # weight of the label loss on labeled examples; 0 = teacher only
    teacher: str | None = None  # our .safetensors of the teacher (CLI / run_distill)
    teacher_cache: str | None = None  # file caching the teacher's outputs; default: in memory
    teacher_mode: str = "precomputed"  # or "online": teacher on every augmented batch
    teacher_resolution: int | None = None  # teacher's input size; default its own (or the student's)
    teacher_batch_size: int = 256  # images per teacher forward pass when precomputing

    def validate(self) -> "DistillConfig":
        super().validate()
        check_choice("loss", self.loss, LOSSES)
        check_choice("teacher_mode", self.teacher_mode, TEACHER_MODES)
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.hard_weight, (int, float)) and self.hard_weight >= 0):
            raise ValueError(f"hard_weight must be >= 0, got {self.hard_weight!r}")
        if self.teacher_resolution is not None:
            check_range("teacher_resolution", self.teacher_resolution)
        if self.teacher_batch_size < 1:
            raise ValueError(f"teacher_batch_size must be >= 1, got {self.teacher_batch_size!r}")
        return self


#: ``mobilenets distill``'s recipes: classification's presets (``tasks.classification.train.PRESETS``)
#: as distillation runs, writing to ``runs/distill`` by default.
DISTILL_PRESETS: dict[str, DistillConfig] = {
    name: DistillConfig(**{**asdict(cfg), "out_dir": "runs/distill"})
    for name, cfg in PRESETS.items()}


def make_distill_config(base: TrainConfig | None = None, **overrides) -> DistillConfig:
    """A ``DistillConfig`` from a ``TrainConfig`` (e.g. classification's
    ``make_config("fashion-mnist")``) with fields replaced; unknown names raise ``ValueError``
    naming them.

    Args:
        base: The training recipe to start from. Default: ``TrainConfig()`` (the paper's).
        **overrides: Any ``DistillConfig`` fields.

    Returns:
        The validated config.
    """
    names = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown DistillConfig fields {unknown}; known: {sorted(names)}")
    return DistillConfig(**{**asdict(base or TrainConfig()), **overrides}).validate()


# --------------------------------------------------------------------------- teacher outputs

def _module_fingerprint(module: nn.Module) -> str:
    h = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if isinstance(config, ModelConfig):
        h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_fingerprint(dataset) -> str:
    """A hash of a dataset's images (not its labels): the pixels of a ``TensorImageDataset``,
    the paths, sizes and modification times of an ``ImageFolderDataset``'s files, else every
    decoded image."""
    h = hashlib.sha256(f"{type(dataset).__name__}:{len(dataset)}".encode())
    if isinstance(dataset, TensorImageDataset):
        h.update(dataset.images.contiguous().numpy().tobytes())
    elif hasattr(dataset, "samples"):
        for path, _ in dataset.samples:
            st = os.stat(path)
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(str(getattr(dataset, "size", "")).encode())
    else:
        for i in range(len(dataset)):
            h.update(torch.as_tensor(dataset[i][0]).contiguous().numpy().tobytes())
    return h.hexdigest()


def _cache_key(teacher_fp: str, dataset, transform: BatchTransform) -> str:
    return hashlib.sha256(f"{teacher_fp}|{dataset_fingerprint(dataset)}|{transform!r}".encode()
                          ).hexdigest()


def _read_cache(cache: Path, key: str | None, n: int) -> Tensor | None:
    """The cached outputs if ``cache`` holds them for ``key`` (any key when None) and n items;
    None if it is missing or a teacher cache of another teacher or data (to be overwritten).

    Raises:
        ValueError: naming the file if it exists and is not a teacher cache (a model file, a
            checkpoint, anything else: never overwritten).
    """
    from safetensors import SafetensorError, safe_open

    if not cache.exists() and not cache.is_symlink():
        return None
    try:
        check_regular_file(cache, "--teacher-cache")
        with safe_open(str(cache), framework="pt") as f:
            meta, names = f.metadata() or {}, set(f.keys())
            if names != {"outputs"} or "key" not in meta:
                raise ValueError("not the outputs and key a teacher cache holds")
            if key is not None and meta["key"] != key:
                return None
            outputs = f.get_tensor("outputs")
    except (SafetensorError, OSError, ValueError) as e:
        why = " ".join(str(e).split())[:120] or type(e).__name__
        raise ValueError(f"--teacher-cache {cache} exists and is not a teacher cache ({why}): "
                         "refusing to write over it; name a new file, or one an earlier distill "
                         "wrote") from None
    return outputs if len(outputs) == n else None


@torch.no_grad()
def teacher_outputs(teacher: nn.Module | None, dataset, transform: BatchTransform,
                    batch_size: int = 256, cache: str | os.PathLike | None = None,
                    device: torch.device | str = "cpu", num_workers: int = 0) -> Tensor:
    """The teacher's outputs for every item of `dataset` (in order), cached to `cache` (atomic) and
    reused when the cache matches the teacher and dataset.

    Args:
        teacher: Any module (images -> logits, probabilities or embeddings), run in eval mode
            (its mode is restored). None: read ``cache`` without checking the teacher (it must
            hold outputs for this dataset and transform's number of items).
        dataset: Yields ``(uint8 image, target)``; only the images are used.
        transform: Turns a uint8 batch into the teacher's input (an evaluation
            ``BatchTransform`` at the teacher's resolution).
        batch_size: Images per forward pass, >= 1. Default 256.
        cache: A file (safetensors) to keep the outputs in. Its key hashes the teacher's
            weights and config, the dataset's images and the transform; a file with another
            key (a changed teacher or data) is recomputed and overwritten; any other existing
            file is refused, never overwritten. Default: no cache.
        device: Where the teacher runs. Default CPU.
        num_workers: Image-decoding processes (ImageFolder data). Default 0.

    Returns:
        float32 tensor (len(dataset), outputs) on the CPU.

    Raises:
        ValueError: if ``batch_size`` < 1, ``cache`` exists and is not a teacher cache, or
            ``teacher`` is None and ``cache`` holds no usable outputs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    cache = Path(cache) if cache else None
    if teacher is None:
        outputs = _read_cache(cache, None, len(dataset)) if cache else None
        if outputs is None:
            raise ValueError(f"teacher is None and teacher_cache {cache} holds no outputs for "
                             f"these {len(dataset)} images; give a teacher")
        return outputs
    key = _cache_key(_module_fingerprint(teacher), dataset, transform) if cache else None
    if cache:
        outputs = _read_cache(cache, key, len(dataset))
        if outputs is not None:
            return outputs
    was_training = teacher.training
    teacher.eval()
    batches = list(torch.split(torch.arange(len(dataset)), batch_size))
    parts = [teacher(transform(images).to(device)).float().cpu()
             for images, _ in iterate_batches(dataset, batches, num_workers)]
    teacher.train(was_training)
    outputs = torch.cat(parts)
    if cache:
        from safetensors.torch import save_file

        with atomic_path(cache) as tmp:
            save_file({"outputs": outputs.contiguous()}, str(tmp), metadata={"key": key})
    return outputs


# --------------------------------------------------------------------------- training

def _teacher_transform(cfg: DistillConfig, teacher: nn.Module | None) -> BatchTransform:
    res = cfg.teacher_resolution
    if res is None and teacher is not None:
        res = getattr(getattr(teacher, "config", None), "resolution", None)
    return BatchTransform(int(res or cfg.input_size), False, eval_crop=cfg.eval_crop)


def _to_teacher_output(loss: str, out: Tensor) -> Tensor:
    """What the losses compare against: logits for "soft" and embeddings as they come, the
    sigmoid of a multi-label teacher's logits for "sigmoid"."""
    return torch.sigmoid(out) if loss == "sigmoid" else out


def distill(cfg: DistillConfig, student: nn.Module, teacher: nn.Module | None, train_set,
            val_set=None, evaluate_fn=None, resume: bool = False,
            summary_extra: dict | None = None) -> RunResult:
    """Train `student` (any module: images -> logits or embeddings) to emulate `teacher`. `train_set`
    yields (image, target); for "soft", target = class index or -1 for an unlabeled image; for
    "sigmoid", a float vector (NaN = unlabeled); for "embedding", targets are ignored. Resumable
    (checkpoint in cfg.out_dir), writes summary.json; returns the run.

    For ``"sigmoid"`` the teacher's raw outputs are taken as logits and passed through a sigmoid
    (the teacher's probabilities are what the student emulates).

    Args:
        cfg: The run (``DistillConfig``): loss, temperature, hard_weight, optimiser, schedule,
            augmentation, ``out_dir``, ``seed``, ``teacher_cache``, ``teacher_mode``.
        student: The model to train (built on the CPU; moved to the device here).
        teacher: The teacher module, put in eval mode with its parameters frozen; None with
            ``cfg.teacher`` loads that file, or with only a ``cfg.teacher_cache`` (precomputed
            mode) uses the cached outputs.
        train_set: Training images with targets as above (uint8 images, ``BatchTransform``
            augments them at ``cfg.input_size``).
        val_set: Validation images; for ``"soft"`` with class ids, evaluated each epoch and at
            the end with classification's ``evaluate`` (top-1, top-5). Default: none.
        evaluate_fn: ``evaluate_fn(model) -> dict`` replacing that evaluation (e.g. an emulation
            measure for attributes or embeddings); its numeric entries go into each epoch's
            record (prefixed ``val_``) and into the summary. Default: the one above for
            ``"soft"``; for the other losses, the emulation loss on ``val_set`` if given.
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        summary_extra: More JSON-serialisable facts for the summary. Default: none.

    Returns:
        A ``RunResult``: ``metrics`` the final evaluation's numbers, ``model`` the trained
        student, and ``summary`` (``summary.json``): those numbers, ``steps``, ``epochs``,
        ``train_seconds``, ``images_per_second_last_session``, ``world_size``, ``distill_loss``
        (cfg.loss), ``temperature``, ``hard_weight``, ``labeled_images``, ``unlabeled_images``,
        ``teacher_mode``, any ``summary_extra``.

    Raises:
        ValueError: on a bad config, no usable teacher, or teacher/student output sizes that
            differ.
        DivergedError: if the loss becomes NaN or infinite, or far above its first value
            (``loop.check_loss``); the last good checkpoint stays.
    """
    cfg.validate()
    d = init_distributed()
    torch.manual_seed(cfg.seed)  # dropout's stream (the caller built the student)
    if teacher is None and cfg.teacher:
        teacher = load_model(cfg.teacher)
    if teacher is None and (cfg.teacher_mode == "online" or not cfg.teacher_cache):
        raise ValueError("no teacher: pass a teacher module, set teacher (a .safetensors file), "
                         "or set teacher_cache to a file of precomputed outputs")
    if teacher is not None:
        teacher = teacher.to(d.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    teacher_tf = _teacher_transform(cfg, teacher)
    cached = None
    if cfg.teacher_mode == "precomputed":
        cached = teacher_outputs(teacher, train_set, teacher_tf, cfg.teacher_batch_size,
                                 cfg.teacher_cache, d.device, cfg.num_workers)
        cached = _to_teacher_output(cfg.loss, cached)

    def loss_fn(net, x, targets, indices):
        out = net(x).float()
        if cached is not None:
            t = cached[indices].to(out.device)
        else:
            with torch.no_grad():
                xt = x if teacher_tf.resolution == x.shape[-1] else F.interpolate(
                    x, size=teacher_tf.resolution, mode="bilinear", align_corners=False)
                t = _to_teacher_output(cfg.loss, teacher(xt).float())
        if t.shape != out.shape:
            raise ValueError(f"teacher outputs {tuple(t.shape[1:])} values per image but the "
                             f"student {tuple(out.shape[1:])}: they must match")
        return distillation_loss(cfg.loss, out, t, targets, cfg.temperature, cfg.hard_weight)

    evaluate_fn = evaluate_fn or _default_evaluate(cfg, teacher, teacher_tf, val_set, d)

    def epoch_eval(m: nn.Module) -> dict:
        return {f"val_{k}": v for k, v in _numbers(evaluate_fn(m)).items()} if evaluate_fn else {}

    counts = _label_counts(cfg.loss, train_set)
    run = fit(cfg, student, train_set, loss_fn, epoch_eval, augment=train_augment(cfg),
              num_workers=cfg.num_workers, d=d, resume=resume, desc="distill")
    result = evaluate_fn(run.model) if evaluate_fn else {}
    summary = {**_numbers(result), **run.summary, "distill_loss": cfg.loss,
               "temperature": cfg.temperature, "hard_weight": cfg.hard_weight, **counts,
               "teacher_mode": cfg.teacher_mode, **(summary_extra or {})}
    metadata = {"class_names": getattr(train_set, "class_names", None)}
    if "top1" in result:
        metadata["val_top1"] = result["top1"]
    return write_run_outputs(cfg, run, summary, d, metrics=_numbers(result),
                             evaluation=result or None, metadata=metadata)


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _label_counts(loss: str, train_set) -> dict:
    """How many training images have labels (soft: class id >= 0; sigmoid: any non-NaN)."""
    labels = getattr(train_set, "labels", None)
    if labels is None and hasattr(train_set, "samples"):
        labels = torch.tensor([label for _, label in train_set.samples])
    if loss == "embedding" or labels is None:
        return {"labeled_images": None, "unlabeled_images": None}
    labels = torch.as_tensor(labels)
    known = (labels >= 0) if labels.ndim == 1 else ~torch.isnan(labels.float()).all(dim=1)
    return {"labeled_images": int(known.sum()), "unlabeled_images": int((~known).sum())}


def _default_evaluate(cfg: DistillConfig, teacher, teacher_tf, val_set, d: Dist):
    """Top-1/top-5 for "soft"; the emulation loss against the teacher on ``val_set`` for the
    other losses (when a teacher module is at hand); else None."""
    if val_set is None:
        return None
    eval_tf = BatchTransform(cfg.input_size, False, eval_crop=cfg.eval_crop)
    if cfg.loss == "soft":
        return lambda m: evaluate(m, val_set, eval_tf, d=d, channels_last=cfg.channels_last)
    if teacher is None:
        return None
    targets = _to_teacher_output(cfg.loss, teacher_outputs(teacher, val_set, teacher_tf,
                                                           cfg.teacher_batch_size, device=d.device))

    def emulation(m: nn.Module) -> dict:
        was = m.training
        m.eval()
        with torch.no_grad():
            out = teacher_outputs(m, val_set, eval_tf, cfg.teacher_batch_size, device=d.device)
        m.train(was)
        return {"emulation_loss": distillation_loss(cfg.loss, out, targets, None).item()}

    return emulation


def run_distill(cfg: DistillConfig, resume: bool = False) -> RunResult:
    """Distil ``cfg.teacher`` (our .safetensors) into a fresh ``cfg.model`` student on
    ``cfg.data`` (Fashion-MNIST or an ImageFolder), as ``mobilenets distill`` does.

    With ``cfg.label_fraction`` F < 1 the labels of a fixed, seeded, class-balanced share F of
    the training images are kept (``engine.data.labeled_subset``; the same images as ``mobilenets
    train --label-fraction F`` with the same ``label_seed``) and the rest become unlabeled
    (teacher term only); the subset is recorded in ``out_dir/labeled_subset.json``.

    Args:
        cfg: The run; ``cfg.teacher`` must name the teacher file.
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.

    Returns:
        ``distill``'s ``RunResult``; its summary holds ``teacher`` and, with a label fraction,
        ``labeled_subset_sha256``.

    Raises:
        ValueError: if ``cfg.teacher`` is unset or its outputs do not fit the data (for
            "soft", the teacher's class count must equal the data's); FileNotFoundError if
            the teacher file or the data are missing.
    """
    cfg.validate()
    if not cfg.teacher:
        raise ValueError("teacher must name the teacher's .safetensors file (--teacher)")
    teacher = load_model(cfg.teacher)
    torch.manual_seed(cfg.seed)
    train_set, val_set, labeled = open_splits(cfg, drop_unlabeled=False)
    class_names = train_set.class_names
    teacher_out = getattr(teacher, "num_classes", None)
    if cfg.loss == "soft":
        if teacher_out != len(class_names):
            raise ValueError(f"teacher {cfg.teacher} has {teacher_out} classes but --data "
                             f"{cfg.data!r} has {len(class_names)}")
        num_outputs = len(class_names)
    else:
        if cfg.hard_weight:
            raise ValueError(f"hard_weight must be 0 for loss {cfg.loss!r} here: the data's "
                             "labels are classes, not the teacher's outputs")
        num_outputs = teacher_out
    student = build_model(cfg, num_outputs)
    if labeled is not None and init_distributed().main:
        lock_run_folder(Path(cfg.out_dir))  # before writing into it (fit keeps the lock)
        write_labeled_subset(cfg.out_dir, labeled)
    facts = {"teacher": cfg.teacher}
    if labeled is not None:
        facts["labeled_subset_sha256"] = labeled["sha256"]
    return distill(cfg, student, teacher, train_set, val_set if cfg.loss == "soft" else None,
                   resume=resume, summary_extra=facts)
