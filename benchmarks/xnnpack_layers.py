"""Where int8 wins and loses on XNNPACK (issue 16): per-layer time in ExecuTorch, fp32 against int8.

The phone runtimes (ExecuTorch, LiteRT) run MobileNet on XNNPACK's kernels; `phones.py latency`
measures the whole model, this script explains it, as `ort_layers.py` does for ONNX Runtime. It
exports each variant twice, as `mobilenets export --format executorch|executorch-int8` does (BN
folded, fully delegated to XNNPACK; int8: PT2E per-channel, the stem and first depthwise layer and
the classifier fp32), runs both with ExecuTorch's event tracer (ETDump, which times every XNNPACK
operator inside the delegate) at batch 1, and maps the k-th convolution or fully connected
operator to the model's k-th layer. It sums the time per Table 2 layer type, plus the operators
that only convert (Transpose, Convert = quantize/dequantize, Mean, Reshape) and the delegate
call's time outside the operators; "total" is then the delegate call, and "whole model, no
tracer" the call from Python through our runner.

Writes ``benchmarks/results/xnnpack_layers.json`` and ``.md``; a benchmark, not a test.

Usage (from the repository root; ~1 minute, on an otherwise idle machine):

    .venv/bin/python benchmarks/xnnpack_layers.py [--threads 1] [--runs 300] [--variants ...]

ExecuTorch's thread pool is process-wide and sized once (``runtimes.executorch_threads``): one
thread count per run of this script.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from mobilenets.deploy.backends import BACKENDS
from mobilenets.deploy.bench import calibration_images
from mobilenets.deploy.layer_times import (by_layer_type, layer_markdown, layer_rows,
                                           madds_by_type, median_call_us, operator_times)
from mobilenets.deploy.machine import machine_info, machine_line
from mobilenets.deploy.onnx_export import input_shape
from mobilenets.deploy.runtimes import ExecuTorchRunner, executorch_threads
from mobilenets.fileio import write_json, write_text
from mobilenets.models.registry import create_model

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ["mobilenet_v1_1.0_224", "mobilenet_v1_0.25_128", "mobilenet_v2_1.0_224"]
#: The row for the delegate call's time outside XNNPACK's operators.
OUTSIDE = "delegate call outside the operators"


def latency_us(pte: Path, shape, runs: int) -> float:
    """Median wall time of one batch-1 run without the event tracer, in microseconds."""
    runner = ExecuTorchRunner(pte)
    x = torch.randn(1, *shape)
    return median_call_us(lambda: runner(x), runs)


def measure(variant: str, runs: int, workdir: Path) -> dict:
    model = create_model(variant).eval()
    shape = input_shape(model)
    files = {"fp32": workdir / f"{variant}.pte", "int8": workdir / f"{variant}.int8.pte"}
    BACKENDS["executorch"].export(model, files["fp32"])
    BACKENDS["executorch-int8"].export(model, files["int8"],
                                       calibration_images("fashion-mnist", shape, 64),
                                       min_top1_agreement=0.0)
    times = {}
    for k, f in files.items():
        ops, delegate_us = operator_times(f, shape, runs, workdir)
        times[k] = by_layer_type(model, shape, ops)
        # What the delegate does per call beyond its operators (so "total" is the delegate call).
        times[k][OUTSIDE] = delegate_us - sum(us for _, us in ops)
    whole = {k: latency_us(f, shape, runs) for k, f in files.items()}
    return {"variant": variant, "rows": layer_rows(madds_by_type(model, shape), times, whole,
                                                   "whole model, no tracer")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--variants", nargs="+", default=VARIANTS)
    p.add_argument("--out", default=str(RESULTS / "xnnpack_layers"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    executorch_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(v, args.runs, Path(tmp)) for v in args.variants]
    machine = (f"{machine_line(machine_info(args.threads, packages=('executorch',)))}; "
               f"XNNPACK delegate; {args.runs} runs, ETDump operator times; int8 as `mobilenets "
               "export --format executorch-int8` writes it (2 float layers, float classifier).")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"machine": machine, "results": results})
    text = layer_markdown(results, machine, what="operator")
    write_text(out.with_suffix(".md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
