"""Training DeepLabv3 end to end (backbone and head) through ``engine.loop.fit``, with
DeepLabv3's recipe (section 4) as ``SegConfig``'s ``paper`` preset."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilenets.checks import check_choice, check_int, check_range
from mobilenets.engine.config import RunConfig, config_from_preset
from mobilenets.engine.loop import fit, write_run_outputs
from mobilenets.engine.results import RunResult
from mobilenets.models.base import AtrousStride
from mobilenets.models.registry import arch_name
from mobilenets.tasks.segmentation.data import IGNORE_INDEX, SegAugment, SegmentationDataset
from mobilenets.tasks.segmentation.evaluate import evaluate_segmenter, model_info
from mobilenets.tasks.segmentation.model import HEAD_CHANNELS, HEADS, create_segmenter


@dataclass
class SegConfig(RunConfig):
    """One segmentation run. Presets live in ``SEG_PRESETS``; every field can be overridden.

    Paper values and their sources: the lite head at output stride 16 on MobileNetV2's second
    last feature map (MobileNetV2 paper, section 6.3 and Table 7); ASPP with 256 channels and
    rates (6, 12, 18) at stride 16 (DeepLabv3, section 3.3); SGD with momentum 0.9, the "poly"
    schedule ``(1 - step / steps) ** 0.9`` from learning rate 0.007, batch 16 of 513x513 crops,
    random scales 0.5-2.0 and left-right flips (DeepLabv3, section 4); weight decay 4e-5 and none
    on depthwise filters (the MobileNet recipe, ``train.TrainConfig``).
    """

    # Model
    backbone: str = "v2"  # "v1" or "v2" (Table 7's MNet V1 / MNet V2*)
    width_mult: float = 1.0  # alpha of the backbone
    head: str = "lite"  # MobileNetV2 paper 6.3: the on-device candidate; "aspp" for the full head
    output_stride: int = 16  # Table 7: 16 (trained); 8 at evaluation for its MF rows
    aspp_rates: tuple[int, ...] | None = None  # None: DeepLabv3's (6, 12, 18) at 16, x2 at 8
    head_channels: int = HEAD_CHANNELS  # DeepLabv3 3.3
    dropout: float = 0.1  # TF DeepLab concat_projection keep_prob 0.9
    init_from: str | None = None  # our classifier .safetensors for the backbone
    # Data
    data: str = "runs/synth/train"  # a folder with images/ and masks/
    val_data: str | None = "runs/synth/val"  # held-out folder; None: no evaluation
    resolution: int | None = None  # resize images to this square; None: as stored (paper: 513)
    min_scale: float = 0.5  # DeepLabv3 4
    max_scale: float = 2.0  # DeepLabv3 4
    flip: bool = True  # DeepLabv3 4
    limit_train: int | None = None
    limit_val: int | None = None
    # Optimisation (the rest: RunConfig's, the MobileNet recipe's weight decay)
    batch_size: int = 16  # DeepLabv3 4
    optimizer: str = "sgd"  # DeepLabv3 4: momentum SGD
    nesterov: bool = False  # DeepLabv3 4: plain momentum 0.9
    lr: float = 0.007  # DeepLabv3 4
    scale_lr: bool = False
    lr_schedule: str = "poly"  # DeepLabv3 4: "poly", (1 - step / steps) ** 0.9
    lr_power: float = 0.9  # DeepLabv3 4
    # Run
    out_dir: str = "runs/segment"
    checkpoint_every: int = 50  # steps

    def validate(self) -> "SegConfig":
        """Check every field; return self.

        Raises:
            ValueError: naming the first field that is out of range.
        """
        super().validate()
        arch_name(self.backbone)
        check_choice("head", self.head, HEADS)
        AtrousStride(self.output_stride)
        check_range("width_mult", self.width_mult)
        if self.resolution is not None:
            check_range("resolution", self.resolution)
        for name in ("limit_train", "limit_val"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        SegAugment(self.min_scale, self.max_scale)
        return self


#: Named recipes: "paper" is DeepLabv3's (section 4) with the lite head; "synthetic" sizes a run
#: for the synthetic scenes on one CPU thread (a larger learning rate for the short schedule);
#: "smoke" is for tests.
SEG_PRESETS: dict[str, SegConfig] = {
    "paper": SegConfig(),
    "synthetic": SegConfig(width_mult=0.5, resolution=128, epochs=8, batch_size=16, lr=0.05,
                           min_scale=0.75, max_scale=1.5, checkpoint_every=25),
    "smoke": SegConfig(width_mult=0.25, resolution=32, epochs=1, batch_size=4, lr=0.05,
                       checkpoint_every=2, progress=False),
}


def make_seg_config(preset: str = "synthetic", **overrides) -> SegConfig:
    """A preset of ``SEG_PRESETS`` with some fields replaced (``config.config_from_preset``).

    Raises:
        ValueError: for an unknown preset or field name, or an invalid value (named).
    """
    return config_from_preset(SEG_PRESETS, preset, **overrides)


def train_segmenter(cfg: SegConfig, resume: bool = False) -> RunResult:
    """Train DeepLabv3 end to end (backbone and head) on a folder of images and masks.

    Args:
        cfg: The recipe (see ``SegConfig``, ``make_seg_config``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists. The data order and every
            augmentation are pure functions of (seed, epoch, step), so a killed and resumed run
            ends with the weights of an uninterrupted one.

    Returns:
        A ``RunResult``: ``metrics`` holds ``pixel_accuracy`` and ``miou``, ``evaluation`` the
        final ``evaluate_segmenter`` dict (``eval.json``; None and no metrics without
        ``val_data``).

    Raises:
        FileNotFoundError: for a missing data folder or ``init_from``.
        ValueError: for a bad config or data.
        DivergedError: if the loss becomes NaN or infinite, or far above its first value
            (``loop.check_loss``); the last good checkpoint stays.
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    train_set = SegmentationDataset(cfg.data, cfg.resolution, limit=cfg.limit_train)
    names = train_set.class_names
    val_set = (SegmentationDataset(cfg.val_data, cfg.resolution, len(names), cfg.limit_val)
               if cfg.val_data else None)
    model = create_segmenter(cfg.backbone, cfg.width_mult, len(names), cfg.head,
                             cfg.output_stride, cfg.init_from, cfg.aspp_rates, cfg.head_channels,
                             cfg.dropout)
    model.config.resolution = int(train_set.images.shape[-1])
    augment = SegAugment(cfg.min_scale, cfg.max_scale, cfg.flip)

    def loss_fn(net, x, y, indices):
        return F.cross_entropy(net(x), y, ignore_index=IGNORE_INDEX)

    def epoch_eval(m):
        r = evaluate_segmenter(m, val_set, class_names=names)
        return {"val_pixel_accuracy": r["pixel_accuracy"], "val_miou": r["miou"],
                "val_loss": r["loss"]}

    run = fit(cfg, model, train_set, loss_fn, epoch_eval if val_set is not None else None,
              augment=lambda batch, g: augment(*batch, g), resume=resume, desc="segment")
    result = (evaluate_segmenter(run.model, val_set, class_names=names) if val_set is not None
              else None)
    if result is not None:
        result["model"] = model_info(Path(cfg.out_dir) / "model.safetensors", run.model)
    summary = {"pixel_accuracy": result and result["pixel_accuracy"],
               "miou": result and result["miou"], **run.summary}
    metrics = ({"pixel_accuracy": result["pixel_accuracy"], "miou": result["miou"]}
               if result is not None else {})
    return write_run_outputs(cfg, run, summary, metrics=metrics, evaluation=result,
                             metadata={"class_names": names,
                                       "val_miou": result and result["miou"]})
