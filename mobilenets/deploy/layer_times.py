"""Where a runtime spends a model's time: the per-kernel times of an exported model, from ONNX
Runtime's profiler (``kernel_times``) or ExecuTorch's event tracer inside the XNNPACK delegate
(``operator_times``), mapped onto the model's layers and summed per Table 2 layer type
(``by_layer_type``), fp32 beside int8 (``layer_rows``).

A runtime runs the layers in the model's order, so the k-th kernel that computes (a convolution
or a fully connected product, whatever the runtime calls it) is the model's k-th layer with
Mult-Adds in ``cost.profiler.profile_model``; the kernels that only convert (quantize, transpose,
reshape, pool) are summed apart. The profilers add a little time per kernel: compare their sums
with the whole model timed without them (``median_call_us``, ``ort_latency_us``).
"""
from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

from mobilenets.cost.profiler import profile_model
from mobilenets.deploy.machine import timed

#: The kernels that compute a layer: ONNX Runtime's op types, and "Conv" (``operator_times``
#: names XNNPACK's convolution and fully connected operators so).
COMPUTE_OPS = {"Conv", "QLinearConv", "Gemm", "QGemm", "FusedConv", "MatMul", "QLinearMatMul"}
#: XNNPACK operators that compute a layer ("Convolution (NHWC, QC8) DWConv #3", ...).
XNNPACK_COMPUTE = re.compile(r"^(Convolution|Fully Connected) \(")
#: The row of ``by_layer_type`` for the kernels that compute no layer.
OTHER = "other (convert, pool, reshape)"


def _random_input(shape):
    """A batch-1 NumPy input of (C, H, W) ``shape``, the same every call."""
    import numpy as np

    return np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)


