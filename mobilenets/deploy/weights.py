"""What the weight importers share (``convert``: timm and torchvision; ``convert_keras``:
Keras Applications): the files' magic bytes, the counts of Table 1 and Table 2 that a file's
shapes are checked against, inferring the width multiplier from them, and building the model and
loading the mapped tensors into it. Both importers import this module; neither imports the other
but ``convert``'s dispatch, which reads Keras files through ``convert_keras``."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from mobilenets.fileio import note_input
from mobilenets.models.mobilenet_v1 import V1_BLOCKS, V1_STEM_CHANNELS, scale_channels
from mobilenets.models.mobilenet_v2 import V2_BLOCKS, MobileNetV2
from mobilenets.models.modelfile import load_state_dict_checked
from mobilenets.readers import check_regular_file

#: Channels of the last pointwise layer at width 1.0 (Table 1): ``width_mult`` is inferred from it.
LAST_CHANNELS = V1_BLOCKS[-1][0]
#: Number of depthwise separable blocks of Table 1 (13).
NUM_BLOCKS = sum(n for _, n, _ in V1_BLOCKS)

#: MobileNetV2's bottleneck blocks (17); ``features.{NUM_V2_BLOCKS + 1}`` is its last 1x1
#: convolution.
NUM_V2_BLOCKS = sum(n for _, _, n, _ in V2_BLOCKS)
#: Input channels of that convolution at width 1.0 (Table 2's last c): ``width_mult`` is inferred
#: from it.
_V2_LAST_C = V2_BLOCKS[-1][1]

#: The first bytes of HDF5 (Keras .h5) files and of zip archives (.keras, torch.save).
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def short_error(error: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, at most ``limit`` characters, for wrapped errors."""
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(error).__name__}: {text}"


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a regular file (``readers.check_regular_file``), recorded as an input."""
    path = check_regular_file(path, "weights file")
    note_input(path)
    return path


def _alpha_candidates(raw: float) -> list[float]:
    """``raw`` and its roundings to 2-4 decimals, so 0.35 is found from 358 / 1024 channels."""
    return [a for a in (raw, *(round(raw, d) for d in (2, 3, 4))) if a > 0]


def infer_width_mult(stem: int, last: int, min_channels: int, source: str) -> float:
    """alpha from the last pointwise layer's channels (1024 * alpha), cross-checked with the stem.

    Tries ``last / 1024`` and its roundings (``_alpha_candidates``), keeping the first that
    reproduces both the stem's and the last layer's channel counts under ``scale_channels``.
    """
    raw = last / LAST_CHANNELS
    for alpha in _alpha_candidates(raw):
        if (scale_channels(V1_STEM_CHANNELS, alpha, min_channels) == stem
                and scale_channels(LAST_CHANNELS, alpha, min_channels) == last):
            return alpha
    raise ValueError(
        f"{source}: cannot infer width_mult: the last pointwise layer has {last} channels "
        f"(alpha = {last}/{LAST_CHANNELS} = {raw:g}) but the stem has {stem} channels, which "
        f"that alpha does not give ({scale_channels(V1_STEM_CHANNELS, raw, min_channels)} "
        "expected); this is not a MobileNet V1 with a uniform width multiplier, or pass "
        "width_mult explicitly")


def _v2_bn_sizes(width_mult: float) -> list[int]:
    """The sorted BatchNorm sizes of MobileNetV2 at ``width_mult``: its channel signature."""
    model = MobileNetV2(width_mult, include_top=False)
    return sorted(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def infer_v2_width_mult(bn_sizes: list[int], last_in: int, source: str) -> float:
    """MobileNetV2's alpha from the input channels of its last 1x1 convolution (320 * alpha,
    rounded to a multiple of 8), cross-checked with every BatchNorm size of the file.

    Args:
        bn_sizes: The file's BatchNorm sizes, in any order.
        last_in: Input channels of the last 1x1 convolution (``Conv_1``, ``features.18``).
        source: The file, for the error message.
    """
    raw = last_in / _V2_LAST_C
    for alpha in _alpha_candidates(raw):
        if _v2_bn_sizes(alpha) == sorted(bn_sizes):
            return alpha
    raise ValueError(
        f"{source}: cannot infer width_mult: the last 1x1 convolution has {last_in} input channels "
        f"(alpha = {last_in}/{_V2_LAST_C} = {raw:g}) but the file's {len(bn_sizes)} BatchNorm "
        f"layers are not MobileNetV2's at that alpha ({len(_v2_bn_sizes(raw))} layers, sizes "
        f"{_v2_bn_sizes(raw)[:6]}...); this is not a MobileNetV2 with a uniform width "
        "multiplier, or pass width_mult explicitly")


def _head_kwargs(num_outputs: int | None, model_kwargs: dict) -> dict:
    """include_top / num_classes for a head with ``num_outputs`` logits (None: no head)."""
    if num_outputs is None:
        return {"include_top": False}
    num_outputs = int(num_outputs)
    background = bool(model_kwargs.get("background_class", False))
    if background and num_outputs < 2:
        raise ValueError(f"background_class=True needs a classifier with >= 2 outputs, the file "
                         f"has {num_outputs}")
    return {"include_top": True, "num_classes": num_outputs - int(background)}


def build_loaded(arch: type[torch.nn.Module], kwargs: dict, num_outputs: int | None,
                  model_kwargs: dict, state: dict[str, torch.Tensor], origin: dict[str, str],
                  source: str) -> torch.nn.Module:
    """Build ``arch`` as the file says (``kwargs``, a head with ``num_outputs`` logits or None),
    overridden by the caller's ``model_kwargs``; load the mapped ``state``; eval mode."""
    model = arch(**{**kwargs, **_head_kwargs(num_outputs, model_kwargs), **model_kwargs})
    _load_mapped(model, state, origin, source)
    return model.eval()


def _load_mapped(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: dict[str, str],
                 source: str) -> None:
    """``load_state_dict_checked``, with the source's own names added to a shape-mismatch error."""
    try:
        load_state_dict_checked(model, state, source=source)
    except ValueError as e:
        own = model.state_dict()
        bad = [k for k in own if k in state and state[k].shape != own[k].shape]
        if not bad:
            raise
        names = "; ".join(f"{k} <- {origin.get(k, k)}" for k in bad[:5])
        raise ValueError(f"{e} [file names of the mismatched tensors: {names}]") from None
