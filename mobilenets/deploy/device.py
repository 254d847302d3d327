"""Latency on the device you ship to, from a few measurements there: the calibration kit, reading
what the device's benchmark tools printed, and fitting ``cost.latency``'s model to it.

1. ``make_kit``: the few models that inform the fit best (``calibration_set``: they span width
   and resolution), exported for one runtime, with a manifest and the exact benchmark command
   to run on the device for each file (LiteRT's ``benchmark_model``, ExecuTorch's runner).
2. The user runs the commands on the phone and saves what they print (or writes a CSV).
3. ``fit_measurements``: reads those files (``read_measurements``) and fits a ``Device``.
4. ``Device.predict_ms`` (``mobilenets latency predict``, ``pick --device``): the latency of
   any variant, registered or not, on that device, without timing it.

``measure_models`` times models on this machine with the benchmark machinery of
``deploy.bench`` (exports and runtimes, interleaved rounds, process CPU time); ``measure_device``
is the kit timed here and fitted.
"""
from __future__ import annotations

import csv
import io
import math
import shlex
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch

from mobilenets.cost.latency import Device, fit_device, variant_model, variant_profile
from mobilenets.deploy.backends import BACKENDS, check_backends, export_formats, get_backend
from mobilenets.deploy.bench import (calibration_images, export_backends, load_backend,
                                     time_interleaved)
from mobilenets.deploy.tool_output import is_tool_output, parse_tool_output
from mobilenets.fileio import staging_dir, write_json, write_text
from mobilenets.readers import read_text

#: The ``format`` field of a kit's manifest.
KIT_FORMAT = "mobilenets-latency-kit/1"
#: Models in a kit unless asked otherwise: as many as the fit's terms a phone needs.
DEFAULT_KIT_SIZE = 4
#: Where the device commands put the files (Android's writable, executable place).
DEVICE_DIR = "/data/local/tmp"
#: Timed calls per file in the kit's benchmark commands.
KIT_RUNS = 50


# --------------------------------------------------------------------------- backends

def kit_suffix(backend: str) -> str | None:
    """The suffix of the file ``backend`` runs on a device; None for the backends that run in
    torch and the peers (``ValueError`` for an unknown backend)."""
    b = get_backend(backend)
    return None if b.peer_of else b.suffix


def backend_precision(backend: str) -> str:
    """``"fp32"``, ``"int8"`` or ``"bf16"``: what ``backend`` computes in.

    Raises:
        ValueError: for an unknown backend.
    """
    check_backends([backend])
    return get_backend(backend).precision


def backend_fit(backend: str | None) -> dict:
    """``fit_device``'s keyword arguments for measurements of ``backend``: the ``precision`` it
    computes in, the element-wise passes its runtime runs on their own (``separate``,
    ``Backend.separate``) and the data operations it fuses away (``fused``,
    ``Backend.fused``); fp32, every pass fused and every data operation run for measurements
    that name no backend.

    Raises:
        ValueError: for an unknown backend.
    """
    if backend is None:
        return {"precision": "fp32", "separate": (), "fused": ()}
    b = get_backend(backend)
    return {"precision": b.precision, "separate": b.separate, "fused": b.fused}


def export_for(jobs: list[tuple[str, str, Path]], calibration_data: str, workers: int = 1,
               done: Callable[[int, str | None], None] | None = None,
               failed: dict[int, str] | None = None) -> list[tuple]:
    """Export ``(backend, model name, folder)`` jobs (fresh weights, seed 0), ``workers``
    processes at once, each file verified against torch; int8 backends calibrate on 16 images
    of ``calibration_data`` (latency only). Returns ``(backend, model, shape, path)`` per job
    (path: None for the torch backends): what ``timed_runs`` loads. ``failed``: as
    ``bench.export_backends``'s."""
    calibration, models, prepared = {}, {}, []
    for backend, name, folder in jobs:
        if name not in models:
            models[name] = variant_model(name, meta=False)
        model = models[name]
        res = model.config.input_size
        shape = (model.config.in_channels, res, res)
        int8 = get_backend(backend).precision == "int8"
        if int8 and shape not in calibration:
            calibration[shape] = calibration_images(calibration_data, shape, 16)
        prepared.append((backend, model, shape, Path(folder),
                         calibration.get(shape) if int8 else None))
    paths = export_backends(prepared, workers, done=done, failed=failed)
    return [(job[0], job[1], job[2], path) for job, path in zip(prepared, paths)]


