"""A run folder (``cfg.out_dir``) and the checkpoint in it: who owns the folder (``run.lock``),
whether a run may start or resume there, and ``checkpoint.pt`` (written atomically, loaded without
unpickling code, refused when written with other settings).

- **Ownership**: a run folder belongs to one process (``lock_run_folder``: ``run.lock`` holds an
  advisory lock and the owner's pid); a second run on the same folder fails at once, naming the
  owner. The kernel drops the lock when its owner dies, even by kill -9, so a stale lock of a dead
  process never blocks.
- **Resume**: a folder that already holds a run is refused without ``resume``, and a checkpoint
  written with other settings is refused with it (``check_resumable``). Where the folder lives is
  not a setting: a run folder copied or moved elsewhere resumes there.
"""
from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mobilenets.engine.config import RunConfig
from mobilenets.engine.distributed import Dist
from mobilenets.fileio import atomic_path
from mobilenets.readers import safe_torch_load

#: Fields that may differ between a run and its resumption: they change how a run is watched, or
#: where its folder lives, not what it computes.
RUN_ONLY_FIELDS = frozenset({"progress", "log_every", "checkpoint_every", "num_workers",
                             "tensorboard", "eval_every_epoch", "limit_val", "val_data",
                             "val_images", "eval_batch_size", "teacher_cache", "out_dir"})
#: What a training checkpoint holds (``engine.loop.fit`` writes every one).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "history", "epoch_loss", "config")


# --------------------------------------------------------------------------- ownership

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
