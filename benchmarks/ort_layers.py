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
import tempfile
from pathlib import Path

import torch

from mobilenets.deploy.bench import calibration_images
from mobilenets.deploy.layer_times import (by_layer_type, kernel_times, layer_markdown,
                                           layer_rows, madds_by_type, ort_latency_us)
from mobilenets.deploy.machine import machine_info, machine_line
from mobilenets.deploy.onnx_export import export_onnx, input_shape, quantize_int8
from mobilenets.fileio import write_json, write_text
from mobilenets.models.registry import create_model

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ["mobilenet_v1_1.0_224", "mobilenet_v1_0.25_128", "mobilenet_v2_1.0_224"]


def measure(variant: str, threads: int, runs: int, workdir: Path) -> dict:
    model = create_model(variant).eval()
    shape = input_shape(model)
    fp32, int8 = workdir / f"{variant}.onnx", workdir / f"{variant}.int8.onnx"
    export_onnx(model, fp32)
    quantize_int8(model, int8, calibration_images("fashion-mnist", shape, 512), min_top1_agreement=0.0)
    times = {name: by_layer_type(model, shape, kernel_times(f, shape, threads, runs))
             for name, f in (("fp32", fp32), ("int8", int8))}
    # The whole model timed without the profiler: how far the kernel sums can be trusted.
    whole = {name: ort_latency_us(f, shape, threads, runs)
             for name, f in (("fp32", fp32), ("int8", int8))}
    return {"variant": variant, "rows": layer_rows(madds_by_type(model, shape), times, whole,
                                                   "whole model, no profiler")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--variants", nargs="+", default=VARIANTS)
    p.add_argument("--out", default=str(RESULTS / "ort_layers"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(v, args.threads, args.runs, Path(tmp)) for v in args.variants]
    machine = (f"{machine_line(machine_info(args.threads, packages=('onnxruntime',)))}; "
               f"{args.runs} runs, ORT profiler kernel times (the profiler adds a few us per kernel); "
               "int8 as `mobilenets export --format int8` writes it (2 float layers, float classifier).")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"machine": machine, "results": results})
    text = layer_markdown(results, machine)
    write_text(out.with_suffix(".md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
