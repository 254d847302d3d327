"""Training a detector on COCO-format data through ``engine.loop.fit``, with the TF Object
Detection API's recipe as ``DetectConfig``'s ``paper`` preset."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mobilenets.checks import check_choice, check_int
from mobilenets.engine.config import RunConfig, config_from_preset
from mobilenets.engine.loop import fit, write_run_outputs
from mobilenets.engine.results import RunResult
from mobilenets.models.registry import arch_name
from mobilenets.tasks.detection.data import (CocoDetection, collate, detection_augment,
                                             evaluate_detector)
from mobilenets.tasks.detection.model import DETECTORS, SSD_MAX_SCALE, SSD_MIN_SCALE, build_detector


@dataclass
class DetectConfig(RunConfig):
    """One detector training run. Presets live in ``DETECT_PRESETS``; every field can be overridden.

    The ``paper`` preset is the TF Object Detection API's ``ssd_mobilenet_v1_coco.config`` and
    ``ssdlite_mobilenet_v2_coco.config`` (the configs behind Table 13 and the MobileNetV2 paper's
    Table 6): RMSprop (decay 0.9, momentum 0.9, epsilon 1.0), learning rate 0.004 decayed by 0.95
    every 800,720 steps, batch 24, L2 weight decay 4e-5, horizontal flips. ``synthetic`` sizes a
    run for the synthetic shapes on a 2-core CPU (see its comments).
    """

    # Model
    detector: str = "ssdlite"  # ssd | ssdlite | faster_rcnn
    arch: str = "v2"  # backbone: v1 | v2
    width_mult: float = 1.0  # alpha
    resolution: int = 300  # paper: 300x300 (Table 13; MobileNetV2 paper section 6.2)
    backbone_weights: str | None = None  # our .safetensors classification checkpoint
    min_scale: float = SSD_MIN_SCALE  # TF ssd_anchor_generator min_scale 0.2
    max_scale: float = SSD_MAX_SCALE  # TF max_scale 0.95
    # Data (COCO-format annotation files; images/ beside them)
    train_data: str = ""
    val_data: str | None = None
    train_images: str | None = None  # default: images/ beside the annotation file, else its folder
    val_images: str | None = None
    flip: bool = True  # TF config: random_horizontal_flip
    limit_val: int | None = None  # evaluate each epoch on the first N validation images
    # Optimisation (the rest: RunConfig's, which are the same values as the TF configs')
    batch_size: int = 24  # TF config: batch_size 24
    optimizer: str = "rmsprop"  # TF config: rms_prop_optimizer; or "sgd" (Nesterov), "adamw"
    lr: float = 0.004  # TF config: initial_learning_rate 0.004
    scale_lr: bool = False
    lr_schedule: str = "exponential"  # TF: exponential_decay; or "cosine" (torchvision's SSDLite)
    lr_decay: float = 0.95  # TF config: decay_factor 0.95 ...
    lr_decay_steps: int | None = 800720  # ... every decay_steps 800720
    # momentum 0.9, decay 0.9, epsilon 1.0, weight decay 4e-5: as RunConfig (TF config
    # momentum_optimizer_value, decay, epsilon, l2_regularizer weight)
    # Run
    out_dir: str = "runs/detect"
    checkpoint_every: int = 50  # steps
    eval_batch_size: int = 16
    log_every: int = 10  # steps between progress lines

    def validate(self) -> "DetectConfig":
        """Check every field; return self. Raises ``ValueError`` naming the field."""
        super().validate()
        check_choice("detector", self.detector, DETECTORS)
        arch_name(self.arch)
        for name in ("width_mult", "eval_batch_size", "min_scale", "max_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        check_int("resolution", self.resolution, 64)  # SSD's smallest maps need 64
        if not self.train_data:
            raise ValueError("train_data (a COCO annotation file) is required")
        if self.limit_val is not None:
            check_int("limit_val", self.limit_val)
        return self


#: Named recipes: "paper" (the TF configs, see ``DetectConfig``), "synthetic" (the CPU run on the
#: synthetic shapes), "smoke" (tests).
DETECT_PRESETS: dict[str, DetectConfig] = {
    "paper": DetectConfig(),
    # SSDLite on the synthetic shapes at 128x128 on one CPU thread: objects of 15-50% of the
    # image need default boxes from 0.1 (not 0.2) of it; 1,500 steps of batch 16 from a random
    # backbone. Adam (Kingma & Ba 2015) at 2e-3 with one quarter-epoch warm-up and a cosine decay
    # (torchvision's SSDLite recipe's schedule) instead of TF's RMSprop: in short pilots on the
    # synthetic shapes at 128x128, Adam reached a clearly lower training loss.
    "synthetic": DetectConfig(resolution=128, width_mult=0.5, min_scale=0.1, max_scale=0.9,
                              epochs=6, batch_size=16, optimizer="adamw", lr=2e-3,
                              lr_schedule="cosine", warmup_epochs=0.25, grad_clip=10.0),
    "smoke": DetectConfig(width_mult=0.25, resolution=64, min_scale=0.1, epochs=1, batch_size=4,
                          lr=0.01, lr_schedule="cosine", checkpoint_every=2, log_every=1000,
                          eval_batch_size=4),
}


def make_detect_config(preset: str = "synthetic", **overrides) -> DetectConfig:
    """A preset of ``DETECT_PRESETS`` with some fields replaced; unknown names or bad values raise
    ``ValueError``."""
    return config_from_preset(DETECT_PRESETS, preset, **overrides)


#: The numbers of ``evaluate_detector`` that each epoch records, and the run's ``metrics``.
METRIC_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "images")


def train_detector(cfg: DetectConfig, resume: bool = False) -> RunResult:
    """Train a detector on COCO-format data, evaluating COCO mAP after every epoch.

    Writes the run folder of ``engine.loop.fit`` (``config.json``, ``checkpoint.pt``,
    ``metrics.jsonl`` with per-epoch loss and mAP), then ``model.safetensors`` (class names in its
    metadata) and ``summary.json``.

    Args:
        cfg: The run (``make_detect_config``).
        resume: Continue from ``checkpoint.pt`` in ``cfg.out_dir`` (same batches, same result as
            an uninterrupted run). Without it an existing checkpoint is an error.

    Returns:
        A ``RunResult``: ``history`` the per-epoch records, ``metrics`` the last epoch's COCO
        numbers (``METRIC_KEYS``; none without ``val_data``), ``summary`` the last record and
        the run's facts.

    Raises:
        ValueError / FileNotFoundError: for bad data or a config/checkpoint mismatch.
        loop.DivergedError: if the loss stops being finite, or rises far above its first
            value (``loop.check_loss``); the last good checkpoint stays.
    """
    cfg.validate()
    train_set = CocoDetection(cfg.train_data, cfg.train_images)
    val_set = CocoDetection(cfg.val_data, cfg.val_images) if cfg.val_data else None
    if val_set is not None and val_set.cat_ids != train_set.cat_ids:
        raise ValueError(f"val_data {cfg.val_data} has categories {val_set.cat_ids}, train_data "
                         f"{train_set.cat_ids}")
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.detector, cfg.arch, cfg.width_mult, len(train_set.class_names),
                           cfg.resolution, cfg.backbone_weights, min_scale=cfg.min_scale,
                           max_scale=cfg.max_scale)

    def loss_fn(net, images, targets, indices):
        return net(images, targets)

    def epoch_eval(m):
        metrics = evaluate_detector(m, val_set, cfg.eval_batch_size, cfg.limit_val)
        return {k: metrics[k] for k in METRIC_KEYS}

    run = fit(cfg, model, train_set, loss_fn, epoch_eval if val_set is not None else None,
              augment=detection_augment(cfg.flip), collate=collate, resume=resume,
              desc="detect")
    final = run.last_epoch
    return write_run_outputs(cfg, run, {**final, **run.summary},
                             metrics={k: final[k] for k in METRIC_KEYS if k in final},
                             metadata={"class_names": train_set.class_names})
