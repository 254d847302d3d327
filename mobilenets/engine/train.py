"""Training and evaluation with the paper's recipe, on one process or many (torchrun + DDP).

A run lives in one folder (``out_dir``): ``config.json``, ``checkpoint.pt`` (everything needed to
resume, written atomically every ``checkpoint_every`` steps and at each epoch end),
``metrics.jsonl`` (one line per epoch), and at the end ``model.safetensors``. ``resume=True``
continues from ``checkpoint.pt`` and reaches the same weights as an uninterrupted run: the data
order and every augmentation are pure functions of (seed, epoch, step, rank), and the checkpoint
holds the RNG state used by dropout.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mobilenets.fileio import atomic_path
from mobilenets.models.modelfile import save_model
from mobilenets.engine.data import BatchTransform, epoch_batches, iterate_batches, open_dataset
from mobilenets.engine.metrics import EvalAccumulator
from mobilenets.engine.optim import EMA, RMSpropTF, param_groups
from mobilenets.models.registry import build_from_config, create_model, get_spec


@dataclass
class TrainConfig:
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
    dropout: float = 0.001  # TF-Slim dropout_keep_prob 0.999
    init_from: str | None = None  # weights to start from (our .safetensors), for fine-tuning
    freeze_body: bool = False  # train only the classifier (fine-tuning)
    # Data
    data: str = "fashion-mnist"  # or an ImageFolder root with train/ and val/
    min_crop_area: float = 0.25  # paper: smaller crops limited (Inception uses 0.05-1.0)
    flip: bool = True
    eval_crop: float = 0.875  # resize + center crop for evaluation
    skip_bad_files: bool = False
    limit_train: int | None = None  # use only the first N training images (quick runs, tests)
    limit_val: int | None = None
    label_fraction: float = 1.0  # keep the labels of this class-balanced share of the images
    label_seed: int = 0  # selects that share (same seed -> same labeled images)
    num_workers: int = 2  # image-decoding processes for ImageFolder data
    # Optimisation
    epochs: float = 10
    batch_size: int = 96  # per process (MobileNetV2 paper: 96 per worker)
    lr: float = 0.045  # MobileNetV2 paper, for batch_size on one process
    lr_decay: float = 0.98  # per epoch, applied smoothly per step
    warmup_epochs: float = 0.0
    scale_lr: bool = True  # multiply lr by the number of processes (linear scaling rule)
    optimizer: str = "rmsprop"  # "rmsprop" (TF semantics) or "sgd" (Nesterov)
    rmsprop_decay: float = 0.9
    momentum: float = 0.9
    eps: float = 1.0
    weight_decay: float = 4e-5
    depthwise_weight_decay: float = 0.0
    label_smoothing: float = 0.0  # paper: none
    ema_decay: float | None = None  # e.g. 0.9999 (TF-Slim); evaluation then uses the EMA weights
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = True  # faster convolutions on CPU (benchmarks/)
    compile: bool = False  # torch.compile the model
    # Run
    seed: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = 200  # steps
    eval_every_epoch: bool = True
    tensorboard: bool = False
    progress: bool = True

    def validate(self) -> "TrainConfig":
        get_spec(self.model)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "checkpoint_every": self.checkpoint_every}
        for name, v in positive.items():
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v!r}")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 32):
            raise ValueError(f"resolution must be an integer >= 32, got {self.resolution!r}")
        if self.optimizer not in ("rmsprop", "sgd"):
            raise ValueError(f"optimizer must be 'rmsprop' or 'sgd', got {self.optimizer!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not (isinstance(self.label_fraction, (int, float)) and 0 < self.label_fraction <= 1):
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction!r}")
        if self.freeze_body and not self.init_from:
            raise ValueError("freeze_body needs init_from (weights to keep frozen)")
        return self

    @property
    def input_size(self) -> int:
        return self.resolution or get_spec(self.model).resolution


#: Named recipes. "paper" is section 3.2 as published; "fashion-mnist" keeps the paper's optimizer
#: and regularisation but sizes the run for Fashion-MNIST on a 2-core CPU; "smoke" is for tests.
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    # Fashion-MNIST's 28x28 images upscaled to 64 (the last feature map is 2x2); objects fill
    # the frame, so crops stay large and evaluation uses the whole image. 10 epochs with the
    # paper's optimizer, the decay shortened to fit them.
    "fashion-mnist": TrainConfig(resolution=64, epochs=10, batch_size=128, lr=0.06,
                                 lr_decay=0.75, warmup_epochs=0.3, min_crop_area=0.5,
                                 eval_crop=1.0, checkpoint_every=100),
    "smoke": TrainConfig(model="mobilenet_v1_0.25_128", resolution=32, epochs=1, batch_size=32,
                         lr=0.01, limit_train=256, limit_val=128, eval_crop=1.0,
                         checkpoint_every=4, num_workers=0, progress=False),
}


def make_config(preset: str = "fashion-mnist", **overrides) -> TrainConfig:
    """A preset with some fields replaced; unknown field names raise ``ValueError``."""
    return config_from_preset(PRESETS, preset, **overrides)


def config_from_preset(presets: dict, preset: str, what: str = "preset", **overrides):
    """``presets[preset]`` (a config dataclass with ``validate()``) with some fields replaced,
    validated. Raises ``ValueError`` for an unknown preset or field name; ``what`` names the
    argument in that message (default ``"preset"``)."""
    if preset not in presets:
        raise ValueError(f"{what} must be one of {sorted(presets)}, got {preset!r}")
    base = presets[preset]
    names = {f.name for f in fields(base)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {type(base).__name__} fields {unknown}; known: {sorted(names)}")
    return replace(base, **overrides).validate()


# --------------------------------------------------------------------------- distributed helpers

@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on
    CPUs. A plain ``python`` run is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(dist.get_rank(), world, local, device)


def _all_reduce(t: torch.Tensor, d: Dist, op=None) -> torch.Tensor:
    """Sum (or ``op``) a CPU tensor over processes, in place; NCCL needs it on the GPU."""
    if d.world_size > 1:
        on_device = t.to(d.device)
        dist.all_reduce(on_device, op=op or dist.ReduceOp.SUM)
        t.copy_(on_device.cpu())
    return t


def _sync_buffers(model: nn.Module, d: Dist) -> None:
    """Give every process rank 0's BatchNorm statistics. DDP only broadcasts them at the start of
    each forward, so after the last step they differ; evaluation and the end of the run need one
    model."""
    if d.world_size > 1:
        for buf in model.buffers():
            on_device = buf.data.to(d.device)
            dist.broadcast(on_device, 0)
            buf.data.copy_(on_device)


def _rng_state() -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _step_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves a partial file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise many types
        raise ValueError(f"cannot load checkpoint {path}: {e}") from None


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint kept."""


