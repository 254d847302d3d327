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
  moved elsewhere resumes there.
- **Ownership**: a run folder belongs to one process (``lock_run_folder``: ``run.lock`` holds an
  advisory lock and the owner's pid); a second run on the same folder fails at once, naming the
  owner. The kernel drops the lock when its owner dies, even by kill -9, so a stale lock of a dead
  process never blocks.
- **Memory**: a run whose batch cannot fit in memory (``cost.memory.estimate_memory``) is refused
  before its first step.
- **Divergence**: training stops, keeping the last good checkpoint, at the first loss (the mean
  over processes) that is NaN or infinite, or more than ``DIVERGENCE_FACTOR`` times the run's
  first loss (at least 1): a loss that a working run never reaches, and a blown-up one always
  does, on its way to infinity.
- **Distributed**: under torchrun every task trains with DDP; each process reads its own share of
  every epoch's permutation.
"""
from __future__ import annotations

import copy
import errno
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mobilenets.engine.config import RunConfig
from mobilenets.engine.data import epoch_batches, iterate_batches
from mobilenets.engine.optim import EMA, lr_factor, make_optimizer
from mobilenets.engine.progress import RunLog
from mobilenets.fileio import atomic_path, safe_torch_load, write_json
from mobilenets.models.config import ModelConfig
from mobilenets.models.modelfile import load_state_dict_checked, save_model

#: Fields that may differ between a run and its resumption: they change how a run is watched, or
#: where its folder lives, not what it computes.
RUN_ONLY_FIELDS = frozenset({"progress", "log_every", "checkpoint_every", "num_workers",
                             "tensorboard", "eval_every_epoch", "limit_val", "val_data",
                             "val_images", "eval_batch_size", "teacher_cache", "out_dir"})
#: What a training checkpoint holds (``fit`` writes every one).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "history", "epoch_loss", "config")
#: A loss above this many times the run's first loss (or 1, if larger) means training diverged.
#: Cross-entropy starts at ln(classes) and a working run stays below it (detection and
#: segmentation losses fall too); a learning rate too high for the model multiplies it by
#: thousands within steps (the smoke presets at lr 1e9: x1e9 after one step).
DIVERGENCE_FACTOR = 100.0


class DivergedError(RuntimeError):
    """Training diverged (``check_loss``): stopped, the last good checkpoint kept."""


class NonFiniteLossError(DivergedError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint kept."""


# --------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    """This process's place in the process group (a world of one without torchrun)."""

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


def all_reduce(t: torch.Tensor, d: Dist, op=None) -> torch.Tensor:
    """Sum (or ``op``) a CPU tensor over processes, in place; NCCL needs it on the GPU."""
    if d.world_size > 1:
        on_device = t.to(d.device)
        dist.all_reduce(on_device, op=op or dist.ReduceOp.SUM)
        t.copy_(on_device.cpu())
    return t


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Give every process rank 0's BatchNorm statistics. DDP only broadcasts them at the start of
    each forward, so after the last step they differ; evaluation and the end of the run need one
    model."""
    if d.world_size > 1:
        for buf in model.buffers():
            on_device = buf.data.to(d.device)
            dist.broadcast(on_device, 0)
            buf.data.copy_(on_device)


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


# --------------------------------------------------------------------------- run folder ownership

#: Run folders this process owns: {resolved folder: open lock file}.
_OWNED: dict[Path, Any] = {}


def lock_run_folder(out: Path) -> None:
    """Make this process the owner of the run folder ``out`` (created if missing).

    ``out/run.lock`` holds an advisory lock (``fcntl.lockf``) for as long as the owner lives, and
    its pid for the message; taking it again from the owning process is a no-op.

    Raises:
        ValueError: naming the folder and the owning process if another one holds it, or if
            ``out`` is a file.
    """
    import fcntl

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    key = out.resolve()
    if key in _OWNED:
        return
    f = open(out / "run.lock", "a+")
    try:
        # A POSIX record lock: held by this process only, so the data-loading workers it forks
        # (which may outlive a kill -9 of their parent by seconds) never hold the folder.
        fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise ValueError(f"--out {out} is in use by {owner}: wait for that run to end, or "
                         "choose another --out") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {os.uname().nodename} "
                f"(started {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        f.flush()
    except OSError as e:  # a full disk: name the file
        f.close()
        raise OSError(e.errno, e.strerror, str(out / "run.lock")) from None
    _OWNED[key] = f


def release_run_folder(out: Path) -> None:
    """Give up the ownership taken by ``lock_run_folder`` (no-op if not owned). The file stays:
    removing it could let two processes lock two different files of the same name."""
    f = _OWNED.pop(Path(out).resolve(), None)
    if f is not None:
        f.close()  # closing the file releases the lock


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves a partial file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint without unpickling arbitrary objects (``weights_only=True``).

    Returns:
        The dict ``fit`` wrote: every one of ``CHECKPOINT_KEYS``, and more.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is damaged, holds Python objects that a safe load
            refuses (not a checkpoint of ours, and possibly unsafe to open), or is not a training
            checkpoint (not a dict, or without the keys ``fit`` writes, the run config included).
    """
    state = safe_torch_load(path, "checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training checkpoint: it holds a "
                         f"{type(state).__name__}, not the dict of weights, optimizer state and "
                         "run config that training writes; resume another run, or start "
                         "another --out")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing and missing != ["config"]:
        raise ValueError(f"{path} is not a training checkpoint: it lacks "
                         f"{', '.join(missing)}; resume another run, or start another --out")
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{path} holds no run config (the settings it was trained with), so "
                         "whether it continues this run cannot be checked; it was not written by "
                         "mobilenets' training loop: start another --out")
    return state