def timed_runs(exported: list[tuple], keys: list[str], rounds: int, iters: int) -> dict:
    """Load every ``export_for`` result and time them all interleaved (``bench.time_interleaved``,
    torch's current thread count). Returns ``{key: {"latency_ms": median wall, "cpu_ms":
    median process CPU time per call, "load": highest 1-minute load average}}``."""
    prepared, inputs = [], {}
    for (backend, model, shape, path), key in zip(exported, keys):
        p = load_backend(backend, model, shape, path, ort_spinning=False)
        p.name = key
        prepared.append(p)
        inputs[key] = torch.randn(1, *shape)
    cpu, load = {}, []
    samples = time_interleaved(prepared, inputs, rounds, iters, cpu=cpu, load=load)
    top = round(max(load), 2) if load else None
    return {k: {"latency_ms": round(statistics.median(v) * 1e3, 4),
                "cpu_ms": round(statistics.median(cpu[k]) * 1e3, 4), "load": top}
            for k, v in samples.items()}


# --------------------------------------------------------------------------- the kit

def spanning(points: list[tuple[float, float]], count: int) -> list[int]:
    """The indices of ``count`` of ``points`` ((width, resolution) pairs) that span them best:
    the largest first, then each time the point farthest (in log width and log resolution, each
    scaled to [0, 1] over the points) from those already chosen: the corners, then the middle."""
    coords = [(math.log(w), math.log(r)) for w, r in points]
    lo = [min(c[i] for c in coords) for i in (0, 1)]
    span = [max(max(c[i] for c in coords) - lo[i], 1e-9) for i in (0, 1)]
    scaled = [tuple((c[i] - lo[i]) / span[i] for i in (0, 1)) for c in coords]
    chosen = [max(range(len(points)), key=lambda i: scaled[i])]
    while len(chosen) < min(count, len(points)):
        chosen.append(max((i for i in range(len(points)) if i not in chosen),
                          key=lambda i: min(math.dist(scaled[i], scaled[j]) for j in chosen)))
    return chosen


def calibration_set(arch: str = "v1", count: int = DEFAULT_KIT_SIZE) -> list[str]:
    """The ``count`` registered variants of ``arch`` that span its width and resolution best
    (``spanning``): what a kit exports. For ShuffleNet, the g = 3 grid (the one with several
    resolutions).

    Raises:
        ValueError: for an unknown ``arch``, or ``count`` < 2 or more than the grid holds.
    """
    from mobilenets.models.registry import MODELS, arch_name

    arch = arch_name(arch)
    grid = [s for s in MODELS.values() if s.arch == arch and "width_mult" in s.name_fields
            and getattr(s.config, "groups", 3) == 3]
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= len(grid):
        raise ValueError(f"--count must be an integer from 2 to {len(grid)} (the {arch} "
                         f"variants), got {count!r}")
    chosen = spanning([(s.config.width_mult, s.resolution) for s in grid], count)
    return [grid[i].name for i in chosen]


def kit_file(model: str, backend: str) -> str:
    """The file name of ``model`` exported for ``backend`` in a kit: ``{model}_{backend}{suffix}``
    (``model_of_file`` reads it back)."""
    return f"{model}_{backend}{kit_suffix(backend) or ''}"


