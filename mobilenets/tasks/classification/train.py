"""Image classification with the paper's recipe (section 3.2): its config and presets, building the
model, evaluation, and ``train``, which runs ``engine.loop.fit`` (the one training loop: run
folder, checkpoints, exact resume, DDP under torchrun).
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.checks import check_choice, check_int, check_range
from mobilenets.engine.config import RunConfig, config_from_preset
from mobilenets.engine.data import (AUGMENTATIONS, BatchTransform, dataset_labels, iterate_batches,
                                    labeled_subset, limit_dataset, open_dataset, subset_dataset,
                                    unlabel_dataset)
from mobilenets.engine.distributed import Dist, all_reduce, init_distributed
from mobilenets.engine.loop import fit, write_run_outputs
from mobilenets.engine.metrics import EvalAccumulator
from mobilenets.engine.progress import track
from mobilenets.engine.results import RunResult
from mobilenets.fileio import write_json
from mobilenets.models.registry import create_model, get_spec, load_model


@dataclass
class TrainConfig(RunConfig):
    """One training run. Presets live in ``PRESETS``; every field can be overridden.

    Paper values and their sources: RMSprop with decay 0.9, momentum 0.9 and epsilon 1.0
    (section 3.2 names RMSprop; the numbers are TF-Slim's ``train_image_classifier.py``
    defaults and the MobileNetV2 paper, section 6.1); learning rate 0.045 decayed by 0.98 per
    epoch, weight decay 4e-5, batch 96 per worker (MobileNetV2 paper, section 6.1, the same team's
    recipe); no weight decay on depthwise filters (paper section 3.2; TF-Slim's
    ``regularize_depthwise=False``); no label smoothing and no side heads (section 3.2); less
    aggressive crops than Inception's (section 3.2: the minimum crop area is ``min_crop_area``).
    """

    # Model
    model: str = "mobilenet_v1_1.0_224"  # registry name: sets alpha and the default resolution
    width_mult: float | None = None  # override alpha
    resolution: int | None = None  # input size (rho); default: the model's
    output_stride: int = 32  # 8 | 16 | 32: stop striding there (TF-Slim's knob; the paper: 32)
    dropout: float = 0.001  # TF-Slim dropout_keep_prob 0.999
    init_from: str | None = None  # weights to start from (our .safetensors), for fine-tuning
    freeze_body: bool = False  # train only the classifier (fine-tuning)
    # Data
    data: str = "fashion-mnist"  # or an ImageFolder root with train/ and val/
    augmentation: str = "inception"  # paper 3.2: Inception crops, limited | "translate"
    min_crop_area: float = 0.25  # paper: smaller crops limited (Inception uses 0.05-1.0)
    translate: int = 2  # "translate": largest shift, in pixels of the model's input
    random_erasing: float = 0.0  # probability of a noise rectangle per image (Zhong et al. 2020)
    flip: bool = True
    eval_crop: float = 0.875  # evaluation view's side / image side (> 1: zero border)
    flip_test: bool = False  # evaluate on the mean of the image's and its mirror's logits
    holdout: int = 0  # >0: train without the last N training images and evaluate on them
    skip_bad_files: bool = False
    limit_train: int | None = None  # use only the first N training images (quick runs, tests)
    limit_val: int | None = None
    label_fraction: float = 1.0  # keep the labels of this class-balanced share of the images
    label_seed: int = 0  # selects that share (same seed -> same labeled images)
    num_workers: int = 2  # image-decoding processes for ImageFolder data
    # Optimisation (the rest: RunConfig, whose defaults are section 3.2's recipe)
    label_smoothing: float = 0.0  # paper: none
    channels_last: bool = True  # faster convolutions on CPU (benchmarks/)
    compile: bool = False  # torch.compile the model

    def validate(self) -> "TrainConfig":
        """Check every field (``RunConfig.validate``, then classification's); return self.

        Raises:
            ValueError: naming the first bad field.
        """
        super().validate()
        get_spec(self.model)
        check_range("label_seed", self.label_seed)
        if self.resolution is not None:
            check_range("resolution", self.resolution)
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {self.output_stride!r}")
        check_choice("augmentation", self.augmentation, AUGMENTATIONS)
        if self.translate < 0 or self.holdout < 0:
            raise ValueError(f"translate and holdout must be >= 0, got {self.translate!r}, "
                             f"{self.holdout!r}")
        check_range("eval_crop", self.eval_crop)
        if self.width_mult is not None:
            check_range("width_mult", self.width_mult)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing must be in [0, 1], got {self.random_erasing!r}")
        for name in ("min_crop_area", "label_fraction"):
            check_range(name, getattr(self, name))
        for name in ("limit_train", "limit_val"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.freeze_body and not self.init_from:
            raise ValueError("freeze_body needs init_from (weights to keep frozen)")
        return self

    @property
    def input_size(self) -> int:
        return self.resolution or get_spec(self.model).resolution


#: Named recipes. "paper" is section 3.2 as published, its decay fitted to the run's length;
#: "fashion-mnist" keeps the paper's optimizer, regularisation and crops but sizes the run for
#: Fashion-MNIST on a 2-core CPU; "fast" is the most accuracy per CPU-second on Fashion-MNIST
#: (docs/results/fast_recipe.md: what each ingredient gives, and which depart from section 3.2);
#: "best" is "fast" run long at a higher resolution, with random erasing; "smoke" is for tests.
PRESETS: dict[str, TrainConfig] = {
    # 0.98 per epoch (MobileNetV2 paper 6.1) ends at 0.01 after 228 epochs: the decay is fitted
    # so that every run, however short, ends there too.
    "paper": TrainConfig(lr_final=0.01),
    # Fashion-MNIST's 28x28 images upscaled to 64 (the last feature map is 2x2); objects fill
    # the frame, so crops stay large and evaluation uses the whole image. 10 epochs with the
    # paper's optimizer, the decay fitted to them.
    "fashion-mnist": TrainConfig(resolution=64, epochs=10, batch_size=128, lr=0.06,
                                 lr_final=0.01, warmup_epochs=0.3, min_crop_area=0.5,
                                 eval_crop=1.0, checkpoint_every=100),
    # The paper's MobileNet (alpha, rho and output_stride its knobs) with fast-training practice
    # (airbench on CIFAR-10; what each ingredient gives: docs/results/fast_recipe.md). Departures
    # from 3.2: SGD with Nesterov momentum instead of RMSprop, a cosine schedule with a short
    # warm-up instead of exponential decay, label smoothing, weight decay 5e-4 (the usual value of
    # SGD recipes on small images, beside the paper's 4e-5 for RMSprop), translate-and-flip
    # instead of Inception crops, test-time flips. The 28x28 images sit unresampled on a 32x32
    # input (eval_crop 32/28); output_stride 16 keeps the last two blocks (7x7 at 224) at 2x2
    # instead of 1x1. alpha 0.75: as accurate as 1.0 for the same epochs at about half the cost
    # per image, so more epochs fit the same time.
    "fast": TrainConfig(model="mobilenet_v1_0.75_224", resolution=32, output_stride=16,
                        epochs=15, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9,
                        nesterov=True, weight_decay=5e-4, lr_schedule="cosine",
                        warmup_epochs=0.3, lr_final=0.0, label_smoothing=0.1,
                        augmentation="translate", translate=2, eval_crop=32 / 28,
                        flip_test=True, checkpoint_every=100),
    "smoke": TrainConfig(model="mobilenet_v1_0.25_128", resolution=32, epochs=1, batch_size=32,
                         lr=0.01, limit_train=256, limit_val=128, eval_crop=1.0,
                         checkpoint_every=4, num_workers=0, progress=False),
}
# "best": the fast recipe with 1.0 MobileNet at 64x64 (the 28x28 images upscaled 2x, 4-pixel
# shifts: 2 input pixels) and output stride 32 (the last blocks at 2x2), for 60 epochs, with
# random erasing at Zhong et al.'s Fashion-MNIST setting (p 0.5): without it 60 epochs fit the
# training images (loss near label smoothing's floor) and end less accurate (docs/results/
# fast_recipe.md; a departure from section 3.2, like the rest of "fast").
PRESETS["best"] = replace(PRESETS["fast"], model="mobilenet_v1_1.0_224", resolution=64,
                          output_stride=32, translate=4, epochs=60, warmup_epochs=1.0,
                          random_erasing=0.5)


def make_config(preset: str = "fashion-mnist", **overrides) -> TrainConfig:
    """A preset with some fields replaced; unknown field names raise ``ValueError``."""
    return config_from_preset(PRESETS, preset, **overrides)


# --------------------------------------------------------------------------- model and evaluation

def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg``: fresh, or from ``init_from`` with a new classifier if the class
    count differs (fine-tuning), optionally with the body frozen."""
    kwargs = {"dropout": cfg.dropout}
    if cfg.output_stride != 32:
        kwargs["output_stride"] = cfg.output_stride
    if cfg.width_mult is not None:
        kwargs["width_mult"] = cfg.width_mult
    if cfg.init_from:
        model = load_model(cfg.init_from, dropout=cfg.dropout).train()
        if getattr(model, "num_classes", num_classes) != num_classes:
            model.reset_classifier(num_classes)
    else:
        model = create_model(cfg.model, num_classes=num_classes, **kwargs)
    model.config.resolution = cfg.input_size
    if cfg.freeze_body:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.")
    return model


def check_init_model(name: str, init_from: str | os.PathLike) -> None:
    """Refuse a model name that disagrees with the weights fine-tuning starts from.

    Raises:
        ValueError: naming ``--model`` and ``--init`` if the file's architecture or any of the
            name's settings (width_mult, block structure) differ.
    """
    from mobilenets.models.modelfile import read_model_file
    from mobilenets.models.registry import config_from_dict

    spec = get_spec(name)
    found = config_from_dict(read_model_file(init_from)[0], str(init_from))
    differ = [f"{k} {getattr(spec.config, k)!r} vs {getattr(found, k, None)!r}"
              for k in dict.fromkeys(("arch", "width_mult", *spec.name_fields))
              if getattr(found, k, None) != getattr(spec.config, k)]
    if differ:
        raise ValueError(f"--model {name} disagrees with --init {init_from} ({'; '.join(differ)}):"
                         " leave out --model (fine-tuning keeps --init's model), or pass an --init "
                         "of that model")


def frozen_bn_eval(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode: a frozen body keeps its statistics too (the paper's
    fine-grained recipe)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_augment(cfg: TrainConfig):
    """``fit``'s ``augment`` for ``(uint8 images, targets)`` batches: ``cfg.augmentation`` (the
    paper's crops, or translations) and flips (``data.BatchTransform``) at ``cfg.input_size``."""
    transform = BatchTransform(cfg.input_size, True, cfg.min_crop_area, cfg.flip, cfg.eval_crop,
                               augmentation=cfg.augmentation, translate=cfg.translate,
                               random_erasing=cfg.random_erasing)
    return lambda batch, generator: (transform(batch[0], generator), batch[1])


@torch.no_grad()
def evaluate(model: nn.Module, dataset, transform: BatchTransform, batch_size: int = 256,
             d: Dist | None = None, class_names=None, channels_last: bool = False,
             progress: bool = False, num_workers: int = 0, flip_test: bool = False) -> dict:
    """Top-1, top-5, loss, per-class accuracy and confusion matrix over a dataset.

    Args:
        model: The model (not DDP-wrapped); run in eval mode, its mode restored afterwards.
        dataset: A dataset from ``data.open_dataset``.
        transform: The evaluation ``BatchTransform``.
        batch_size: Images per forward pass. Default 256.
        d: The process group; each process evaluates every ``world_size``-th image and the
            counts are summed, so all processes return the same result. Default: one process.
        class_names: Names for the report. Default: the dataset's.
        channels_last: Feed channels-last tensors. Default False.
        progress: Show progress on the main process, on stderr (``progress.track``: a bar on
            a terminal, a line per tenth of the batches otherwise). Default False.
        num_workers: Image-decoding processes (ImageFolder data). Default 0.
        flip_test: Score each image by the mean of its and its mirror image's logits
            (test-time augmentation; twice the compute). Default False.

    Returns:
        ``metrics.EvalAccumulator.result()``: top1, top5, loss, per_class, confusion_matrix, ...
    """
    d = d or Dist()
    class_names = class_names or dataset.class_names
    acc = EvalAccumulator(len(class_names))
    mine = torch.arange(len(dataset))[d.rank::d.world_size]
    batches = list(torch.split(mine, batch_size))
    was_training = model.training
    model.eval()
    it = track(iterate_batches(dataset, batches, num_workers), len(batches), "eval",
               unit="batch", enabled=progress and d.main, leave=False)
    for images, labels in it:
        x = transform(images).to(d.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        if flip_test:
            logits = (logits + model(x.flip(3)).float()) / 2
        logits = logits.cpu()
        if logits.shape[1] != len(dataset.class_names):  # checked on the first batch
            raise ValueError(f"the model has {logits.shape[1]} classes and the data "
                             f"{len(dataset.class_names)} ({', '.join(dataset.class_names[:3])}"
                             f"{', ...' if len(dataset.class_names) > 3 else ''}): evaluate it "
                             "on data with the model's classes (--data)")
        acc.update(logits, labels, F.cross_entropy(logits, labels, reduction="none"))
    model.train(was_training)
    if d.world_size > 1:
        acc.load_state_tensor(all_reduce(acc.state_tensor(), d))
    return acc.result(class_names)


# --------------------------------------------------------------------------- training

def train(cfg: TrainConfig, resume: bool = False) -> RunResult:
    """Train, evaluating each epoch; return the run with its final evaluation.

    Args:
        cfg: The recipe (see ``TrainConfig``, ``make_config``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists (a killed run picks up
            at its last checkpoint; the rest of the run is the same as if never interrupted).

    Returns:
        A ``RunResult``: ``metrics`` holds ``top1`` and ``top5``, ``evaluation`` the final
        ``evaluate`` dict (per-class accuracy, confusion matrix; ``eval.json``), ``model`` the
        trained model (EMA weights when EMA is on), ``model_path`` its file.

    Raises:
        DivergedError: if the loss becomes NaN or infinite, or far above its first value
            (``loop.check_loss``); the last good checkpoint stays.
    """
    cfg.validate()
    d = init_distributed()
    torch.manual_seed(cfg.seed)
    train_set, val_set, labeled = open_splits(cfg, drop_unlabeled=True)
    class_names = train_set.class_names
    eval_tf = BatchTransform(cfg.input_size, False, eval_crop=cfg.eval_crop)
    model = build_model(cfg, len(class_names))

    def loss_fn(net, x, labels, indices):
        return F.cross_entropy(net(x), labels, label_smoothing=cfg.label_smoothing)

    def epoch_eval(m: nn.Module) -> dict:
        r = evaluate(m, val_set, eval_tf, d=d, class_names=class_names,
                     channels_last=cfg.channels_last, flip_test=cfg.flip_test)
        return {"val_top1": r["top1"], "val_top5": r["top5"], "val_loss": r["loss"]}

    run = fit(cfg, model, train_set, loss_fn, epoch_eval, augment=train_augment(cfg),
              num_workers=cfg.num_workers, d=d, resume=resume,
              on_fresh_start=lambda: write_labeled_subset(cfg.out_dir, labeled),
              module_in_train=frozen_bn_eval if cfg.freeze_body else None)
    result = evaluate(run.model, val_set, eval_tf, d=d, class_names=class_names,
                      channels_last=cfg.channels_last, flip_test=cfg.flip_test)
    metrics = {"top1": result["top1"], "top5": result["top5"]}
    summary = {**metrics, **run.summary}
    if labeled is not None:
        summary["labeled_images"] = labeled["count"]
        summary["labeled_subset_sha256"] = labeled["sha256"]
    return write_run_outputs(cfg, run, summary, d, metrics=metrics, evaluation=result,
                             metadata={"class_names": class_names, "val_top1": result["top1"]})


# --------------------------------------------------------------------------- data splits

def open_splits(cfg: TrainConfig, drop_unlabeled: bool = True):
    """Open ``cfg.data``'s training and validation splits, apply ``limit_train``/``limit_val``
    and hold back labels when ``cfg.label_fraction < 1``.

    With ``cfg.holdout = N`` the validation split is the last N training images, left out of
    training (model selection without the test set); otherwise it is the data's val (for
    Fashion-MNIST, test) split.

    Args:
        cfg: The run's config (``data``, ``eval_crop``, ``skip_bad_files``, ``holdout``,
            ``limit_*``, ``label_fraction``, ``label_seed``, ``input_size``).
        drop_unlabeled: True (``train``): keep only the labeled images. False (distillation):
            keep every image, the held-back ones with label -1.

    Returns:
        ``(train_set, val_set, labeled)``: ``labeled`` is None without a label fraction, else
        ``{"fraction", "seed", "num_images", "count", "sha256", "indices"}`` describing the
        labeled subset (indices into the limited training split).
    """
    res = cfg.input_size
    train_set = open_dataset(cfg.data, "train", res, cfg.eval_crop, cfg.skip_bad_files)
    if getattr(cfg, "holdout", 0):
        n = len(train_set)
        if cfg.holdout >= n:
            raise ValueError(f"holdout {cfg.holdout} leaves none of the {n} training images")
        val_set = copy.copy(train_set)  # subset_dataset replaces attributes: the copies part
        subset_dataset(val_set, torch.arange(n - cfg.holdout, n))
        subset_dataset(train_set, torch.arange(n - cfg.holdout))
    else:
        val_set = open_dataset(cfg.data, "val", res, cfg.eval_crop, cfg.skip_bad_files,
                               class_names=train_set.class_names)
    for ds, limit in ((train_set, cfg.limit_train), (val_set, cfg.limit_val)):
        if limit:
            limit_dataset(ds, limit)
    fraction = getattr(cfg, "label_fraction", 1.0)
    if fraction >= 1:
        return train_set, val_set, None
    num_images = len(train_set)
    indices = labeled_subset(dataset_labels(train_set), fraction, cfg.label_seed)
    labeled = {"fraction": fraction, "seed": cfg.label_seed, "num_images": num_images,
               "count": len(indices),
               "sha256": hashlib.sha256(indices.numpy().astype("<i8").tobytes()).hexdigest(),
               "indices": indices.tolist()}
    (subset_dataset if drop_unlabeled else unlabel_dataset)(train_set, indices)
    return train_set, val_set, labeled


def write_labeled_subset(out_dir: str | os.PathLike, labeled: dict | None) -> None:
    """Record a run's labeled subset as ``out_dir/labeled_subset.json`` (atomic); no-op for None."""
    if labeled is not None:
        write_json(Path(out_dir) / "labeled_subset.json", labeled)