def check_resumable(saved: dict, cfg: RunConfig, path: Path) -> None:
    """Refuse to resume a checkpoint written with other settings (``RUN_ONLY_FIELDS`` aside: a
    run folder resumes wherever it was copied or moved).

    Raises:
        ValueError: naming the checkpoint and the fields that differ.
    """
    now = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as the checkpoint holds them
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in RUN_ONLY_FIELDS and saved.get(k) != now.get(k))
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
        raise ValueError(f"{path} was written with other settings ({shown}); resume with the "
                         "same ones, or start another --out")


# --------------------------------------------------------------------------- the loop

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


def prepare_run_folder(cfg: RunConfig, resume: bool, d: Dist) -> Path:
    """The run folder, checked and owned: a folder that already holds a run (a checkpoint or a
    model file) is refused unless ``resume``; an ``out_dir`` that is a file, or that another
    process is training in (``lock_run_folder``), is refused.

    Raises:
        ValueError: naming ``out_dir`` (and the owner).
    """
    out = Path(cfg.out_dir)
    error = None
    if d.main:  # the main process owns the folder for the whole job
        try:
            lock_run_folder(out)
        except ValueError as e:
            error = str(e)
    if d.world_size > 1:
        shared = [error if d.main else None]
        dist.broadcast_object_list(shared, 0)
        error = shared[0]
    if error:
        raise ValueError(error)
    taken = [p.name for p in (out / "checkpoint.pt", out / "model.safetensors") if p.exists()]
    if taken and not resume:
        if d.main:
            release_run_folder(out)
        raise ValueError(f"--out {out} already holds a run ({', '.join(taken)}): pass --resume "
                         "to continue it, or choose another --out")
    return out


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


def fit(cfg: RunConfig, model: nn.Module, train_set, loss_fn: Callable, epoch_eval=None, *,
        augment: Callable, collate: Callable | None = None, num_workers: int = 0,
        d: Dist | None = None, resume: bool = False, on_fresh_start=None,
        module_in_train: Callable[[nn.Module], None] | None = None, desc: str = "train") -> dict:
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
        ``{"model": the trained model (EMA weights when EMA is on), "steps", "epochs",
        "history", "session_seconds", "images_per_second", "summary": {"steps", "epochs",
        "train_seconds" (all sessions), "images_per_second_last_session", "world_size"}}``.

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
        return _fit(cfg, model, train_set, loss_fn, epoch_eval, augment, collate, num_workers, d,
                    resume, on_fresh_start, module_in_train, desc, out)
    except BaseException:
        if d.main:
            release_run_folder(out)
        raise


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


