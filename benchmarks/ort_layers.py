"""Where int8 wins and loses (issue 4): ONNX Runtime's per-layer kernel time, fp32 against int8.

`inference.py` measures whole-model latency; this script explains it. It exports each variant
twice, as `mobilenets export` does (fp32 ONNX with BatchNorm folded; int8 QDQ calibrated on 512
Fashion-MNIST training images), runs both under ORT's profiler at batch 1, and maps each
convolution or fully connected kernel back to the model's layer (the layers run in the profile's
order). It sums the time per Table 2 layer type ("Conv DW 3x3", "Conv 1x1", ...), plus the
kernels that only convert (QuantizeLinear, Transpose, layout reorders, ...).

Writes ``benchmarks/results/ort_layers.json`` and ``ort_layers.md``; a benchmark, not a test.

Usage (from the repository root; ~1 minute on 2 cores, on an otherwise idle machine):

    .venv/bin/python benchmarks/ort_layers.py [--threads 1] [--runs 300] [--variants ...]

One thread by default: with two, ORT's profiler distorts the int8 kernels (their profiled sum
exceeds the unprofiled latency), so the per-layer split is only trustworthy single-threaded; the
last row of each table, the whole model timed without the profiler, shows the agreement.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mobilenets.deploy.bench import calibration_images  # noqa: E402
from mobilenets.deploy.machine import machine_info, machine_line, timed  # noqa: E402
from mobilenets.fileio import write_json, write_text  # noqa: E402
from mobilenets.deploy.onnx_export import INPUT_NAME, export_onnx, input_shape, ort_session, quantize_int8  # noqa: E402
from mobilenets.cost.profiler import profile_model  # noqa: E402
from mobilenets.models.registry import create_model  # noqa: E402

VARIANTS = ["mobilenet_v1_1.0_224", "mobilenet_v1_0.25_128", "mobilenet_v2_1.0_224"]
COMPUTE_OPS = {"Conv", "QLinearConv", "Gemm", "QGemm", "FusedConv", "MatMul", "QLinearMatMul"}


def kernel_times(onnx_file: Path, shape, threads: int, runs: int) -> list[tuple[str, float]]:
    """(op type, median microseconds per run) of every kernel, in execution order."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(onnx_file.with_suffix(""))
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    for _ in range(runs):
        sess.run(None, {INPUT_NAME: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    order: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            order.setdefault(e["name"], [e["args"]["op_name"], []])[1].append(e["dur"])
    # The median over runs leaves out the first runs' allocations and any stray slow run.
    return [(op, float(np.median(us))) for op, us in order.values()]


def latency_us(onnx_file: Path, shape, threads: int, runs: int) -> float:
    """Median wall time of one batch-1 run without the profiler, in microseconds."""
    sess = ort_session(onnx_file, threads=threads)
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    return median_call_us(lambda: sess.run(None, {INPUT_NAME: x}), runs)


def median_call_us(call, runs: int) -> float:
    """Median wall time of ``call()`` over ``runs`` calls after 20 warm-up calls, in us."""
    times = [timed(call) for _ in range(runs + 20)]
    return float(np.median(times[20:])) * 1e6


def by_layer_type(model: torch.nn.Module, shape, kernels: list[tuple[str, float]]) -> dict[str, float]:
    """Microseconds per Table 2 layer type; the k-th compute kernel is the model's k-th layer."""
    layers = [r for r in profile_model(model, shape).rows if r.madds > 0]
    compute = [(op, us) for op, us in kernels if op in COMPUTE_OPS]
    if len(compute) != len(layers):
        raise RuntimeError(f"{len(compute)} compute kernels for {len(layers)} layers: cannot map")
    out: dict[str, float] = defaultdict(float)
    for row, (_, us) in zip(layers, compute):
        out[row.kind] += us
    for op, us in kernels:
        if op not in COMPUTE_OPS:
            out["other (convert, pool, reshape)"] += us
    return dict(out)


def measure(variant: str, threads: int, runs: int, workdir: Path) -> dict:
    model = create_model(variant).eval()
    shape = input_shape(model)
    madds = defaultdict(int)
    for r in profile_model(model, shape).rows:
        madds[r.kind] += r.madds
    fp32, int8 = workdir / f"{variant}.onnx", workdir / f"{variant}.int8.onnx"
    export_onnx(model, fp32)
    quantize_int8(model, int8, calibration_images("fashion-mnist", shape, 512), min_top1_agreement=0.0)
    times = {name: by_layer_type(model, shape, kernel_times(f, shape, threads, runs))
             for name, f in (("fp32", fp32), ("int8", int8))}
    # The whole model timed without the profiler: how far the kernel sums can be trusted.
    whole = {name: latency_us(f, shape, threads, runs) for name, f in (("fp32", fp32), ("int8", int8))}
    return {"variant": variant, "rows": layer_rows(madds, times, whole, "whole model, no profiler")}


def layer_rows(madds: dict[str, int], times: dict[str, dict[str, float]], whole: dict[str, float],
               whole_label: str) -> list[dict]:
    """Table rows: per layer type the Mult-Adds and the fp32 and int8 microseconds (``times``:
    ``{"fp32": {kind: us}, "int8": {...}}``), their ratio and fp32's GFLOP/s, then the totals and
    the ``whole`` model timed without the profiler (``{"fp32": us, "int8": us}``)."""
    rows = []
    for kind in dict.fromkeys([*times["fp32"], *times["int8"]]):
        f, q = times["fp32"].get(kind, 0.0), times["int8"].get(kind, 0.0)
        rows.append({"layer_type": kind, "madds_m": round(madds.get(kind, 0) / 1e6, 1),
                     "fp32_us": round(f, 1), "int8_us": round(q, 1),
                     "int8_over_fp32": round(q / f, 2) if f else None,
                     "fp32_gflops": round(2 * madds[kind] / f / 1e3, 1) if f and madds.get(kind) else None})
    total = sum(madds.values())
    sums = {k: sum(v.values()) for k, v in times.items()}
    for label, t in (("total", sums), (whole_label, whole)):
        rows.append({"layer_type": label, "madds_m": round(total / 1e6, 1),
                     "fp32_us": round(t["fp32"], 1), "int8_us": round(t["int8"], 1),
                     "int8_over_fp32": round(t["int8"] / t["fp32"], 2),
                     "fp32_gflops": round(2 * total / t["fp32"] / 1e3, 1)})
    return rows


def layer_args(description: str, out: str) -> argparse.Namespace:
    """The options both layer benchmarks take (``ort_layers.py``, ``xnnpack_layers.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--variants", nargs="+", default=VARIANTS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / out))
    return p.parse_args()


def markdown(results: list[dict], machine: str) -> str:
    lines = [machine, ""]
    for res in results:
        lines += [f"**{res['variant']}** (kernel time per image, batch 1)", "",
                  "| layer type | Mult-Adds (M) | fp32 us | int8 us | int8 / fp32 | fp32 GFLOP/s |",
                  "|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['layer_type']} | {r['madds_m']} | {r['fp32_us']} | {r['int8_us']} | "
                         f"{r['int8_over_fp32']} | {r['fp32_gflops'] or ''} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = layer_args(__doc__.splitlines()[0], "ort_layers")
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(v, args.threads, args.runs, Path(tmp)) for v in args.variants]
    machine = (f"{machine_line(machine_info(args.threads))}; onnxruntime {ort.__version__}; "
               f"{args.runs} runs, ORT profiler kernel times (the profiler adds a few us per kernel); "
               "int8 as `mobilenets export --format int8` writes it (2 float layers, float classifier).")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"machine": machine, "results": results})
    text = markdown(results, machine)
    write_text(out.with_suffix(".md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
