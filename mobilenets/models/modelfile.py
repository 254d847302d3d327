"""Our own model format: a safetensors file whose metadata holds the model's config as JSON
(``registry.load_model`` rebuilds any of them).

Loading never unpickles anything, and every write is atomic (``fileio.atomic_path``), so a
killed process never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mobilenets.fileio import atomic_path, check_regular_file, note_input

FORMAT_VERSION = "1"


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save a model built by this package as safetensors, atomically.

    Args:
        model: A model with a ``config`` dict (every model this package builds has one).
        path: Destination file, conventionally ``*.safetensors``.
        extra: Optional JSON-serialisable metadata stored beside the config (e.g. class names).

    Returns:
        The path written.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError("model has no config dict: save_model needs a model built by mobilenets")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "mobilenets", "version": FORMAT_VERSION, "config": json.dumps(config),
                "extra": json.dumps(extra or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Read a file written by ``save_model``: (config, state dict, extra metadata).

    The file is recorded as an input of the running command (``fileio.note_input``): no output
    of the command may replace it.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a readable mobilenets safetensors file, or its metadata is not
            what ``save_model`` writes (names the file).
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
        ValueError: on missing or unexpected keys or shape mismatches.
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
    model.load_state_dict(state, strict=True)
