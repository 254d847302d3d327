"""Deployment: BatchNorm folding, ONNX export that checks itself, and int8 static quantization.

Every export is written atomically and verified before it replaces anything: the exported model is
run with ONNX Runtime and its outputs compared with the torch model's; a difference over the
tolerance is an error (the file is not written), not a warning.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mobilenets.checks import check_choice, check_range
from mobilenets.fileio import atomic_path
from mobilenets.models.config import ModelConfig
from mobilenets.models.layers import ConvBNAct
from mobilenets.models.registry import config_from_dict

#: Opset of our exports (the issue asks for >= 17; 18 is the newest every exporter path supports).
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ExportError(ValueError):
    """An export whose outputs disagree with the torch model, or a model file that cannot be used."""


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``ConvBNAct``'s BatchNorm folded into its conv.

    ``W' = W * gamma / sqrt(var + eps)`` per output channel and ``b' = beta - mean * gamma /
    sqrt(var + eps)``: the same function in eval mode with one layer fewer per block (PyTorch's
    ``fuse_conv_bn_eval``). The original model is not changed.

    Args:
        model: Any module built from ``ConvBNAct`` blocks (every model of this package).

    Returns:
        The folded copy, in eval mode.
    """
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(m.conv, m.bn)
            m.bn = nn.Identity()
    return folded


