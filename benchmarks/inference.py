"""Inference benchmark (issue 4): latency at batch 1, throughput at batch 32 and peak memory of
every backend we offer, against timm's MobileNet V1 eager and ONNX Runtime on timm's export (for a
MobileNetV2 variant: torchvision's MobileNetV2 eager), and
against the fp32 floor (2 x Mult-Adds at the measured GFLOP/s of a 1024^3 fp32 matmul), for 1.0
MobileNet-224, 0.25 MobileNet-128 and 0.5 MobileNet-160, and MobileNetV2 1.0-224. All backends of a variant are timed in one
process, interleaved (``mobilenets.deploy.bench``). Writes ``benchmarks/results/inference.json`` and
``inference.md``; this is a benchmark, not a test: it reports and asserts nothing.

The targets it checks (issue 4), for each variant:
    fp32 batch 1       our fastest fp32 backend <= 0.3 x timm eager, and <= 1.25 x the floor
    int8 batch 1       <= 0.65 x our ONNX fp32 latency; the Fashion-MNIST top-1 drop (from
                       ``mobilenets export --format int8 --evaluate``, runs/main/int8_eval.json)
                       < 0.5 points
    batch 32           our best throughput >= 4 x timm eager's

Usage (from the repository root; ~6 minutes on 2 cores):

    .venv/bin/python benchmarks/inference.py [--threads 2] [--rounds 10] [--backends ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from mobilenets.deploy.bench import bench
from mobilenets.deploy.machine import machine_line
from mobilenets.fileio import write_json, write_text
from mobilenets.tables import render_table

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ["mobilenet_v1_1.0_224", "mobilenet_v1_0.25_128", "mobilenet_v1_0.5_160",
            "mobilenet_v2_1.0_224"]
FP32_OURS = ("torch", "compile", "onnx")
OURS = ("eager", "torch", "compile", "onnx", "int8")


def targets(rows: list[dict], int8_eval: dict | None) -> list[dict]:
    """The issue's targets per variant, each with the measured ratio and whether it is met."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        by = {r["backend"]: r for r in rows if r["variant"] == variant}
        peer_name = next(iter(by.values()))["peer"]  # timm for V1, torchvision for V2
        if peer_name not in by:
            continue
        peer = by[peer_name]
        fp32 = min((by[b] for b in FP32_OURS if b in by), key=lambda r: r["latency_ms"])
        best_thr = max((r for b, r in by.items() if b in OURS), key=lambda r: r["throughput"])

        def add(name, value, limit, better="lower", detail=""):
            met = value <= limit if better == "lower" else value >= limit
            out.append({"variant": variant, "target": name, "value": round(value, 3),
                        "limit": limit, "met": met, "detail": detail})

        add(f"fp32 b1 latency / {peer_name} eager", fp32["latency_ms"] / peer["latency_ms"], 0.3,
            detail=f"{fp32['backend']} {fp32['latency_ms']} ms vs {peer_name} {peer['latency_ms']} ms")
        add("fp32 b1 latency / floor", fp32["latency_ms"] / fp32["floor_ms"], 1.25,
            detail=f"{fp32['latency_ms']} ms vs floor {fp32['floor_ms']} ms")
        if "int8" in by and "onnx" in by:
            add("int8 b1 latency / our fp32 (onnx)", by["int8"]["latency_ms"] / by["onnx"]["latency_ms"],
                0.65, detail=f"{by['int8']['latency_ms']} ms vs {by['onnx']['latency_ms']} ms")
        add(f"b{peer['batch']} throughput / {peer_name} eager", best_thr["throughput"] / peer["throughput"],
            4.0, better="higher", detail=f"{best_thr['backend']} {best_thr['throughput']} img/s vs "
                                         f"{peer_name} {peer['throughput']} img/s")
    if int8_eval:
        out.append({"variant": f"{int8_eval['model']} (Fashion-MNIST)", "target": "int8 top-1 drop (points)",
                    "value": int8_eval["drop"], "limit": 0.5, "met": int8_eval["drop"] < 0.5,
                    "detail": f"fp32 {int8_eval['torch_top1']}% -> int8 {int8_eval['export_top1']}% "
                              f"on {int8_eval['images']} test images"})
    return out


def markdown(rows: list[dict], checks: list[dict], machine: dict) -> str:
    table = []
    for r in rows:
        mem = "" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} (+{r['above_baseline_mb']:.0f})"
        table.append({
            "variant": r["variant"], "backend": r["backend"],
            "b1 median ms": f"{r['latency_ms']:.2f}", "b1 p90 ms": f"{r['latency_p90_ms']:.2f}",
            "x peer": "" if r["vs_peer"] is None else f"{r['vs_peer']:.2f} ({r['peer']})",
            "b32 img/s": f"{r['throughput']:.0f}", "peak RSS MB (+ over imports)": mem,
            "weights MB": f"{r['weights_mb']:.1f}",
            "activation peak MB (ops / layers)":
                f"{r['act_peak_mb']:.2f} / {r['act_peak_layers_mb']:.2f}"})
    targets = [{"variant": c["variant"], "target": c["target"], "measured": c["value"],
                "limit": c["limit"], "met": "yes" if c["met"] else "no", "detail": c["detail"]}
               for c in checks]
    return "\n".join([machine_line(machine), "", render_table(table, "markdown"), "",
                      render_table(targets, "markdown")]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--backends", help="default: all but compile, with each variant's peers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--int8-eval", default=str(ROOT / "runs/main/int8_eval.json"))
    p.add_argument("--output", default=str(ROOT / "benchmarks/results/inference"))
    args = p.parse_args()
    rows, machine = bench([{"name": v} for v in args.variants.split(",")], args.backends,
                          batch=args.batch, threads=args.threads, rounds=args.rounds,
                          progress=lambda s: print(s, flush=True))
    int8_path = Path(args.int8_eval)
    int8_eval = json.loads(int8_path.read_text()) if int8_path.is_file() else None
    dicts = [asdict(r) for r in rows]
    checks = targets(dicts, int8_eval)
    md = markdown(dicts, checks, machine)
    write_json(args.output + ".json", {"command": " ".join(sys.argv), "machine": machine,
                                       "rows": dicts, "targets": checks})
    write_text(args.output + ".md", md)
    print(md)


if __name__ == "__main__":
    main()