def model_of_file(path: str) -> tuple[str, str | None]:
    """(model name, backend or None) of a file a kit wrote (``kit_file``), from its path as a
    benchmark tool printed it."""
    stem = Path(str(path).replace("\\", "/")).name
    for suffix in {kit_suffix(b) for b in BACKENDS} - {None}:
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    for backend in sorted(BACKENDS, key=len, reverse=True):
        if stem.endswith("_" + backend):
            return stem[:-len(backend) - 1], backend
    return stem, None


def bench_command(backend: str, file: str, threads: int, runs: int = KIT_RUNS) -> str:
    """The command that times ``file`` (a kit's) on the device, its output saved beside it as
    ``{file}.txt`` for ``mobilenets latency fit``. LiteRT: ``benchmark_model`` over adb;
    ExecuTorch: the XNNPACK runner over adb; ONNX Runtime and OpenVINO (no parser: write the
    median into a CSV): their perf tools on the target machine."""
    out = shlex.quote(f"{file}.txt")
    on_device = f"{DEVICE_DIR}/{file}"
    if backend.startswith("litert"):
        return (f"adb push {shlex.quote(file)} {DEVICE_DIR}/ && adb shell "
                f"{DEVICE_DIR}/benchmark_model --graph={shlex.quote(on_device)} "
                f"--num_threads={threads} --use_xnnpack=true --warmup_runs=5 "
                f"--num_runs={runs} > {out} 2>&1")
    if backend.startswith("executorch"):
        return (f"adb push {shlex.quote(file)} {DEVICE_DIR}/ && adb shell "
                f"{DEVICE_DIR}/xnn_executor_runner --model_path={shlex.quote(on_device)} "
                f"--num_executions={runs} --cpu_threads={threads} > {out} 2>&1")
    if backend.startswith("openvino"):
        hint = " -infer_precision bf16" if backend.endswith("bf16") else ""
        return (f"benchmark_app -m {shlex.quote(file)} -d CPU -hint latency -nthreads "
                f"{threads} -niter {runs}{hint} > {out} 2>&1")
    return (f"onnxruntime_perf_test -e cpu -m times -r {runs} -x {threads} -y 1 "
            f"{shlex.quote(file)} > {out} 2>&1")


