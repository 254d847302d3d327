"""The one training loop: every task (classification, distillation, detection, segmentation, the
face and geolocation models) trains through ``fit``, passing its model, batches, loss and
evaluation, as torchvision's reference scripts pass them to ``train_one_epoch``.

A run lives in one folder (``cfg.out_dir``), the same for every task: ``config.json``,
``checkpoint.pt`` (everything needed to resume, written atomically every ``checkpoint_every`` steps
and at each epoch end), ``metrics.jsonl`` (one line per epoch), and at the end ``summary.json``,
``eval.json``, the model file and ``curves.png`` (``write_run_outputs``). The rules, once for all
tasks:

- **Resume**: ``resume=True`` continues from ``checkpoint.pt`` and reaches the same weights as an
  uninterrupted run: every random stream is explicit and a pure function of (seed, epoch, step,
  rank): the data order, every augmentation (``step_generator``) and dropout (the global
  generator is reseeded before each step, ``seed_step``), so nothing a data loader, an
  evaluation or a library draws can shift them. A folder that already holds a run is refused
  without ``resume``, and a checkpoint written with other settings, or for another model or class
  count, is refused with them. Where the folder lives is not a setting: a run folder copied or
  moved elsewhere resumes there (``engine.runfolder``).
- **Ownership**: a run folder belongs to one process (``runfolder.lock_run_folder``: ``run.lock``
  holds an advisory lock and the owner's pid); a second run on the same folder fails at once,
  naming the owner. The kernel drops the lock when its owner dies, even by kill -9, so a stale
  lock of a dead process never blocks.
- **Memory**: a run whose batch cannot fit in memory (``cost.memory.estimate_memory``) is refused
  before its first step.
- **Divergence**: training stops, keeping the last good checkpoint, at the first loss (the mean
  over processes) that is NaN or infinite, or more than ``DIVERGENCE_FACTOR`` times the run's
  first loss (at least 1): a loss that a working run never reaches, and a blown-up one always
  does, on its way to infinity.
- **Distributed**: under torchrun every task trains with DDP (``engine.distributed``); each
  process reads its own share of every epoch's permutation.

``fit`` returns a ``RunResult`` (``engine.results``); a task evaluates its model and hands that
record to ``write_run_outputs``, which writes the folder's last files and returns it completed.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from mobilenets.engine.config import RunConfig
from mobilenets.engine.data import epoch_batches, iterate_batches
from mobilenets.engine.distributed import Dist, all_reduce, init_distributed, sync_buffers
from mobilenets.engine.optim import EMA, lr_factor, make_optimizer
from mobilenets.engine.progress import RunLog
from mobilenets.engine.results import RunResult
from mobilenets.engine.runfolder import (check_resumable, load_checkpoint, prepare_run_folder,
                                         release_run_folder, save_checkpoint)
from mobilenets.fileio import atomic_path, write_json
from mobilenets.models.config import ModelConfig
from mobilenets.models.modelfile import load_state_dict_checked, save_model

#: A loss above this many times the run's first loss (or 1, if larger) means training diverged.
#: Cross-entropy starts at ln(classes) and a working run stays below it (detection and
#: segmentation losses fall too); a learning rate too high for the model multiplies it by
#: thousands within steps (the smoke presets at lr 1e9: x1e9 after one step).
DIVERGENCE_FACTOR = 100.0


class DivergedError(RuntimeError):
    """Training diverged (``check_loss``): stopped, the last good checkpoint kept."""


class NonFiniteLossError(DivergedError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint kept."""


# --------------------------------------------------------------------------- random streams

#: The random streams of a step, each derived from (seed, epoch, step, rank) and its own key.
AUGMENT_STREAM, DROPOUT_STREAM = 0, 1


def step_seed(seed: int, epoch: int, step: int, rank: int = 0, stream: int = AUGMENT_STREAM
              ) -> int:
    """The seed of one step's ``stream``: a pure function of its arguments."""
    return int(np.random.SeedSequence([seed, epoch, step, rank, stream]).generate_state(1)[0])


def step_generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one step's augmentation: a pure function of (seed, epoch, step, rank)."""
    return torch.Generator().manual_seed(step_seed(seed, epoch, step, rank, AUGMENT_STREAM))


def seed_step(seed: int, epoch: int, step: int, rank: int = 0) -> None:
    """Reseed the global generator (CPU and CUDA) that dropout draws from, for one step: its
    stream then depends on nothing drawn before the step, so a resumed run repeats it exactly
    (nothing needs saving)."""
    torch.manual_seed(step_seed(seed, epoch, step, rank, DROPOUT_STREAM))