def _fit(cfg, model, train_set, loss_fn, epoch_eval, augment, collate, num_workers, d, resume,
         on_fresh_start, module_in_train, desc, out) -> dict:
    ckpt_path = out / "checkpoint.pt"
    check_batch_fits(cfg, model)
    model = model.to(d.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = cfg.lr * (d.world_size if cfg.scale_lr else 1)
    optimizer = make_optimizer(model, cfg, lr)
    steps_per_epoch = len(train_set) // (cfg.batch_size * d.world_size)
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} x {d.world_size} processes is larger than "
                         f"the {len(train_set)} training images")
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, total_steps, cfg))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    step, history, loss_sum = 0, [], torch.zeros(2)  # loss_sum: this epoch's (sum, count)
    first_loss = None  # the run's first loss (mean over processes): divergence is measured by it

    prior_seconds = 0.0  # training time of earlier sessions of this run
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        check_resumable(state["config"], cfg, ckpt_path)
        try:
            load_state_dict_checked(model, state["model"], f"checkpoint {ckpt_path}")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema and state.get("ema"):
                ema.load_state_dict(state["ema"])
            step, history, loss_sum = state["step"], state["history"], state["epoch_loss"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"cannot resume from {ckpt_path}: it holds another model or class "
                             f"count than this run builds ({' '.join(str(e).split())[:300]}); "
                             "resume with the same model and data, or start another --out"
                             ) from None
        prior_seconds = state.get("train_seconds", 0.0)
        first_loss = state.get("first_loss")
        if d.main:
            print(f"resumed from {ckpt_path} at step {step}/{total_steps}", flush=True)
    elif d.main:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        write_json(out / "config.json", asdict(cfg))
        if on_fresh_start:
            on_fresh_start()

    net = model
    if getattr(cfg, "compile", False):
        net = torch.compile(net)
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device] if d.device.type == "cuda" else None)
    log = RunLog(out, cfg, d.main, total_steps, step, desc)

    def checkpoint() -> None:
        # No RNG state: every stream is a function of (seed, epoch, step, rank).
        if d.main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema else None,
                "step": step, "history": history, "epoch_loss": loss_sum,
                "config": asdict(cfg), "first_loss": first_loss,
                "train_seconds": prior_seconds + time.perf_counter() - t_start})

    def train_mode() -> None:
        net.train()
        if module_in_train:
            module_in_train(model)

    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    t_start, images_seen = time.perf_counter(), 0
    train_mode()
    while step < total_steps:
        epoch = step // steps_per_epoch
        batches = epoch_batches(len(train_set), cfg.batch_size, epoch, cfg.seed, d.rank,
                                d.world_size)[step - epoch * steps_per_epoch: steps_per_epoch]
        for indices, raw in zip(batches, iterate_batches(train_set, batches, num_workers, collate)):
            inputs, targets = augment(raw, step_generator(cfg.seed, epoch, step, d.rank))
            seed_step(cfg.seed, epoch, step, d.rank)
            inputs = move_to(inputs, d.device, cfg.channels_last)
            targets = move_to(targets, d.device)
            with autocast:
                out_loss = loss_fn(net, inputs, targets, indices)
            parts = out_loss if isinstance(out_loss, dict) else {}
            loss = sum(parts.values()) if parts else out_loss
            # The mean over processes (NaN and infinity spread): every process stops together.
            mean = all_reduce(torch.tensor([loss.item()], dtype=torch.float64), d) / d.world_size
            first_loss = check_loss(mean.item(), first_loss, step, epoch, ckpt_path, cfg.lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            lr_now = scheduler.get_last_lr()[0]
            scheduler.step()
            if ema:
                ema.update(model)
            step += 1
            n = _batch_size(targets)
            images_seen += n * d.world_size
            loss_sum += torch.tensor([loss.item() * n, n])
            log.step(step, epoch, {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}},
                     lr_now, images_seen / max(time.perf_counter() - t_start, 1e-9))
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if end_of_epoch:
                sync_buffers(model, d)
                sums = all_reduce(loss_sum.clone(), d)
                record = {"epoch": round(step / steps_per_epoch, 4), "step": step, "lr": lr_now,
                          "train_loss": (sums[0] / sums[1].clamp(min=1)).item(),
                          "seconds": round(prior_seconds + time.perf_counter() - t_start, 1)}
                if cfg.eval_every_epoch and epoch_eval is not None:
                    t_eval = time.perf_counter()
                    record.update(epoch_eval(with_ema(model, ema)))
                    # "seconds" counts evaluations; time-to-accuracy subtracts them.
                    record["eval_seconds"] = round(time.perf_counter() - t_eval, 2)
                    train_mode()
                history.append(record)
                log.epoch(record, history)
                loss_sum = torch.zeros(2)
            if end_of_epoch or step % cfg.checkpoint_every == 0:
                checkpoint()
            if step >= total_steps:
                break
    log.close()
    seconds = time.perf_counter() - t_start
    sync_buffers(model, d)
    summary = {"steps": step, "epochs": step / steps_per_epoch,
               # to the millisecond: a tiny run (a few steps) takes well under 0.05 s
               "train_seconds": round(prior_seconds + seconds, 3),
               "images_per_second_last_session": round(images_seen / max(seconds, 1e-9), 1),
               "world_size": d.world_size}
    return {"model": with_ema(model, ema), "steps": step, "epochs": step / steps_per_epoch,
            "history": history, "session_seconds": seconds,
            "images_per_second": images_seen / max(seconds, 1e-9), "summary": summary}


def write_run_outputs(cfg: RunConfig, model: nn.Module, summary: dict, d: Dist | None = None,
                      eval_result: dict | None = None, extra: dict | None = None) -> Path:
    """Write a finished run's ``model.safetensors``, ``summary.json``, (given an evaluation)
    ``eval.json`` and its curves, ``curves.png`` (``write_curves``), into ``cfg.out_dir``,
    atomically, on the main process.

    Args:
        cfg: The run's config; stored in the model file's metadata as ``train_config``.
        model: The trained model. One built by this package (it has a ``config`` dict) is saved
            with ``modelfile.save_model``; any other module as a plain safetensors file of its
            state dict, with the run's config in its metadata.
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
    try:
        _write_run_outputs(cfg, model, summary, eval_result, extra, model_path)
    finally:
        release_run_folder(out)  # the run is over
    return model_path


def _write_run_outputs(cfg, model, summary, eval_result, extra, model_path) -> None:
    out = model_path.parent
    model = model.to(memory_format=torch.contiguous_format).cpu()
    if isinstance(getattr(model, "config", None), ModelConfig):
        save_model(model, model_path, extra={**(extra or {}), "train_config": asdict(cfg)})
    else:
        from safetensors.torch import save_file

        with atomic_path(model_path) as tmp:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(tmp), metadata={"train_config": json.dumps(asdict(cfg))})
    if eval_result is not None:
        write_json(out / "eval.json", eval_result)
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