def make_kit(backend: str, output_dir: str, arch: str = "v1", count: int = DEFAULT_KIT_SIZE,
             threads: int = 1, calibration_data: str = "fashion-mnist",
             progress: Callable[[str], None] | None = None, workers: int = 1) -> dict:
    """Write a calibration kit: ``calibration_set(arch, count)`` exported for ``backend`` (fresh
    weights: latency does not depend on them), ``manifest.json``, ``commands.sh`` (one
    benchmark command per file, ``bench_command``) and ``measurements.csv`` (the models, for a
    user who writes the latencies by hand). The folder appears whole or not at all.

    Args:
        backend: A file backend of ``deploy.backends.BACKENDS`` (``litert``, ``executorch-int8``...).
        output_dir: The folder to create; it must not exist.
        arch: ``"v1"``, ``"v2"`` or ``"shufflenet_v1"``. Default ``"v1"``.
        count: Models in the kit, >= 2. Default ``DEFAULT_KIT_SIZE``.
        threads: The thread count the commands ask for. Default 1.
        calibration_data: int8 calibration images (latency only). Default Fashion-MNIST.
        progress: Called with a line of text as the work advances.
        workers: Processes exporting at once. Default 1.

    Returns:
        The manifest.

    Raises:
        ValueError: for a backend that writes no file (``eager``, ``torch``...), a peer, an
            existing ``output_dir``, a bad ``count`` or ``threads``.
    """
    precision = backend_precision(backend)
    if kit_suffix(backend) is None:
        raise ValueError(f"--backend {backend!r} writes no model file to run on a device; "
                         f"choose one of {', '.join(export_formats())}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be an integer >= 1, got {threads!r}")
    if Path(output_dir).exists():
        raise ValueError(f"--output {output_dir} already exists: a kit goes into a new folder")
    names = calibration_set(arch, count)
    say = progress or (lambda s: None)
    with staging_dir(output_dir) as tmp, tempfile.TemporaryDirectory() as work:
        jobs = [(backend, n, Path(work) / str(i)) for i, n in enumerate(names)]
        for _, _, folder in jobs:
            folder.mkdir()
        exported = export_for(jobs, calibration_data, workers,
                              done=lambda i, f: say(f"exported {names[i]} for {backend}"))
        models = []
        for (_, model, shape, files), name in zip(exported, names):
            src = Path(files)
            dst = kit_file(name, backend)
            # Copied, not moved: an OpenVINO pair is links into its hidden store
            # (fileio.atomic_files), and its weights travel beside the graph.
            shutil.copyfile(src, tmp / dst)
            if src.suffix == ".xml":
                shutil.copyfile(src.with_suffix(".bin"), (tmp / dst).with_suffix(".bin"))
            prof = variant_profile(name)
            models.append({"model": name, "file": dst, "input_shape": [1, *shape],
                           "madds": prof.total_madds, "params": prof.layer_params,
                           "command": bench_command(backend, dst, threads)})
        manifest = {"format": KIT_FORMAT, "backend": backend, "precision": precision,
                    "threads": threads, "arch": arch, "models": models,
                    "fit": f"mobilenets latency fit {' '.join(m['file'] + '.txt' for m in models)} "
                           f"--backend {backend} --output device.json"}
        write_json(tmp / "manifest.json", manifest)
        write_text(tmp / "commands.sh", "\n".join(
            ["#!/bin/sh", f"# Time each model of the kit on the device ({backend}, {threads} "
             "thread(s)); then:", f"#   {manifest['fit']}", "set -e", 'cd "$(dirname "$0")"',
             *(m["command"] for m in models)]))
        write_text(tmp / "measurements.csv", "\n".join(
            ["model,latency_ms,backend,threads", *(f"{m['model']},,{backend},{threads}"
                                                   for m in models)]))
    return manifest


# --------------------------------------------------------------------------- measurements

def read_measurements(paths: list[str], backend: str | None = None) -> list[dict]:
    """The measurements in CSV files (columns ``model`` and ``latency_ms``, optionally
    ``backend`` and ``threads``) and in the saved output of ``benchmark_model`` or
    ``executor_runner`` for a kit's files, as ``{"model", "latency_ms", "backend", "threads",
    "where"}`` (``where``: ``"FILE line N"``).

    Args:
        paths: The files.
        backend: Keep only this backend's rows (and those that name none). Default: all, which
            must then be of one backend.

    Raises:
        ValueError: naming the file (and line) for an empty file, a missing column, an unknown
            model, a latency that is not a finite number > 0, a bad thread count, an unknown
            backend, or measurements of several backends or thread counts.
    """
    known = tuple(BACKENDS)
    rows: list[dict] = []
    for path in paths:
        text = read_text(path, "measurements file")
        if not text.strip():
            raise ValueError(f"{path} is empty: no measurements (a CSV with the columns "
                             "model,latency_ms, or the saved output of benchmark_model or "
                             "executor_runner)")
        rows += (_tool_rows(path, text) if is_tool_output(text) else _csv_rows(path, text))
    if backend is not None:
        rows = [r for r in rows if r["backend"] in (None, backend)]
        if not rows:
            raise ValueError(f"{', '.join(map(str, paths))}: no measurements of --backend "
                             f"{backend}")
    for key, what in (("backend", "backends"), ("threads", "thread counts")):
        seen = sorted({str(r[key]) for r in rows if r[key] is not None})
        if len(seen) > 1:
            hint = ": choose one with --backend" if key == "backend" else (
                ": a device is one runtime at one thread count; fit each apart")
            raise ValueError(f"{', '.join(map(str, paths))} hold measurements of several "
                             f"{what} ({', '.join(seen)}){hint}")
    for r in rows:
        if r["backend"] is not None and r["backend"] not in known:
            raise ValueError(f"{r['where']}: unknown backend {r['backend']!r}; known: "
                             f"{', '.join(known)}")
    return rows