def input_shape(model: nn.Module, resolution: int | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` the model expects: its config's ``in_channels`` and ``input_size`` (3 and
    224, the paper's ImageNet input, for a module of another library)."""
    config = getattr(model, "config", None)
    ours = isinstance(config, ModelConfig)
    res = resolution or (config.input_size if ours else 224)
    check_range("resolution", res)
    return (config.in_channels if ours else 3, res, res)


def model_arch(model: nn.Module) -> str:
    """The ``arch`` of ``model``'s config (MobileNet V1 for a module of another library)."""
    config = getattr(model, "config", None)
    return config.arch if isinstance(config, ModelConfig) else "mobilenet_v1"


def ort_session(path: str | os.PathLike, threads: int | None = None,
                optimization: str = "all", spinning: bool = True):
    """An ONNX Runtime CPU session for ``path``.

    Args:
        path: An ``.onnx`` file.
        threads: Intra-op threads; default ``torch.get_num_threads()``.
        optimization: ``"all"`` (ORT's full graph optimisation, incl. layout transforms; default),
            ``"extended"``, ``"basic"`` or ``"none"``.
        spinning: Let the intra-op threads spin between calls (ORT's default: lowest latency for
            one session). Turn it off when many sessions take turns on the same cores, where the
            idle sessions' spinning threads would slow the running one. Default True.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ExportError: if ONNX Runtime cannot load it (corrupt or truncated file), naming the file.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    check_choice("optimization", optimization, levels)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = levels[optimization]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3  # errors only: the quantizer's models trigger harmless warnings
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise ExportError(f"{path} is not a usable ONNX model: {str(e).splitlines()[0]}") from None


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call interface (float32 in, out), so the
    evaluation code of ``train.evaluate`` runs exported models unchanged.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (default: torch's).
        spinning: See ``ort_session``. Default True.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = True):
        super().__init__()
        self.path = str(path)
        self.session = ort_session(path, threads, spinning=spinning)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape  # e.g. ['batch', 3, 224, 224]
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            config = json.loads(meta["config"]) if "config" in meta else {}
            self.extra = json.loads(meta["extra"]) if "extra" in meta else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: its metadata is not valid JSON ({e.msg})") from None
        # The exported model's config (None for a file another tool wrote).
        self.config = config_from_dict(config, str(path)) if config else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_shape, self.path)
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out[0])


def check_input(x: torch.Tensor, expected: list, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` if ``x`` does not fit ``expected`` (ONNX dims; a str
    dim is free), instead of letting the runtime fail deep inside with a bare message."""
    if not torch.is_floating_point(x):
        raise ValueError(f"{source} takes float images, got dtype {x.dtype}")
    if x.dim() != len(expected) or any(isinstance(e, int) and e != s for e, s in zip(expected, x.shape)):
        want = "x".join(str(e) if isinstance(e, int) else "N" for e in expected)
        raise ValueError(f"{source} takes input of shape {want}, got {'x'.join(map(str, x.shape))}")


@dataclass
class ExportReport:
    """What an export wrote and how closely it agrees with the torch model.

    Attributes:
        path: The file written.
        format: ``"onnx"``, ``"onnx-int8"``, ``"safetensors"`` or a phone backend's name
            (``backends.BACKENDS``: ``"executorch-int8"``, ``"openvino"``, ...).
        max_abs_diff: Largest |exported - torch| over the check inputs (logits).
        tolerance: The limit it was held to: the largest allowed |diff| (fp32), or the least
            share of top-1 agreement with the float model (int8, bf16).
        check_batches: The batch sizes checked (two sizes prove the batch axis is dynamic).
        top1_agreement: Share of check inputs whose top-1 class agrees with torch's.
        bytes: File size (OpenVINO: ``.xml`` + ``.bin``).
        delegation: Mobile runtimes: ``{"delegates", "delegated_ops", "outside": {op: count}}``
            (ops outside the XNNPACK delegate); OpenVINO: ``{"runtime_precisions": ...}``.
        io: The file's input/output dtypes, shapes, (scale, zero point) and layout, where known.
        float_modules: int8: the modules left fp32.
        logit_scale: max(1, max |logit|) of the check, the scale of the fp32 tolerance.
    """

    path: str
    format: str
    max_abs_diff: float
    tolerance: float
    check_batches: tuple[int, ...]
    top1_agreement: float | None = None
    bytes: int = 0
    delegation: dict | None = None
    io: dict | None = None
    float_modules: list | None = None
    logit_scale: float | None = None

    @property
    def quantized(self) -> bool:
        """Whether the file computes at lower precision (int8, bf16): checked by top-1."""
        return "int8" in self.format or "bf16" in self.format

    def summary(self) -> str:
        if self.quantized and self.top1_agreement is not None:
            limit = f"top-1 agreement {self.top1_agreement:.1%}, required {self.tolerance:.0%}"
        else:
            limit = f"tolerance {self.tolerance:g}"
        text = (f"{self.path} ({self.format}, {self.bytes / 1e6:.1f} MB): max |diff| vs torch "
                f"{self.max_abs_diff:.2e} ({limit}, batches {'/'.join(map(str, self.check_batches))})")
        d = self.delegation or {}
        if "delegated_ops" in d:
            outside = ", ".join(f"{k} x{v}" for k, v in sorted(d["outside"].items()))
            text += (f"; {d['delegated_ops']} ops in {d['delegates']} XNNPACK delegate(s)"
                     + (f", outside: {outside}" if outside else ", none outside"))
        if "runtime_precisions" in d:
            text += "; runs " + ", ".join(f"{k} x{v}" for k, v in sorted(d["runtime_precisions"].items()))
        if self.io and "output" in self.io:
            text += (f"; input {self.io['input']['dtype']} {self.io['layout']}, output "
                     f"{self.io['output']['dtype']}")
        if self.float_modules:
            text += f"; fp32: {', '.join(self.float_modules)}"
        return text


def model_metadata(model: nn.Module, extra: dict | None) -> dict[str, str]:
    """The metadata an exported file carries: our format tag, the model's config and ``extra``
    (class names, resolution, ...), each as a JSON string."""
    config = getattr(model, "config", None)
    return {"format": "mobilenets",
            "config": json.dumps(config.to_dict() if isinstance(config, ModelConfig) else {}),
            "extra": json.dumps(extra or {})}


def _torch_export(model: nn.Module, path: Path, shape: tuple[int, int, int], opset: int) -> None:
    """torch.onnx.export (the dynamo exporter) with a dynamic batch axis."""
    import onnx

    x = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: batch},), optimize=True, verbose=False)
    proto = program.model_proto
    onnx.save_model(proto, str(path))


def add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace an ONNX file's metadata properties with ``metadata``, in place."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save_model(proto, str(path))


def _check(reference: nn.Module, path: Path, shape, tolerance: float, batches=(1, 3),
           inputs: torch.Tensor | None = None) -> tuple[float, float]:
    """Run ``path`` with ORT and ``reference`` with torch on the same inputs: (max abs diff of the
    logits, top-1 agreement). ``inputs`` (real images) are used when given, else N(0, 1) noise."""
    session = OnnxModule(path)
    gen = torch.Generator().manual_seed(0)
    diffs, agree, total = [], 0, 0
    for b in batches:
        x = inputs[:b] if inputs is not None else torch.randn(b, *shape, generator=gen)
        with torch.no_grad():
            ref = reference(x).float()
        out = session(x)
        if tuple(out.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: output shape {tuple(out.shape)} for batch {b}, torch gives "
                              f"{tuple(ref.shape)}")
        diffs.append(float((out - ref).abs().max()))
        agree += int((out.argmax(1) == ref.argmax(1)).sum())
        total += b
    return max(diffs), agree / total


def export_onnx(model: nn.Module, path: str | os.PathLike, resolution: int | None = None,
                fold_bn: bool = True, tolerance: float = 1e-4, opset: int = OPSET,
                extra: dict | None = None) -> ExportReport:
    """Export a model to ONNX (dynamic batch) and verify it with ONNX Runtime, atomically.

    Args:
        model: The torch model (any module of this package; its ``config`` is stored in the file's
            metadata so the file is self-describing).
        path: Destination ``.onnx`` file. Written only if the check passes.
        resolution: Input size (square), >= 32. Default: the model's ``config.resolution``,
            else 224.
        fold_bn: Fold BatchNorm into the convolutions first. Default True.
        tolerance: Largest allowed |ONNX - torch| on the logits, relative to max(1, max |logit|).
            Default 1e-4 (float32 rounding is ~1e-6).
        opset: ONNX opset, >= 17. Default 18.
        extra: JSON-serialisable metadata to store (class names, eval crop, ...).

    Returns:
        An ``ExportReport`` with the measured difference.

    Raises:
        ExportError: if the outputs disagree beyond ``tolerance`` (nothing is written).
    """
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    shape = input_shape(model, resolution)
    reference = copy.deepcopy(model).float().eval()
    exported = fold_batchnorm(reference) if fold_bn else reference
    path = Path(path)
    with atomic_path(path) as tmp:
        _torch_export(exported, tmp, shape, opset)
        add_metadata(tmp, model_metadata(model, {**(extra or {}), "resolution": shape[1]}))
        diff, _ = _check(reference, tmp, shape, tolerance)
        scale = max(1.0, _logit_scale(reference, shape))
        if diff > tolerance * scale:
            raise ExportError(f"ONNX export of {path.name} disagrees with the torch model: max "
                              f"|diff| {diff:.3g} > {tolerance:g} x {scale:.3g}; not written")
    return ExportReport(str(path), "onnx", diff, tolerance * scale, (1, 3), bytes=path.stat().st_size)


def _logit_scale(model: nn.Module, shape) -> float:
    with torch.no_grad():
        return float(model(torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))).abs().max())


#: The mark in the node and output names of a convolution that computes an average pool
#: (``rewrite_pools``), so a profile can count its kernel as the pool (``layer_times``).
POOL_AS_CONV = "avgpool_as_conv"


def rewrite_pools(proto) -> list[str]:
    """Keep an ONNX model's pools off ONNX Runtime's uint8 pool kernels, before int8 quantization.

    ONNX Runtime runs a quantized pool in NCHW uint8 kernels (``MaxPool`` on uint8,
    ``QLinearAveragePool``) that are far slower than its fp32 pools and its int8 convolutions
    (``benchmarks/results/int8_pools.md``). So, in place:

    - every ``AveragePool`` becomes the depthwise ``Conv`` it equals: weights ``1 / (kh * kw)``,
      one group per channel, the pool's strides and pads (exact where the pool counts its padding,
      as ``count_include_pad=1`` does, or pads nothing). The quantizer then treats it as any
      depthwise convolution (an int8 ``QLinearConv``; ``1 / (kh * kw)`` is exact in int8 with a
      per-channel scale). Left as it is: a pool of another shape, ``ceil_mode``, ``auto_pad``,
      or channels unknown. Its node and output names carry ``POOL_AS_CONV``.
    - every ``MaxPool`` is to stay fp32, with the ``Pad`` before it and the nodes that read it:
      were a quantized node to read it, the quantizer's ``QuantizeLinear`` after it would be moved
      above it by ONNX Runtime's optimizer, which then runs it on uint8.

    A model without ``AveragePool`` and ``MaxPool`` nodes (MobileNet V1, V2: their global pool is
    a ``ReduceMean``/``GlobalAveragePool``) is not changed.

    Args:
        proto: An ``onnx.ModelProto`` with shapes inferred (``quant_pre_process``); changed in
            place.

    Returns:
        The names of the nodes to keep fp32 (``quantize_static``'s ``nodes_to_exclude``).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value
                for v in [*graph.value_info, *graph.input] if len(v.type.tensor_type.shape.dim) == 4}
    outputs = {o.name for o in graph.output}
    for i, node in enumerate(list(graph.node)):
        if node.op_type != "AveragePool" or node.output[0] in outputs:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        k, c = list(a["kernel_shape"]), channels.get(node.input[0], 0)
        pads = list(a.get("pads", [0] * 2 * len(k)))
        if (len(k) != 2 or c < 1 or a.get("ceil_mode", 0) or a.get("auto_pad", b"NOTSET") != b"NOTSET"
                or (any(pads) and not a.get("count_include_pad", 0))):
            continue
        weight = numpy_helper.from_array(np.full((c, 1, *k), 1 / (k[0] * k[1]), np.float32),
                                         f"{node.name}_{POOL_AS_CONV}_weight")
        graph.initializer.append(weight)
        old, new = node.output[0], f"{node.output[0]}_{POOL_AS_CONV}"
        for other in graph.node:
            other.input[:] = [new if name == old else name for name in other.input]
        for info in graph.value_info:
            if info.name == old:
                info.name = new
        graph.node[i].CopyFrom(helper.make_node(
            "Conv", [node.input[0], weight.name], [new], name=f"{node.name}_{POOL_AS_CONV}", group=c,
            kernel_shape=k, strides=a.get("strides", [1, 1]), pads=pads,
            dilations=a.get("dilations", [1, 1])))
    producer = {out: n for n in graph.node for out in n.output}
    keep = []
    for node in graph.node:
        if node.op_type == "MaxPool":
            pad = producer.get(node.input[0])
            keep += [node.name] + ([pad.name] if pad is not None and pad.op_type == "Pad" else [])
            keep += [n.name for n in graph.node if node.output[0] in n.input]
    return keep


