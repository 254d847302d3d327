"""Training the face models (sections 4.5 and 4.7) through ``engine.loop.fit``: the 1.0
teachers on the labels, and the students distilled from them (``tasks.distillation.train``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.checks import check_int
from mobilenets.engine.config import config_from_preset
from mobilenets.engine.data import stored_size
from mobilenets.engine.loop import fit, write_run_outputs
from mobilenets.engine.results import RunResult
from mobilenets.models.registry import load_model
from mobilenets.tasks.classification.train import TrainConfig, train_augment
from mobilenets.tasks.faces.data import limit_splits, open_attribute_data, open_identity_data
from mobilenets.tasks.faces.evaluate import (attribute_names, cost, evaluate_attributes,
                                             evaluate_verification)
from mobilenets.tasks.faces.metrics import tar_at_far
from mobilenets.tasks.faces.model import EmbeddingNet, IdentityClassifier, build_backbone


@dataclass
class EmbeddingTrainConfig(TrainConfig):
    """The embedding teacher's run: every ``TrainConfig`` field plus its identity head.

    The paper distils FaceNet (trained with a triplet loss, Schroff et al. 2015) and gives no
    recipe for it; this teacher is a MobileNet trained as an identity classifier on its unit
    embedding (``IdentityClassifier``), which needs far less tuning than triplets.
    """

    embedding_dim: int = 128  # FaceNet's embedding size (Schroff et al. 2015), Table 14's teacher
    logit_scale: float = 16.0  # NormFace (Wang et al. 2017) scales unit features by s ~ 16-64

    def validate(self) -> "EmbeddingTrainConfig":
        super().validate()
        check_int("embedding_dim", self.embedding_dim)
        if not (isinstance(self.logit_scale, (int, float)) and self.logit_scale > 0):
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale!r}")
        return self


def recipes() -> dict:
    """The four recipes by name: ``attributes-teacher``, ``attributes-student``,
    ``embeddings-teacher``, ``embeddings-student``."""
    from dataclasses import asdict, replace

    from mobilenets.tasks.classification.train import PRESETS
    from mobilenets.tasks.distillation.train import DistillConfig

    # The Fashion-MNIST recipe (the paper's RMSprop, train.PRESETS) at 32 pixels, the smallest
    # input the models take (Fashion-MNIST is 28x28), so every run fits a small CPU.
    # lr_final=None: these recipes decay at fixed per-epoch rates (lr_decay), sized to their runs.
    base = replace(PRESETS["fashion-mnist"], resolution=32, num_workers=0, eval_crop=1.0,
                   lr_final=None)
    # Teacher outputs are computed once on the un-augmented images, so a student sees the same
    # view as its target: no flips, whole-image crops.
    student = dict(flip=False, min_crop_area=1.0,
                   weight_decay=0.0,  # section 4.5: distillation "requires no regularization"
                   hard_weight=0.0,  # section 4.5: the teacher's outputs "instead of" labels
                   lr_decay=0.3, epochs=2)  # distill helper's 32-pixel sweep recipe, 2 epochs
    return {
        "attributes-teacher": replace(base, model="mobilenet_v1_1.0_224", epochs=8,
                                      min_crop_area=0.8,  # pixel attributes measure size/shape
                                      out_dir="runs/attributes/teacher"),
        "attributes-student": DistillConfig(**{**asdict(base), **student,
                                               "model": "mobilenet_v1_0.5_224", "loss": "sigmoid",
                                               "out_dir": "runs/attributes/student"}),
        "embeddings-teacher": EmbeddingTrainConfig(**{**asdict(base), "epochs": 12,
                                                      "model": "mobilenet_v1_1.0_224",
                                                      "out_dir": "runs/embeddings/teacher"}),
        "embeddings-student": DistillConfig(**{**asdict(base), **student,
                                               "model": "mobilenet_v1_0.5_224", "loss": "embedding",
                                               "out_dir": "runs/embeddings/student"}),
    }


def faces_config(recipe: str, **overrides):
    """A recipe of this module with fields replaced.

    Args:
        recipe: ``"attributes-teacher"`` (a ``TrainConfig``), ``"attributes-student"`` and
            ``"embeddings-student"`` (``tasks.distillation.train.DistillConfig``),
            ``"embeddings-teacher"`` (``EmbeddingTrainConfig``).
        **overrides: Fields of that config class.

    Returns:
        The validated config.

    Raises:
        ValueError: naming an unknown recipe or field, or a bad value.
    """
    return config_from_preset(recipes(), recipe, what="recipe", **overrides)


def _stored(cfg) -> int:
    return stored_size(cfg.input_size, cfg.eval_crop)


def _check_far(pairs, far: float) -> None:
    """Fail before training, not after, when the pairs cannot measure ``far``."""
    tar_at_far(torch.zeros(1), torch.zeros(int((~pairs[2]).sum())), far)


def _finish(cfg, run: RunResult, facts: dict, result: dict, metadata: dict) -> RunResult:
    """Write the run's outputs: its summary is the evaluation's numbers, the model's cost, the
    run's facts and ``facts``."""
    metrics = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    summary = {**metrics, **cost(run.model, cfg.input_size), **run.summary, **facts}
    return write_run_outputs(cfg, run, summary, metrics=metrics, evaluation=result,
                             metadata=metadata)