def _check_model(name: str, where: str) -> str:
    try:
        variant_model(name)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return name


def _csv_rows(path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    for need in ("model", "latency_ms"):
        if need not in columns:
            raise ValueError(f"{path}: no {need!r} column (its columns: "
                             f"{', '.join(columns) or 'none'}); a measurements CSV has the "
                             "columns model,latency_ms (and optionally backend, threads)")
    rows = []
    for raw in reader:
        where = f"{path} line {reader.line_num}"
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v
               for k, v in raw.items()}
        if not any(row.values()):
            continue
        if not row.get("model"):
            raise ValueError(f"{where}: the model is empty")
        latency = row.get("latency_ms") or ""
        try:
            ms = float(latency)
        except ValueError:
            ms = math.nan
        if not (math.isfinite(ms) and ms > 0):
            raise ValueError(f"{where}: latency_ms must be a finite number > 0 (ms), got "
                             f"{latency!r}")
        threads = row.get("threads") or None
        if threads is not None:
            if not threads.isdigit() or int(threads) < 1:
                raise ValueError(f"{where}: threads must be an integer >= 1, got {threads!r}")
            threads = int(threads)
        rows.append({"model": _check_model(row["model"], where), "latency_ms": ms,
                     "backend": row.get("backend") or None, "threads": threads,
                     "where": where})
    if not rows:
        raise ValueError(f"{path}: no measurements after the header")
    return rows