# --------------------------------------------------------------------------- the loop's checks

def check_loss(loss: float, first: float | None, step: int, epoch: int, checkpoint: Path,
               lr: float) -> float:
    """Stop a diverged run: raise if ``loss`` is NaN or infinite, or more than
    ``DIVERGENCE_FACTOR`` times ``first`` (the run's first loss; None at its first step) or 1,
    whichever is larger. ``step``, ``epoch``, ``checkpoint`` (kept as it is) and ``lr`` are for
    the message. Returns the run's first loss.

    Raises:
        NonFiniteLossError: for a NaN or infinite loss.
        DivergedError: for a loss far above the first.
    """
    def advice() -> str:
        kept = (f"the last good checkpoint is {checkpoint}" if checkpoint.exists() else
                "no checkpoint was written yet")
        return f"stopped, {kept}; lower lr (now {lr:g}) or check the data"
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"loss became {loss} at step {step} (epoch {epoch}): {advice()}")
    if first is None:
        return loss
    if loss > DIVERGENCE_FACTOR * max(first, 1.0):
        raise DivergedError(f"loss became {loss:.3g} at step {step} (epoch {epoch}), over "
                            f"{DIVERGENCE_FACTOR:g} times the first step's {first:.3g}: "
                            f"training diverged; {advice()}")
    return first


def check_batch_fits(cfg: RunConfig, model: nn.Module) -> None:
    """Refuse a training batch that cannot fit in memory, before the first step allocates it
    (``cost.memory.estimate_memory`` at ``cfg``'s input size and batch size).

    Raises:
        ValueError: naming the resolution, the batch size and the memory needed.
    """
    from mobilenets.cost.memory import check_memory
    from mobilenets.models.registry import kind_of

    config = getattr(model, "config", None)  # None for a module of another library
    ours = isinstance(config, ModelConfig)
    res = getattr(cfg, "input_size", None) or getattr(cfg, "resolution", None)
    if isinstance(res, int) and not (ours and kind_of(config.arch) == "detector"):  # they resize
        check_memory(model, (config.in_channels if ours else 3, res, res), cfg.batch_size,
                     training=True)


