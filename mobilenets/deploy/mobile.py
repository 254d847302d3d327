"""Exports to the runtimes phones and edge devices use, each verified against torch before it is
written: ExecuTorch (``.pte``, XNNPACK delegate), LiteRT (``.tflite``, via ``litert-torch``), and
OpenVINO IR (``.xml`` + ``.bin``; fp32, int8, or bf16 on CPUs with AVX512_BF16/AMX).

Every export:

1. folds BatchNorm (``fold_batchnorm``); for int8, quantizes with PT2E (``deploy.quantize``:
   per-channel int8 weights, int8 activations calibrated on real images of the user's data, the
   first ``float_layers`` blocks and the classifier left fp32; OpenVINO reads the int8 ONNX of
   ``onnx_export.quantize_int8``, the same policy);
2. lowers and checks that every op runs in the fast delegate (XNNPACK): an op left to ExecuTorch's
   portable kernels or outside LiteRT's delegate is an ``ExportError`` unless
   ``allow_portable=True``;
3. runs the file with its runtime (``deploy.runtimes``) beside the torch model on the same
   inputs: fp32 must agree to ``tolerance`` x max(1, max |logit|), int8 and bf16 on at least
   ``min_top1_agreement`` of the real images' top-1;
4. only then renames it over ``path`` (``fileio.atomic_path``; OpenVINO's pair of files changes
   as one, ``fileio.atomic_files``).

The tool-chains are optional extras; a missing one is one line naming the pip command.
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from mobilenets.deploy.onnx_export import (ExportError, ExportReport, fold_batchnorm, input_shape,
                                           quantize_int8)
from mobilenets.deploy.quantize import float_module_names, pt2e_quantize
from mobilenets.deploy.runtimes import (ExecuTorchRunner, LiteRTRunner, OpenVINORunner,
                                        litert_delegation, require, toolchain_output)
from mobilenets.fileio import atomic_files, atomic_path

#: The ISA flags (``/proc/cpuinfo``) with which OpenVINO's CPU plugin computes in bf16.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class ChannelsLastInput(nn.Module):
    """``model`` taking (N, H, W, C) images: LiteRT's converter cancels this permute against its
    own NCHW->NHWC transpose, so the file has no TRANSPOSE left."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def _check_calibration(calibration, shape) -> list[torch.Tensor]:
    batches = [b.detach().float().contiguous() for b in (calibration or [])]
    if not batches:
        raise ValueError("int8 needs calibration batches: a few hundred real images of your data")
    for b in batches:
        if b.dim() != 4 or tuple(b.shape[1:]) != tuple(shape):
            raise ValueError(f"calibration batches must be (N, {', '.join(map(str, shape))}), got "
                             f"{tuple(b.shape)}")
    return batches


