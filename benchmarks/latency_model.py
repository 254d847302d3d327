"""The per-layer latency model (issue 27) judged honestly: fitted on a few V1 variants, how well
does it predict the rest, V2 and ShuffleNet, beside the Mult-Adds predictors a new user would try?

Sub-commands, each writing ``benchmarks/results/latency_model_<name>.json`` and ``.md``; a
benchmark, not a test: it reports what is met and what is not, and asserts nothing.

``measure``   Batch-1 latency of the 16 V1 variants, V2 at 224 over its widths (the slides'
              1.0 and 1.4 among them), ShuffleNet (g = 3 at 0.5x-2x, g = 8 at 1x) and one
              unregistered V1 point, on every backend asked for (default: onnx, int8, eager,
              torch), at one thread, all interleaved in one process, ``--repeats`` times over
              the same exported files. The figure used is the process CPU time per call (the
              median over rounds, then over repeats): the machine is shared, and CPU time is what
              the runtime spent; the median wall time is kept beside it.
``evaluate``  From ``measure``'s file (no timing): per backend, the latency model fitted on K =
              2, 4, 6 V1 variants (``deploy.device.calibration_set``: the kit's choice) predicts
              the other V1 variants, V2 and ShuffleNet; median |error|, share within +-10%, max
              |error|, Spearman's rank correlation; beside the Mult-Adds-proportional and
              Mult-Adds + constant predictors fitted on the same points. Targets (K = 4): >= 90%
              of held-out V1 within +-10% on every backend, Spearman >= 0.97, V2 and ShuffleNet
              median error <= 15%. The repeats' spread is reported too: no predictor can beat the
              measurement's own noise.
``published`` The same evaluation on published phone figures, no timing: TensorFlow Lite's hosted
              models page (``tensorflow/lite/g3doc/guide/hosted_models.md``, 2018-2019): the 16
              V1 variants float and 8-bit, and V2 1.0-224, on a Pixel 2, one large core.
``fusion``    Which additions and activations each runtime with a per-operation profiler runs
              as operations of its own, for ShuffleNet and V2: the evidence for
              ``Backend.fused`` (no timing).
``pick``      Wall time of ``pick --predict 4`` against the exhaustive ``pick`` over the 16 V1
              variants x the backends, same budget, and whether they chose the same model (or
              one within 5% of its latency). Target: <= 60 s on 2 cores.

Every figure carries the CPU model, its ISA flags and the load average.

Usage (repository root):

    .venv/bin/python benchmarks/latency_model.py measure --threads 1 --repeats 2
    .venv/bin/python benchmarks/latency_model.py evaluate
    .venv/bin/python benchmarks/latency_model.py published
    .venv/bin/python benchmarks/latency_model.py pick --threads 1 --latency-ms 5
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mobilenets.cost.latency import fit_device, variant_profile
from mobilenets.deploy.backends import check_backends
from mobilenets.deploy.device import (backend_fit, calibration_set,
                                      measure_models)
from mobilenets.deploy.export_cache import CACHE_ENV
from mobilenets.deploy.machine import machine_info, machine_line
from mobilenets.fileio import write_json, write_text
from mobilenets.readers import read_json
from mobilenets.tables import render_table
from mobilenets.models.registry import list_models

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: The models timed: the V1 grid (fitted on and held out), V2 (the slides' Table 4 widths 1.0
#: and 1.4, and the rest of its widths at 224), ShuffleNet, and a V1 point no registry holds.
V1 = [n for n in list_models("mobilenet_v1_*") if n.split("_")[2][0].isdigit()]
V2 = [f"mobilenet_v2_{a}_224" for a in ("0.35", "0.5", "0.75", "1.0", "1.4")]
SHUFFLENET = [f"shufflenet_v1_g3_{a}_224" for a in ("0.5", "1.0", "1.5", "2.0")] + [
    "shufflenet_v1_g3_1.0_160", "shufflenet_v1_g8_1.0_224"]
UNREGISTERED = ["mobilenet_v1_0.6_200"]
#: ShuffleNet's own kit (``calibration_set("shufflenet_v1", 4)``), timed too: ShuffleNet fitted
#: on its own kit, beside ShuffleNet from V1's coefficients.
SHUFFLENET_KIT = calibration_set("shufflenet_v1", 4)
FAMILIES = {"V1 held out": V1, "V1 unregistered": UNREGISTERED, "V2": V2,
            "ShuffleNet": SHUFFLENET}
FORMS = ("auto", "madds", "madds+const")
FORM_NAMES = {"auto": "layer model", "madds": "Mult-Adds", "madds+const": "Mult-Adds + const"}


def save(name: str, data: dict, md: str) -> None:
    write_json(RESULTS / f"latency_model_{name}.json", data)
    write_text(RESULTS / f"latency_model_{name}.md", md + "\n")
    print(f"wrote benchmarks/results/latency_model_{name}.{{json,md}}", file=sys.stderr)


def code(text: str) -> str:
    return "```\n" + text + "\n```"


# --------------------------------------------------------------------------- measure

def cmd_measure(args) -> None:
    backends = check_backends(args.backends)  # "all": every installed backend
    names = list(dict.fromkeys(V1 + UNREGISTERED + V2 + SHUFFLENET + SHUFFLENET_KIT))
    mach = machine_info(args.threads)
    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    rows = measure_models(names, backends, args.threads, args.rounds, args.iters,
                          progress=lambda s: print(s, file=sys.stderr, flush=True),
                          workers=args.export_workers, repeats=args.repeats, failed=failed)
    rows = [{"model": r["model"], "backend": r["backend"], "cpu_ms": r["cpu_ms"],
             "wall_ms": r["latency_ms"], "repeats_cpu_ms": r["repeats_cpu_ms"]} for r in rows]
    mach["load_after"] = round(os.getloadavg()[0], 2)
    seconds = time.perf_counter() - t0
    spread = {b: statistics.median(abs(max(r["repeats_cpu_ms"]) / min(r["repeats_cpu_ms"]) - 1)
                                   * 100 for r in rows if r["backend"] == b) for b in backends}
    md = "\n".join([
        f"# Batch-1 latency of {len(names)} models x {', '.join(backends)} (latency model data)",
        "", machine_line(mach), "",
        f"Load average after: {mach['load_after']}. "
        f"Command: `{' '.join(sys.argv)}`: {seconds:.0f} s; "
        f"{args.repeats} repeat(s) of {args.rounds} rounds x {args.iters} calls, "
        f"{args.threads} thread(s). cpu_ms: process CPU time per call (median); wall_ms "
        "beside it. Median spread between repeats (max/min - 1): "
        + ", ".join(f"{b} {v:.1f}%" for b, v in spread.items()), "",
        *(["Exports that failed (left out): " + "; ".join(f"{k}: {e}" for k, e in
                                                          failed.items()), ""] if failed else []),
        code(render_table([{k: v for k, v in r.items() if k != "repeats_cpu_ms"}
                           for r in rows], width=None))])
    save("timings", {"command": " ".join(sys.argv), "machine": mach, "seconds": seconds,
                     "threads": args.threads, "repeats": args.repeats, "rounds": args.rounds,
                     "iters": args.iters, "repeat_spread_pct": spread, "failed": failed,
                     "rows": rows}, md)


# --------------------------------------------------------------------------- evaluate

def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den else float("nan")


def scores(measured: list[float], predicted: list[float]) -> dict:
    errors = [100 * (p / m - 1) for m, p in zip(measured, predicted)]
    return {"n": len(errors), "median_abs_err_pct": round(statistics.median(map(abs, errors)), 1),
            "within_10_pct": round(100 * sum(abs(e) <= 10 for e in errors) / len(errors), 1),
            "max_abs_err_pct": round(max(map(abs, errors)), 1),
            "spearman": round(spearman(measured, predicted), 3) if len(errors) > 2 else None}


def evaluate(rows: list[dict], figure: str, ks: list[int]) -> tuple[list[dict], list[dict]]:
    """Per backend and K: the three predictors fitted on ``calibration_set('v1', K)`` and scored
    on each family's other models (``scores``); and, for K = 4 and the layer model, every
    prediction and the coefficients."""
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    measured = {(r["model"], r["backend"]): r[figure] for r in rows}
    profiles = {n: variant_profile(n) for n in {r["model"] for r in rows}}
    results, detail = [], []
    for backend in backends:
        for k in ks:
            fit_on = calibration_set("v1", k)
            for form in FORMS:
                device = fit_device([profiles[n] for n in fit_on],
                                    [measured[n, backend] for n in fit_on], form=form,
                                    name=backend, **backend_fit(backend))
                for family, names in FAMILIES.items():
                    held = [n for n in names if n not in fit_on and (n, backend) in measured]
                    if not held:
                        continue
                    m = [measured[n, backend] for n in held]
                    p = [device.predict_ms(profiles[n]) for n in held]
                    results.append({"backend": backend, "K": k, "predictor": FORM_NAMES[form],
                                    "family": family, **scores(m, p)})
                    if k == 4 and form == "auto":
                        detail += [{"backend": backend, "model": n, "measured_ms": mm,
                                    "predicted_ms": round(pp, 3),
                                    "error_pct": round(100 * (pp / mm - 1), 1)}
                                   for n, mm, pp in zip(held, m, p)]
                if k == 4 and form == "auto" and all((n, backend) in measured
                                                     for n in SHUFFLENET_KIT):
                    own = fit_device([profiles[n] for n in SHUFFLENET_KIT],
                                     [measured[n, backend] for n in SHUFFLENET_KIT],
                                     name=backend, **backend_fit(backend))
                    held = [n for n in SHUFFLENET if n not in SHUFFLENET_KIT]
                    results.append({"backend": backend, "K": k, "predictor": FORM_NAMES[form],
                                    "family": "ShuffleNet, own kit", **scores(
                                        [measured[n, backend] for n in held],
                                        [own.predict_ms(profiles[n]) for n in held])})
                if k == 4 and form == "auto":
                    detail.append({"backend": backend, "model": "(coefficients)",
                                   "measured_ms": None, "predicted_ms": None, "error_pct": None,
                                   "coefficients": {t: round(v, 6) for t, v in
                                                    device.coefficients.items()}})
    return results, detail


def cmd_evaluate(args) -> None:
    data = read_json(args.timings)
    backends = list(dict.fromkeys(r["backend"] for r in data["rows"]))
    results, detail = evaluate(data["rows"], args.figure, args.k)
    targets = []
    for backend in backends:
        def get(family, key):  # None where no model of the family was exported
            return next((r[key] for r in results if r["backend"] == backend and r["K"] == 4
                         and r["predictor"] == FORM_NAMES["auto"] and r["family"] == family),
                        None)
        row = {"backend": backend, "v1_within_10": get("V1 held out", "within_10_pct"),
               "v1_spearman": get("V1 held out", "spearman"),
               "v2_median_err": get("V2", "median_abs_err_pct"),
               "shufflenet_median_err": get("ShuffleNet", "median_abs_err_pct"),
               "shufflenet_own_kit_err": get("ShuffleNet, own kit", "median_abs_err_pct")}
        limits = {"v1_within_10": 90, "v1_spearman": 0.97, "v2_median_err": 15,
                  "shufflenet_median_err": 15}
        met = [row[k] is not None and (row[k] >= v if k.startswith("v1") else row[k] <= v)
               for k, v in limits.items()]
        row["met"] = "yes" if all(met) else "no"
        targets.append(row)
    mach = data["machine"]
    md = "\n".join([
        "# The latency model fitted on K V1 variants, against Mult-Adds", "",
        machine_line(mach), "",
        f"Timings: `{data['command']}` ({data['repeats']} repeat(s), {data['threads']} "
        f"thread(s)); figure: {args.figure}; median spread between repeats: "
        + ", ".join(f"{b} {v:.1f}%" for b, v in data["repeat_spread_pct"].items()) + ".", "",
        "Fitted on `calibration_set('v1', K)` (what `mobilenets latency kit` exports); "
        "everything else is predicted. Errors are 100 x (predicted / measured - 1).", "",
        "## Targets (K = 4): >= 90% of held-out V1 within +-10%, Spearman >= 0.97; V2 and "
        "ShuffleNet median |error| <= 15%", "", code(render_table(targets, width=None)), "",
        "## Every predictor, K and family", "", code(render_table(results, width=None)), "",
        "## K = 4, layer model: each prediction", "",
        code(render_table([{k: v for k, v in r.items() if k != "coefficients"}
                           for r in detail if r["measured_ms"] is not None], width=None))])
    save("evaluate", {"timings": str(args.timings), "figure": args.figure, "machine": mach,
                      "targets": targets, "results": results, "detail": detail}, md)
    print(md)


# --------------------------------------------------------------------------- published

#: TensorFlow Lite's hosted models page (tensorflow/lite/g3doc/guide/hosted_models.md, models of
#: 2018-02-22 and 2018-08-02): ms on a Pixel 2, one large core, per (alpha, resolution) of V1,
#: floating point ("litert") and 8-bit quantized ("litert-int8"); and V2 1.0-224.
PIXEL2 = {
    "litert": {(0.25, 128): 6.2, (0.25, 160): 8.6, (0.25, 192): 12.1, (0.25, 224): 16.2,
               (0.5, 128): 18.1, (0.5, 160): 26.8, (0.5, 192): 35.6, (0.5, 224): 47.6,
               (0.75, 128): 34.6, (0.75, 160): 51.3, (0.75, 192): 71.7, (0.75, 224): 95.7,
               (1.0, 128): 57.4, (1.0, 160): 86.0, (1.0, 192): 118.6, (1.0, 224): 160.1,
               "mobilenet_v2_1.0_224": 117.0},
    "litert-int8": {(0.25, 128): 3.7, (0.25, 160): 5.5, (0.25, 192): 7.9, (0.25, 224): 10.4,
                    (0.5, 128): 8.8, (0.5, 160): 13.0, (0.5, 192): 18.3, (0.5, 224): 24.7,
                    (0.75, 128): 16.2, (0.75, 160): 24.3, (0.75, 192): 33.8,
                    (0.75, 224): 45.4, (1.0, 128): 24.9, (1.0, 160): 37.4, (1.0, 192): 51.9,
                    (1.0, 224): 70.2, "mobilenet_v2_1.0_224": 80.3},
}


def published_rows() -> list[dict]:
    """``PIXEL2`` as timing rows (``measure``'s shape)."""
    return [{"model": k if isinstance(k, str) else f"mobilenet_v1_{k[0]}_{k[1]}",
             "backend": b, "cpu_ms": ms} for b, table in PIXEL2.items() for k, ms in table.items()]


def cmd_published(args) -> None:
    rows = published_rows()
    results, detail = evaluate(rows, "cpu_ms", args.k)
    md = "\n".join([
        "# The latency model on published phone figures: Pixel 2, one large core, TF Lite", "",
        "No timing here: the figures are TensorFlow Lite's hosted models page "
        "(`tensorflow/lite/g3doc/guide/hosted_models.md`): the 16 MobileNet V1 variants, float "
        "(`litert`) and 8-bit quantized (`litert-int8`), and MobileNetV2 1.0-224, on a Pixel 2 "
        "with one large core. Fitted on `calibration_set('v1', K)`; everything else predicted.",
        "", code(render_table(results, width=None)), "", "## K = 4, layer model: each prediction",
        "", code(render_table([r for r in detail if r["measured_ms"] is not None], width=None))])
    save("published", {"source": "tensorflow/lite/g3doc/guide/hosted_models.md (Pixel 2, "
                        "one large core)", "results": results, "detail": detail}, md)
    print(md)


# --------------------------------------------------------------------------- fusion

#: The runtimes' names of an addition and of an activation (ONNX Runtime kernels, XNNPACK
#: operators, OpenVINO execution-graph nodes).
ADD_OPS = {"Add", "QLinearAdd", "Sum", "Add (ND)", "Eltwise"}
ACTIVATION_OPS = {"Relu", "Clip", "Clamp (NC)", "Clamp", "QLinearRelu"}
FUSION_MODELS = ("shufflenet_v1_g3_1.0_224", "mobilenet_v2_1.0_224")


def cmd_fusion(args) -> None:
    """Which data operations each runtime runs: the evidence for ``Backend.fused``."""

    from mobilenets.deploy.backends import get_backend
    from mobilenets.deploy.bench import calibration_images, export_backend
    from mobilenets.deploy.layer_times import OPERATION_LISTS, runtime_operations
    from mobilenets.cost.latency import variant_model

    mach = machine_info(1)
    rows = []
    for name in FUSION_MODELS:
        model = variant_model(name, meta=False)
        shape = (3, model.config.input_size, model.config.input_size)
        kinds = [r.kind for r in variant_profile(name).data_ops]
        for b in check_backends(args.backends):
            if get_backend(b).runtime not in OPERATION_LISTS:
                continue
            row = {"model": name, "backend": b, "fused": ",".join(get_backend(b).fused) or "-",
                   "model_adds": kinds.count("Add"),
                   "model_activations": kinds.count("Activation")}
            with tempfile.TemporaryDirectory() as work:
                int8 = get_backend(b).precision == "int8"
                try:
                    path = export_backend(b, model, shape, Path(work), calibration_images(
                        "fashion-mnist", shape, 16) if int8 else None)
                    ops = runtime_operations(b, path, shape, work)
                except Exception as e:  # a tool-chain that cannot export it: say so
                    rows.append({**row, "adds_run": None, "activations_run": None,
                                 "note": f"not exported ({type(e).__name__})"})
                    continue
            rows.append({**row, "adds_run": sum(ops.get(k, 0) for k in ADD_OPS),
                         "activations_run": sum(ops.get(k, 0) for k in ACTIVATION_OPS),
                         "note": ""})
            print(rows[-1], file=sys.stderr, flush=True)
    md = "\n".join([
        "# Which data operations each runtime runs (the evidence for `Backend.fused`)", "",
        machine_line(mach), "",
        f"Command: `{' '.join(sys.argv)}`. Each model exported for each runtime, then the "
        "operations its runtime runs counted after the runtime's own rewrites: ONNX Runtime's "
        "profiled kernels, XNNPACK's operators inside ExecuTorch (event tracer), the nodes "
        "OpenVINO's performance counters report executed. `model_adds`: residual additions "
        "of the model; "
        "`model_activations`: activations after an addition or concatenation (none beside a "
        "convolution); `adds_run`, `activations_run`: those the runtime runs as operations of "
        "their own (conv-adjacent activations fused into a convolution are not counted by any "
        "runtime). `fused`: what the backend's record says it fuses away.", "",
        code(render_table(rows, width=None))])
    save("fusion", {"command": " ".join(sys.argv), "machine": mach, "rows": rows}, md)
    print(md)


# --------------------------------------------------------------------------- pick

#: How the benchmark's ``pick --predict`` runs differ.
RUN_NAMES = {"predict": "first run (the tool-chains export every file)",
             "predict again": "second run (the files from the export cache)"}


def cmd_pick(args) -> None:
    from mobilenets.deploy.pick import pick, pick_predicted

    mach = machine_info(args.threads)
    runs = {}
    # A first run exports through the tool-chains (an empty export cache), a second run of the
    # same command copies the files from the cache; the exhaustive pick runs without a cache.
    with tempfile.TemporaryDirectory(prefix="mobilenets-cache-") as cache:
        for how, cache_dir in (("predict", cache), ("predict again", cache),
                               ("exhaustive", "off")):
            os.environ[CACHE_ENV] = cache_dir
            t0 = time.perf_counter()
            if how.startswith("predict"):
                rows, choice = pick_predicted(args.predict, latency_ms=args.latency_ms,
                                              backend=args.backends, threads=args.threads,
                                              export_workers=args.export_workers)
            else:
                rows, choice = pick(latency_ms=args.latency_ms, backend=args.backends,
                                    threads=args.threads, export_workers=args.export_workers)
            runs[how] = {"seconds": round(time.perf_counter() - t0, 1), "choice": choice,
                         "timed": sum(r.get("source", "measured") == "measured" for r in rows)}
            print(f"{how}: {runs[how]['seconds']} s, {choice['label']} on {choice['backend']}",
                  file=sys.stderr, flush=True)
    mach["load_after"] = round(os.getloadavg()[0], 2)
    e = runs["exhaustive"]["choice"]
    e_rows = {(r["label"], r["backend"]): r for r in rows}
    for how in ("predict", "predict again"):
        p = runs[how]["choice"]
        run = runs[how]
        run["same_choice"] = (p["label"], p["backend"]) == (e["label"], e["backend"])
        run["latency_in_exhaustive_ms"] = e_rows[p["label"], p["backend"]]["latency_ms"]
        run["cpu_in_exhaustive_ms"] = e_rows[p["label"], p["backend"]]["cpu_ms"]
        run["within_5pct"] = abs(run["latency_in_exhaustive_ms"] / e["latency_ms"] - 1) <= 0.05
        run["target_met"] = run["seconds"] <= 60 and (run["same_choice"] or run["within_5pct"])

    def line(how):
        run, p = runs[how], runs[how]["choice"]
        return (f"- `pick --predict {args.predict}`, {RUN_NAMES[how]}: {run['seconds']} s, {run['timed']} (variant, backend) pairs timed; "
                f"chose {p['label']} on {p['backend']} ({p['latency_ms']} ms as it confirmed "
                f"it); same choice as exhaustive: {'yes' if run['same_choice'] else 'no'}; its "
                f"latency in the exhaustive run: {run['latency_in_exhaustive_ms']} ms "
                f"({100 * (run['latency_in_exhaustive_ms'] / e['latency_ms'] - 1):+.1f}%), in "
                f"process CPU time per call {run['cpu_in_exhaustive_ms']} ms against "
                f"{e['cpu_ms']} ms; target (<= 60 s, the exhaustive pick or within 5% of its "
                f"latency): {'met' if run['target_met'] else 'not met'}")

    md = "\n".join([
        f"# pick --predict {args.predict} against exhaustive pick", "", machine_line(mach), "",
        f"Command: `{' '.join(sys.argv)}`: 16 V1 variants x {args.backends}, budget "
        f"{args.latency_ms} ms, {args.threads} thread(s).", "",
        line("predict"), line("predict again"),
        f"- exhaustive `pick` (no export cache): {runs['exhaustive']['seconds']} s, every pair "
        f"timed; chose {e['label']} on {e['backend']} ({e['latency_ms']} ms)"])
    save(args.name, {"command": " ".join(sys.argv), "machine": mach, "runs": runs,
                     "exhaustive_rows": rows}, md)
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("measure")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--backends", default="onnx,int8,eager,torch")
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--iters", type=int, default=5)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--export-workers", type=int, default=2)
    s.set_defaults(func=cmd_measure)
    s = sub.add_parser("evaluate")
    s.add_argument("--timings", default=str(RESULTS / "latency_model_timings.json"))
    s.add_argument("--figure", choices=("cpu_ms", "wall_ms"), default="cpu_ms")
    s.add_argument("--k", type=lambda t: [int(v) for v in t.split(",")], default=[2, 4, 6])
    s.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("published")
    s.add_argument("--k", type=lambda t: [int(v) for v in t.split(",")], default=[2, 4, 6])
    s.set_defaults(func=cmd_published)
    s = sub.add_parser("fusion")
    s.add_argument("--backends", default="all")
    s.set_defaults(func=cmd_fusion)
    s = sub.add_parser("pick")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--backends", default="onnx,int8,eager")
    s.add_argument("--latency-ms", type=float, default=5.0)
    s.add_argument("--predict", type=int, default=4)
    s.add_argument("--export-workers", type=int, default=2)
    s.add_argument("--name", default="pick", help="results file: latency_model_NAME.json/.md")
    s.set_defaults(func=cmd_pick)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