# --------------------------------------------------------------------------- model and evaluation

def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg``: fresh, or from ``init_from`` with a new classifier if the class
    count differs (fine-tuning), optionally with the body frozen."""
    kwargs = {"dropout": cfg.dropout}
    if cfg.width_mult is not None:
        kwargs["width_mult"] = cfg.width_mult
    if cfg.init_from:
        from mobilenets.models.modelfile import load_state_dict_checked, read_model_file

        config, state, _ = read_model_file(cfg.init_from)
        model = build_from_config({**config, "dropout": cfg.dropout})
        load_state_dict_checked(model, state, source=cfg.init_from)
        if getattr(model, "num_classes", num_classes) != num_classes:
            model.reset_classifier(num_classes)
    else:
        model = create_model(cfg.model, num_classes=num_classes, **kwargs)
    model.config["resolution"] = cfg.input_size
    if cfg.freeze_body:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.")
    return model


def _frozen_bn_eval(model: nn.Module, cfg: TrainConfig) -> None:
    # A frozen body keeps its BatchNorm statistics too (the paper's fine-grained recipe).
    if cfg.freeze_body:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@torch.no_grad()
def evaluate(model: nn.Module, dataset, transform: BatchTransform, batch_size: int = 256,
             d: Dist | None = None, class_names=None, channels_last: bool = False,
             progress: bool = False, num_workers: int = 0) -> dict:
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
        progress: Show a progress bar on the main process. Default False.
        num_workers: Image-decoding processes (ImageFolder data). Default 0.

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
    it = iterate_batches(dataset, batches, num_workers)
    if progress and d.main:
        from tqdm import tqdm

        it = tqdm(it, total=len(batches), desc="eval", unit="batch", leave=False)
    for images, labels in it:
        x = transform(images).to(d.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float().cpu()
        acc.update(logits, labels, F.cross_entropy(logits, labels, reduction="none"))
    model.train(was_training)
    if d.world_size > 1:
        acc.load_state_tensor(_all_reduce(acc.state_tensor(), d))
    return acc.result(class_names)


# --------------------------------------------------------------------------- training

def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then ``lr_decay`` per epoch."""
    epoch = step / steps_per_epoch
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    return cfg.lr_decay ** (epoch - cfg.warmup_epochs)