def verify(reference: nn.Module, runner: nn.Module, shape, *, quantized: bool,
           tolerance: float = 1e-4, min_top1_agreement: float = 0.9,
           check_inputs: torch.Tensor | None = None, name: str = "export") -> dict:
    """Run ``runner`` (an exported file) and the float ``reference`` on the same inputs.

    fp32 (``quantized=False``): max |diff| of the logits over 3 noise images and ``check_inputs``
    must be <= ``tolerance`` x max(1, max |logit|). int8/bf16: the top-1 class must agree on at
    least ``min_top1_agreement`` of ``check_inputs`` (real images; noise when none are given).

    Returns:
        ``{"max_abs_diff", "logit_scale", "tolerance", "top1_agreement", "checked"}``.

    Raises:
        ExportError: naming ``name`` and the measured figure, when the check fails.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, *shape, generator=gen)
    if check_inputs is not None:
        x = check_inputs if quantized else torch.cat([x, check_inputs[:29]])
    with torch.no_grad():
        ref = reference(x).float()
    out = runner(x)
    if tuple(out.shape) != tuple(ref.shape):
        raise ExportError(f"{name}: output shape {tuple(out.shape)}, torch gives {tuple(ref.shape)}")
    diff = float((out - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    agreement = float((out.argmax(1) == ref.argmax(1)).float().mean())
    result = {"max_abs_diff": diff, "logit_scale": scale, "top1_agreement": agreement,
              "checked": len(x)}
    if quantized:
        result["tolerance"] = min_top1_agreement
        if agreement < min_top1_agreement:
            raise ExportError(f"{name} agrees with the float model on only {agreement:.1%} of "
                              f"top-1 predictions (< {min_top1_agreement:.0%}); not written")
    else:
        result["tolerance"] = tolerance * scale
        if diff > tolerance * scale:
            raise ExportError(f"{name} disagrees with the torch model: max |diff| {diff:.3g} > "
                              f"{tolerance:g} x {scale:.3g}; not written")
    return result


def executorch_delegation(edge_program) -> dict:
    """Which nodes of a lowered ExecuTorch program run in the XNNPACK delegate.

    The top-level graph of a fully delegated model holds only ``executorch_call_delegate`` calls
    and ``getitem`` (unpacking the delegate's outputs, no compute); any other call runs on the
    portable (reference, single-threaded) kernels.

    Returns:
        ``{"delegates": delegate calls, "delegated_ops": nodes inside them, "outside": {op: count}}``
    """
    from executorch.devtools.backend_debug import get_delegation_info

    gm = edge_program.exported_program().graph_module
    outside, delegates = Counter(), 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        target = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in target:
            delegates += 1
        elif target != "getitem":
            outside[target] += 1
    return {"delegates": delegates,
            "delegated_ops": get_delegation_info(gm).num_delegated_nodes,
            "outside": dict(outside)}


def _check_delegation(delegation: dict, path: Path, allow_portable: bool, runtime: str) -> None:
    if delegation["outside"] and not allow_portable:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(delegation["outside"].items()))
        raise ExportError(f"{path.name}: {sum(delegation['outside'].values())} op(s) outside "
                          f"{runtime}'s XNNPACK delegate (slow reference kernels): {ops}; pass "
                          "--allow-portable to write it anyway")


def export_mobile(model: nn.Module, path: str | os.PathLike, fmt: str, *,
                  resolution: int | None = None, calibration: list[torch.Tensor] | None = None,
                  float_layers: int = 2, float_classifier: bool = True, nhwc: bool = False,
                  allow_portable: bool = False, tolerance: float = 1e-4,
                  min_top1_agreement: float = 0.9, check_inputs: torch.Tensor | None = None
                  ) -> ExportReport:
    """Export ``model`` to a phone/edge runtime, verified against torch, written atomically.

    The phone backends of ``backends.BACKENDS`` (``executorch``, ``litert-int8``,
    ``openvino-bf16``, ...) write their files with this, ``fmt`` being their name.

    Args:
        model: The float torch model (eval mode is used; the model is not changed).
        path: Destination file (``.pte``, ``.tflite``; OpenVINO: ``.xml``, its ``.bin`` beside).
        fmt: The runtime, with its precision appended where it is not fp32 (``mobile_formats``):
            ``"executorch"``, ``"executorch-int8"``, ``"litert"``, ``"litert-int8"``,
            ``"openvino"``, ``"openvino-int8"`` or ``"openvino-bf16"``.
        resolution: Input size (square). Default: the model's, else 224.
        calibration: int8: real preprocessed batches (N, C, H, W) of the user's data.
        float_layers: int8: the first N conv blocks stay fp32. Default 2.
        float_classifier: int8: the classifier stays fp32 (logits not rounded). Default True.
        nhwc: LiteRT only: the file takes (N, H, W, C) images. Default False (NCHW).
        allow_portable: Write the file even if some ops run outside the XNNPACK delegate.
        tolerance: fp32: largest |diff| of the logits relative to max(1, max |logit|).
        min_top1_agreement: int8/bf16: least share of ``check_inputs`` whose top-1 agrees.
        check_inputs: Real images to check on. Default: the first calibration batch (int8), noise
            only (fp32, bf16).

    Returns:
        An ``ExportReport`` with the check's figures, the delegation and the file's I/O.

    Raises:
        MissingExtraError: if the runtime's extra is not installed (one line, the pip command).
        ExportError: if the check fails or ops fall off the delegate (nothing is written).
        ValueError: for a bad ``fmt``, option or calibration batch.
    """
    if fmt not in mobile_formats():
        raise ValueError(f"--format must be one of {', '.join(mobile_formats())}, got {fmt!r}")
    runtime, _, precision = fmt.partition("-")
    precision = precision or "fp32"
    build = EXPORTERS[runtime][0]
    if nhwc and runtime != "litert":
        raise ValueError("--nhwc is for LiteRT only (ExecuTorch falls off XNNPACK with NHWC input)")
    shape = input_shape(model, resolution)
    reference = copy.deepcopy(model).float().eval()
    floats = []
    if precision == "int8":
        calibration = _check_calibration(calibration, shape)
        floats = float_module_names(reference, float_layers, float_classifier)
        if check_inputs is None:
            check_inputs = calibration[0]
    path = Path(path)
    try:
        with toolchain_output():  # converters' logs and warnings: a failure is our one line
            report = build(reference, path, shape, precision, calibration,
                           (floats, float_layers, float_classifier), nhwc, allow_portable,
                           dict(tolerance=tolerance, min_top1_agreement=min_top1_agreement,
                                check_inputs=check_inputs))
    except (ValueError, OSError):  # ours (ExportError, MissingExtraError) or the file system's
        raise
    except Exception as e:  # inside a tool-chain: one line naming it, not its stack
        from mobilenets.deploy.weights import short_error

        raise ExportError(f"{fmt} export of {path.name} failed in the {runtime} tool-chain "
                          f"({short_error(e)}); nothing written") from None
    report.format, report.float_modules = fmt, floats
    return report


def _executorch(reference, path, shape, precision, calibration, float_policy, nhwc,
                allow_portable, check) -> ExportReport:
    floats = float_policy[0]
    require("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    m = fold_batchnorm(reference)
    if precision == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)

        q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        # BatchNorm is folded above, so the QAT conv+BN patterns cannot match; looking for them
        # traces 12 pattern graphs per export, a large share of its time (docs/deployment.md).
        q.SUPPORTED_PATTERNS = [p for p in q.SUPPORTED_PATTERNS if not p.is_qat]
        m = pt2e_quantize(m, q, calibration, floats)
    program = torch.export.export(m, (torch.randn(1, *shape),))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    delegation = executorch_delegation(edge)
    _check_delegation(delegation, path, allow_portable, "ExecuTorch")
    buffer = edge.to_executorch().buffer
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer)
        runner = ExecuTorchRunner(tmp)
        checked = verify(reference, runner, shape, quantized=precision != "fp32",
                         name=f"ExecuTorch export {path.name}", **check)
        del runner
    io = {"input": {"dtype": "float32", "shape": [1, *shape]}, "layout": "NCHW"}
    return _report(path, checked, delegation, io)


def _litert(reference, path, shape, precision, calibration, float_policy, nhwc, allow_portable,
            check) -> ExportReport:
    floats = float_policy[0]
    litert_torch = require("litert")
    require("litert", "ai_edge_litert.interpreter")
    m = fold_batchnorm(reference)
    x = torch.randn(1, *shape)
    if nhwc:  # module paths gain the wrapper's prefix
        m, floats = ChannelsLastInput(m).eval(), [f"model.{n}" for n in floats]
        x = x.permute(0, 2, 3, 1).contiguous()
    quant_config = None
    if precision == "int8":
        from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                          get_symmetric_quantization_config)
        from litert_torch.quantize.quant_config import QuantConfig

        q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        if nhwc:
            calibration = [b.permute(0, 2, 3, 1).contiguous() for b in calibration]
        m = pt2e_quantize(m, q, calibration, floats, fold_quantize=False)
        quant_config = QuantConfig(pt2e_quantizer=q)
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines: stdout is our output
        edge = litert_torch.convert(m, (x,), quant_config=quant_config)
    with atomic_path(path) as tmp:
        with contextlib.redirect_stdout(sys.stderr):
            edge.export(str(tmp))
        delegation = litert_delegation(tmp)
        _check_delegation(delegation, path, allow_portable, "LiteRT")
        runner = LiteRTRunner(tmp)
        checked = verify(reference, runner, shape, quantized=precision != "fp32",
                         name=f"LiteRT export {path.name}", **check)
        io = runner.io
    return _report(path, checked, delegation, io)


def bf16_supported(flags: list[str] | None = None) -> bool:
    """Whether this CPU (or ``flags``) has native bf16 arithmetic (AVX512_BF16 or AMX)."""
    if flags is None:
        from mobilenets.deploy.machine import cpu_info

        flags = cpu_info()["isa"]
    return any(f in flags for f in BF16_FLAGS)


def _openvino(reference, path, shape, precision, calibration, float_policy, nhwc,
              allow_portable, check) -> ExportReport:
    ov = require("openvino")
    if path.suffix != ".xml":
        raise ValueError(f"--output of an OpenVINO export must end in .xml (its weights go to "
                         f"the .bin beside it), got {path}")
    if precision == "bf16" and not bf16_supported():
        raise ExportError("bf16 needs a CPU with avx512_bf16 or amx_bf16 (else OpenVINO "
                          "computes in fp32); this one has neither: export openvino (fp32)")
    with tempfile.TemporaryDirectory(prefix="mobilenets-openvino-") as tmp:
        if precision == "int8":
            # OpenVINO reads our int8 ONNX (``quantize_int8``: QDQ, per-channel weights, the same
            # float layers) and runs its quantized layers with its own int8 kernels: as fast as
            # quantizing with NNCF here, without another package (docs/deployment.md).
            _, float_layers, float_classifier = float_policy
            source = Path(tmp) / "int8.onnx"
            quantize_int8(reference, source, calibration, shape[1], min_top1_agreement=0.0,
                          float_layers=float_layers, float_classifier=float_classifier)
            ov_model = ov.convert_model(str(source))
        else:
            ov_model = ov.convert_model(fold_batchnorm(reference),
                                        example_input=torch.randn(1, *shape), input=[-1, *shape])
        # The CPU plugin computes in bf16 by default where it can: store the precision we mean
        # (int8: the layers left float compute in fp32, as in ONNX Runtime's int8).
        ov_model.set_rt_info("bf16" if precision == "bf16" else "f32",
                             ["runtime_options", "INFERENCE_PRECISION_HINT"])
        # The .xml and .bin change as one (fileio.atomic_files): no kill leaves a new .bin
        # beside an old .xml.
        with atomic_files(path, [".bin"]) as work:
            xml = work / path.name
            ov.save_model(ov_model, str(xml), compress_to_fp16=False)  # default: fp16 weights
            runner = OpenVINORunner(xml)
            checked = verify(reference, runner, shape, quantized=precision != "fp32",
                             name=f"OpenVINO export {path.name}", **check)
            delegation = {"runtime_precisions": runner.runtime_precisions()}
            del runner
    report = _report(path, checked, delegation, {"layout": "NCHW"})
    report.bytes += path.with_suffix(".bin").stat().st_size
    return report


def _report(path: Path, checked: dict, delegation: dict, io: dict) -> ExportReport:
    return ExportReport(str(path), "", checked["max_abs_diff"], checked["tolerance"],
                        (1, checked["checked"]), checked["top1_agreement"],
                        path.stat().st_size, delegation=delegation, io=io,
                        logit_scale=checked["logit_scale"])


#: The exporters of this module by runtime, and the precisions each writes.
EXPORTERS = {"executorch": (_executorch, ("fp32", "int8")), "litert": (_litert, ("fp32", "int8")),
             "openvino": (_openvino, ("fp32", "int8", "bf16"))}


def mobile_formats() -> tuple[str, ...]:
    """``export_mobile``'s formats: each runtime of ``EXPORTERS``, with the precision appended
    where it is not fp32 (``executorch-int8``): the names of their backends."""
    return tuple(r if p == "fp32" else f"{r}-{p}" for r, (_, ps) in EXPORTERS.items() for p in ps)
