"""Our own model format: a safetensors file whose metadata holds the model's config as JSON
(``ModelConfig.to_dict``; ``registry.config_from_dict`` types it again and ``registry.load_model``
rebuilds any of them).

Loading never unpickles anything, and every write is atomic (``fileio.atomic_path``), so a
killed process never leaves a half-written file. The metadata also holds a checksum of the
tensors (``tensors_checksum``), checked on every read: a file damaged since it was written (a
flipped bit, a bad copy) is refused, naming it. Files without one (written before checksums, or
by other tools) still load. The class names a file stores must match its class count, checked
on every write and read.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mobilenets.fileio import atomic_path, note_input
from mobilenets.models.config import ModelConfig
from mobilenets.readers import check_regular_file

FORMAT_VERSION = "1"
#: The metadata key of ``tensors_checksum``.
CHECKSUM_KEY = "checksum"


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """``"sha256:HEX"`` over every tensor's name, dtype, shape and bytes, in name order: the
    checksum ``save_model`` stores and ``read_model_file`` checks.

    Args:
        tensors: A state dict.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


def check_class_names(config: dict, extra: dict, source: str) -> None:
    """Refuse metadata whose ``class_names`` are not one string per class of the model.

    Args:
        config: The model's config (``num_classes``; a model without its top has no classes to
            check).
        extra: The metadata stored beside it (``class_names``: absent or None is fine).
        source: The file, for the message.

    Raises:
        ValueError: naming ``source``, the names' count and the model's.
    """
    names = extra.get("class_names")
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{source}: its class_names must be a list of strings, got "
                         f"{str(names)[:80]}")
    count = config.get("num_classes")
    if config.get("include_top", True) and isinstance(count, int) and len(names) != count:
        raise ValueError(f"{source}: its metadata lists {len(names)} class "
                         f"name{'s' if len(names) != 1 else ''} for a model "
                         f"with {count} classes: the file was edited or damaged; write it again "
                         "with one name per class")


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save a model built by this package as safetensors, atomically.

    Args:
        model: A model with a ``config`` (a ``ModelConfig``: every model this package builds has
            one).
        path: Destination file, conventionally ``*.safetensors``.
        extra: Optional JSON-serialisable metadata stored beside the config (e.g. class names).

    Returns:
        The path written.

    Raises:
        ValueError: if the model has no config, or ``extra["class_names"]`` is not one name per
            class (``check_class_names``).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError("model has no ModelConfig: save_model needs a model built by mobilenets")
    config = config.to_dict()
    check_class_names(config, extra or {}, str(path))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "mobilenets", "version": FORMAT_VERSION, "config": json.dumps(config),
                "extra": json.dumps(extra or {}), CHECKSUM_KEY: tensors_checksum(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Read a file written by ``save_model``: (config as stored, a dict; state dict; extra
    metadata). ``registry.config_from_dict`` makes the config a ``ModelConfig`` again.

    The file is recorded as an input of the running command (``fileio.note_input``): no output
    of the command may replace it.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a readable mobilenets safetensors file, its metadata is not
            what ``save_model`` writes, its class names do not match its class count, or its
            tensors do not match the checksum stored with them (names the file).
    """
    path = check_regular_file(path, "model file")
    note_input(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    if metadata.get("format") != "mobilenets" or "config" not in metadata:
        raise ValueError(f"{path} is a safetensors file but not one written by mobilenets "
                         "(no model config in its metadata); use `mobilenets convert` for "
                         "timm or Keras weights")
    config, extra = (_metadata_dict(path, metadata, key) for key in ("config", "extra"))
    stored = metadata.get(CHECKSUM_KEY)
    if stored is not None and stored != tensors_checksum(state):
        raise ValueError(f"{path} is damaged: its weights do not match the checksum stored when "
                         "it was written (a changed byte: a bad copy, download or disk); copy or "
                         "write it again")
    check_class_names(config, extra, str(path))
    return config, state, extra


def _metadata_dict(path: Path, metadata: dict, key: str) -> dict:
    """A JSON object stored in the file's metadata under ``key`` ({} if absent)."""
    try:
        value = json.loads(metadata.get(key, "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: its metadata '{key}' is not valid JSON ({e.msg}): the file "
                         "is damaged, or was not written by mobilenets") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: its metadata '{key}' is a JSON {type(value).__name__}, not an "
                         "object: the file is damaged, or was not written by mobilenets")
    return value


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                            max_listed: int = 5) -> None:
    """Load ``state`` into ``model`` strictly, with an error that lists the first mismatches.

    Args:
        model: The target model.
        state: Tensors by parameter/buffer name.
        source: What the tensors came from (a file name), for the error message.
        max_listed: How many mismatches of each kind the error lists. Default 5.

    Raises:
        ValueError: on missing or unexpected keys, shape mismatches, or weights that are not
            finite (NaN or infinite: a diverged training or a damaged file).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for title, items in (("shape mismatches", shapes), ("missing in file", missing),
                         ("unexpected in file", unexpected)):
        if items:
            listed = "; ".join(items[:max_listed]) + (" ..." if len(items) > max_listed else "")
            problems.append(f"{len(items)} {title}: {listed}")
    if problems:
        raise ValueError(f"weights in {source} do not fit the model: " + " | ".join(problems))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise ValueError(f"{source} holds weights that are not finite (NaN or infinite) in "
                         f"{len(bad)} of {len(state)} tensors, e.g. {', '.join(bad[:3])}: the "
                         "training diverged or the file is damaged")
    model.load_state_dict(state, strict=True)