def train_attributes(cfg, data_dir: str | os.PathLike, resume: bool = False) -> RunResult:
    """Train a multi-label MobileNet (one sigmoid per attribute) on ``train.csv``'s labels: the
    attribute teacher (binary cross-entropy, mean over attributes and images).

    Args:
        cfg: A ``TrainConfig`` (``faces_config("attributes-teacher", ...)``): model, width,
            resolution, optimiser, schedule, augmentation, ``out_dir``.
        data_dir: A folder written by ``make_attribute_data`` (or with the same CSVs).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.

    Returns:
        The ``RunResult``; its summary (``summary.json``) holds ``mean_ap`` on ``test.csv``
        (percent), ``madds_m``, ``params_m``, steps, seconds; ``eval.json`` (``evaluation``)
        the AP of every attribute.
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    train_set, test_set = limit_splits(cfg, *open_attribute_data(data_dir, _stored(cfg)))
    model = build_backbone(cfg, include_top=True, num_classes=len(train_set.attribute_names))

    def loss_fn(net, x, targets, indices):
        return F.binary_cross_entropy_with_logits(net(x).float(), targets)

    def epoch_eval(m):
        r = evaluate_attributes(m, test_set, cfg.input_size, cfg.eval_crop)
        return {"val_mean_ap": r["mean_ap"]}

    run = fit(cfg, model, train_set, loss_fn, epoch_eval, augment=train_augment(cfg),
              resume=resume)
    result = evaluate_attributes(run.model, test_set, cfg.input_size, cfg.eval_crop)
    return _finish(cfg, run, {"trained_on": "labels", "labeled_images": len(train_set)},
                   result, {"class_names": train_set.attribute_names, "data": str(data_dir)})


def distill_attributes(cfg, data_dir: str | os.PathLike, teacher: str | os.PathLike,
                       resume: bool = False) -> RunResult:
    """Distil an attribute teacher into a (smaller) MobileNet on ``train.csv`` and
    ``unlabeled.csv`` images: the paper's section 4.5 (per-attribute sigmoid cross-entropy
    against the teacher's probabilities; labels used only with ``cfg.hard_weight`` > 0).

    Args:
        cfg: A ``DistillConfig`` with ``loss="sigmoid"``
            (``faces_config("attributes-student", ...)``).
        data_dir: The attribute folder.
        teacher: The teacher's model file (from ``train_attributes``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.

    Returns:
        ``distill``'s ``RunResult``, its summary with ``mean_ap`` on ``test.csv``, ``madds_m``,
        ``params_m``.

    Raises:
        ValueError: if ``cfg.loss`` is not "sigmoid" or the teacher's attributes differ from
            the data's.
    """
    from mobilenets.tasks.distillation.train import distill

    cfg.validate()
    if cfg.loss != "sigmoid":
        raise ValueError(f"loss must be 'sigmoid' for attributes, got {cfg.loss!r}")
    teacher_model = load_model(teacher, kind="classifier")
    names = attribute_names(teacher_model, teacher)
    torch.manual_seed(cfg.seed)
    train_set, test_set = limit_splits(cfg, *open_attribute_data(data_dir, _stored(cfg),
                                                             unlabeled=True))
    if names != train_set.attribute_names:
        raise ValueError(f"teacher {teacher} predicts {names}, but the data has "
                         f"{train_set.attribute_names}")
    student = build_backbone(cfg, include_top=True, num_classes=len(names))
    return distill(cfg, student, teacher_model, train_set, resume=resume,
                   evaluate_fn=lambda m: evaluate_attributes(m, test_set, cfg.input_size,
                                                             cfg.eval_crop),
                   summary_extra={"teacher": str(teacher), "trained_on": "teacher",
                                  **cost(student, cfg.input_size)})


def train_embeddings(cfg: EmbeddingTrainConfig, data_dir: str | os.PathLike,
                     resume: bool = False, far: float = 1e-4) -> RunResult:
    """Train the embedding teacher: an ``EmbeddingNet`` classifying ``train.csv``'s identities
    through an ``IdentityClassifier`` (cross-entropy); the classifier is dropped at the end.

    Args:
        cfg: An ``EmbeddingTrainConfig`` (``faces_config("embeddings-teacher", ...)``).
        data_dir: A folder written by ``make_embedding_data``.
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        far: False accept rate of the evaluation. Default 1e-4 (Table 14; needs >= 10,000
            negative pairs).

    Returns:
        The ``RunResult`` of the embedder (the classifier dropped); its summary holds ``tar``
        (percent, at the false accept rate ``far`` on ``pairs.csv``), the context rates of
        ``evaluate_verification``, ``madds_m``, ``params_m``, steps, seconds.
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    train_set, test_set, pairs = open_identity_data(data_dir, _stored(cfg))
    _check_far(pairs, far)
    limit_splits(cfg, train_set)
    embedder = EmbeddingNet(build_backbone(cfg), cfg.embedding_dim)
    net = nn.Sequential(embedder, IdentityClassifier(cfg.embedding_dim,
                                                     len(train_set.class_names), cfg.logit_scale))

    def loss_fn(model, x, targets, indices):
        return F.cross_entropy(model(x).float(), targets)

    def verify(m):
        return evaluate_verification(m[0] if isinstance(m, nn.Sequential) else m, test_set, pairs,
                                     cfg.input_size, far, cfg.eval_crop)

    run = fit(cfg, net, train_set, loss_fn, lambda m: {"val_tar": verify(m)["tar"]},
              augment=train_augment(cfg), resume=resume)
    run = replace(run, model=run.model[0])
    return _finish(cfg, run, {"trained_on": "identities",
                              "identities": len(train_set.class_names)},
                   verify(run.model), {"data": str(data_dir)})


