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

import re
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from mobilenets.cost.profiler import profile_model  # noqa: E402
from mobilenets.deploy.backends import BACKENDS  # noqa: E402
from mobilenets.deploy.bench import calibration_images  # noqa: E402
from mobilenets.deploy.machine import machine_info, machine_line  # noqa: E402
from mobilenets.deploy.onnx_export import input_shape  # noqa: E402
from mobilenets.deploy.runtimes import ExecuTorchRunner, executorch_threads, require  # noqa: E402
from mobilenets.fileio import write_json, write_text  # noqa: E402
from mobilenets.models.registry import create_model  # noqa: E402
from ort_layers import by_layer_type, layer_args, layer_rows, markdown, median_call_us  # noqa: E402

#: XNNPACK operators that compute a layer ("Convolution (NHWC, QC8) DWConv #3", ...).
COMPUTE = re.compile(r"^(Convolution|Fully Connected) \(")
#: The row for the delegate call's time outside XNNPACK's operators.
OUTSIDE = "delegate call outside the operators"


def operator_times(pte: Path, shape, runs: int, workdir: Path
                   ) -> tuple[list[tuple[str, float]], float]:
    """(operator, median microseconds per run) of every XNNPACK operator, in execution order
    (compute operators named "Conv", as ``ort_layers.by_layer_type`` expects), and the median
    microseconds of the whole delegate call, which also holds the delegate's own work per call."""
    portable = require("executorch", "executorch.extension.pybindings.portable_lib")
    from executorch.devtools import Inspector

    module = portable._load_for_executorch(str(pte), enable_etdump=True)
    x = torch.randn(1, *shape)
    for _ in range(runs):
        module.forward((x,))
    dump = workdir / (pte.stem + ".etdp")
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
        op = "Conv" if COMPUTE.match(e.name) else re.sub(r" #\d+$", "", e.name)
        out.append((op, e.perf_data.p50 * 1e3))  # ms -> us
    return out, delegate_us


def latency_us(pte: Path, shape, runs: int) -> float:
    """Median wall time of one batch-1 run without the event tracer, in microseconds."""
    runner = ExecuTorchRunner(pte)
    x = torch.randn(1, *shape)
    return median_call_us(lambda: runner(x), runs)


def measure(variant: str, runs: int, workdir: Path) -> dict:
    model = create_model(variant).eval()
    shape = input_shape(model)
    madds = defaultdict(int)
    for r in profile_model(model, shape).rows:
        madds[r.kind] += r.madds
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
    return {"variant": variant, "rows": layer_rows(madds, times, whole, "whole model, no tracer")}


def main() -> None:
    args = layer_args(__doc__.splitlines()[0], "xnnpack_layers")
    torch.set_num_threads(args.threads)
    executorch_threads(args.threads)
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(v, args.runs, Path(tmp)) for v in args.variants]
    machine = (f"{machine_line(machine_info(args.threads))}; executorch {version('executorch')} "
               f"(XNNPACK delegate); {args.runs} runs, ETDump operator times; int8 as `mobilenets "
               "export --format executorch-int8` writes it (2 float layers, float classifier).")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"machine": machine, "results": results})
    text = markdown(results, machine).replace("(kernel time per image", "(operator time per image")
    write_text(out.with_suffix(".md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