def kernel_times(onnx_file: str | Path, shape, threads: int, runs: int) -> list[tuple[str, float]]:
    """Every kernel ONNX Runtime runs for an ONNX file at batch 1, timed by its profiler.

    Args:
        onnx_file: The model (``onnx_export.export_onnx`` or ``quantize_int8``). The profile is
            written beside it.
        shape: The input's (C, H, W).
        threads: ONNX Runtime's intra-op threads.
        runs: Runs profiled; each kernel's median over them is taken (leaving out the first
            runs' allocations and any stray slow run).

    Returns:
        ``(op type, median microseconds per run)`` of every kernel, in execution order. A
        convolution that computes an average pool (``onnx_export.rewrite_pools``) is named
        ``"AveragePool"``: it is no layer of the model.
    """
    import numpy as np
    import onnxruntime as ort

    from mobilenets.deploy.onnx_export import INPUT_NAME, POOL_AS_CONV

    onnx_file = Path(onnx_file)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(onnx_file.with_suffix(""))
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    x = _random_input(shape)
    for _ in range(runs):
        sess.run(None, {INPUT_NAME: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    order: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            op = "AveragePool" if op in COMPUTE_OPS and POOL_AS_CONV in e["name"] else op
            order.setdefault(e["name"], [op, []])[1].append(e["dur"])
    return [(op, float(np.median(us))) for op, us in order.values()]


def operator_times(pte: str | Path, shape, runs: int, workdir: str | Path
                   ) -> tuple[list[tuple[str, float]], float]:
    """Every XNNPACK operator ExecuTorch runs for a ``.pte`` file at batch 1, timed by its event
    tracer (ETDump) inside the delegate.

    Args:
        pte: The program (``backends.BACKENDS["executorch"]`` or ``"executorch-int8"``).
        shape: The input's (C, H, W).
        runs: Runs traced; each operator's median over them is taken.
        workdir: A folder for the trace file.

    Returns:
        ``(ops, delegate_us)``: ``(operator, median microseconds per run)`` of every operator
        in execution order, those that compute a layer named ``"Conv"`` (as ``by_layer_type``
        expects), the others by XNNPACK's name without their number ("Convert (NC)", ...);
        and the median microseconds of the whole delegate call, which also holds the delegate's
        own work per call.

    Raises:
        MissingExtraError: without ExecuTorch (``pip install 'mobilenets[executorch]'``).
    """
    from mobilenets.deploy.runtimes import require

    portable = require("executorch", "executorch.extension.pybindings.portable_lib")
    from executorch.devtools import Inspector

    pte = Path(pte)
    module = portable._load_for_executorch(str(pte), enable_etdump=True)
    x = torch.randn(1, *shape)
    for _ in range(runs):
        module.forward((x,))
    dump = Path(workdir) / (pte.stem + ".etdp")
    module.write_etdump_result_to_file(str(dump))
    with warnings.catch_warnings():  # "Output Buffer not found": no tensors were asked for
        warnings.simplefilter("ignore")
        events = next(b for b in Inspector(etdump_path=str(dump)).event_blocks
                      if b.name == "Execute").events
    out, delegate_us = [], 0.0
    for e in events:  # the median over runs leaves out the first runs' set-up
        if e.perf_data is None or e.name == "Method::execute":
            continue
        if e.name == "DELEGATE_CALL":
            delegate_us += e.perf_data.p50 * 1e3
            continue
        op = "Conv" if XNNPACK_COMPUTE.match(e.name) else re.sub(r" #\d+$", "", e.name)
        out.append((op, e.perf_data.p50 * 1e3))  # ms -> us
    return out, delegate_us


def _openvino_operations(path, shape, workdir) -> list[str]:
    from mobilenets.deploy.runtimes import require

    ov = require("openvino")
    request = ov.Core().compile_model(str(path), "CPU", {
        "PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1,
        "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    request.infer({0: _random_input(shape)})
    # The execution graph's own type says "Eltwise" for additions and activations alike.
    return [p.node_type for p in request.get_profiling_info() if p.status.name == "EXECUTED"]


#: The runtimes whose operations ``runtime_operations`` lists, and how: ``(path, shape,
#: workdir)`` -> the operations run, in order.
OPERATION_LISTS: dict[str, Callable] = {
    "onnxruntime": lambda path, shape, workdir: [op for op, _ in kernel_times(path, shape, 1, 2)],
    "executorch": lambda path, shape, workdir: [
        op for op, _ in operator_times(path, shape, 2, workdir)[0]],
    "openvino": _openvino_operations,
}


def runtime_operations(backend: str, path: str | Path, shape, workdir: str | Path
                       ) -> dict[str, int]:
    """How many operations of each type the runtime of ``backend`` runs for its exported file
    at batch 1, after its own graph rewrites and fusions (``OPERATION_LISTS``): ONNX Runtime's
    kernels (``kernel_times``), XNNPACK's operators inside ExecuTorch (``operator_times``), the
    nodes OpenVINO's performance counters report executed. What ``Backend.fused`` rests on.

    Raises:
        ValueError: for a backend of another runtime (torch, LiteRT: no profiler here).
    """
    from collections import Counter

    from mobilenets.deploy.backends import get_backend

    runtime = get_backend(backend).runtime
    if runtime not in OPERATION_LISTS:
        raise ValueError(f"no per-operation profile of {backend!r} ({runtime}) here")
    return dict(Counter(OPERATION_LISTS[runtime](path, shape, workdir)))


def median_call_us(call: Callable[[], object], runs: int) -> float:
    """Median wall time of ``call()`` over ``runs`` calls after 20 warm-up calls, in
    microseconds."""
    import numpy as np

    times = [timed(call) for _ in range(runs + 20)]
    return float(np.median(times[20:])) * 1e6


def ort_latency_us(onnx_file: str | Path, shape, threads: int, runs: int) -> float:
    """Median wall time of one batch-1 run of an ONNX file in ONNX Runtime without the profiler,
    in microseconds (``median_call_us``): how far ``kernel_times``' sum can be trusted."""
    from mobilenets.deploy.onnx_export import INPUT_NAME, ort_session

    sess = ort_session(onnx_file, threads=threads)
    x = _random_input(shape)
    return median_call_us(lambda: sess.run(None, {INPUT_NAME: x}), runs)


def by_layer_type(model: torch.nn.Module, shape, kernels: list[tuple[str, float]]
                  ) -> dict[str, float]:
    """Kernel times summed per Table 2 layer type.

    Args:
        model: The model the kernels ran (float; its layers as ``profile_model`` finds them).
        shape: The input's (C, H, W).
        kernels: ``(op, microseconds)`` in execution order (``kernel_times``,
            ``operator_times``).

    Returns:
        ``{layer type: microseconds}`` ("Conv DW 3x3", "Conv 1x1", ...): the k-th kernel of
        ``COMPUTE_OPS`` counted as the k-th layer with Mult-Adds; the other kernels under
        ``OTHER``.

    Raises:
        RuntimeError: if the compute kernels are not as many as the layers (the runtime fused
            or split layers: the map would be wrong).
    """
    layers = [r for r in profile_model(model, shape).rows if r.madds > 0]
    compute = [(op, us) for op, us in kernels if op in COMPUTE_OPS]
    if len(compute) != len(layers):
        raise RuntimeError(f"{len(compute)} compute kernels for {len(layers)} layers: cannot map")
    out: dict[str, float] = defaultdict(float)
    for row, (_, us) in zip(layers, compute):
        out[row.kind] += us
    for op, us in kernels:
        if op not in COMPUTE_OPS:
            out[OTHER] += us
    return dict(out)


def layer_rows(madds: dict[str, int], times: dict[str, dict[str, float]], whole: dict[str, float],
               whole_label: str) -> list[dict]:
    """The rows of a per-layer-type table, fp32 beside int8.

    Args:
        madds: Mult-Adds per layer type (``profile_model(...).by_type()``).
        times: ``{"fp32": {layer type: us}, "int8": {...}}`` (``by_layer_type``).
        whole: The whole model timed without the profiler, ``{"fp32": us, "int8": us}``.
        whole_label: The last row's name, e.g. ``"whole model, no profiler"``.

    Returns:
        Dicts with ``layer_type``, ``madds_m``, ``fp32_us``, ``int8_us``, ``int8_over_fp32``
        and ``fp32_gflops`` (2 x Mult-Adds / time; None where either is missing): a row per
        layer type, then ``"total"`` (the sums) and ``whole_label``.
    """
    rows = []
    for kind in dict.fromkeys([*times["fp32"], *times["int8"]]):
        f, q = times["fp32"].get(kind, 0.0), times["int8"].get(kind, 0.0)
        rows.append({"layer_type": kind, "madds_m": round(madds.get(kind, 0) / 1e6, 1),
                     "fp32_us": round(f, 1), "int8_us": round(q, 1),
                     "int8_over_fp32": round(q / f, 2) if f else None,
                     "fp32_gflops": round(2 * madds[kind] / f / 1e3, 1)
                     if f and madds.get(kind) else None})
    total = sum(madds.values())
    sums = {k: sum(v.values()) for k, v in times.items()}
    for label, t in (("total", sums), (whole_label, whole)):
        rows.append({"layer_type": label, "madds_m": round(total / 1e6, 1),
                     "fp32_us": round(t["fp32"], 1), "int8_us": round(t["int8"], 1),
                     "int8_over_fp32": round(t["int8"] / t["fp32"], 2),
                     "fp32_gflops": round(2 * total / t["fp32"] / 1e3, 1)})
    return rows


def madds_by_type(model: torch.nn.Module, shape) -> dict[str, int]:
    """``{layer type: Mult-Adds}`` of ``model`` at input ``shape`` (Table 2's types)."""
    return {t["kind"]: t["madds"] for t in profile_model(model, shape).by_type()}


#: The columns of ``layer_rows`` as ``layer_markdown`` heads them.
LAYER_HEADERS = {"layer_type": "layer type", "madds_m": "Mult-Adds (M)", "fp32_us": "fp32 us",
                 "int8_us": "int8 us", "int8_over_fp32": "int8 / fp32",
                 "fp32_gflops": "fp32 GFLOP/s"}


def layer_markdown(results: list[dict], machine: str, what: str = "kernel") -> str:
    """Per-layer-type tables as Markdown, one per model.

    Args:
        results: Dicts with ``variant`` (the model's name) and ``rows`` (``layer_rows``).
        machine: The first line (``machine.machine_line`` and how the times were taken).
        what: What was timed, for each table's title: ``"kernel"`` (ONNX Runtime) or
            ``"operator"`` (XNNPACK). Default ``"kernel"``.

    Returns:
        The text: ``machine``, then per model a bold title and a pipe table.
    """
    from mobilenets.tables import render_table

    lines = [machine, ""]
    for res in results:
        lines += [f"**{res['variant']}** ({what} time per image, batch 1)", "",
                  render_table(res["rows"], "markdown", headers=LAYER_HEADERS), ""]
    return "\n".join(lines)
