"""A cache of exported files, so that timing the same model on the same runtime again (a second
``pick --predict``, ``latency measure``, a benchmark re-run) skips the tool-chain: graph
lowering and calibration take seconds per file, timing it a fraction of one.

An entry is keyed by everything the file depends on: the backend, the input shape, the model's
class, config and every weight, the calibration images, the source of this package (an edited
exporter or model changes every key) and the version of every installed distribution (a new
tool-chain too). So a hit is the file the tool-chain would write again, already verified
against torch when it was first written; a failed export leaves nothing behind.

Where: ``$MOBILENETS_CACHE_DIR/exports``, by default ``$XDG_CACHE_HOME/mobilenets`` (else
``~/.cache/mobilenets``), like torch's and Hugging Face's caches; ``MOBILENETS_CACHE_DIR=off``
(or empty) turns it off. Entries are never changed once written; the folder can be deleted at
any time.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

#: The environment variable that moves (or, ``off`` / empty, disables) the cache.
CACHE_ENV = "MOBILENETS_CACHE_DIR"
#: Temporary folders of killed writers older than this (seconds) are removed.
STALE_S = 3600


def cache_dir() -> Path | None:
    """The cache's root folder (``CACHE_ENV``), or None when the cache is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobilenets"


@functools.lru_cache(maxsize=1)
def environment_digest() -> str:
    """A digest of this package's source and every installed distribution's version: what an
    export depends on besides its inputs. Computed once per process."""
    import importlib.metadata

    import mobilenets

    h = hashlib.sha256()
    root = Path(mobilenets.__file__).parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    for name, version in sorted((d.metadata["Name"] or "", d.version)
                                for d in importlib.metadata.distributions()):
        h.update(f"{name}=={version}\n".encode())
    return h.hexdigest()


def _update_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def export_key(backend: str, model: torch.nn.Module, shape: tuple[int, ...],
               calibration: list[torch.Tensor] | None = None) -> str:
    """The cache key of exporting ``model`` at input ``shape`` for ``backend`` (calibrated on
    ``calibration``): a hex digest of all of them and ``environment_digest``."""
    h = hashlib.sha256(environment_digest().encode())
    config = getattr(model, "config", None)
    about = {"backend": backend, "shape": list(shape), "class": type(model).__qualname__,
             "config": config.to_dict() if hasattr(config, "to_dict") else repr(config)}
    h.update(json.dumps(about, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _update_tensor(h, t)
    for t in calibration or ():
        _update_tensor(h, t)
    return h.hexdigest()[:32]


def is_cached(key: str) -> bool:
    """Whether the cache is on and holds the entry ``key`` (``export_key``)."""
    root = cache_dir()
    return root is not None and (root / "exports" / key).is_dir()


def cached_export(key: str, path: Path, write: Callable[[Path], None]) -> Path:
    """``path``, written by ``write(folder)`` (which writes ``folder / path.name`` and any
    companion files) or copied from the cache entry ``key`` that an earlier ``write`` filled.

    Without a cache (``cache_dir`` None) ``write(path.parent)`` runs every time. Otherwise a
    miss writes into a private folder of the cache, renamed to the entry only when ``write``
    returns (a failure or a kill leaves no entry), and the entry is copied beside ``path``.
    """
    root = cache_dir()
    if root is None:
        write(path.parent)
        return path
    store = root / "exports"
    entry = store / key
    if not entry.is_dir():
        store.mkdir(parents=True, exist_ok=True)
        _remove_stale(store)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=store))
        try:
            write(work)
            try:
                os.rename(work, entry)
            except OSError:
                if not entry.is_dir():  # else a writer beside us renamed the same file first
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)  # gone after a rename
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(entry, path.parent, symlinks=True, dirs_exist_ok=True)
    return path


def _remove_stale(store: Path) -> None:
    now = time.time()
    for p in store.glob(".*"):
        try:
            if now - p.stat().st_mtime > STALE_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
