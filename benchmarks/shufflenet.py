"""ShuffleNet V1 beside MobileNet V1 and V2 of similar Mult-Adds (issue 13): what the slides' Table 4
could not show ("we do not report ShuffleNet numbers as efficient group convolutions and shuffling
are not yet supported").

Three parts, each writing ``benchmarks/results/shufflenet_<part>.json`` and ``.md``:

``latency``
    Batch-1 latency at 224x224 of ShuffleNet 1.5x and 2x (g = 3) beside MobileNet V1 0.75 / 1.0 and
    MobileNetV2 1.0 / 1.4 (the pairs of similar Mult-Adds: 292M vs 325M and 301M; 524M vs 569M and
    582M), on every backend ``mobilenets.deploy.backends`` registers but the architecture-specific
    peers (``BACKENDS`` but those with a ``peer_of``: eager, torch, compile, onnx fp32, int8, the
    phone runtimes, and any runtime added there later), all (model, backend) pairs prepared with
    ``bench.prepare_backend`` and timed in one interleaved run (``bench.time_interleaved``), so
    machine noise hits all alike. Two controls isolate the slow path: ShuffleNet 1.5x with g = 1
    (Table 1's widths for one group: dense 1x1 convolutions, no shuffle, 308M) and ShuffleNet 1.5x
    g = 3 with its shuffles removed
    (the same convolutions and Mult-Adds, a different function: a timing control only).
``layers``
    Where the time goes, per layer type: ONNX Runtime's per-kernel times (its profiler, fp32 and
    int8, ``mobilenets.deploy.layer_times`` as in ``ort_layers.py``) with the non-convolution
    kernels split by operator (the shuffle is Reshape-Transpose-Reshape), and torch's (BN
    folded, channels_last, forward hooks timing each convolution, shuffle and pool).
``train``
    The three ~300M networks trained on Fashion-MNIST with one recipe (the ``fashion-mnist``
    preset at 32x32, fewer epochs) and the same seeds, then timed at 32x32 (interleaved, the
    trained weights, int8 calibrated on the training split): accuracy vs Mult-Adds vs latency.

Run on one thread (the machine is shared); the JSON records the CPU, its ISA flags and the load
average before and after. A benchmark, not a test: it asserts nothing.

Usage (from the repository root):

    .venv/bin/python benchmarks/shufflenet.py latency [--rounds 10] [--backends ...]   # ~12 min
    .venv/bin/python benchmarks/shufflenet.py layers [--runs 100]                      # ~3 min
    .venv/bin/python benchmarks/shufflenet.py train [--epochs 3] [--seeds 0,1]         # ~45 min

(times on 2 shared cores at a load average of 7-11).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from mobilenets.cost.profiler import profile_model
from mobilenets.deploy.backends import BACKENDS
from mobilenets.deploy.bench import calibration_images, prepare_backend, time_interleaved
from mobilenets.deploy.layer_times import (COMPUTE_OPS, by_layer_type, kernel_times,
                                           madds_by_type, ort_latency_us)
from mobilenets.deploy.machine import (machine_info, machine_line, matmul_gflops,
                                       note_load_after, percentile)
from mobilenets.deploy.onnx_export import export_onnx, fold_batchnorm, quantize_int8
from mobilenets.fileio import write_json, write_text
from mobilenets.tables import render_table
from mobilenets.models.layers import ChannelShuffle, Pool2d
from mobilenets.models.registry import create_model, load_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: (label, registered name, variant): ShuffleNet and the MobileNets of similar Mult-Adds, then the
#: two controls. "no-shuffle" removes every ChannelShuffle (same convolutions, timing only).
LATENCY_MODELS = [
    ("ShuffleNet 1.5x g=3", "shufflenet_v1_g3_1.5_224", ""),
    ("MobileNet V1 0.75", "mobilenet_v1_0.75_224", ""),
    ("MobileNetV2 1.0", "mobilenet_v2_1.0_224", ""),
    ("ShuffleNet 2x g=3", "shufflenet_v1_g3_2.0_224", ""),
    ("MobileNet V1 1.0", "mobilenet_v1_1.0_224", ""),
    ("MobileNetV2 1.4", "mobilenet_v2_1.4_224", ""),
    ("ShuffleNet 1.5x g=1", "shufflenet_v1_g1_1.5_224", ""),
    ("ShuffleNet 1.5x g=3, no shuffle", "shufflenet_v1_g3_1.5_224", "no-shuffle"),
]
LAYER_MODELS = ["shufflenet_v1_g3_1.5_224", "shufflenet_v1_g1_1.5_224", "mobilenet_v1_0.75_224",
                "mobilenet_v2_1.0_224"]
TRAIN_MODELS = [("ShuffleNet 1.5x g=3", "shufflenet_v1_g3_1.5_224"),
                ("MobileNet V1 0.75", "mobilenet_v1_0.75_224"),
                ("MobileNetV2 1.0", "mobilenet_v2_1.0_224")]


def machine(threads: int) -> dict:
    """``machine_info`` with ONNX Runtime's version: printed with every figure."""
    return machine_info(threads, packages=("onnxruntime",))