def _make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float):
    groups = param_groups(model, cfg.weight_decay, cfg.depthwise_weight_decay)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=lr, decay=cfg.rmsprop_decay, momentum=cfg.momentum, eps=cfg.eps)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)


class _Logger:
    """Per-epoch metrics as JSON lines (and TensorBoard when asked), main process only."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, enabled: bool):
        self.path, self.enabled, self.tb = out_dir / "metrics.jsonl", enabled, None
        if enabled and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("tensorboard=True needs the tensorboard package "
                                 "(pip install tensorboard)") from None
            self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train, evaluating each epoch; return the final evaluation and run facts.

    Args:
        cfg: The recipe (see ``TrainConfig``, ``make_config``).
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists (a killed run picks up
            at its last checkpoint; the rest of the run is the same as if never interrupted).

    Returns:
        ``{"val": evaluation dict, "steps": int, "epochs": float, "train_seconds": float,
        "images_per_second": float, "model_path": str, "history": per-epoch records,
        "model": the trained model (EMA weights when EMA is on)}``.

    Raises:
        NonFiniteLossError: if the loss becomes NaN or infinite (the last good checkpoint stays).
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
                     channels_last=cfg.channels_last)
        return {"val_top1": r["top1"], "val_top5": r["top5"], "val_loss": r["loss"]}

    run = fit(cfg, model, train_set, loss_fn, epoch_eval, d=d, resume=resume,
              on_fresh_start=lambda: write_labeled_subset(cfg.out_dir, labeled))
    final_model = run["model"]
    result = evaluate(final_model, val_set, eval_tf, d=d, class_names=class_names,
                      channels_last=cfg.channels_last)
    summary = {"top1": result["top1"], "top5": result["top5"], **run["summary"]}
    if labeled is not None:
        summary["labeled_images"] = labeled["count"]
        summary["labeled_subset_sha256"] = labeled["sha256"]
    model_path = write_run_outputs(cfg, final_model, summary, d, eval_result=result,
                                   extra={"class_names": class_names, "val_top1": result["top1"]})
    return {"val": result, "steps": run["steps"], "epochs": run["epochs"],
            "train_seconds": run["session_seconds"],
            "images_per_second": run["images_per_second"], "model_path": str(model_path),
            "history": run["history"], "model": final_model}


def fit(cfg: TrainConfig, model: nn.Module, train_set, loss_fn, epoch_eval=None,
        d: Dist | None = None, resume: bool = False, on_fresh_start=None) -> dict:
    """The training loop shared by ``train`` and ``distill.distill``: the paper's optimizer and
    schedule, seeded batched augmentation, atomic checkpoints, resume, per-epoch logging.

    Args:
        cfg: A ``TrainConfig`` (or a subclass such as ``distill.DistillConfig``); its optimiser,
            schedule, augmentation and run fields are used (not ``model`` or ``data``).
        model: The model to train, on the CPU; moved to the process's device here.
        train_set: Dataset yielding ``(uint8 image, target)``; targets are collated into a
            tensor per batch (class ids, or float vectors).
        loss_fn: ``loss_fn(net, x, targets, indices) -> scalar loss``: ``net`` the (possibly
            DDP-wrapped) model, ``x`` the augmented batch on the device, ``targets`` on the
            device, ``indices`` the batch's dataset indices (CPU ``LongTensor``).
        epoch_eval: ``epoch_eval(model) -> dict`` of numbers added to each epoch's record when
            ``cfg.eval_every_epoch`` (the model holds the EMA weights when EMA is on). Default:
            none.
        d: The process group. Default: ``init_distributed()``.
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        on_fresh_start: Called on the main process when a run starts afresh (after
            ``config.json`` is written), e.g. to record the run's data subset. Default: none.

    Returns:
        ``{"model": the trained model (EMA weights when EMA is on), "steps", "epochs",
        "history", "session_seconds", "images_per_second", "summary": {"steps", "epochs",
        "train_seconds" (all sessions), "images_per_second_last_session", "world_size"}}``.

    Raises:
        ValueError: if the batch is larger than the training set.
        NonFiniteLossError: if the loss becomes NaN or infinite (the last good checkpoint stays).
    """
    d = d or init_distributed()
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    train_tf = BatchTransform(cfg.input_size, True, cfg.min_crop_area, cfg.flip, cfg.eval_crop)
    model = model.to(d.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = cfg.lr * (d.world_size if cfg.scale_lr else 1)
    optimizer = _make_optimizer(model, cfg, lr)
    steps_per_epoch = len(train_set) // (cfg.batch_size * d.world_size)
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} x {d.world_size} processes is larger than "
                         f"the {len(train_set)} training images")
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, cfg))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    step, history, loss_sum = 0, [], torch.zeros(2)  # loss_sum: this epoch's (sum, count)

    prior_seconds = 0.0  # training time of earlier sessions of this run
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema and state.get("ema"):
            ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"][d.rank % len(state["rng"])])
        step, history, loss_sum = state["step"], state["history"], state["epoch_loss"]
        prior_seconds = state.get("train_seconds", 0.0)
        if d.main:
            print(f"resumed from {ckpt_path} at step {step}/{total_steps}", flush=True)
    elif d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        with atomic_path(out / "config.json") as tmp:
            tmp.write_text(json.dumps(asdict(cfg), indent=2))
        if on_fresh_start:
            on_fresh_start()

    net = model
    if cfg.compile:
        net = torch.compile(net)
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device] if d.device.type == "cuda" else None)
    logger = _Logger(out, cfg, d.main)

    def checkpoint() -> None:
        # Every rank's dropout RNG state, gathered so each resumes its own stream.
        rng = [_rng_state()]
        if d.world_size > 1:
            rng = [None] * d.world_size
            dist.all_gather_object(rng, _rng_state())
        if d.main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema else None,
                "rng": rng, "step": step, "history": history, "epoch_loss": loss_sum,
                "config": asdict(cfg), "train_seconds": prior_seconds + time.perf_counter() - t_start})

    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    bar = None
    if cfg.progress and d.main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, desc="train")
    t_start, images_seen = time.perf_counter(), 0
    net.train()
    _frozen_bn_eval(model, cfg)
    while step < total_steps:
        epoch = step // steps_per_epoch
        batches = epoch_batches(len(train_set), cfg.batch_size, epoch, cfg.seed, d.rank,
                                d.world_size)[step - epoch * steps_per_epoch: steps_per_epoch]
        for indices, (images, labels) in zip(batches, iterate_batches(train_set, batches,
                                                                       cfg.num_workers)):
            x = train_tf(images, _step_generator(cfg.seed, epoch, step, d.rank)).to(d.device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            labels = labels.to(d.device)
            with autocast:
                loss = loss_fn(net, x, labels, indices)
            finite = torch.tensor([float(torch.isfinite(loss).item())])
            if _all_reduce(finite, d, dist.ReduceOp.MIN if d.world_size > 1 else None).item() < 1:
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at step {step} (epoch {epoch}); stopped. The last "
                    f"good checkpoint is {ckpt_path if ckpt_path.exists() else 'not written yet'}; "
                    f"lower lr (now {cfg.lr}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema:
                ema.update(model)
            step += 1
            images_seen += len(labels) * d.world_size
            loss_sum += torch.tensor([loss.item() * len(labels), len(labels)])
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.4g}",
                                img_s=f"{images_seen / (time.perf_counter() - t_start):.0f}")
            if step % cfg.checkpoint_every == 0 or step == total_steps or step % steps_per_epoch == 0:
                if step % steps_per_epoch == 0 or step == total_steps:
                    record = _end_of_epoch(step, steps_per_epoch, loss_sum, d, model, ema,
                                           epoch_eval, cfg)
                    history.append(record)
                    logger.log(record)
                    loss_sum = torch.zeros(2)
                    if bar:
                        bar.write(f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f}"
                                  + (f", val top-1 {record['val_top1']:.2f}%" if "val_top1" in record else ""))
                checkpoint()
            if step >= total_steps:
                break
    if bar:
        bar.close()
    seconds = time.perf_counter() - t_start
    _sync_buffers(model, d)
    summary = {"steps": step, "epochs": step / steps_per_epoch,
               "train_seconds": round(prior_seconds + seconds, 1),
               "images_per_second_last_session": round(images_seen / max(seconds, 1e-9), 1),
               "world_size": d.world_size}
    return {"model": _with_ema(model, ema), "steps": step, "epochs": step / steps_per_epoch,
            "history": history, "session_seconds": seconds,
            "images_per_second": images_seen / max(seconds, 1e-9), "summary": summary}


def write_run_outputs(cfg: TrainConfig, model: nn.Module, summary: dict, d: Dist | None = None,
                      eval_result: dict | None = None, extra: dict | None = None) -> Path:
    """Write a finished run's ``model.safetensors``, ``summary.json`` and (given an evaluation)
    ``eval.json`` into ``cfg.out_dir``, atomically, on the main process.

    Args:
        cfg: The run's config; stored in the model file's metadata as ``train_config``.
        model: The trained model. A model built by this package (with a ``config`` dict) is
            saved with ``checkpoint.save_model``; any other module as a plain safetensors file
            of its state dict.
        summary: JSON-serialisable run facts for ``summary.json``.
        d: The process group; only its main process writes. Default: one process.
        eval_result: The final evaluation, written to ``eval.json``. Default: none.
        extra: More metadata for the model file (e.g. class names). Default: none.

    Returns:
        The path of ``model.safetensors``.
    """
    out = Path(cfg.out_dir)
    model_path = out / "model.safetensors"
    if d is not None and not d.main:
        return model_path
    model = model.to(memory_format=torch.contiguous_format).cpu()
    if isinstance(getattr(model, "config", None), dict):
        save_model(model, model_path, extra={**(extra or {}), "train_config": asdict(cfg)})
    else:
        from safetensors.torch import save_file

        with atomic_path(model_path) as tmp:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(tmp), metadata={"train_config": json.dumps(asdict(cfg))})
    if eval_result is not None:
        with atomic_path(out / "eval.json") as tmp:
            tmp.write_text(json.dumps(eval_result, indent=2))
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return model_path


# --------------------------------------------------------------------------- labeled subsets

def labeled_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded, class-balanced subset of the images whose labels are kept.

    From each class, ``round(fraction * class size)`` images are chosen by a permutation that
    depends only on ``seed`` and the class, so the same labels, fraction and seed always give
    the same subset (a labels-only baseline and a distilled student see the same labeled images).

    Args:
        labels: 1-D integer class ids of the whole training set.
        fraction: Share of each class to keep labeled, in (0, 1].
        seed: Selects the subset. Default 0.

    Returns:
        Sorted ``LongTensor`` of the labeled images' indices.

    Raises:
        ValueError: if ``fraction`` is outside (0, 1] or ``labels`` is not 1-D integer.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction!r}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be 1-D class ids, got {labels.dtype} {tuple(labels.shape)}")
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(c))
        keep = round(fraction * len(members))
        chosen.append(members[torch.randperm(len(members), generator=g)[:keep]])
    return torch.sort(torch.cat(chosen)).values


def dataset_labels(dataset) -> torch.Tensor:
    """The class id of every item of a ``TensorImageDataset`` or ``ImageFolderDataset``."""
    if hasattr(dataset, "labels"):
        return dataset.labels
    if hasattr(dataset, "samples"):
        return torch.tensor([label for _, label in dataset.samples], dtype=torch.long)
    raise ValueError(f"cannot read the labels of a {type(dataset).__name__}: label_fraction "
                     "needs a TensorImageDataset or an ImageFolderDataset")


def _subset(dataset, indices: torch.Tensor) -> None:
    if hasattr(dataset, "images"):
        dataset.images, dataset.labels = dataset.images[indices], dataset.labels[indices]
    else:
        dataset.samples = [dataset.samples[i] for i in indices.tolist()]


def _unlabel(dataset, labeled: torch.Tensor) -> None:
    """Set the label of every image outside ``labeled`` to -1 (unlabeled), in place."""
    mask = torch.ones(len(dataset), dtype=torch.bool)
    mask[labeled] = False
    if hasattr(dataset, "labels"):
        dataset.labels = torch.where(mask, torch.full_like(dataset.labels, -1), dataset.labels)
    else:
        dataset.samples = [(p, -1 if m else label) for (p, label), m in zip(dataset.samples, mask.tolist())]


def open_splits(cfg: TrainConfig, drop_unlabeled: bool = True):
    """Open ``cfg.data``'s training and validation splits, apply ``limit_train``/``limit_val``
    and hold back labels when ``cfg.label_fraction < 1``.

    Args:
        cfg: The run's config (``data``, ``eval_crop``, ``skip_bad_files``, ``limit_*``,
            ``label_fraction``, ``label_seed``, ``input_size``).
        drop_unlabeled: True (``train``): keep only the labeled images. False (distillation):
            keep every image, the held-back ones with label -1.

    Returns:
        ``(train_set, val_set, labeled)``: ``labeled`` is None without a label fraction, else
        ``{"fraction", "seed", "num_images", "count", "sha256", "indices"}`` describing the
        labeled subset (indices into the limited training split).
    """
    import hashlib

    res = cfg.input_size
    train_set = open_dataset(cfg.data, "train", res, cfg.eval_crop, cfg.skip_bad_files)
    val_set = open_dataset(cfg.data, "val", res, cfg.eval_crop, cfg.skip_bad_files,
                           class_names=train_set.class_names)
    for ds, limit in ((train_set, cfg.limit_train), (val_set, cfg.limit_val)):
        if limit:
            _limit(ds, limit)
    fraction = getattr(cfg, "label_fraction", 1.0)
    if fraction >= 1:
        return train_set, val_set, None
    num_images = len(train_set)
    indices = labeled_subset(dataset_labels(train_set), fraction, cfg.label_seed)
    labeled = {"fraction": fraction, "seed": cfg.label_seed, "num_images": num_images,
               "count": len(indices),
               "sha256": hashlib.sha256(indices.numpy().astype("<i8").tobytes()).hexdigest(),
               "indices": indices.tolist()}
    (_subset if drop_unlabeled else _unlabel)(train_set, indices)
    return train_set, val_set, labeled


def write_labeled_subset(out_dir: str | os.PathLike, labeled: dict | None) -> None:
    """Record a run's labeled subset as ``out_dir/labeled_subset.json`` (atomic); no-op for None."""
    if labeled is not None:
        with atomic_path(Path(out_dir) / "labeled_subset.json") as tmp:
            tmp.write_text(json.dumps(labeled))


def _with_ema(model: nn.Module, ema: EMA | None) -> nn.Module:
    """The model to evaluate and save: a copy holding the EMA weights when EMA is on."""
    if ema is None:
        return model
    copy_ = copy.deepcopy(model)
    copy_.load_state_dict(ema.state)
    return copy_


def _limit(dataset, n: int) -> None:
    if hasattr(dataset, "images"):
        dataset.images, dataset.labels = dataset.images[:n], dataset.labels[:n]
    else:
        dataset.samples = dataset.samples[:n]


def _end_of_epoch(step, steps_per_epoch, loss_sum, d, model, ema, epoch_eval, cfg) -> dict:
    _sync_buffers(model, d)
    loss_sum = _all_reduce(loss_sum.clone(), d)
    record = {"epoch": round(step / steps_per_epoch, 4), "step": step,
              "train_loss": (loss_sum[0] / loss_sum[1].clamp(min=1)).item()}
    if cfg.eval_every_epoch and epoch_eval is not None:
        record.update(epoch_eval(_with_ema(model, ema)))
    model.train()
    _frozen_bn_eval(model, cfg)
    return record
