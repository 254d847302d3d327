"""Import MobileNet weights trained elsewhere: V1 from timm and Keras Applications into
``MobileNetV1``, V2 from torchvision and Keras Applications into ``MobileNetV2``.

Every importer maps the source's tensors to our parameter names explicitly, builds the model with
the source's conventions (activation, padding, BatchNorm epsilon) so that eval-mode logits agree
with the source model's to float rounding, and loads through ``modelfile.load_state_dict_checked``,
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

Keras's importers live in ``convert_keras`` (Keras is imported only for Keras 3 files), what all
the importers share in ``weights``; ``convert`` picks one from ``IMPORTERS``. Nothing here
downloads anything: pass files you already have.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from mobilenets.deploy.convert_keras import (keras_arch, load_keras_mobilenet,
                                             load_keras_mobilenet_v2)
from mobilenets.deploy.weights import (HDF5_MAGIC, NUM_BLOCKS, NUM_V2_BLOCKS, ZIP_MAGIC,
                                       build_loaded, existing_file, infer_v2_width_mult,
                                       infer_width_mult)
from mobilenets.models.mobilenet_v1 import V1_BLOCKS, MobileNetV1
from mobilenets.models.mobilenet_v2 import MobileNetV2
from mobilenets.models.modelfile import read_model_file, save_model
from mobilenets.models.registry import load_model
from mobilenets.readers import safe_torch_load

__all__ = ["load_timm_mobilenet_v1", "load_torchvision_mobilenet_v2", "convert", "detect_source"]

#: Source formats ``convert`` accepts ("keras": MobileNet or MobileNetV2, told from the file).
SOURCES = ("auto", "timm", "torchvision", "keras")

#: Blocks per timm stage; timm's MobileNet V1 groups the 13 blocks as Table 1's rows.
_STAGE_SIZES = [n for _, n, _ in V1_BLOCKS]


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
        if fh.read(8) == HDF5_MAGIC:
            raise ValueError(f"{path} is an HDF5 (Keras) file, not a PyTorch checkpoint: use "
                             "load_keras_mobilenet")
    return safe_torch_load(path, "PyTorch checkpoint")


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
        path = existing_file(path_or_state_dict)
        source = str(path)
        raw = _read_torch_state(path)
    state = _unwrap_state(raw, source)
    stem = state.get("conv_stem.weight")
    if stem is None or stem.ndim != 4:
        listed = ", ".join(list(state)[:5])
        raise ValueError(f"{source}: no 4-D conv_stem.weight: not a timm MobileNet V1 state dict "
                         f"(first keys: {listed})")
    mapped, origin = _map_timm_keys(state, source)
    last = mapped.get(f"features.{NUM_BLOCKS}.pw.conv.weight")
    if last is None:
        raise ValueError(f"{source}: no blocks.4.1.conv_pw.weight: not a timm MobileNet V1 "
                         "state dict")
    min_channels = model_kwargs.get("min_channels", 8)
    kwargs: dict[str, Any] = dict(activation="relu6", padding="symmetric", bn_eps=1e-5,
                                  in_channels=int(stem.shape[1]))
    if "width_mult" not in model_kwargs:
        kwargs["width_mult"] = infer_width_mult(int(stem.shape[0]), int(last.shape[0]),
                                                 min_channels, source)
    classifier = state.get("classifier.weight")
    return build_loaded(MobileNetV1, kwargs, None if classifier is None else classifier.shape[0],
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
        path = existing_file(path_or_state_dict)
        source, raw = str(path), _read_torch_state(path)
    state = _unwrap_state(raw, source)
    stem = state.get("features.0.0.weight")
    last = state.get(f"features.{NUM_V2_BLOCKS + 1}.0.weight")
    if stem is None or last is None or stem.ndim != 4 or last.ndim != 4:
        raise ValueError(f"{source}: no 4-D features.0.0.weight and features.{NUM_V2_BLOCKS + 1}.0."
                         f"weight: not a torchvision MobileNetV2 state dict (first keys: "
                         f"{', '.join(list(state)[:5])})")
    mapped, origin = _map_torchvision_keys(state)
    kwargs: dict[str, Any] = dict(activation="relu6", padding="symmetric", bn_eps=1e-5,
                                  in_channels=int(stem.shape[1]))
    if "width_mult" not in model_kwargs:
        bn_sizes = [int(v.shape[0]) for k, v in state.items() if k.endswith("running_var")]
        kwargs["width_mult"] = infer_v2_width_mult(bn_sizes, int(last.shape[1]), source)
    head = state.get("classifier.1.weight")
    return build_loaded(MobileNetV2, kwargs, None if head is None else head.shape[0],
                         model_kwargs, mapped, origin, source)


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
    path = existing_file(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if head.startswith(ZIP_MAGIC):
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


def _load_keras(path: Path, **model_kwargs) -> torch.nn.Module:
    """A Keras Applications file, MobileNet or MobileNetV2 as ``keras_arch`` tells."""
    load = {"mobilenet_v1": load_keras_mobilenet, "mobilenet_v2": load_keras_mobilenet_v2}
    return load[keras_arch(path)](path, **model_kwargs)


def _load_ours(path: Path, **model_kwargs) -> torch.nn.Module:
    """A file already in our format, its metadata (class names, training config) kept."""
    read_model_file(path)  # a clear error if it is not
    return load_model(path, **model_kwargs)


#: The importer of each source format (``detect_source``'s answers): ``(path, **model_kwargs)``.
IMPORTERS = {"timm": load_timm_mobilenet_v1, "torchvision": load_torchvision_mobilenet_v2,
             "keras": _load_keras, "mobilenets": _load_ours}


def convert(src: str | os.PathLike, dst: str | os.PathLike, source: str = "auto",
            width_mult: float | None = None, **model_kwargs) -> Path:
    """Convert MobileNet V1 (timm, Keras) or MobileNetV2 (torchvision, Keras) weights to this
    package's format.

    The result is a safetensors file with the model config in its metadata, written atomically
    by ``modelfile.save_model``; ``mobilenets.load_model(dst)`` rebuilds the model. The metadata's
    ``extra`` records the source file and format.

    Args:
        src: The source weights file.
        dst: The destination, conventionally ``*.safetensors``; its folder is created if missing.
        source: ``"auto"`` (detect from the contents, see ``detect_source``; a ``.safetensors``
            file is told apart by its metadata and tensor names), ``"timm"`` (see
            ``load_timm_mobilenet_v1``), ``"torchvision"`` (``load_torchvision_mobilenet_v2``)
            or ``"keras"`` (``load_keras_mobilenet`` or ``load_keras_mobilenet_v2``, as
            ``keras_arch`` tells). Default ``"auto"``. A file already in our format is re-saved
            (with ``auto``), its metadata (class names, training config) kept.
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
    src = existing_file(src)
    kind = detect_source(src) if source == "auto" else source
    if width_mult is not None:
        model_kwargs["width_mult"] = width_mult
    model = IMPORTERS[kind](src, **model_kwargs)
    return save_model(model, dst, extra={**getattr(model, "metadata", {}),
                                         "converted_from": str(src), "source_format": kind})
