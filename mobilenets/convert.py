"""Import MobileNet V1 weights trained elsewhere (timm, Keras Applications) into ``MobileNetV1``.

Every importer maps the source's tensors to our parameter names explicitly, builds the model with
the source's conventions (activation, padding, BatchNorm epsilon) so that eval-mode logits agree
with the source model's to float rounding, and loads through ``checkpoint.load_state_dict_checked``,
so a file that does not fit fails with an error naming the offending tensors instead of loading
half a model. ``tests/test_convert.py`` proves the equivalence against timm and Keras reference
models built offline.

Conventions of the sources:

============  ==========  ==========  ==============================  =====================
Source        Activation  BN epsilon  Padding of strided convs        Layout
============  ==========  ==========  ==============================  =====================
timm          ReLU6       1e-5        symmetric (PyTorch)             NCHW, (out, in, k, k)
Keras         ReLU6       1e-3        TF "SAME" (more bottom/right)   NHWC, (k, k, in, out)
============  ==========  ==========  ==============================  =====================

Nothing here downloads anything: pass files you already have.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .checkpoint import load_model, load_state_dict_checked, read_model_file, save_model
from .mobilenet_v1 import V1_BLOCKS, V1_STEM_CHANNELS, MobileNetV1, scale_channels

__all__ = ["load_timm_mobilenet_v1", "load_keras_mobilenet", "convert", "detect_source"]

#: Source formats ``convert`` accepts.
SOURCES = ("auto", "timm", "keras")

#: Channels of the last pointwise layer at width 1.0 (Table 1): ``width_mult`` is inferred from it.
_LAST_CHANNELS = V1_BLOCKS[-1][0]
#: Number of depthwise separable blocks of Table 1 (13).
_NUM_BLOCKS = sum(n for _, n, _ in V1_BLOCKS)
#: Blocks per timm stage; timm's MobileNet V1 groups the 13 blocks as Table 1's rows.
_STAGE_SIZES = [n for _, n, _ in V1_BLOCKS]

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


def _infer_width_mult(stem: int, last: int, min_channels: int, source: str) -> float:
    """alpha from the last pointwise layer's channels (1024 * alpha), cross-checked with the stem.

    Tries ``last / 1024`` and its roundings to 2-4 decimals (so 0.35 is found from 358 channels),
    keeping the first that reproduces both the stem's and the last layer's channel counts under
    ``scale_channels``.
    """
    raw = last / _LAST_CHANNELS
    for alpha in (raw, *(round(raw, d) for d in (2, 3, 4))):
        if alpha > 0 and (scale_channels(V1_STEM_CHANNELS, alpha, min_channels) == stem
                          and scale_channels(_LAST_CHANNELS, alpha, min_channels) == last):
            return alpha
    raise ValueError(
        f"{source}: cannot infer width_mult: the last pointwise layer has {last} channels "
        f"(alpha = {last}/{_LAST_CHANNELS} = {raw:g}) but the stem has {stem} channels, which "
        f"that alpha does not give ({scale_channels(V1_STEM_CHANNELS, raw, min_channels)} "
        "expected); this is not a MobileNet V1 with a uniform width multiplier, or pass "
        "width_mult explicitly")


def _head_kwargs(num_outputs: int | None, model_kwargs: dict) -> dict:
    """include_top / num_classes for a head with ``num_outputs`` logits (None: no head)."""
    if num_outputs is None:
        return {"include_top": False}
    background = bool(model_kwargs.get("background_class", False))
    if background and num_outputs < 2:
        raise ValueError(f"background_class=True needs a classifier with >= 2 outputs, the file "
                         f"has {num_outputs}")
    return {"include_top": True, "num_classes": num_outputs - int(background)}


def _load_mapped(model: MobileNetV1, state: dict[str, torch.Tensor], origin: dict[str, str],
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
    kwargs.update(_head_kwargs(None if classifier is None else int(classifier.shape[0]),
                               model_kwargs))
    kwargs.update(model_kwargs)
    model = MobileNetV1(**kwargs)
    _load_mapped(model, mapped, origin, source)
    return model.eval()


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


def _keras_layer_names() -> list[str]:
    names = ["conv1", "conv1_bn"]
    for i in range(1, _NUM_BLOCKS + 1):
        names += [f"conv_dw_{i}", f"conv_dw_{i}_bn", f"conv_pw_{i}", f"conv_pw_{i}_bn"]
    return names


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


def _keras3_weights_shapes(f) -> tuple[int, int, int, int | None]:
    """(in_channels, stem channels, last channels, classes or None) from a ``.weights.h5`` file.

    Keras 3 names these groups after layer classes (``layers/batch_normalization_3/vars/0``), not
    after layers, so the shapes are read by role: BatchNorm groups have four equal 1-D vars (their
    largest size is 1024 * alpha); the stem kernel is the only (3, 3, in, C) kernel with C != 1
    (depthwise kernels are (3, 3, C, 1)); the classifier is the only (1, 1, C, K) kernel that has a
    (K,) bias.
    """
    groups: dict[str, dict[int, tuple[int, ...]]] = {}

    def visit(name, obj):
        m = re.match(r"^(.*)/vars/(\d+)$", name)
        if m and hasattr(obj, "shape"):
            groups.setdefault(m[1], {})[int(m[2])] = tuple(obj.shape)

    f.visititems(visit)
    bn, stems, heads = [], [], []
    for shapes in groups.values():
        vars_ = [shapes[i] for i in sorted(shapes)]
        if len(vars_) == 4 and all(len(s) == 1 and s == vars_[0] for s in vars_):
            bn.append(vars_[0][0])
        elif len(vars_) == 1 and len(vars_[0]) == 4 and vars_[0][:2] == (3, 3) and vars_[0][3] != 1:
            stems.append(vars_[0])
        elif (len(vars_) == 2 and len(vars_[0]) == 4 and vars_[0][:2] == (1, 1)
              and vars_[1] == (vars_[0][3],)):
            heads.append(vars_[0][3])
    if not bn or len(stems) != 1 or len(heads) > 1:
        raise ValueError(f"its variables are not a Keras MobileNet's ({len(bn)} BatchNorm layers, "
                         f"{len(stems)} stem convolutions, {len(heads)} classifiers found)")
    return stems[0][2], stems[0][3], max(bn), heads[0] if heads else None


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


def _keras_to_state(layers: dict[str, dict[str, np.ndarray]], source: str
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keras weights by layer name -> our state dict (NHWC kernels transposed to NCHW)."""
    names = _keras_layer_names()
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"{source}: not a Keras Applications MobileNet: layers missing: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    extra = [n for n in layers if n not in names and n != "conv_preds"]
    if extra:
        raise ValueError(f"{source}: layers with weights that a Keras Applications MobileNet does "
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

    conv("features.0", "conv1", False)
    bn("features.0", "conv1_bn")
    for i in range(1, _NUM_BLOCKS + 1):
        conv(f"features.{i}.dw", f"conv_dw_{i}", True)
        bn(f"features.{i}.dw", f"conv_dw_{i}_bn")
        conv(f"features.{i}.pw", f"conv_pw_{i}", False)
        bn(f"features.{i}.pw", f"conv_pw_{i}_bn")
    if "conv_preds" in layers:  # 1x1 conv on the pooled (1, 1, C) map = Linear(C, K)
        k = get("conv_preds", "kernel")
        if k.ndim != 4 or k.shape[:2] != (1, 1):
            raise ValueError(f"{source}: conv_preds/kernel has shape {k.shape}, expected "
                             "(1, 1, C, K)")
        put("classifier.weight", "conv_preds", "kernel", k[0, 0].T)
        put("classifier.bias", "conv_preds", "bias", get("conv_preds", "bias"))
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
    path = _existing_file(path)
    source = str(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(_ZIP_MAGIC):
        layers = _load_keras_archive(path)
    elif magic == _HDF5_MAGIC:
        import h5py

        try:
            f = h5py.File(str(path), "r")
        except OSError as e:
            raise ValueError(f"{path} is not a readable HDF5 file: {e}") from None
        with f:
            try:
                kind = _h5_kind(f)
                if kind == "legacy_full":
                    layers = _read_legacy_h5(f["model_weights"])
                elif kind == "legacy_weights":
                    layers = _read_legacy_h5(f)
                else:
                    shapes = _keras3_weights_shapes(f)
            except (KeyError, OSError, ValueError) as e:
                raise ValueError(f"{path}: {e}") from None
        if kind == "keras3_weights":
            layers = _load_keras3_weights(path, shapes, width_mult)
    else:
        raise ValueError(f"{path} is neither an HDF5 (.h5) nor a zip (.keras) file: not a Keras "
                         "model or weights file")

    state, origin = _keras_to_state(layers, source)
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
    kwargs.update(_head_kwargs(None if head is None else int(head.shape[0]), model_kwargs))
    kwargs.update(model_kwargs)
    model = MobileNetV1(**kwargs)
    _load_mapped(model, state, origin, source)
    return model.eval()


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


def _load_keras3_weights(path: Path, shapes: tuple[int, int, int, int | None],
                         width_mult: float | None) -> dict[str, dict[str, np.ndarray]]:
    in_channels, stem, last, classes = shapes
    if width_mult is None:
        alpha = _infer_width_mult(stem, last, 1, str(path))
    else:
        alpha = width_mult
        want = (scale_channels(V1_STEM_CHANNELS, alpha, 1), scale_channels(_LAST_CHANNELS, alpha, 1))
        if want != (stem, last):
            raise ValueError(f"{path}: width_mult={alpha:g} gives {want[0]} and {want[1]} channels "
                             f"in the first and last layers, the file has {stem} and {last}")
    keras = _import_keras()
    try:
        model = keras.applications.MobileNet(
            input_shape=(224, 224, in_channels), alpha=alpha, weights=None,
            include_top=classes is not None, classes=classes or 1000)
        model.load_weights(str(path))
    except Exception as e:
        raise ValueError(f"{path}: does not load into a Keras MobileNet(alpha={alpha:g}, "
                         f"include_top={classes is not None}, classes={classes}) "
                         f"({_short(e, 400)})") from None
    return _read_keras_model(model)


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------

def detect_source(path: str | os.PathLike) -> str:
    """Tell a weights file's format from its contents: ``"timm"``, ``"keras"`` or ``"mobilenets"``.

    HDF5 files are Keras; zip archives are Keras (``.keras``: has ``config.json``) or PyTorch
    (``torch.save``: has ``data.pkl``); a pre-1.6 ``torch.save`` pickle is PyTorch; a safetensors
    file is ours if its metadata says so (``checkpoint.save_model``), timm if its tensor names
    start with ``conv_stem.``. PyTorch files are assumed to be timm checkpoints.

    Args:
        path: The file.

    Returns:
        ``"timm"``, ``"keras"`` or ``"mobilenets"``.

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
            return "timm"
        raise ValueError(f"{path} is a zip archive but neither a .keras model nor a torch.save "
                         "checkpoint")
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save pickle
        return "timm"
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
        if any(k.startswith("conv_stem.") for k in keys):
            return "timm"
        raise ValueError(f"{path} is a safetensors file with neither mobilenets metadata nor "
                         "timm MobileNet V1 tensor names (conv_stem.*)")
    raise ValueError(f"{path}: unrecognised weights format (not HDF5, zip, a torch pickle or "
                     "safetensors)")


def convert(src: str | os.PathLike, dst: str | os.PathLike, source: str = "auto",
            width_mult: float | None = None, **model_kwargs) -> Path:
    """Convert timm or Keras MobileNet V1 weights to this package's format.

    The result is a safetensors file with the model config in its metadata, written atomically
    by ``checkpoint.save_model``; ``mobilenets.load_model(dst)`` rebuilds the model. The metadata's
    ``extra`` records the source file and format.

    Args:
        src: The source weights file.
        dst: The destination, conventionally ``*.safetensors``; its folder is created if missing.
        source: ``"auto"`` (detect from the contents, see ``detect_source``; a ``.safetensors``
            file is told apart by its metadata and tensor names), ``"timm"`` (see
            ``load_timm_mobilenet_v1``) or ``"keras"`` (see ``load_keras_mobilenet``). Default
            ``"auto"``. A file already in our format is re-saved (with ``auto``).
        width_mult: alpha, if it should not be inferred from the shapes. Default None.
        **model_kwargs: Extra ``MobileNetV1`` arguments passed to the loader, e.g.
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
    elif kind == "keras":
        model = load_keras_mobilenet(src, **model_kwargs)
    else:  # already ours
        read_model_file(src)  # a clear error if it is not
        model = load_model(src, **model_kwargs)
    return save_model(model, dst, extra={"converted_from": str(src), "source_format": kind})