def move_to(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Tensors (in lists, tuples and dicts) moved to ``device``; 4-D ones channels-last if asked."""
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device)
        if channels_last and obj.ndim == 4:
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: move_to(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device, channels_last) for v in obj)
    return obj


def _batch_size(targets: Any) -> int:
    return len(targets) if isinstance(targets, (list, tuple, torch.Tensor)) else 1


def with_ema(model: nn.Module, ema: EMA | None) -> nn.Module:
    """The model to evaluate and save: a copy holding the EMA weights when EMA is on."""
    if ema is None:
        return model
    copy_ = copy.deepcopy(model)
    copy_.load_state_dict(ema.state)
    return copy_


# --------------------------------------------------------------------------- the loop

def fit(cfg: RunConfig, model: nn.Module, train_set, loss_fn: Callable, epoch_eval=None, *,
        augment: Callable, collate: Callable | None = None, num_workers: int = 0,
        d: Dist | None = None, resume: bool = False, on_fresh_start=None,
        module_in_train: Callable[[nn.Module], None] | None = None,
        desc: str = "train") -> RunResult:
    """Train ``model`` with ``cfg``'s optimizer and schedule: seeded batches and augmentation,
    atomic checkpoints, exact resume, per-epoch evaluation and logging, DDP under torchrun.

    Args:
        cfg: A ``RunConfig`` (or subclass); its optimizer, schedule and run fields are used.
        model: The model to train, on the CPU; moved to the process's device here.
        train_set: A dataset: ``len()``, and items read in batches by ``data.iterate_batches``.
        loss_fn: ``loss_fn(net, inputs, targets, indices) -> loss``: ``net`` the (possibly
            DDP-wrapped) model, ``inputs`` and ``targets`` from ``augment`` on the device,
            ``indices`` the batch's dataset indices (CPU ``LongTensor``). The loss is a scalar
            tensor, or a dict of them (summed; each part is logged).
        epoch_eval: ``epoch_eval(model) -> dict`` of numbers added to each epoch's record when
            ``cfg.eval_every_epoch`` (the model holds the EMA weights when EMA is on). Default:
            none.
        augment: ``augment(raw_batch, generator) -> (inputs, targets)`` on the CPU: the task's
            augmentation of one collated batch, drawing only from ``generator``.
        collate: How a batch of dataset items is collated. Default: torch's.
        num_workers: Processes reading dataset items (ImageFolder decoding). Default 0.
        d: The process group. Default: ``init_distributed()``.
        resume: Continue from ``cfg.out_dir/checkpoint.pt`` if it exists.
        on_fresh_start: Called on the main process when a run starts afresh (after
            ``config.json`` is written), e.g. to record the run's data subset. Default: none.
        module_in_train: Called with the model after each switch to training mode (e.g. to keep
            a frozen body's BatchNorm in eval mode). Default: none.
        desc: The progress bar's label. Default ``"train"``.

    Returns:
        A ``RunResult``: the trained model (EMA weights when EMA is on), ``history``,
        ``steps``, ``epochs``, ``session_seconds``, ``images_per_second`` and ``summary``
        (``steps``, ``epochs``, ``train_seconds`` (all sessions),
        ``images_per_second_last_session``, ``world_size``); no metrics or model file yet
        (``write_run_outputs`` adds them).

    Raises:
        ValueError: for a batch larger than the training set or one that cannot fit in memory,
            a folder holding another run or owned by another process, or a checkpoint that is
            not one, or written with other settings or for another model.
        DivergedError: if the loss becomes NaN or infinite (``NonFiniteLossError``) or far
            above its first value (``check_loss``); the last good checkpoint stays.
    """
    d = d or init_distributed()
    out = prepare_run_folder(cfg, resume, d)
    try:
        run = TrainingRun(cfg, model, train_set, d, out)
        run.start(resume, on_fresh_start)
        return run.train(loss_fn, epoch_eval=epoch_eval, augment=augment, collate=collate,
                         num_workers=num_workers, module_in_train=module_in_train, desc=desc)
    except BaseException:
        if d.main:
            release_run_folder(out)
        raise


class TrainingRun:
    """One ``fit``, as named steps over the state they share: ``start`` (resume from the
    checkpoint, or begin the folder afresh), ``train`` (the epochs: ``train_step`` per batch,
    ``end_epoch`` at each epoch's end, ``checkpoint`` every ``checkpoint_every`` steps) and
    ``result``.

    Args:
        cfg: The run's config (optimizer, schedule, run fields).
        model: The model to train; moved to ``d.device`` (channels-last if ``cfg`` asks).
        train_set: The training dataset.
        d: The process group.
        out: The run folder, already owned (``runfolder.prepare_run_folder``).

    Raises:
        ValueError: for a batch that cannot fit in memory or is larger than the training set.
    """

    def __init__(self, cfg: RunConfig, model: nn.Module, train_set, d: Dist, out: Path):
        check_batch_fits(cfg, model)
        self.cfg, self.train_set, self.d, self.out = cfg, train_set, d, out
        self.ckpt_path = out / "checkpoint.pt"
        model = model.to(d.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = make_optimizer(model, cfg, cfg.lr * (d.world_size if cfg.scale_lr else 1))
        self.steps_per_epoch = len(train_set) // (cfg.batch_size * d.world_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size {cfg.batch_size} x {d.world_size} processes is larger "
                             f"than the {len(train_set)} training images")
        self.total_steps = max(1, round(cfg.epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.steps_per_epoch, self.total_steps, cfg))
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
        self.step, self.history = 0, []
        self.loss_sum = torch.zeros(2)  # this epoch's (sum, count)
        self.first_loss = None  # the run's first loss (mean over processes): divergence's scale
        self.prior_seconds = 0.0  # training time of earlier sessions of this run
        self.t_start, self.images_seen = time.perf_counter(), 0  # this session's

    def start(self, resume: bool, on_fresh_start: Callable[[], None] | None = None) -> None:
        """Continue from ``checkpoint.pt`` (``resume`` and one exists), or begin afresh: an old
        ``metrics.jsonl`` removed, ``config.json`` written, ``on_fresh_start`` called (main
        process only).

        Raises:
            ValueError: for a checkpoint that is not one, or was written with other settings or
                for another model or class count.
        """
        cfg, d, path = self.cfg, self.d, self.ckpt_path
        if resume and path.is_file():
            state = load_checkpoint(path)
            check_resumable(state["config"], cfg, path)
            try:
                load_state_dict_checked(self.model, state["model"], f"checkpoint {path}")
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                if self.ema and state.get("ema"):
                    self.ema.load_state_dict(state["ema"])
                self.step, self.history = state["step"], state["history"]
                self.loss_sum = state["epoch_loss"]
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"cannot resume from {path}: it holds another model or class "
                                 f"count than this run builds ({' '.join(str(e).split())[:300]});"
                                 " resume with the same model and data, or start another --out"
                                 ) from None
            self.prior_seconds = state.get("train_seconds", 0.0)
            self.first_loss = state.get("first_loss")
            if d.main:
                print(f"resumed from {path} at step {self.step}/{self.total_steps}", flush=True)
        elif d.main:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            write_json(self.out / "config.json", asdict(cfg))
            if on_fresh_start:
                on_fresh_start()

    def seconds(self) -> float:
        """Training time of the whole run so far, all sessions."""
        return self.prior_seconds + time.perf_counter() - self.t_start

    def checkpoint(self) -> None:
        """Write everything resuming needs to ``checkpoint.pt`` (main process), atomically. No
        RNG state: every stream is a function of (seed, epoch, step, rank)."""
        if self.d.main:
            ema = self.ema
            save_checkpoint(self.ckpt_path, {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "ema": ema.state_dict() if ema else None,
                "step": self.step, "history": self.history, "epoch_loss": self.loss_sum,
                "config": asdict(self.cfg), "first_loss": self.first_loss,
                "train_seconds": self.seconds()})

    def train_step(self, net: nn.Module, loss_fn: Callable, indices, inputs, targets, epoch: int,
                   autocast) -> tuple[dict, float]:
        """One optimizer step on one augmented batch (``inputs``, ``targets`` on the CPU).

        Returns:
            ``(losses, lr)``: the loss and its parts (numbers), and the learning rate the step
            used.

        Raises:
            DivergedError: from ``check_loss``.
        """
        cfg, d = self.cfg, self.d
        seed_step(cfg.seed, epoch, self.step, d.rank)
        inputs = move_to(inputs, d.device, cfg.channels_last)
        targets = move_to(targets, d.device)
        with autocast:
            out_loss = loss_fn(net, inputs, targets, indices)
        parts = out_loss if isinstance(out_loss, dict) else {}
        loss = sum(parts.values()) if parts else out_loss
        # The mean over processes (NaN and infinity spread): every process stops together.
        mean = all_reduce(torch.tensor([loss.item()], dtype=torch.float64), d) / d.world_size
        self.first_loss = check_loss(mean.item(), self.first_loss, self.step, epoch,
                                     self.ckpt_path, cfg.lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        lr_now = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        n = _batch_size(targets)
        self.images_seen += n * d.world_size
        self.loss_sum += torch.tensor([loss.item() * n, n])
        return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}, lr_now

    def end_epoch(self, lr_now: float, epoch_eval: Callable | None,
                  train_mode: Callable[[], None]) -> dict:
        """Close an epoch: BatchNorm statistics made equal across processes, the epoch's record
        (mean training loss, and ``epoch_eval``'s numbers when ``cfg.eval_every_epoch``, after
        which ``train_mode`` puts the model back in training mode) added to the history and
        returned."""
        sync_buffers(self.model, self.d)
        sums = all_reduce(self.loss_sum.clone(), self.d)
        record = {"epoch": round(self.step / self.steps_per_epoch, 4), "step": self.step,
                  "lr": lr_now, "train_loss": (sums[0] / sums[1].clamp(min=1)).item(),
                  "seconds": round(self.seconds(), 1)}
        if self.cfg.eval_every_epoch and epoch_eval is not None:
            t_eval = time.perf_counter()
            record.update(epoch_eval(with_ema(self.model, self.ema)))
            # "seconds" counts evaluations; time-to-accuracy subtracts them.
            record["eval_seconds"] = round(time.perf_counter() - t_eval, 2)
            train_mode()
        self.history.append(record)
        self.loss_sum = torch.zeros(2)
        return record

    def train(self, loss_fn: Callable, *, augment: Callable, epoch_eval: Callable | None = None,
              collate: Callable | None = None, num_workers: int = 0,
              module_in_train: Callable[[nn.Module], None] | None = None,
              desc: str = "train") -> RunResult:
        """Train from ``self.step`` to the run's last step (``fit``'s arguments); return
        ``result()``."""
        cfg, d = self.cfg, self.d
        net = self.model
        if getattr(cfg, "compile", False):
            net = torch.compile(net)
        if d.world_size > 1:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[d.device] if d.device.type == "cuda" else None)
        log = RunLog(self.out, cfg, d.main, self.total_steps, self.step, desc)

        def train_mode() -> None:
            net.train()
            if module_in_train:
                module_in_train(self.model)

        autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.amp)
        self.t_start, self.images_seen = time.perf_counter(), 0
        train_mode()
        while self.step < self.total_steps:
            epoch = self.step // self.steps_per_epoch
            batches = epoch_batches(len(self.train_set), cfg.batch_size, epoch, cfg.seed, d.rank,
                                    d.world_size)[self.step - epoch * self.steps_per_epoch:
                                                  self.steps_per_epoch]
            loaded = iterate_batches(self.train_set, batches, num_workers, collate)
            for indices, raw in zip(batches, loaded):
                inputs, targets = augment(raw, step_generator(cfg.seed, epoch, self.step, d.rank))
                losses, lr_now = self.train_step(net, loss_fn, indices, inputs, targets, epoch,
                                                    autocast)
                log.step(self.step, epoch, losses, lr_now,
                         self.images_seen / max(time.perf_counter() - self.t_start, 1e-9))
                end_of_epoch = (self.step % self.steps_per_epoch == 0
                                or self.step == self.total_steps)
                if end_of_epoch:
                    log.epoch(self.end_epoch(lr_now, epoch_eval, train_mode), self.history)
                if end_of_epoch or self.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
                if self.step >= self.total_steps:
                    break
        log.close()
        return self.result()

    def result(self) -> RunResult:
        """The run as a ``RunResult`` (BatchNorm statistics made equal across processes first)."""
        seconds = time.perf_counter() - self.t_start
        sync_buffers(self.model, self.d)
        epochs = self.step / self.steps_per_epoch
        summary = {"steps": self.step, "epochs": epochs,
                   # to the millisecond: a tiny run (a few steps) would round to 0.0 seconds
                   "train_seconds": round(self.prior_seconds + seconds, 3),
                   "images_per_second_last_session": round(self.images_seen / max(seconds, 1e-9),
                                                           1),
                   "world_size": self.d.world_size}
        return RunResult(model=with_ema(self.model, self.ema), out_dir=str(self.cfg.out_dir),
                         history=self.history, steps=self.step, epochs=epochs,
                         session_seconds=seconds,
                         images_per_second=self.images_seen / max(seconds, 1e-9), summary=summary)


# --------------------------------------------------------------------------- the run's outputs

def write_run_outputs(cfg: RunConfig, run: RunResult, summary: dict, d: Dist | None = None, *,
                      metrics: dict | None = None, evaluation: dict | None = None,
                      metadata: dict | None = None) -> RunResult:
    """Write a finished run's ``model.safetensors``, ``summary.json``, (given an evaluation)
    ``eval.json`` and its curves, ``curves.png`` (``write_curves``), into ``cfg.out_dir``,
    atomically, on the main process.

    Args:
        cfg: The run's config; stored in the model file's metadata as ``train_config``.
        run: ``fit``'s result; its ``model`` is saved. One built by this package (it has a
            ``config`` dict) is saved with ``modelfile.save_model``; any other module as a plain
            safetensors file of its state dict, with the run's config in its metadata.
        summary: JSON-serialisable run facts for ``summary.json`` (``run.summary`` and the
            task's own).
        d: The process group; only its main process writes. Default: one process.
        metrics: The task's final numbers (``RunResult.metrics``). Default: none.
        evaluation: The final evaluation, written to ``eval.json``. Default: none.
        metadata: More metadata for the model file (e.g. class names). Default: none.

    Returns:
        ``run`` completed: ``summary``, ``metrics``, ``evaluation`` and ``model_path`` set.
    """
    out = Path(cfg.out_dir)
    model_path = out / "model.safetensors"
    if d is None or d.main:
        try:
            _write_run_outputs(cfg, run.model, summary, evaluation, metadata, model_path)
        finally:
            release_run_folder(out)  # the run is over
    return replace(run, summary=summary, metrics=dict(metrics or {}), evaluation=evaluation,
                   model_path=str(model_path))


def _write_run_outputs(cfg, model, summary, evaluation, metadata, model_path) -> None:
    out = model_path.parent
    model = model.to(memory_format=torch.contiguous_format).cpu()
    if isinstance(getattr(model, "config", None), ModelConfig):
        save_model(model, model_path, extra={**(metadata or {}), "train_config": asdict(cfg)})
    else:
        from safetensors.torch import save_file

        with atomic_path(model_path) as tmp:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(tmp), metadata={"train_config": json.dumps(asdict(cfg))})
    if evaluation is not None:
        write_json(out / "eval.json", evaluation)
    write_json(out / "summary.json", summary)
    write_curves(out)


def write_curves(out_dir: str | os.PathLike) -> Path | None:
    """Draw a run's ``metrics.jsonl`` (its epochs' losses and metrics) as ``curves.png`` beside
    it; None when no epoch was recorded."""
    from mobilenets.engine.plots import plot_training_curves

    metrics = Path(out_dir) / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines()
               if line.strip()] if metrics.is_file() else []
    if not history:
        return None
    return plot_training_curves(history, Path(out_dir) / "curves.png",
                                title=f"{Path(out_dir).name}: training curves")