def _tool_rows(path, text: str) -> list[dict]:
    try:
        runs = parse_tool_output(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    rows = []
    for t in runs:
        where = f"{path} line {t.line}"
        model, backend = model_of_file(t.model_file)
        if not (math.isfinite(t.latency_ms) and t.latency_ms > 0):
            raise ValueError(f"{where}: the timing of {t.model_file} is not > 0 "
                             f"({t.latency_ms} ms)")
        try:
            variant_model(model)
        except ValueError as e:
            raise ValueError(f"{where}: the timed file {t.model_file} names no model this "
                             f"package builds (a kit's files are MODEL_BACKEND.suffix): {e}"
                             ) from None
        rows.append({"model": model, "latency_ms": t.latency_ms, "backend": backend,
                     "threads": t.threads, "where": where})
    return rows


def fit_measurements(paths: list[str], backend: str | None = None, form: str = "auto",
                     name: str | None = None) -> Device:
    """``fit_device`` on the measurements of ``paths`` (``read_measurements``).

    Raises:
        ValueError: as ``read_measurements``, and naming the files and the rows read when
            there are fewer distinct models than the form has coefficients.
    """
    rows = read_measurements(paths, backend)
    backend = backend or next((r["backend"] for r in rows if r["backend"]), None)
    settings = backend_fit(backend)
    profiles = {}
    for r in rows:
        if r["model"] not in profiles:
            profiles[r["model"]] = variant_profile(r["model"])
    try:
        return fit_device([profiles[r["model"]] for r in rows], [r["latency_ms"] for r in rows],
                          names=[r["model"] for r in rows], form=form, **settings,
                          name=name or Path(paths[0]).stem, backend=backend,
                          threads=next((r["threads"] for r in rows if r["threads"]), None),
                          source=", ".join(map(str, paths)))
    except ValueError as e:
        read = "; ".join(f"{r['where']}: {r['model']}" for r in rows)
        raise ValueError(f"{e} (read {read})") from None


# --------------------------------------------------------------------------- on this machine

def measure_models(names: list[str], backends: list[str], threads: int = 1, rounds: int = 5,
                   iters: int = 5, calibration_data: str = "fashion-mnist",
                   progress: Callable[[str], None] | None = None,
                   workers: int | None = None, repeats: int = 1,
                   failed: dict[str, str] | None = None) -> list[dict]:
    """Time every model on every backend on this machine: exports (``workers`` processes),
    then all of them interleaved in ``rounds`` rounds of ``iters`` calls at ``threads`` threads,
    ``repeats`` times over the same files. Where a ``failed`` dict is given, a pair whose export
    fails is left out and recorded there (``"model@backend"`` -> the error) instead of raising.

    Returns:
        One dict per (model, backend): ``model``, ``backend``, ``latency_ms`` (median wall),
        ``cpu_ms`` (median process CPU time per call; both the median over the repeats),
        ``load`` (highest load average) and ``repeats_cpu_ms`` (each repeat's ``cpu_ms``).
    """
    from mobilenets.deploy.machine import restores_threads, usable_cores

    say = progress or (lambda s: None)

    @restores_threads
    def run() -> list[dict]:
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="mobilenets-latency-") as work:
            jobs = [(b, n, Path(work) / f"{i}-{j}") for i, n in enumerate(names)
                    for j, b in enumerate(backends)]
            for job in jobs:
                job[2].mkdir()
            keys = [f"{n}@{b}" for b, n, _ in jobs]
            say(f"exporting {len(jobs)} model(s) x backend(s)")
            lost: dict[int, str] | None = None if failed is None else {}
            exported = export_for(jobs, calibration_data, workers or usable_cores(),
                                  done=lambda i, f: say(f"exported {keys[i]}") if f else None,
                                  failed=lost)
            for i, error in (lost or {}).items():
                say(f"export of {keys[i]} failed, left out: {error}")
                failed[keys[i]] = error
            kept = [i for i in range(len(jobs)) if i not in (lost or {})]
            jobs, keys, exported = ([seq[i] for i in kept] for seq in (jobs, keys, exported))
            timed = []
            for r in range(repeats):
                say(f"timing {len(jobs)}: {rounds} rounds x {iters} calls, {threads} "
                    f"thread(s), repeat {r + 1} of {repeats}")
                timed.append(timed_runs(exported, keys, rounds, iters))
        rows = []
        for b, n, _ in jobs:
            runs = [t[f"{n}@{b}"] for t in timed]
            rows.append({"model": n, "backend": b,
                         "latency_ms": statistics.median(t["latency_ms"] for t in runs),
                         "cpu_ms": statistics.median(t["cpu_ms"] for t in runs),
                         "load": max((t["load"] for t in runs if t["load"] is not None),
                                     default=None),
                         "repeats_cpu_ms": [t["cpu_ms"] for t in runs]})
        return rows

    return run()


def measure_device(backend: str, arch: str = "v1", count: int = DEFAULT_KIT_SIZE,
                   threads: int = 1, rounds: int = 7, iters: int = 5,
                   calibration_data: str = "fashion-mnist",
                   progress: Callable[[str], None] | None = None) -> Device:
    """The kit of ``backend`` timed on this machine (``measure_models``) and fitted: the device
    is this machine running ``backend``. The fit uses each model's process CPU time per call
    (what one thread costs, whatever else the machine is doing); the wall times are kept in
    ``fitted_on`` beside it."""
    from mobilenets.deploy.machine import machine_info

    settings = backend_fit(backend)
    names = calibration_set(arch, count)
    rows = measure_models(names, [backend], threads, rounds, iters, calibration_data, progress)
    device = fit_device([variant_profile(r["model"]) for r in rows], [r["cpu_ms"] for r in rows],
                        names=names, name=f"this machine, {backend}", **settings,
                        backend=backend, threads=threads, source="this machine",
                        machine=machine_info(threads))
    for fitted, row in zip(device.fitted_on, rows):
        fitted.update(wall_ms=row["latency_ms"], load=row["load"])
    return device
