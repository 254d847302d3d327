"""Import MobileNet weights trained elsewhere: V1 from timm and Keras Applications into
``MobileNetV1``, V2 from torchvision and Keras Applications into ``MobileNetV2``.

Every importer maps the source's tensors to our parameter names explicitly, builds the model with
the source's conventions (activation, padding, BatchNorm epsilon) so that eval-mode logits agree
with the source model's to float rounding, and loads through ``checkpoint.load_state_dict_checked``,
so a file that does not fit fails with an error naming the offending tensors instead of loading
half a model. ``tests/test_convert.py`` and ``tests/test_v2.py`` prove the equivalence against
timm, torchvision and Keras reference models built offline.

Conventions of the sources:

============  ==========  ==========  ==============================  =====================
Source        Activation  BN epsilon  Padding of strided convs        Layout
============  ==========  ==========  ==============================  =====================
timm          ReLU6       1e-5        symmetric (PyTorch)             NCHW, (out, in, k, k)
torchvision   ReLU6       1e-5        symmetric (PyTorch)             NCHW, (out, in, k, k)
Keras         ReLU6       1e-3        TF "SAME" (more bottom/right)   NHWC, (k, k, in, out)
============  ==========  ==========  ==============================  =====================

Nothing here downloads anything: pass files you already have.
"""
from __future__ import annotations

import os
import re
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from mobilenets.models.modelfile import (load_model, load_state_dict_checked, read_model_file,
    save_model)
from mobilenets.models.mobilenet_v1 import V1_BLOCKS, V1_STEM_CHANNELS, MobileNetV1, scale_channels
from mobilenets.models.mobilenet_v2 import V2_BLOCKS, MobileNetV2

__all__ = ["load_timm_mobilenet_v1", "load_keras_mobilenet", "load_torchvision_mobilenet_v2",
           "load_keras_mobilenet_v2", "convert", "detect_source"]

#: Source formats ``convert`` accepts ("keras": MobileNet or MobileNetV2, told from the file).
SOURCES = ("auto", "timm", "torchvision", "keras")

#: Channels of the last pointwise layer at width 1.0 (Table 1): ``width_mult`` is inferred from it.
_LAST_CHANNELS = V1_BLOCKS[-1][0]
#: Number of depthwise separable blocks of Table 1 (13).
_NUM_BLOCKS = sum(n for _, n, _ in V1_BLOCKS)
#: Blocks per timm stage; timm's MobileNet V1 groups the 13 blocks as Table 1's rows.
_STAGE_SIZES = [n for _, n, _ in V1_BLOCKS]

#: MobileNetV2's bottleneck blocks (17); ``features.{_V2_BLOCKS + 1}`` is its last 1x1 convolution.
_V2_BLOCKS = sum(n for _, _, n, _ in V2_BLOCKS)
#: Input channels of that convolution at width 1.0 (Table 2's last c): ``width_mult`` is inferred
#: from it.
_V2_LAST_C = V2_BLOCKS[-1][1]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_KERAS_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------