def distill_embeddings(cfg, data_dir: str | os.PathLike, teacher: str | os.PathLike,
                       resume: bool = False, far: float = 1e-4) -> RunResult:
    """Distil an embedding teacher into a (smaller) ``EmbeddingNet`` on ``train.csv`` and
    ``unlabeled.csv`` images by the squared distance of the embeddings: the paper's section 4.7.

    Args:
        cfg: A ``DistillConfig`` with ``loss="embedding"``
            (``faces_config("embeddings-student", ...)``).
        data_dir: The identity folder.
        teacher: The teacher's model file (from ``train_embeddings``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        far: False accept rate of the evaluation. Default 1e-4 (Table 14).

    Returns:
        ``distill``'s ``RunResult``, its summary with ``tar`` (percent at ``far``), the context
        rates, ``madds_m``, ``params_m``.
    """
    from mobilenets.tasks.distillation.train import distill

    cfg.validate()
    if cfg.loss != "embedding":
        raise ValueError(f"loss must be 'embedding' for embeddings, got {cfg.loss!r}")
    teacher_model = load_model(teacher, kind="embedding")
    torch.manual_seed(cfg.seed)
    train_set, test_set, pairs = open_identity_data(data_dir, _stored(cfg), unlabeled=True)
    _check_far(pairs, far)
    limit_splits(cfg, train_set)
    student = EmbeddingNet(build_backbone(cfg), teacher_model.embedding_dim)
    return distill(cfg, student, teacher_model, train_set, resume=resume,
                   evaluate_fn=lambda m: evaluate_verification(m, test_set, pairs, cfg.input_size,
                                                               far, cfg.eval_crop),
                   summary_extra={"teacher": str(teacher), "trained_on": "teacher",
                                  **cost(student, cfg.input_size)})