def build(name: str, variant: str = "") -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name).eval()
    if variant == "no-shuffle":
        for unit in model.modules():
            if isinstance(getattr(unit, "shuffle", None), ChannelShuffle):
                unit.shuffle = nn.Identity()
    return model


def write(part: str, data: dict, md: str) -> None:
    write_json(RESULTS / f"shufflenet_{part}.json", data)
    write_text(RESULTS / f"shufflenet_{part}.md", md + "\n")
    print(md)


def interleaved(models: list[tuple[str, nn.Module, tuple]], backends: list[str], rounds: int,
                iters: int, calibration: dict, workdir: Path) -> tuple[list[dict], dict]:
    """Prepare every (model, backend) and time all of them in one interleaved run.

    Returns (rows, errors): a row per pair with median and p90 ms; a backend that cannot be
    prepared for a model is reported in ``errors`` instead of stopping the run."""
    prepared, meta, errors = [], {}, {}
    for label, model, shape in models:
        prof = profile_model(model, shape)
        for b in backends:
            key = f"{label} | {b}"
            print(f"preparing {key}", flush=True)
            sub = workdir / str(len(meta))
            sub.mkdir()
            try:
                p = prepare_backend(b, model, shape, sub, calibration.get(shape), ort_spinning=False)
            except Exception as e:  # a runtime missing here: recorded, the others still run
                errors[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                continue
            p.name = key
            prepared.append(p)
            meta[key] = (label, b, prof, round(p.setup_s, 1), shape)
    print(f"timing {len(prepared)} pairs: {rounds} rounds x {iters} calls", flush=True)
    inputs = {p.name: torch.randn(1, *meta[p.name][4]) for p in prepared}
    samples = time_interleaved(prepared, inputs, rounds, iters)
    rows = []
    for key, (label, b, prof, setup_s, shape) in meta.items():
        ms = statistics.median(samples[key]) * 1e3
        rows.append({"model": label, "backend": b, "resolution": shape[1],
                     "madds_m": round(prof.total_madds / 1e6, 1),
                     "params_m": round(prof.layer_params / 1e6, 2), "latency_ms": round(ms, 3),
                     "latency_p90_ms": round(percentile(samples[key], 90) * 1e3, 3),
                     "madds_per_ms_m": round(prof.total_madds / 1e6 / ms, 1), "setup_s": setup_s})
    return rows, errors


def latency_table(rows: list[dict], peers: dict[str, list[str]]) -> list[str]:
    """Markdown: latency and Mult-Adds/ms per model and backend, and each ShuffleNet's latency
    over its MobileNet peers' on the same backend."""
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    by = {(r["model"], r["backend"]): r for r in rows}
    table = []
    for m in dict.fromkeys(r["model"] for r in rows):
        first = next(r for r in rows if r["model"] == m)
        table.append({"model": m, "Mult-Adds (M)": first["madds_m"],
                      "params (M)": first["params_m"],
                      **{f"{b} ms (M Mult-Adds/ms)":
                         f"{by[(m, b)]['latency_ms']:.2f} ({by[(m, b)]['madds_per_ms_m']:.0f})"
                         if (m, b) in by else "-" for b in backends}})
    ratios = []
    for sn, others in peers.items():
        for peer in others:
            cells = {}
            for b in backends:
                if (sn, b) in by and (peer, b) in by:
                    a, p = by[(sn, b)], by[(peer, b)]
                    per = (a["latency_ms"] / a["madds_m"]) / (p["latency_ms"] / p["madds_m"])
                    cells[b] = f"{a['latency_ms'] / p['latency_ms']:.2f} ({per:.2f} per Mult-Add)"
                else:
                    cells[b] = "-"
            ratios.append({"ShuffleNet / peer": f"{sn} / {peer}", **cells})
    return [render_table(table, "markdown"), "", "Latency of each ShuffleNet over its peer's on "
            "the same backend (< 1: ShuffleNet faster), and over the peer's Mult-Adds-normalised "
            "latency (ms per Mult-Add):", "", render_table(ratios, "markdown")]


def cmd_latency(args) -> None:
    torch.set_num_threads(args.threads)
    backends = (args.backends.split(",") if args.backends
                else [b.name for b in BACKENDS.values() if not b.peer_of])
    info = machine(args.threads)
    info["matmul_gflops"] = round(matmul_gflops(), 1)
    models = [(label, build(name, variant), (3, 224, 224)) for label, name, variant in LATENCY_MODELS]
    calibration = {(3, 224, 224): calibration_images("fashion-mnist", (3, 224, 224), 256)}
    with tempfile.TemporaryDirectory(prefix="shufflenet-bench-") as tmp:
        rows, errors = interleaved(models, backends, args.rounds, args.iters, calibration, Path(tmp))
    note_load_after(info)
    peers = {"ShuffleNet 1.5x g=3": ["MobileNet V1 0.75", "MobileNetV2 1.0", "ShuffleNet 1.5x g=1",
                                     "ShuffleNet 1.5x g=3, no shuffle"],
             "ShuffleNet 2x g=3": ["MobileNet V1 1.0", "MobileNetV2 1.4"]}
    md = [f"# ShuffleNet vs MobileNet: batch-1 latency at 224x224, "
          f"{args.rounds} interleaved rounds x {args.iters} calls (median)", "",
          machine_line(info), "",
          *latency_table(rows, peers)]
    if errors:
        md += ["", "Backends that could not be prepared:", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    write("latency", {"command": " ".join(sys.argv), "machine": info, "rows": rows,
                      "errors": errors}, "\n".join(md))


# ------------------------------------------------------------------------------------- layers

def torch_layer_times(model: nn.Module, shape, runs: int) -> dict[str, float]:
    """Microseconds per image per layer type of the ``torch`` backend (BN folded, channels_last),
    from forward hooks around each convolution, FC, shuffle and pool; the rest (ReLU, add,
    concat, flatten) is the whole minus their sum."""
    layer_kind = {r.name: r.kind for r in profile_model(model, shape).rows}  # "Conv 1x1 g3", ...
    folded = fold_batchnorm(model).to(memory_format=torch.channels_last)  # same module names
    x = torch.randn(1, *shape).contiguous(memory_format=torch.channels_last)
    spent: dict[str, list[float]] = defaultdict(list)
    start: dict[nn.Module, float] = {}
    kinds = {}
    for name, m in folded.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            kinds[m] = layer_kind[name]
        elif isinstance(m, ChannelShuffle):
            kinds[m] = "Channel shuffle"
        elif isinstance(m, (Pool2d, nn.AdaptiveAvgPool2d)):
            kinds[m] = "Pool"

    def pre(m, inp):
        start[m] = time.perf_counter()

    def post(m, inp, out):
        spent[kinds[m]].append(time.perf_counter() - start[m])

    handles = [h for m in kinds for h in (m.register_forward_pre_hook(pre),
                                          m.register_forward_hook(post))]
    whole = []
    with torch.inference_mode():
        for i in range(runs + 10):
            if i == 10:  # warm-up done
                spent.clear()
            t0 = time.perf_counter()
            folded(x)
            if i >= 10:
                whole.append(time.perf_counter() - t0)
    for h in handles:
        h.remove()
    out = {k: sum(v) / runs * 1e6 for k, v in spent.items()}
    out["other (ReLU, add, concat, head)"] = statistics.mean(whole) * 1e6 - sum(out.values())
    out["whole model (with hooks)"] = statistics.median(whole) * 1e6
    return out


def layer_table(res: dict) -> str:
    """Markdown: one model's microseconds per layer type on ONNX Runtime fp32 and int8 and on
    torch, with fp32's GFLOP/s; the kernels' sum and the whole model last."""
    ort_rows = list(dict.fromkeys([*res["onnx fp32"], *res["onnx int8"]]))
    last = [k for k in ort_rows if k == "sum of the kernels" or k.startswith("whole model")]
    kinds = list(dict.fromkeys([*(k for k in ort_rows if k not in last), *res["torch"]]))
    kinds = [k for k in kinds if not k.startswith("whole model")] + last + [
        k for k in res["torch"] if k.startswith("whole model")]
    table = []
    for k in kinds:
        m = res["madds_m"].get(k, 0.0)

        def cell(fmt, rate=True):
            us = res[fmt].get(k)
            if us is None:
                return "-"
            return f"{us:.0f}" + (f" ({2 * m * 1e3 / us:.1f})" if rate and m and us > 0 else "")

        table.append({"layer type": k, "Mult-Adds (M)": m or "",
                      "onnx fp32 us (GFLOP/s)": cell("onnx fp32"),
                      "onnx int8 us": cell("onnx int8", False),
                      "torch us (GFLOP/s)": cell("torch")})
    return render_table(table, "markdown")


def cmd_layers(args) -> None:
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="shufflenet-layers-") as tmp:
        for name in LAYER_MODELS:
            print(f"layers of {name}", flush=True)
            model, shape = build(name), (3, 224, 224)
            madds = madds_by_type(model, shape)
            fp32, int8 = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.int8.onnx"
            export_onnx(model, fp32)
            quantize_int8(model, int8, calibration_images("fashion-mnist", shape, 256),
                          min_top1_agreement=0.0)
            res = {"model": name, "madds_m": {k: round(v / 1e6, 2) for k, v in madds.items()}}
            for fmt, f in (("onnx fp32", fp32), ("onnx int8", int8)):
                kernels = kernel_times(f, shape, args.threads, args.runs)
                per_type = {k: v for k, v in by_layer_type(model, shape, kernels).items()
                            if not k.startswith("other")}
                for op, us in kernels:  # the non-convolution kernels, by operator
                    if op not in COMPUTE_OPS:
                        per_type[f"op {op}"] = per_type.get(f"op {op}", 0.0) + us
                per_type["sum of the kernels"] = sum(us for _, us in kernels)
                per_type[f"whole model, no profiler ({len(kernels)} kernels)"] = ort_latency_us(
                    f, shape, args.threads, args.runs)
                res[fmt] = {k: round(v, 1) for k, v in per_type.items()}
            res["torch"] = {k: round(v, 1) for k, v in torch_layer_times(model, shape,
                                                                          args.runs).items()}
            results.append(res)
    note_load_after(info)
    md = ["# Where the time goes: microseconds per image per layer type, batch 1, 224x224", "",
          machine_line(info), "",
          "ONNX Runtime: its profiler's kernel times (median over runs); the shuffle is the "
          "Transpose and the Reshapes around it. The last rows: the kernels' sum, and the whole "
          "model timed without the profiler (median; the gap is ORT's per-kernel overhead, "
          "and the machine's load). torch: BN folded, channels_last, forward hooks around each "
          "layer (a few us each). GFLOP/s = 2 x Mult-Adds / time.", ""]
    for res in results:
        md += [f"**{res['model']}**", "", layer_table(res), ""]
    write("layers", {"command": " ".join(sys.argv), "machine": info, "results": results},
          "\n".join(md))


# -------------------------------------------------------------------------------------- train

def train_table(runs: list[dict], latency: list[dict], backends: list[str], res: int) -> str:
    """Markdown: per trained model its Mult-Adds (at 224 and at ``res``), top-1 per seed and
    their mean, latency per backend and training throughput."""
    by_lat = {(r["model"], r["backend"]): r for r in latency}
    table = []
    for label, name in TRAIN_MODELS:
        mine = [r for r in runs if r["name"] == name]
        top1 = [r["top1"] for r in mine]
        m224 = profile_model(create_model(name), (3, 224, 224)).total_madds / 1e6
        first = by_lat.get((label, backends[0]), {})
        table.append({"model": label, "Mult-Adds at 224 (M)": f"{m224:.0f}",
                      f"at {res} (M)": first.get("madds_m", "-"),
                      "top-1 % per seed": ", ".join(f"{t:.2f}" for t in top1),
                      "mean": f"{statistics.mean(top1):.2f}",
                      **{f"{b} ms": f"{by_lat[(label, b)]['latency_ms']:.2f}"
                         if (label, b) in by_lat else "-" for b in backends},
                      "train img/s":
                      f"{statistics.mean(r['images_per_second'] for r in mine):.0f}"})
    return render_table(table, "markdown")


def cmd_train(args) -> None:
    from mobilenets.tasks.classification.train import make_config, train

    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for label, name in TRAIN_MODELS:
        for seed in seeds:
            out = Path(args.runs_dir) / f"{name}_r{args.resolution}_s{seed}"
            cfg = make_config("fashion-mnist", model=name, resolution=args.resolution,
                              epochs=args.epochs, seed=seed, out_dir=str(out), progress=False,
                              num_workers=0, limit_train=args.limit_train)
            print(f"training {label}, seed {seed} -> {out}", flush=True)
            t0 = time.time()
            r = train(cfg, resume=True)  # a killed run picks up where it stopped
            # Training time over all sessions (a resumed or finished run reports its last only).
            seconds = json.loads((out / "summary.json").read_text())["train_seconds"]
            runs.append({"model": label, "name": name, "seed": seed,
                         "top1": round(r.metrics["top1"], 2),
                         "train_seconds": seconds, "wall_seconds": round(time.time() - t0, 1),
                         "images_per_second": round(r.steps * cfg.batch_size / seconds, 1),
                         "model_path": r.model_path})
    res = args.resolution
    timed = []
    for label, name in TRAIN_MODELS:
        model = load_model(next(r["model_path"] for r in runs if r["name"] == name)).float().eval()
        shape = (model.config.in_channels, res, res)
        timed.append((label, model, shape))
    calibration = {shape: calibration_images("fashion-mnist", shape, 256)}
    backends = args.backends.split(",") if args.backends else ["eager", "torch", "onnx", "int8"]
    with tempfile.TemporaryDirectory(prefix="shufflenet-train-") as tmp:
        lat, errors = interleaved(timed, backends, args.rounds, args.iters, calibration, Path(tmp))
    note_load_after(info)
    md = [f"# Fashion-MNIST: the ~300M-Mult-Add networks trained side by side, {res}x{res}", "",
          machine_line(info), "",
          f"Recipe: the `fashion-mnist` preset (RMSprop, lr {cfg.lr} decayed "
          + (f"exponentially to x{cfg.lr_final} over the run" if cfg.lr_final is not None
             else f"{cfg.lr_decay} per epoch") + f", batch {cfg.batch_size}, the paper's augmentation) at {res}x{res} for "
          f"{args.epochs} epochs" + (f" on the first {args.limit_train} images" if args.limit_train
                                     else "") + f", seeds {args.seeds}, one thread each; top-1 on "
          f"the 10,000 test images. Latency: batch 1 at "
          f"{res}x{res}, the seed-{seeds[0]} weights, {args.rounds} interleaved rounds x "
          f"{args.iters} calls (median).", "", train_table(runs, lat, backends, res)]
    if errors:
        md += ["", "Backends that could not be prepared:", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    write("train", {"command": " ".join(sys.argv), "machine": info, "runs": runs, "latency": lat,
                    "errors": errors}, "\n".join(md))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    for name, fn in (("latency", cmd_latency), ("layers", cmd_layers), ("train", cmd_train)):
        s = sub.add_parser(name)
        s.set_defaults(func=fn)
        s.add_argument("--threads", type=int, default=1)
        if name != "layers":
            s.add_argument("--backends", help="comma-separated (default: every backend but the "
                           "peers for latency; eager,torch,onnx,int8 for train)")
            s.add_argument("--rounds", type=int, default=10)
            s.add_argument("--iters", type=int, default=10)
    sub.choices["layers"].add_argument("--runs", type=int, default=100)
    t = sub.choices["train"]
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--seeds", default="0,1")
    t.add_argument("--resolution", type=int, default=32)
    t.add_argument("--limit-train", type=int, help="train on the first N images (a smoke run)")
    t.add_argument("--runs-dir", default=str(ROOT / "runs" / "shufflenet_bench"))
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