def quantize_int8(model: nn.Module, path: str | os.PathLike, calibration: Iterable[torch.Tensor],
                  resolution: int | None = None, per_channel: bool = True,
                  min_top1_agreement: float = 0.9, check_inputs: torch.Tensor | None = None,
                  extra: dict | None = None, float_layers: int = 2,
                  float_classifier: bool = True) -> ExportReport:
    """Post-training static int8 quantization with ONNX Runtime, calibrated on real images.

    The float model is exported (BN folded) and quantized in QDQ form: int8 weights, per output
    channel by default, and uint8 activations whose ranges are the min/max seen on the calibration
    batches. ONNX Runtime fuses the QDQ pairs into integer convolutions.

    Args:
        model: The float torch model.
        path: Destination ``.onnx`` file (written atomically, only if the check passes).
        calibration: Preprocessed float batches ``(N, C, H, W)`` from the user's data, as the model
            sees them at evaluation (a few hundred images are enough).
        resolution: Input size; default the model's.
        per_channel: Per-output-channel weight scales (default True); per-tensor otherwise.
        min_top1_agreement: The int8 model's top-1 must agree with the float model's on at least
            this share of ``check_inputs``. Default 0.9.
        check_inputs: Real preprocessed images to check on; default the first calibration batch.
        extra: JSON-serialisable metadata to store.
        float_layers: The first ``float_layers`` convolutions stay in fp32 (default 2: the stem
            and the first depthwise layer). ONNX Runtime's int8 kernels are slower than fp32 on
            these few-channel, full-resolution layers on AVX2 CPUs without VNNI, so keeping them
            float is faster there (``benchmarks/results/ort_layers.md``,
            ``docs/results/deployment.md``). 0 quantizes every layer.
        float_classifier: Keep the classifier (Gemm/MatMul) fp32, so the logits are not rounded
            to 8 bits (``deploy.quantize`` says why; ``docs/deployment.md`` has the agreement
            either way). Default True.

    Pools (ShuffleNet's; MobileNet V1 and V2 have none but the global one) never run on ONNX
    Runtime's slow uint8 pool kernels: an average pool is quantized as the depthwise convolution
    it equals, a max pool stays fp32 with the layers it feeds (``rewrite_pools``;
    ``benchmarks/results/int8_pools.md`` compares the options).

    Returns:
        An ``ExportReport`` (max |diff| of the logits and top-1 agreement with the float model).

    Raises:
        ExportError: if the int8 model disagrees with the float model too often.
        ValueError: if ``calibration`` holds no batch or a batch of the wrong shape.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if isinstance(float_layers, bool) or not isinstance(float_layers, int) or float_layers < 0:
        raise ValueError(f"float_layers must be an integer >= 0, got {float_layers!r}")
    num_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    if float_layers > num_convs:
        raise ValueError(f"--float-layers {float_layers} is more than the model's {num_convs} "
                         f"convolutions (0 to {num_convs})")
    shape = input_shape(model, resolution)
    batches = [b.detach().float().contiguous() for b in calibration]
    if not batches:
        raise ValueError("calibration holds no batch: give a few hundred real images")
    for b in batches:
        if b.dim() != 4 or tuple(b.shape[1:]) != shape:
            raise ValueError(f"calibration batches must be (N, {shape[0]}, {shape[1]}, {shape[2]}), "
                             f"got {tuple(b.shape)}")
    check_inputs = batches[0] if check_inputs is None else check_inputs

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {INPUT_NAME: b.numpy()}

    path = Path(path)
    reference = copy.deepcopy(model).float().eval()
    with atomic_path(path) as tmp:
        work = tmp.parent / f"{tmp.name}.work"
        work.mkdir()
        try:
            fp32, pre = work / "fp32.onnx", work / "pre.onnx"
            _torch_export(fold_batchnorm(reference), fp32, shape, OPSET)
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            proto = onnx.load(str(pre))
            nodes = proto.graph.node
            keep = [n.name for n in nodes if n.op_type == "Conv"][:float_layers]
            if float_classifier:
                keep += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
            keep += rewrite_pools(proto)  # after counting float_layers: pools are no layers
            onnx.save_model(proto, str(pre))
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=keep,
                            extra_options={"ActivationSymmetric": False})
        finally:
            for f in sorted(work.iterdir(), reverse=True):
                f.unlink()
            work.rmdir()
        add_metadata(tmp, model_metadata(model, {**(extra or {}), "resolution": shape[1], "int8": True}))
        n = len(check_inputs)
        diff, agreement = _check(reference, tmp, shape, 0.0, batches=(min(1, n), n),
                                 inputs=check_inputs)
        if agreement < min_top1_agreement:
            raise ExportError(f"int8 model {path.name} agrees with the float model on only "
                              f"{agreement:.1%} of top-1 predictions (< {min_top1_agreement:.0%}); "
                              "not written: calibrate on more representative images")
    return ExportReport(str(path), "onnx-int8", diff, min_top1_agreement, (1, n), agreement,
                        path.stat().st_size)


def calibration_batches(dataset, transform, count: int = 512, batch_size: int = 64,
                        seed: int = 0) -> list[torch.Tensor]:
    """``count`` random images of ``dataset`` (e.g. the training split), preprocessed by the
    evaluation ``transform``, in batches: the calibration set of ``quantize_int8``."""
    if count < 1:
        raise ValueError(f"calibration count must be >= 1, got {count}")
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    from mobilenets.engine.data import iterate_batches

    return [transform(images) for images, _ in iterate_batches(dataset, list(torch.split(idx, batch_size)))]
