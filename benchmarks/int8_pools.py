"""Where ShuffleNet's pools run in the int8 ONNX export (``onnx_export.quantize_int8``), and what
that costs on ONNX Runtime.

ShuffleNet V1 has pools MobileNet V1 and V2 lack: the stem's 3x3/s2 max pool and the 3x3/s2
average-pool shortcut of each stage's first unit. Quantized, ONNX Runtime runs them in NCHW uint8
kernels (``MaxPool`` on uint8, ``QLinearAveragePool``) far slower than its fp32 pools. This
benchmark exports each model once per pool rule (the rule is ``onnx_export.rewrite_pools``; the
others stand in for it, the rest of ``quantize_int8`` unchanged), then:

- times every file, and the fp32 export, in one interleaved run (``bench.time_interleaved``:
  batch 1, one thread, the order rotated every round);
- profiles each with ONNX Runtime's profiler (``layer_times.kernel_times``): the pools' kernels
  (a pool computed as a convolution counts as ``AveragePool``), the Pads before them, and the
  quantize / dequantize kernels, which a float region adds;
- checks each against the float model: the cosine of the int8 and torch logits, on the
  calibration images (fresh weights: the logits' direction is what can be compared).

The rules:

``none``
    Every pool quantized (``quantize_int8`` before this rule).
``exclude pools``
    The pools and the Pads before them left out of quantization (``nodes_to_exclude``).
``fp32 pools and readers``
    As ``exclude pools``, and the nodes that read a pool too (so no ``QuantizeLinear`` follows a
    pool for ORT to fuse or move).
``avg pool as conv, max pool excluded``
    Every average pool rewritten as a depthwise convolution (quantized), the max pool and its
    Pad excluded.
``avg pool as conv, max pool and readers fp32``
    ``rewrite_pools``: as the previous, and the nodes that read the max pool stay fp32 too.

MobileNet V1 has no such pool: its rows show its export unchanged (``none`` against this rule).

Usage (from the repository root; ~5 min on one core):

    .venv/bin/python benchmarks/int8_pools.py [--rounds 15] [--iters 10] [--runs 50]

Writes ``benchmarks/results/int8_pools.json`` and ``.md``. A benchmark, not a test: it asserts
nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilenets.cost.latency import variant_model
from mobilenets.deploy import onnx_export
from mobilenets.deploy.bench import Prepared, calibration_images, time_interleaved
from mobilenets.deploy.layer_times import kernel_times
from mobilenets.deploy.machine import machine_info, machine_line, note_load_after, percentile
from mobilenets.deploy.onnx_export import (INPUT_NAME, OnnxModule, export_onnx, input_shape,
                                           ort_session, quantize_int8, rewrite_pools)
from mobilenets.fileio import write_json, write_text
from mobilenets.tables import render_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ["shufflenet_v1_g3_1.0_224", "shufflenet_v1_g3_0.5_224", "mobilenet_v1_1.0_224"]
POOLS = ("MaxPool", "AveragePool")


def _pools_and_pads(proto) -> list:
    producer = {out: n for n in proto.graph.node for out in n.output}
    found = []
    for node in proto.graph.node:
        if node.op_type in POOLS:
            pad = producer.get(node.input[0])
            found += [node] + ([pad] if pad is not None and pad.op_type == "Pad" else [])
    return found


def exclude_pools(proto) -> list[str]:
    return [n.name for n in _pools_and_pads(proto)]


def fp32_pools_and_readers(proto) -> list[str]:
    pools = [n for n in _pools_and_pads(proto) if n.op_type in POOLS]
    readers = [n.name for p in pools for n in proto.graph.node if p.output[0] in n.input]
    return exclude_pools(proto) + readers


def conv_max_pool_excluded(proto) -> list[str]:
    keep = rewrite_pools(proto)  # rewrites the average pools; drop what it keeps for readers
    return [n.name for n in proto.graph.node if n.name in keep and n.op_type in ("MaxPool", "Pad")]


#: (label, the function standing in for ``rewrite_pools``); the last is the rule itself.
RULES = [("none", lambda proto: []),
         ("exclude pools", exclude_pools),
         ("fp32 pools and readers", fp32_pools_and_readers),
         ("avg pool as conv, max pool excluded", conv_max_pool_excluded),
         ("avg pool as conv, max pool and readers fp32 (rewrite_pools)", rewrite_pools)]


def export_with(rule, model, path: Path, calibration) -> None:
    """``quantize_int8`` with ``rule`` in place of ``rewrite_pools``."""
    saved = onnx_export.rewrite_pools
    onnx_export.rewrite_pools = rule
    try:
        quantize_int8(model, path, calibration, min_top1_agreement=0.0)
    finally:
        onnx_export.rewrite_pools = saved


def kernel_summary(kernels: list[tuple[str, float]]) -> dict[str, float]:
    """Microseconds of the pools (by operator), the Pads, the quantize / dequantize kernels and
    all kernels."""
    out: dict[str, float] = defaultdict(float)
    for op, us in kernels:
        if "Pool" in op or op == "Pad" or op in ("QuantizeLinear", "DequantizeLinear"):
            out[op] += us
    out["all kernels"] = sum(us for _, us in kernels)
    return {k: round(v, 1) for k, v in out.items()}


def session_runner(path: Path):
    session = ort_session(path, threads=1)
    return lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50, help="profiled runs per file")
    parser.add_argument("--calibration", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = machine_info(1, packages=("onnxruntime",))
    files, rows, prepared, inputs = {}, [], [], {}
    with tempfile.TemporaryDirectory(prefix="int8-pools-") as tmp:
        for name in MODELS:
            model = variant_model(name, meta=False)
            shape = input_shape(model)
            calibration = calibration_images("fashion-mnist", shape, args.calibration)
            check = calibration[0][:64]
            with torch.no_grad():
                reference = model(check)
            rules = RULES if name.startswith("shufflenet") else [RULES[0], RULES[-1]]
            fp32 = Path(tmp) / f"{name}.onnx"
            export_onnx(model, fp32)
            files[(name, "fp32")] = fp32
            for label, rule in rules:
                print(f"{name}: {label}", flush=True)
                path = Path(tmp) / f"{name}.{len(files)}.int8.onnx"
                export_with(rule, model, path, calibration)
                files[(name, label)] = path
                out = OnnxModule(path, threads=1)(check)
                rows.append({"model": name, "rule": label, "cosine_to_torch": round(float(
                    F.cosine_similarity(out.flatten(), reference.flatten(), dim=0)), 5),
                    "kernels_us": kernel_summary(kernel_times(path, shape, 1, args.runs))})
            rows.append({"model": name, "rule": "fp32", "cosine_to_torch": None,
                         "kernels_us": kernel_summary(kernel_times(fp32, shape, 1, args.runs))})
            for (m, label), path in files.items():
                if m == name:
                    key = f"{m} / {label}"
                    prepared.append(Prepared(key, session_runner(path), path=str(path)))
                    inputs[key] = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
        samples = time_interleaved(prepared, inputs, args.rounds, args.iters)
    note_load_after(info)
    for row in rows:
        s = samples[f"{row['model']} / {row['rule']}"]
        row["median_ms"] = round(statistics.median(s) * 1e3, 3)
        row["p90_ms"] = round(percentile(s, 90) * 1e3, 3)
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["rule"] == "none")
        fp = next(r for r in rows if r["model"] == row["model"] and r["rule"] == "fp32")
        row["over_none"] = round(row["median_ms"] / base["median_ms"], 3)
        row["over_fp32"] = round(row["median_ms"] / fp["median_ms"], 3)
    write_json(RESULTS / "int8_pools.json", {"command": " ".join(sys.argv), "machine": info,
                                             "rounds": args.rounds, "iters": args.iters,
                                             "runs": args.runs, "rows": rows})
    ops = ["MaxPool", "QLinearAveragePool", "AveragePool", "Pad", "QuantizeLinear",
           "DequantizeLinear", "all kernels"]
    table = [{"model": r["model"], "pool rule": r["rule"], "ms (median)": f"{r['median_ms']:.2f}",
              "p90": f"{r['p90_ms']:.2f}", "/ none": f"{r['over_none']:.2f}",
              "/ fp32": f"{r['over_fp32']:.2f}",
              **{f"{op} us": r["kernels_us"].get(op, "") for op in ops},
              "cosine to torch": "" if r["cosine_to_torch"] is None else r["cosine_to_torch"]}
             for r in rows]
    md = ["# int8 pools: ShuffleNet's pools on ONNX Runtime, batch 1, 224x224, one thread", "",
          machine_line(info), "",
          f"Command: `{' '.join(sys.argv)}`. {args.rounds} interleaved rounds x {args.iters} "
          f"calls per file (the rows' files all timed in one run); kernel columns: ONNX Runtime's "
          f"profiler, median of {args.runs} runs per kernel, summed per operator (an average pool "
          "computed as a convolution counted as AveragePool; the profiler adds a little per "
          "kernel). `/ none`: over the same model's int8 export with every pool quantized; "
          "`/ fp32`: over its fp32 export. Cosine: int8 logits against torch's on 64 "
          "calibration images (fresh weights). `quantize_int8` uses the last rule "
          "(`onnx_export.rewrite_pools`); the script's docstring defines the others.", "",
          render_table(table, "markdown")]
    write_text(RESULTS / "int8_pools.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