def _short(error: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, at most ``limit`` characters, for wrapped errors."""
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(error).__name__}: {text}"


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def _alpha_candidates(raw: float) -> list[float]:
    """``raw`` and its roundings to 2-4 decimals, so 0.35 is found from 358 / 1024 channels."""
    return [a for a in (raw, *(round(raw, d) for d in (2, 3, 4))) if a > 0]


def _infer_width_mult(stem: int, last: int, min_channels: int, source: str) -> float:
    """alpha from the last pointwise layer's channels (1024 * alpha), cross-checked with the stem.

    Tries ``last / 1024`` and its roundings (``_alpha_candidates``), keeping the first that
    reproduces both the stem's and the last layer's channel counts under ``scale_channels``.
    """
    raw = last / _LAST_CHANNELS
    for alpha in _alpha_candidates(raw):
        if (scale_channels(V1_STEM_CHANNELS, alpha, min_channels) == stem
                and scale_channels(_LAST_CHANNELS, alpha, min_channels) == last):
            return alpha
    raise ValueError(
        f"{source}: cannot infer width_mult: the last pointwise layer has {last} channels "
        f"(alpha = {last}/{_LAST_CHANNELS} = {raw:g}) but the stem has {stem} channels, which "
        f"that alpha does not give ({scale_channels(V1_STEM_CHANNELS, raw, min_channels)} "
        "expected); this is not a MobileNet V1 with a uniform width multiplier, or pass "
        "width_mult explicitly")


def _v2_bn_sizes(width_mult: float) -> list[int]:
    """The sorted BatchNorm sizes of MobileNetV2 at ``width_mult``: its channel signature."""
    model = MobileNetV2(width_mult, include_top=False)
    return sorted(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _infer_v2_width_mult(bn_sizes: list[int], last_in: int, source: str) -> float:
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


def _build_loaded(arch: type[torch.nn.Module], kwargs: dict, num_outputs: int | None,
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


# --------------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------------

def _read_torch_state(path: Path) -> Mapping[str, Any]:
    """A state dict from a ``.pth``/``.pt``/``.bin`` (weights_only unpickling) or ``.safetensors``."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    with open(path, "rb") as fh:
        if fh.read(8) == _HDF5_MAGIC:
            raise ValueError(f"{path} is an HDF5 (Keras) file, not a PyTorch checkpoint: use "
                             "load_keras_mobilenet")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types here (UnpicklingError, RuntimeError, EOF...)
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({_short(e)})") from None


def _unwrap_state(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a timm training checkpoint, without DataParallel's ``module.``."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), got "
                         f"{type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{source}: not a state dict: entries that are not tensors: "
                         f"{', '.join(map(str, bad[:5]))}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(.+)$")


def _map_timm_keys(state: dict[str, torch.Tensor], source: str
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """timm names -> ours. Unknown keys are kept as they are, so the checked load reports them."""
    blocks = sorted({(int(m[1]), int(m[2])) for k in state if (m := _TIMM_BLOCK.match(k))})
    stages: dict[int, list[int]] = {}
    for i, j in blocks:
        stages.setdefault(i, []).append(j)
    layout = [len(stages[i]) for i in sorted(stages)]
    contiguous = (sorted(stages) == list(range(len(stages)))
                  and all(stages[i] == list(range(len(stages[i]))) for i in stages))
    if layout != _STAGE_SIZES or not contiguous:
        raise ValueError(f"{source}: timm blocks are laid out as {layout} blocks per stage; "
                         f"MobileNet V1 has {_STAGE_SIZES}: not a timm mobilenetv1 checkpoint")
    index = {ij: n + 1 for n, ij in enumerate(blocks)}  # features.0 is the stem
    sub = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "pw.conv", "bn2": "pw.bn"}
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        m = _TIMM_BLOCK.match(key)
        if m:
            new = f"features.{index[int(m[1]), int(m[2])]}.{sub[m[3]]}.{m[4]}"
        elif key.startswith("conv_stem."):
            new = "features.0.conv." + key[len("conv_stem."):]
        elif key.startswith("bn1."):
            new = "features.0.bn." + key[len("bn1."):]
        elif key in ("classifier.weight", "classifier.bias"):
            new = key
        else:
            new = key  # e.g. conv_head of mobilenetv1_100h: reported as unexpected
        mapped[new] = value
        origin[new] = key
    # Some exports strip the BN step counters; they carry no information for inference.
    for key in list(mapped):
        if key.endswith(".bn.running_var"):
            nbt = key[: -len("running_var")] + "num_batches_tracked"
            mapped.setdefault(nbt, torch.tensor(0, dtype=torch.long))
    return mapped, origin


def load_timm_mobilenet_v1(path_or_state_dict: str | os.PathLike | Mapping[str, Any],
                           **model_kwargs) -> MobileNetV1:
    """Load a timm ``mobilenetv1_100``-family checkpoint into an equivalent ``MobileNetV1``.

    timm's MobileNet V1 (``mobilenetv1_100``, ``mobilenetv1_125``, ...) is Table 1 with ReLU6,
    BatchNorm epsilon 1e-5 and PyTorch's symmetric padding; its parameters are named
    ``conv_stem``/``bn1`` (the first layer), ``blocks.{stage}.{block}.conv_dw/bn1/conv_pw/bn2``
    (the 13 depthwise separable blocks, 1-2-2-6-2 per stage) and ``classifier`` (the linear head).
    Each is mapped to our name explicitly and the block layout is checked, so the returned model's
    eval-mode logits equal timm's.

    Args:
        path_or_state_dict: One of
            - a ``.pth`` / ``.pt`` / ``.bin`` file written by ``torch.save``; it is read with
              ``torch.load(weights_only=True)``, so no arbitrary code is unpickled;
            - a ``.safetensors`` file (as timm publishes on the Hugging Face Hub);
            - an already loaded state dict;
            - a timm training checkpoint dict holding the state dict under ``"state_dict"`` or
              ``"model"``. A ``module.`` prefix (``DataParallel``) is stripped.
        **model_kwargs: Extra ``MobileNetV1`` arguments, e.g. ``dropout``, ``output_stride`` or
            ``background_class=True`` (for a 1001-way TF-Slim-style head: the model then has 1000
            classes plus the background output at index 0, which ``forward`` drops). They override
            what is inferred from the file: ``width_mult`` (the last pointwise layer's channels /
            1024, cross-checked with the stem's 32 * alpha), ``num_classes`` (the classifier's
            rows; a checkpoint without classifier gives ``include_top=False``), ``in_channels``,
            ``activation="relu6"``, ``padding="symmetric"`` and ``bn_eps=1e-5``. Overriding those
            changes what the weights compute, or makes them not fit.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: if a path is given and does not exist.
        ValueError: if the file cannot be read (the message names it), is not a timm MobileNet V1
            state dict, or its tensor shapes do not fit the model (the message lists the first
            mismatches by our name and by the file's).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        raw = path_or_state_dict
    else:
        path = _existing_file(path_or_state_dict)
        source = str(path)
        raw = _read_torch_state(path)
    state = _unwrap_state(raw, source)
    stem = state.get("conv_stem.weight")
    if stem is None or stem.ndim != 4:
        listed = ", ".join(list(state)[:5])
        raise ValueError(f"{source}: no 4-D conv_stem.weight: not a timm MobileNet V1 state dict "
                         f"(first keys: {listed})")
    mapped, origin = _map_timm_keys(state, source)
    last = mapped.get(f"features.{_NUM_BLOCKS}.pw.conv.weight")
    if last is None:
        raise ValueError(f"{source}: no blocks.4.1.conv_pw.weight: not a timm MobileNet V1 "
                         "state dict")
    min_channels = model_kwargs.get("min_channels", 8)
    kwargs: dict[str, Any] = dict(activation="relu6", padding="symmetric", bn_eps=1e-5,
                                  in_channels=int(stem.shape[1]))
    if "width_mult" not in model_kwargs:
        kwargs["width_mult"] = _infer_width_mult(int(stem.shape[0]), int(last.shape[0]),
                                                 min_channels, source)
    classifier = state.get("classifier.weight")
    return _build_loaded(MobileNetV1, kwargs, None if classifier is None else classifier.shape[0],
                         model_kwargs, mapped, origin, source)


# --------------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------------

#: torchvision's MobileNetV2 block layers: ``features.{i}.conv.{j}[.{k}].{param}``.
_TV_BLOCK = re.compile(r"^features\.(\d+)\.conv\.(\d)\.(?:(\d)\.)?([a-z_]+)$")
#: (j, k) -> our sub-layer, for blocks with and without the expansion layer (t == 1).
_TV_EXPANDED = {("0", "0"): "expand.conv", ("0", "1"): "expand.bn", ("1", "0"): "dw.conv",
                ("1", "1"): "dw.bn", ("2", None): "project.conv", ("3", None): "project.bn"}
_TV_NOT_EXPANDED = {("0", "0"): "dw.conv", ("0", "1"): "dw.bn", ("1", None): "project.conv",
                    ("2", None): "project.bn"}
#: The stem and the last 1x1 convolution are ``Conv2dNormActivation``s: ``features.{i}.{0|1}``.
_TV_CONV = re.compile(r"^features\.(\d+)\.([01])\.([a-z_]+)$")


def _map_torchvision_keys(state: dict[str, torch.Tensor]
                          ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """torchvision names -> ours. Unknown keys are kept as they are, so the checked load reports
    them."""
    expanded = {m[1] for k in state if (m := _TV_BLOCK.match(k)) and m[2] == "3"}
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = key
        if m := _TV_BLOCK.match(key):
            sub = (_TV_EXPANDED if m[1] in expanded else _TV_NOT_EXPANDED).get((m[2], m[3]))
            new = f"features.{m[1]}.{sub}.{m[4]}" if sub else key
        elif m := _TV_CONV.match(key):
            new = f"features.{m[1]}.{'conv' if m[2] == '0' else 'bn'}.{m[3]}"
        elif key in ("classifier.1.weight", "classifier.1.bias"):
            new = "classifier." + key.rsplit(".", 1)[1]
        mapped[new] = value
        origin[new] = key
    return mapped, origin


def load_torchvision_mobilenet_v2(path_or_state_dict: str | os.PathLike | Mapping[str, Any],
                                  **model_kwargs) -> MobileNetV2:
    """Load a torchvision ``mobilenet_v2`` checkpoint (any ``width_mult``) into an equivalent
    ``MobileNetV2``.

    torchvision's MobileNetV2 is Table 2 with ReLU6, BatchNorm epsilon 1e-5 and PyTorch's
    symmetric padding, like ours; its parameters are named ``features.0.{0,1}`` (the stem's
    convolution and BN), ``features.{i}.conv.{j}...`` for the 17 bottleneck blocks (expansion,
    depthwise and projection; blocks with t == 1 have no expansion), ``features.18.{0,1}`` (the
    last 1x1 convolution) and ``classifier.1`` (the linear layer after dropout). Each is mapped to
    our name explicitly, so the returned model's eval-mode logits equal torchvision's.

    Args:
        path_or_state_dict: A ``.pth`` / ``.pt`` file (read with ``torch.load(weights_only=True)``),
            a ``.safetensors`` file, a state dict, or a training checkpoint holding it under
            ``"state_dict"`` or ``"model"`` (a ``module.`` prefix is stripped).
        **model_kwargs: Extra ``MobileNetV2`` arguments, e.g. ``dropout`` or ``output_stride``.
            They override what is inferred from the file: ``width_mult`` (from the last 1x1
            convolution's input channels, 320 * alpha, cross-checked with every BatchNorm size),
            ``num_classes`` (no classifier gives ``include_top=False``), ``in_channels``,
            ``activation="relu6"``, ``padding="symmetric"`` and ``bn_eps=1e-5``.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: if a path is given and does not exist.
        ValueError: if the file cannot be read, is not a torchvision MobileNetV2 state dict, or
            its tensor shapes do not fit the model (the message names the mismatches).
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = "state dict", path_or_state_dict
    else:
        path = _existing_file(path_or_state_dict)
        source, raw = str(path), _read_torch_state(path)
    state = _unwrap_state(raw, source)
    stem = state.get("features.0.0.weight")
    last = state.get(f"features.{_V2_BLOCKS + 1}.0.weight")
    if stem is None or last is None or stem.ndim != 4 or last.ndim != 4:
        raise ValueError(f"{source}: no 4-D features.0.0.weight and features.{_V2_BLOCKS + 1}.0."
                         f"weight: not a torchvision MobileNetV2 state dict (first keys: "
                         f"{', '.join(list(state)[:5])})")
    mapped, origin = _map_torchvision_keys(state)
    kwargs: dict[str, Any] = dict(activation="relu6", padding="symmetric", bn_eps=1e-5,
                                  in_channels=int(stem.shape[1]))
    if "width_mult" not in model_kwargs:
        bn_sizes = [int(v.shape[0]) for k, v in state.items() if k.endswith("running_var")]
        kwargs["width_mult"] = _infer_v2_width_mult(bn_sizes, int(last.shape[1]), source)
    head = state.get("classifier.1.weight")
    return _build_loaded(MobileNetV2, kwargs, None if head is None else head.shape[0],
                         model_kwargs, mapped, origin, source)


# --------------------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------------------

def _import_keras():
    """Import Keras lazily (on the torch backend unless KERAS_BACKEND says otherwise)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as e:
        raise ImportError("reading .keras and Keras 3 .weights.h5 files needs Keras 3 "
                          "(`pip install keras`); legacy .h5 files are read without it") from e
    return keras


#: A Keras layer plan row: (our prefix, Keras convolution, Keras BatchNorm, depthwise?).
_KerasPlan = list[tuple[str, str, str, bool]]


def _keras_v1_plan() -> _KerasPlan:
    """Keras Applications' MobileNet layers, in order, beside ours."""
    plan = [("features.0", "conv1", "conv1_bn", False)]
    for i in range(1, _NUM_BLOCKS + 1):
        plan += [(f"features.{i}.dw", f"conv_dw_{i}", f"conv_dw_{i}_bn", True),
                 (f"features.{i}.pw", f"conv_pw_{i}", f"conv_pw_{i}_bn", False)]
    return plan


def _keras_v2_plan() -> _KerasPlan:
    """Keras Applications' MobileNetV2 layers, in order, beside ours. Its first block is
    ``expanded_conv_*`` (t = 1: no expansion), the others ``block_{i}_*``."""
    plan = [("features.0", "Conv1", "bn_Conv1", False)]
    ts = [t for t, _, n, _ in V2_BLOCKS for _ in range(n)]
    for i, t in enumerate(ts):
        keras, ours = ("expanded_conv_" if i == 0 else f"block_{i}_"), f"features.{i + 1}"
        if t != 1:
            plan.append((f"{ours}.expand", f"{keras}expand", f"{keras}expand_BN", False))
        plan += [(f"{ours}.dw", f"{keras}depthwise", f"{keras}depthwise_BN", True),
                 (f"{ours}.project", f"{keras}project", f"{keras}project_BN", False)]
    return plan + [(f"features.{len(ts) + 1}", "Conv_1", "Conv_1_bn", False)]


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _h5_kind(f) -> str:
    """``"keras3_weights"``, ``"legacy_full"`` or ``"legacy_weights"`` for an open h5py file."""
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return "legacy_full"
    if "layer_names" in f.attrs:
        return "legacy_weights"
    if "layers" in f or "vars" in f:
        return "keras3_weights"
    raise ValueError("an HDF5 file with none of Keras' layouts (no 'layer_names' attribute, "
                     "'model_weights' group or 'layers' group)")


def _read_legacy_h5(group) -> dict[str, dict[str, np.ndarray]]:
    """Weights by layer name from a legacy (Keras 1/2, or Keras 3 ``.h5``) HDF5 group.

    Each layer group lists its datasets in the ``weight_names`` attribute, e.g. ``conv1/kernel:0``;
    the variable name is the last path component without ``:0``. Keras 2 names a depthwise kernel
    ``depthwise_kernel``, Keras 3 ``kernel``: both are returned as ``kernel``.
    """
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name in map(_decode, group.attrs["layer_names"]):
        layer = group[name]
        weights = {}
        for wname in map(_decode, layer.attrs.get("weight_names", [])):
            var = wname.split("/")[-1].split(":")[0]
            weights["kernel" if var == "depthwise_kernel" else var] = np.asarray(layer[wname])
        if weights:
            layers[name] = weights
    return layers


def _keras3_roles(f) -> dict[str, list]:
    """The variable shapes of a Keras 3 ``.weights.h5`` file, by role.

    Keras 3 names these groups after layer classes (``layers/batch_normalization_3/vars/0``), not
    after layers, so the shapes are read by role: ``"bn"``, the sizes of the BatchNorm groups
    (four equal 1-D vars); ``"stem"``, the (3, 3, in, C) kernels with C != 1 (depthwise kernels
    are (3, 3, C, 1)); ``"pointwise"``, (in, out) of the 1x1 kernels without bias; ``"head"``,
    the class count K of each (C, K) or (1, 1, C, K) kernel that has a (K,) bias.
    """
    groups: dict[str, dict[int, tuple[int, ...]]] = {}

    def visit(name, obj):
        m = re.match(r"^(.*)/vars/(\d+)$", name)
        if m and hasattr(obj, "shape"):
            groups.setdefault(m[1], {})[int(m[2])] = tuple(obj.shape)

    f.visititems(visit)
    roles: dict[str, list] = {"bn": [], "stem": [], "pointwise": [], "head": []}
    for shapes in groups.values():
        vars_ = [shapes[i] for i in sorted(shapes)]
        if len(vars_) == 4 and all(len(s) == 1 and s == vars_[0] for s in vars_):
            roles["bn"].append(vars_[0][0])
        elif len(vars_) == 1 and len(vars_[0]) == 4 and vars_[0][:2] == (3, 3) and vars_[0][3] != 1:
            roles["stem"].append(vars_[0])
        elif len(vars_) == 1 and len(vars_[0]) == 4 and vars_[0][:2] == (1, 1):
            roles["pointwise"].append(vars_[0][2:])
        elif (len(vars_) == 2 and len(vars_[0]) in (2, 4) and vars_[0][:-2] in ((), (1, 1))
              and vars_[1] == (vars_[0][-1],)):
            roles["head"].append(vars_[0][-1])
    return roles


def _check_roles(roles: dict[str, list], arch: str) -> None:
    if not roles["bn"] or len(roles["stem"]) != 1 or len(roles["head"]) > 1:
        raise ValueError(f"its variables are not a Keras {arch}'s ({len(roles['bn'])} BatchNorm "
                         f"layers, {len(roles['stem'])} stem convolutions, {len(roles['head'])} "
                         "classifiers found)")


def _keras3_v1_model(keras, path: Path, roles: dict[str, list], width_mult: float | None):
    """The Keras MobileNet a V1 ``.weights.h5`` file loads into (alpha from its shapes)."""
    _check_roles(roles, "MobileNet")
    (_, _, in_channels, stem), last = roles["stem"][0], max(roles["bn"])
    classes = roles["head"][0] if roles["head"] else None
    if width_mult is None:
        alpha = _infer_width_mult(stem, last, 1, str(path))
    else:
        alpha = width_mult
        want = (scale_channels(V1_STEM_CHANNELS, alpha, 1), scale_channels(_LAST_CHANNELS, alpha, 1))
        if want != (stem, last):
            raise ValueError(f"{path}: width_mult={alpha:g} gives {want[0]} and {want[1]} channels "
                             f"in the first and last layers, the file has {stem} and {last}")
    return keras.applications.MobileNet(
        input_shape=(224, 224, in_channels), alpha=alpha, weights=None,
        include_top=classes is not None, classes=classes or 1000)


def _keras3_v2_model(keras, path: Path, roles: dict[str, list], width_mult: float | None):
    """The Keras MobileNetV2 a ``.weights.h5`` file loads into (alpha from its shapes: the last
    1x1 convolution, ``Conv_1``, has the most output channels)."""
    _check_roles(roles, "MobileNetV2")
    in_channels = roles["stem"][0][2]
    classes = roles["head"][0] if roles["head"] else None
    last_in = max(roles["pointwise"], key=lambda io: io[1])[0]
    alpha = width_mult or _infer_v2_width_mult(roles["bn"], last_in, str(path))
    return keras.applications.MobileNetV2(
        input_shape=(224, 224, in_channels), alpha=alpha, weights=None,
        include_top=classes is not None, classes=classes or 1000)


def _flatten_keras_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):  # a nested Functional/Sequential model
            out.extend(_flatten_keras_layers(layer))
    return out


def _read_keras_model(model) -> dict[str, dict[str, np.ndarray]]:
    """Weights by layer name and variable name (``kernel``, ``gamma``, ...) of a Keras model."""
    keras = _import_keras()
    layers = {}
    for layer in _flatten_keras_layers(model):
        if hasattr(layer, "layers") or not layer.weights:
            continue
        layers[layer.name] = {w.name.split("/")[-1].split(":")[0]: _variable_to_numpy(keras, w)
                              for w in layer.weights}
    return layers


def _variable_to_numpy(keras, variable) -> np.ndarray:
    value = variable.value
    if torch.is_tensor(value):  # torch backend: skip Keras' np.array() (a NumPy 2 warning)
        return value.detach().cpu().numpy().copy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _keras_to_state(layers: dict[str, dict[str, np.ndarray]], plan: _KerasPlan, head: str,
                    source: str, arch: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keras weights by layer name -> our state dict (NHWC kernels transposed to NCHW).

    Args:
        layers: ``{layer name: {variable: array}}``.
        plan: The convolution and BatchNorm layers (``_keras_v1_plan``, ``_keras_v2_plan``).
        head: The classifier layer's name: a 1x1 convolution (MobileNet's ``conv_preds``) or a
            Dense layer (MobileNetV2's ``predictions``); absent without the top.
        source: The file, for error messages.
        arch: ``"MobileNet"`` or ``"MobileNetV2"``, for error messages.
    """
    names = [n for _, conv, bn, _ in plan for n in (conv, bn)]
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"{source}: not a Keras Applications {arch}: layers missing: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    extra = [n for n in layers if n not in names and n != head]
    if extra:
        raise ValueError(f"{source}: layers with weights that a Keras Applications {arch} does "
                         f"not have: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")

    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}

    def put(ours: str, name: str, var: str, array: np.ndarray) -> None:
        state[ours] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        origin[ours] = f"{name}/{var}"

    def get(name: str, var: str) -> np.ndarray:
        if var not in layers[name]:
            raise ValueError(f"{source}: layer {name} has no '{var}' variable (has "
                             f"{sorted(layers[name])})")
        return layers[name][var]

    def conv(prefix: str, name: str, depthwise: bool) -> None:
        k = get(name, "kernel")
        if k.ndim != 4:
            raise ValueError(f"{source}: {name}/kernel has shape {k.shape}, expected 4-D")
        # Conv2D (kh, kw, in, out) -> (out, in, kh, kw); DepthwiseConv2D (kh, kw, in, 1) ->
        # (in, 1, kh, kw).
        put(prefix + ".conv.weight", name, "kernel",
            k.transpose(2, 3, 0, 1) if depthwise else k.transpose(3, 2, 0, 1))

    def bn(prefix: str, name: str) -> None:
        for var, ours in _KERAS_BN.items():
            put(f"{prefix}.bn.{ours}", name, var, get(name, var))
        state[prefix + ".bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    for prefix, conv_name, bn_name, depthwise in plan:
        conv(prefix, conv_name, depthwise)
        bn(prefix, bn_name)
    if head in layers:  # Dense (C, K), or a 1x1 conv on the pooled (1, 1, C) map: Linear(C, K)
        k = get(head, "kernel")
        if k.ndim == 4 and k.shape[:2] == (1, 1):
            k = k[0, 0]
        if k.ndim != 2:
            raise ValueError(f"{source}: {head}/kernel has shape {k.shape}, expected (C, K) or "
                             "(1, 1, C, K)")
        put("classifier.weight", head, "kernel", k.T)
        put("classifier.bias", head, "bias", get(head, "bias"))
    return state, origin


def load_keras_mobilenet(path: str | os.PathLike, width_mult: float | None = None,
                         **model_kwargs) -> MobileNetV1:
    """Load a Keras Applications ``MobileNet`` file into an equivalent ``MobileNetV1``.

    Keras' MobileNet is Table 1 with ReLU6, BatchNorm epsilon 1e-3 and TensorFlow's "SAME"
    padding (its stride-2 layers pad one row/column at the bottom/right only), so the model is
    built with ``padding="tf_same", activation="relu6", bn_eps=1e-3``; its eval-mode logits then
    equal Keras' pre-softmax outputs (Keras takes NHWC input, ours NCHW). Layers are matched by
    their Keras names: ``conv1``/``conv1_bn``, ``conv_dw_{i}``/``conv_dw_{i}_bn``,
    ``conv_pw_{i}``/``conv_pw_{i}_bn`` for i = 1..13, and ``conv_preds`` (the classifier, a 1x1
    convolution with bias; absent when the file was saved with ``include_top=False``, which gives
    ``include_top=False`` here: ``forward`` returns the last feature map).

    The format is recognised from the file's contents, whatever its extension:

    - ``.keras`` (Keras 3 zip archive): loaded with ``keras.saving.load_model(compile=False)``;
      needs Keras 3.
    - ``.weights.h5`` (Keras 3 ``save_weights``): its groups are named after layer classes
      (``layers/depthwise_conv2d_6``), not layers, so alpha, the class count and ``include_top``
      are read from the variable shapes, a matching ``keras.applications.MobileNet(weights=None)``
      is built and ``load_weights`` reads the file into it; needs Keras 3.
    - legacy ``.h5``, a full model (``model.save("x.h5")``, Keras 2 or 3) or weights only
      (Keras 2 ``save_weights``, e.g. the files Keras Applications publishes): these store
      weights under layer names, which are read directly with h5py, without Keras (so files
      written by tf.keras 2, whose configs Keras 3 cannot always deserialize, load too).

    Keras is imported lazily, on the torch backend unless ``KERAS_BACKEND`` is already set.

    Args:
        path: The Keras file.
        width_mult: alpha. Default None: inferred as the last pointwise layer's channels / 1024,
            cross-checked with the first layer's 32 * alpha. Must be > 0 if given.
        **model_kwargs: Extra ``MobileNetV1`` arguments, e.g. ``dropout``, ``output_stride`` or
            ``background_class=True`` (for a 1001-way head whose output 0 is TF-Slim's background
            class: the model gets 1000 classes plus the background output, which ``forward``
            drops). They override what is inferred from the file (``num_classes``,
            ``include_top``, ``in_channels``, ``padding="tf_same"``, ``activation="relu6"``,
            ``bn_eps=1e-3``, ``min_channels=1``, Keras' ``int(channels * alpha)`` with no
            minimum); overriding those changes what the weights compute, or makes them not fit.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is corrupt, is not a Keras file, is not a Keras Applications
            MobileNet, or its shapes do not fit the model (the message names the file and what
            is wrong).
        ImportError: if a ``.keras`` or ``.weights.h5`` file is given and Keras 3 is not
            installed.
    """
    source, state, origin = _keras_state(path, partial(_keras3_v1_model, width_mult=width_mult),
                                         _keras_v1_plan(), "conv_preds", "MobileNet")
    stem = state["features.0.conv.weight"]
    min_channels = model_kwargs.get("min_channels", 1)
    kwargs: dict[str, Any] = dict(padding="tf_same", activation="relu6", bn_eps=1e-3,
                                  min_channels=1, in_channels=int(stem.shape[1]))
    if width_mult is None:
        last = state[f"features.{_NUM_BLOCKS}.pw.conv.weight"]
        width_mult = _infer_width_mult(int(stem.shape[0]), int(last.shape[0]), min_channels,
                                       source)
    kwargs["width_mult"] = width_mult
    head = state.get("classifier.weight")
    return _build_loaded(MobileNetV1, kwargs, None if head is None else head.shape[0], model_kwargs,
                         state, origin, source)


def _load_keras_archive(path: Path) -> dict[str, dict[str, np.ndarray]]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a readable zip (.keras) archive: {e}") from None
    if "config.json" not in names:
        raise ValueError(f"{path} is a zip archive without config.json: not a .keras model "
                         f"(a PyTorch checkpoint? use load_timm_mobilenet_v1)")
    keras = _import_keras()
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for a bad archive
        raise ValueError(f"{path}: Keras could not load it ({_short(e)})") from None
    return _read_keras_model(model)


def _read_keras_file(path: Path, keras3_model) -> dict[str, dict[str, np.ndarray]]:
    """Weights by layer name from any Keras file, its format told from its contents.

    Args:
        path: An existing file.
        keras3_model: ``f(keras, path, roles) -> keras.Model`` building the model a Keras 3
            ``.weights.h5`` file loads into (its groups are not named after layers; ``roles``
            are its shapes, from ``_keras3_roles``).
    """
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(_ZIP_MAGIC):
        return _load_keras_archive(path)
    if magic != _HDF5_MAGIC:
        raise ValueError(f"{path} is neither an HDF5 (.h5) nor a zip (.keras) file: not a Keras "
                         "model or weights file")
    import h5py

    try:
        f = h5py.File(str(path), "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file: {e}") from None
    with f:
        try:
            kind = _h5_kind(f)
            if kind == "legacy_full":
                return _read_legacy_h5(f["model_weights"])
            if kind == "legacy_weights":
                return _read_legacy_h5(f)
            roles = _keras3_roles(f)
        except (KeyError, OSError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
    keras = _import_keras()
    try:
        model = keras3_model(keras, path, roles)
    except ValueError as e:
        raise ValueError(e if str(path) in str(e) else f"{path}: {e}") from None
    except Exception as e:  # Keras raises many types for shapes it cannot build
        raise ValueError(f"{path}: no Keras model fits its shapes ({_short(e, 400)})") from None
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ValueError(f"{path}: does not load into a Keras {model.name} ({_short(e, 400)})"
                         ) from None
    return _read_keras_model(model)


def _keras_state(path: str | os.PathLike, keras3_model, plan: _KerasPlan, head: str, arch: str
                 ) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """(source, our state dict, origins) of a Keras file: ``_read_keras_file`` then
    ``_keras_to_state``."""
    path = _existing_file(path)
    layers = _read_keras_file(path, keras3_model)
    return (str(path), *_keras_to_state(layers, plan, head, str(path), arch))


def keras_arch(path: str | os.PathLike) -> str:
    """``"mobilenet_v1"`` or ``"mobilenet_v2"``: which Keras Applications model a Keras file holds.

    Told from layer names (``expanded_conv_depthwise``: MobileNetV2) in ``.keras`` archives and
    legacy ``.h5`` files, and for Keras 3 ``.weights.h5`` files from the 1x1 kernels: only
    MobileNetV2's linear bottlenecks project to fewer channels than they read. No Keras needed.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a readable Keras file.
    """
    path = _existing_file(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    v2_layer = "expanded_conv_depthwise"
    if magic.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                v2 = v2_layer in z.read("config.json").decode("utf8", "replace")
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise ValueError(f"{path} is not a readable .keras archive ({_short(e)})") from None
        return "mobilenet_v2" if v2 else "mobilenet_v1"
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            kind = _h5_kind(f)
            if kind == "keras3_weights":
                v2 = any(i > o for i, o in _keras3_roles(f)["pointwise"])
            else:
                group = f["model_weights"] if kind == "legacy_full" else f
                v2 = v2_layer in map(_decode, group.attrs["layer_names"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a readable Keras file ({_short(e)})") from None
    return "mobilenet_v2" if v2 else "mobilenet_v1"


def load_keras_mobilenet_v2(path: str | os.PathLike, width_mult: float | None = None,
                            **model_kwargs) -> MobileNetV2:
    """Load a Keras Applications ``MobileNetV2`` file into an equivalent ``MobileNetV2``.

    Keras' MobileNetV2 is Table 2 with ReLU6, BatchNorm epsilon 1e-3, TensorFlow's "SAME" padding
    (its stride-2 layers pad one row/column at the bottom/right only) and no dropout, so the model
    is built with ``padding="tf_same", activation="relu6", bn_eps=1e-3, dropout=0``; its
    eval-mode logits then equal Keras' pre-softmax outputs (Keras takes NHWC input, ours NCHW).
    Layers are matched by their Keras names: ``Conv1``/``bn_Conv1``, the first block's
    ``expanded_conv_{depthwise,project}[_BN]``, ``block_{i}_{expand,depthwise,project}[_BN]`` for
    i = 1..16, ``Conv_1``/``Conv_1_bn`` and ``predictions`` (the Dense classifier; absent when the
    file was saved with ``include_top=False``, which gives ``include_top=False`` here). The file
    formats are those of ``load_keras_mobilenet``: ``.keras``, Keras 3 ``.weights.h5`` (its
    shapes give alpha, the class count and ``include_top``) and legacy ``.h5``.

    Keras rounds each block's channels as ``make_divisible(int(c * alpha), 8)``: the same counts as
    ours for every alpha of the paper and Keras (0.35 to 1.4); a file whose channels our rule does
    not give fails with the mismatching tensors named.

    Args:
        path: The Keras file.
        width_mult: alpha. Default None: inferred from the last 1x1 convolution's input channels
            (320 * alpha), cross-checked with every BatchNorm size. Must be > 0 if given.
        **model_kwargs: Extra ``MobileNetV2`` arguments, e.g. ``dropout`` or ``output_stride``.
            They override what is inferred from the file (``num_classes``, ``include_top``,
            ``in_channels``, ``padding``, ``activation``, ``bn_eps``, ``dropout``); overriding
            those changes what the weights compute, or makes them not fit.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is corrupt, is not a Keras file or not a Keras Applications
            MobileNetV2, or its shapes do not fit the model.
        ImportError: if a ``.keras`` or ``.weights.h5`` file is given and Keras 3 is not
            installed.
    """
    source, state, origin = _keras_state(path, partial(_keras3_v2_model, width_mult=width_mult),
                                         _keras_v2_plan(), "predictions", "MobileNetV2")
    stem = state["features.0.conv.weight"]
    kwargs: dict[str, Any] = dict(padding="tf_same", activation="relu6", bn_eps=1e-3, dropout=0.0,
                                  in_channels=int(stem.shape[1]))
    if width_mult is None:
        bn_sizes = [int(v.shape[0]) for k, v in state.items() if k.endswith("bn.weight")]
        last = state[f"features.{_V2_BLOCKS + 1}.conv.weight"]
        width_mult = _infer_v2_width_mult(bn_sizes, int(last.shape[1]), source)
    kwargs["width_mult"] = width_mult
    head = state.get("classifier.weight")
    return _build_loaded(MobileNetV2, kwargs, None if head is None else head.shape[0], model_kwargs,
                         state, origin, source)


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------

def _torch_source(keys) -> str:
    """``"torchvision"`` for torchvision's MobileNetV2 tensor names, else ``"timm"`` (whose loader
    then says what is wrong)."""
    keys = set(keys)
    return "torchvision" if "features.0.0.weight" in keys and "conv_stem.weight" not in keys \
        else "timm"


def detect_source(path: str | os.PathLike) -> str:
    """Tell a weights file's format from its contents: ``"timm"``, ``"torchvision"``, ``"keras"``
    or ``"mobilenets"``.

    HDF5 files are Keras; zip archives are Keras (``.keras``: has ``config.json``) or PyTorch
    (``torch.save``: has ``data.pkl``); a pre-1.6 ``torch.save`` pickle is PyTorch; a safetensors
    file is ours if its metadata says so (``checkpoint.save_model``). PyTorch and safetensors
    files are torchvision's MobileNetV2 if their tensor names start ``features.0.0.``, timm's
    MobileNet V1 if ``conv_stem.``; other PyTorch files are assumed to be timm checkpoints.
    Whether a Keras file is MobileNet or MobileNetV2 is ``keras_arch``'s to tell.

    Args:
        path: The file.

    Returns:
        ``"timm"``, ``"torchvision"``, ``"keras"`` or ``"mobilenets"``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the format is none of these (the message names the file).
    """
    path = _existing_file(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"{path} is not a readable zip archive: {e}") from None
        if "config.json" in names:
            return "keras"
        if any(n.endswith("data.pkl") for n in names):
            return _torch_source(_unwrap_state(_read_torch_state(path), str(path)))
        raise ValueError(f"{path} is a zip archive but neither a .keras model nor a torch.save "
                         "checkpoint")
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save pickle
        return _torch_source(_unwrap_state(_read_torch_state(path), str(path)))
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: u64 header size, then JSON
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                keys = list(f.keys())
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
        if metadata.get("format") == "mobilenets":
            return "mobilenets"
        if any(k.startswith(("conv_stem.", "features.0.0.")) for k in keys):
            return _torch_source(keys)
        raise ValueError(f"{path} is a safetensors file with neither mobilenets metadata nor "
                         "timm MobileNet V1 (conv_stem.*) or torchvision MobileNetV2 "
                         "(features.0.0.*) tensor names")
    raise ValueError(f"{path}: unrecognised weights format (not HDF5, zip, a torch pickle or "
                     "safetensors)")


def convert(src: str | os.PathLike, dst: str | os.PathLike, source: str = "auto",
            width_mult: float | None = None, **model_kwargs) -> Path:
    """Convert MobileNet V1 (timm, Keras) or MobileNetV2 (torchvision, Keras) weights to this
    package's format.

    The result is a safetensors file with the model config in its metadata, written atomically
    by ``checkpoint.save_model``; ``mobilenets.load_model(dst)`` rebuilds the model. The metadata's
    ``extra`` records the source file and format.

    Args:
        src: The source weights file.
        dst: The destination, conventionally ``*.safetensors``; its folder is created if missing.
        source: ``"auto"`` (detect from the contents, see ``detect_source``; a ``.safetensors``
            file is told apart by its metadata and tensor names), ``"timm"`` (see
            ``load_timm_mobilenet_v1``), ``"torchvision"`` (``load_torchvision_mobilenet_v2``)
            or ``"keras"`` (``load_keras_mobilenet`` or ``load_keras_mobilenet_v2``, as
            ``keras_arch`` tells). Default ``"auto"``. A file already in our format is re-saved
            (with ``auto``).
        width_mult: alpha, if it should not be inferred from the shapes. Default None.
        **model_kwargs: Extra model arguments passed to the loader, e.g.
            ``background_class=True`` for a 1001-way head.

    Returns:
        ``dst`` as a ``Path``.

    Raises:
        FileNotFoundError: if ``src`` does not exist.
        ValueError: for an unknown ``source``, an unrecognised, corrupt or non-MobileNet file, or
            weights that do not fit.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    src = _existing_file(src)
    kind = detect_source(src) if source == "auto" else source
    if width_mult is not None:
        model_kwargs["width_mult"] = width_mult
    if kind == "timm":
        model = load_timm_mobilenet_v1(src, **model_kwargs)
    elif kind == "torchvision":
        model = load_torchvision_mobilenet_v2(src, **model_kwargs)
    elif kind == "keras":
        v2 = keras_arch(src) == "mobilenet_v2"
        model = (load_keras_mobilenet_v2 if v2 else load_keras_mobilenet)(src, **model_kwargs)
    else:  # already ours
        read_model_file(src)  # a clear error if it is not
        model = load_model(src, **model_kwargs)
    return save_model(model, dst, extra={"converted_from": str(src), "source_format": kind})
