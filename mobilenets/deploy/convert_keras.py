"""Import Keras Applications' MobileNet (V1) and MobileNetV2 weights: legacy ``.h5`` files (read
with h5py alone), Keras 3 ``.weights.h5`` and ``.keras`` archives (through Keras). See
``convert`` for the conventions every importer follows."""
from __future__ import annotations

import os
import re
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenets.deploy.weights import (HDF5_MAGIC, LAST_CHANNELS, NUM_BLOCKS, NUM_V2_BLOCKS,
                                       ZIP_MAGIC, build_loaded, existing_file, infer_v2_width_mult,
                                       infer_width_mult, short_error)
from mobilenets.models.mobilenet_v1 import V1_STEM_CHANNELS, MobileNetV1, scale_channels
from mobilenets.models.mobilenet_v2 import V2_BLOCKS, MobileNetV2

_KERAS_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}


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
    for i in range(1, NUM_BLOCKS + 1):
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
        alpha = infer_width_mult(stem, last, 1, str(path))
    else:
        alpha = width_mult
        want = (scale_channels(V1_STEM_CHANNELS, alpha, 1), scale_channels(LAST_CHANNELS, alpha, 1))
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
    alpha = width_mult or infer_v2_width_mult(roles["bn"], last_in, str(path))
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

    Keras' MobileNet is Table 1 with ReLU6, BatchNorm epsilon 1e-3 and its own padding: "SAME"
    everywhere except the stride-2 depthwise layers, which pad one row and column at the
    bottom/right (``ZeroPadding2D``) then run unpadded, at every input size; on an odd feature
    map that differs from TensorFlow's "SAME". So the model is built with ``padding="keras",
    activation="relu6", bn_eps=1e-3``; its eval-mode logits then equal Keras' pre-softmax outputs
    at every input size Keras accepts (Keras takes NHWC input, ours NCHW). Layers are matched by
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
            ``include_top``, ``in_channels``, ``padding="keras"``, ``activation="relu6"``,
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
    kwargs: dict[str, Any] = dict(padding="keras", activation="relu6", bn_eps=1e-3,
                                  min_channels=1, in_channels=int(stem.shape[1]))
    if width_mult is None:
        last = state[f"features.{NUM_BLOCKS}.pw.conv.weight"]
        width_mult = infer_width_mult(int(stem.shape[0]), int(last.shape[0]), min_channels,
                                       source)
    kwargs["width_mult"] = width_mult
    head = state.get("classifier.weight")
    return build_loaded(MobileNetV1, kwargs, None if head is None else head.shape[0], model_kwargs,
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
        raise ValueError(f"{path}: Keras could not load it ({short_error(e)})") from None
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
    if magic.startswith(ZIP_MAGIC):
        return _load_keras_archive(path)
    if magic != HDF5_MAGIC:
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
        raise ValueError(f"{path}: no Keras model fits its shapes ({short_error(e, 400)})") from None
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ValueError(f"{path}: does not load into a Keras {model.name} ({short_error(e, 400)})"
                         ) from None
    return _read_keras_model(model)


def _keras_state(path: str | os.PathLike, keras3_model, plan: _KerasPlan, head: str, arch: str
                 ) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """(source, our state dict, origins) of a Keras file: ``_read_keras_file`` then
    ``_keras_to_state``."""
    path = existing_file(path)
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
    path = existing_file(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    v2_layer = "expanded_conv_depthwise"
    if magic.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                v2 = v2_layer in z.read("config.json").decode("utf8", "replace")
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise ValueError(f"{path} is not a readable .keras archive ({short_error(e)})") from None
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
        raise ValueError(f"{path}: not a readable Keras file ({short_error(e)})") from None
    return "mobilenet_v2" if v2 else "mobilenet_v1"


def keras_input_size(path: str | os.PathLike) -> tuple[int | None, int | None] | None:
    """The input size (H, W) a Keras model file was built for: ``(None, None)`` for a model that
    takes any size, None when the file does not say (weights-only files). Read from the
    ``.keras`` archive's ``config.json`` or a full legacy ``.h5`` file's ``model_config``
    attribute; no Keras needed."""
    import json

    path = existing_file(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    try:
        if magic.startswith(ZIP_MAGIC):
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
        else:
            import h5py

            with h5py.File(str(path), "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    return None
                config = json.loads(_decode(raw))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        return None
    layers = config.get("config", {}).get("layers", [])
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            conf = layer.get("config", {})
            shape = conf.get("batch_shape") or conf.get("batch_input_shape")
            if isinstance(shape, list) and len(shape) == 4:
                return shape[1], shape[2]
    return None


def load_keras_mobilenet_v2(path: str | os.PathLike, width_mult: float | None = None,
                            **model_kwargs) -> MobileNetV2:
    """Load a Keras Applications ``MobileNetV2`` file into an equivalent ``MobileNetV2``.

    Keras' MobileNetV2 is Table 2 with ReLU6, BatchNorm epsilon 1e-3 and no dropout; its stride-2
    depthwise layers pad by ``imagenet_utils.correct_pad``, which is TensorFlow's "SAME" when the
    model was built for a fixed input size (every model with its top is) and one row and column
    at the bottom/right on any map when it was built for any size (``input_shape=(None, None,
    3)``). So the model is built with ``activation="relu6", bn_eps=1e-3, dropout=0`` and
    ``padding="tf_same"`` or ``"keras"`` (``keras_input_size`` reads which from ``.keras`` and
    full ``.h5`` files; a weights-only file is taken to be of a fixed size with its top and of
    any size without it, Keras Applications' defaults; pass ``padding=`` to say otherwise); its
    eval-mode logits then equal Keras' pre-softmax outputs at every input size that model
    accepts (Keras takes NHWC input, ours NCHW).
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
    head = state.get("classifier.weight")
    size = keras_input_size(source)
    # correct_pad: "SAME" on a fixed input size (a top needs one), (0, 1) on an unknown one.
    fixed = head is not None if size is None else None not in size
    kwargs: dict[str, Any] = dict(padding="tf_same" if fixed else "keras", activation="relu6",
                                  bn_eps=1e-3, dropout=0.0, in_channels=int(stem.shape[1]))
    if width_mult is None:
        bn_sizes = [int(v.shape[0]) for k, v in state.items() if k.endswith("bn.weight")]
        last = state[f"features.{NUM_V2_BLOCKS + 1}.conv.weight"]
        width_mult = infer_v2_width_mult(bn_sizes, int(last.shape[1]), source)
    kwargs["width_mult"] = width_mult
    return build_loaded(MobileNetV2, kwargs, None if head is None else head.shape[0], model_kwargs,
                         state, origin, source)
