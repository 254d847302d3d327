"""Inference latency, throughput and memory on this machine, for every backend we offer and the
peers (MobileNet V1: timm eager, ONNX Runtime on timm's export; MobileNetV2: torchvision eager),
measured in one process and interleaved so that machine noise hits every backend alike (the
model picker built on it is ``deploy.pick``).

The backends are the records of ``deploy.backends.BACKENDS`` (``mobilenets bench --help`` lists
them): ours in torch (``eager``, ``torch``: BN folded, channels_last; ``compile``), ONNX Runtime
fp32 and int8 on our export, the phone runtimes (ExecuTorch, LiteRT, OpenVINO; their extras:
``pip install 'mobilenets[executorch]'``, ...), and the peers (``timm``, ``timm-onnx``,
``torchvision``). ``--backends all`` takes every backend installed. Honesty: every row carries the
process CPU time per call beside the wall time and the load average during the timing
(``honesty_warnings``); ONNX Runtime's thread spinning is set explicitly (``ort_spinning``, off
unless asked for: many sessions take turns on the same cores, and the idle ones' spinning threads
slow the timed one).

Each row also carries the analytic memory of its variant beside the measured peak RSS: the weights
and the peak live activations of one image at fp32 (``mobilenets.cost.memory.trace_memory``).
"""
from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilenets.checks import check_int
from mobilenets.deploy.backends import (BACKENDS, check_backends, default_backends, eager_peer,
                                        get_backend)
from mobilenets.deploy.export_cache import cached_export, export_key, is_cached
from mobilenets.deploy.machine import (machine_info, matmul_gflops, percentile, restores_threads,
                                       timed)
from mobilenets.deploy.onnx_export import ExportError, OnnxModule, calibration_batches
from mobilenets.deploy.peers import PEER_MODELS


@dataclass
class Prepared:
    """A backend made ready to time: ``run(x)`` computes logits; ``path`` is its model file."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool = False
    path: str | None = None
    setup_s: float = 0.0


def export_backend(name: str, model: nn.Module, shape: tuple[int, int, int], workdir: Path,
                   calibration: list[torch.Tensor] | None = None) -> str | None:
    """Write the model file of backend ``name`` for ``model`` (float, eval) at input ``shape`` =
    (C, H, W) into ``workdir`` (``Backend.export``); its path, or None for the backends that run
    in torch.

    The costly half of ``prepare_backend``, and the half that can run in another process
    (``export_backends``). The int8 backends need ``calibration`` batches of real images.
    A file exported before for the same inputs comes from the export cache
    (``deploy.export_cache``: ``MOBILENETS_CACHE_DIR``) instead of the tool-chain.
    """
    backend = get_backend(name)
    if backend.suffix is None:
        return None
    model = model.eval()

    def write(folder: Path) -> None:
        # Latency only: agreement on fresh (untrained) weights means nothing, so no minimum.
        backend.export(model, folder / f"{name}{backend.suffix}", calibration,
                       resolution=shape[1], **backend.accepted({"min_top1_agreement": 0.0}))

    key = export_key(name, model, shape, calibration)
    return str(cached_export(key, Path(workdir) / f"{name}{backend.suffix}", write))


def job_cached(name: str, model: nn.Module, shape: tuple[int, int, int], workdir: Path,
               calibration: list[torch.Tensor] | None = None) -> bool:
    """Whether ``export_backend`` with these arguments would copy its file from the export
    cache."""
    return is_cached(export_key(name, model, shape, calibration))


def _export_in_worker(job: tuple) -> str | None:
    torch.set_num_threads(1)  # one export per core: the workers share the machine
    return export_backend(*job)


def export_backends(jobs: list[tuple], workers: int = 1,
                    done: Callable[[int, str | None], None] | None = None,
                    failed: dict[int, str] | None = None) -> list[str | None]:
    """``export_backend(*job)`` for every job, in ``workers`` processes at once (one thread each).

    Exports are single-threaded Python and tool-chain work (tracing, lowering, calibration), so
    they scale with processes, not threads. ``done(i, path)`` is called as each job finishes.
    Workers are spawned (forked ones hang in the tool-chains' thread pools), so, as with torch's
    DataLoader, a calling script needs the ``if __name__ == "__main__":`` guard; without it the
    workers die at start and the exports run here, one after another, with a warning.
    Returns the file of each job (None for the torch backends), in the jobs' order. An export
    that fails raises its ``ExportError``, or, where a ``failed`` dict is given, is recorded
    there (job index -> the error's line) and the others go on (a benchmark over many models).
    """
    say = done or (lambda i, path: None)

    def export_one(i, run):
        try:
            results[i] = run()
        except ExportError as e:
            if failed is None:
                raise
            failed[i] = str(e)
        say(i, results[i])

    jobs = list(jobs)
    results: list = [None] * len(jobs)
    todo = [i for i, job in enumerate(jobs) if get_backend(job[0]).suffix]
    # Files in the export cache are copied here: no worker to start for them.
    for i in [i for i in todo if job_cached(*jobs[i])]:
        export_one(i, lambda: export_backend(*jobs[i]))
        todo.remove(i)
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            export_one(i, lambda: export_backend(*jobs[i]))
        return results
    import concurrent.futures
    import multiprocessing

    try:
        with concurrent.futures.ProcessPoolExecutor(
                min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_export_in_worker, jobs[i]): i for i in todo}
            for future in concurrent.futures.as_completed(futures):
                # a worker's exception is raised by result(), as itself
                export_one(futures[future], future.result)
    except concurrent.futures.process.BrokenProcessPool:
        import warnings

        warnings.warn("export workers could not start (a script calling this needs an "
                      "'if __name__ == \"__main__\":' guard); exporting in this process")
        for i in todo:
            if results[i] is None and i not in (failed or {}):
                export_one(i, lambda: export_backend(*jobs[i]))
    return results


def load_backend(name: str, model: nn.Module, shape: tuple[int, int, int], path: str | None,
                 ort_spinning: bool = True) -> Prepared:
    """Backend ``name`` ready to time (``Backend.load``), from the file ``export_backend`` wrote
    (None for the torch backends), with its first call made (compilation, ORT's arena set-up).

    ``ort_spinning=False`` stops ONNX Runtime's idle threads from spinning (see ``ort_session``).
    """
    t0 = time.perf_counter()
    backend = get_backend(name)
    # Explicit threads: ExecuTorch's process-wide pool refuses another size, never ignores it.
    run = backend.load(path, model.eval(), threads=torch.get_num_threads(),
                       ort_spinning=ort_spinning)
    prepared = Prepared(name, run, backend.channels_last, path)
    prepared.run(prepared_input(prepared, torch.randn(1, *shape)))
    prepared.setup_s = time.perf_counter() - t0
    return prepared


def prepare_backend(name: str, model: nn.Module, shape: tuple[int, int, int], workdir: Path,
                    calibration: list[torch.Tensor] | None = None,
                    ort_spinning: bool = True) -> Prepared:
    """Build backend ``name`` for ``model`` (float, eval) at input ``shape`` = (C, H, W):
    ``export_backend`` (files go to ``workdir``), then ``load_backend``. ``setup_s`` counts both.
    ``int8`` needs ``calibration`` batches of real images; ``ort_spinning=False`` stops ONNX
    Runtime's idle threads from spinning (see ``ort_session``).
    """
    t0 = time.perf_counter()
    path = export_backend(name, model, shape, workdir, calibration)
    prepared = load_backend(name, model, shape, path, ort_spinning)
    prepared.setup_s = time.perf_counter() - t0
    return prepared


def prepared_input(p: Prepared, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if p.channels_last else x


#: Seconds to wait after a backend's block when ONNX Runtime's threads spin: longer than they
#: keep spinning after the last call, which would otherwise be charged to the next backend.
SPIN_PAUSE_S = 0.06


def time_interleaved(prepared: list[Prepared], x: torch.Tensor | dict[str, torch.Tensor],
                     rounds: int, iters: int, settle: int = 3, cpu: dict | None = None,
                     load: list | None = None, pause: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each backend on ``x`` (one input for all, or one per backend name):
    ``rounds`` rounds, each running ``iters`` calls of every backend in an order rotated every round
    (noise hits all alike). Returns all samples.

    Each backend's block starts with ``settle`` untimed calls: the thread pools of the runtime that
    ran before (OpenMP's, ONNX Runtime's) keep spinning for a few ms after their last call and would
    otherwise be charged to the next backend's first calls.

    ``cpu`` (a dict), when given, receives each backend's process CPU seconds per call (every
    thread of this process: a runtime's pool included), one figure per round: the block's CPU
    time over its ``iters`` calls. Not per call: the kernel charges a thread that keeps running
    (a spinning pool thread) only at its scheduler ticks, so one call's reading misses or
    doubles that thread's share. ``load`` (a list) receives the 1-minute
    load average after every round: wall time on a loaded CPU is mostly waiting, CPU time is not.
    ``pause`` seconds pass untimed after every backend's block (``SPIN_PAUSE_S`` when ONNX
    Runtime's threads spin)."""
    inputs = {p.name: prepared_input(p, x[p.name] if isinstance(x, dict) else x) for p in prepared}
    samples: dict[str, list[float]] = {p.name: [] for p in prepared}
    for r in range(rounds):
        order = prepared[r % len(prepared):] + prepared[:r % len(prepared)]
        for p in order:
            xi = inputs[p.name]
            for _ in range(settle):
                p.run(xi)
            c0 = time.process_time()
            for _ in range(iters):
                t0 = time.perf_counter()
                p.run(xi)
                samples[p.name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(p.name, []).append((time.process_time() - c0) / iters)
            if pause:
                time.sleep(pause)
        if load is not None:
            load.append(os.getloadavg()[0])
    return samples


def calibration_images(data: str, shape: tuple[int, int, int], count: int) -> list[torch.Tensor]:
    """``count`` training images of ``data`` at input ``shape``, for int8 calibration."""
    from mobilenets.engine.data import BatchTransform, open_dataset

    ds = open_dataset(data, "train", shape[1], 1.0)
    return calibration_batches(ds, BatchTransform(shape[1], False, eval_crop=1.0,
                                                  out_channels=shape[0]), count)


def ort_matmul(n: int = 1024, threads: int | None = None, spinning: bool = False) -> Prepared:
    """ONNX Runtime's (MLAS) fp32 product of two ``n``-cubes as a backend to time beside the
    models (``time_interleaved``, input ``torch.randn(n, n)``): the floor measured under the
    same conditions as they are. ``2 n^3`` FLOPs per call."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor("b", TensorProto.FLOAT, [n, n], np.random.rand(n * n).astype("f4"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save_model(model, str(path))
        run = OnnxModule(path, threads, spinning=spinning)  # the file is read here, then gone
    run(torch.randn(n, n))
    return Prepared(f"gemm {n}^3", run)


def ort_matmul_gflops(n: int = 1024, repeats: int = 20, threads: int | None = None) -> float:
    """Measured fp32 GFLOP/s of an ``n``-cube MatMul in ONNX Runtime (MLAS), best of
    ``repeats``: on some CPUs well above ``torch.matmul``'s (``gemm_rates`` records both)."""
    run, a = ort_matmul(n, threads).run, torch.randn(n, n)
    best = min(timed(lambda: run(a)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def gemm_rates(threads: int) -> dict[str, float]:
    """The machine's measured fp32 GEMM rates, GFLOP/s: ``{"torch": ..., "onnxruntime": ...}``
    (ORT where installed). The fp32 floor of a model is its FLOPs at the best of them."""
    rates = {"torch": round(matmul_gflops(), 1)}
    try:
        rates["onnxruntime"] = round(ort_matmul_gflops(threads=threads), 1)
    except ImportError:
        pass
    return rates


def honesty_warnings(rows: list[BenchRow], machine: dict) -> list[str]:
    """One line per reason to distrust the timings: the load average above the thread count
    (other processes took the cores), or a row whose process CPU time per call disagrees with
    its wall time (below 0.8x at one thread: the process waited for a core)."""
    threads = machine.get("threads", 1)
    lines = []
    loads = [r.load for r in rows if r.load is not None]
    if loads and max(loads) > threads:
        lines.append(f"warning: load average up to {max(loads):.1f} > {threads} thread(s): wall "
                     "times include waiting for a core; compare cpu_ms")
    bad = [f"{r.variant}/{r.backend} {r.cpu_wall:.2f}" for r in rows
           if r.cpu_wall is not None and (r.cpu_wall < 0.8 or r.cpu_wall > 1.2 * threads)]
    if bad:
        lines.append(f"warning: process CPU time disagrees with wall time (cpu/wall): "
                     f"{', '.join(bad)}")
    return lines


def peak_memory(backend: str, spec: dict, path: str | None, threads: int) -> dict:
    """Peak RSS of a fresh process that loads ``backend`` (its file ``path``, or the model of
    ``spec`` for the torch backends) and runs batch 1 (in a subprocess, so every backend starts
    from the same state). Returns MB: the peak while loading and running the model, and that
    peak above the process's RSS after its imports (torch, ONNX Runtime)."""
    job = {"backend": backend, "spec": spec, "path": path, "threads": threads}
    out = subprocess.run([sys.executable, "-m", "mobilenets.deploy.bench", json.dumps(job)],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker for {backend} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_mb(field_name: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def _memory_worker(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    import onnxruntime  # noqa: F401  (counted in the baseline, like torch)

    backend = get_backend(job["backend"])
    if backend.peer_of:  # the peer's library too: its imports are not the model's memory
        importlib.import_module(PEER_MODELS[backend.peer_of][0])

    shape = tuple(job["spec"]["shape"])
    x = torch.randn(1, *shape)
    if backend.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # Importing torch peaks far above what it keeps; reset the high-water mark so the peak
    # measured is that of loading and running the model (Linux: clear_refs 5 resets VmHWM).
    base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    # An exported file (.onnx, .pte, .tflite, .xml), or the model for the torch backends.
    model = None if job["path"] else model_from_spec(job["spec"])
    run = backend.load(job["path"], model, threads=job["threads"])
    for _ in range(5):
        run(x)
    peak = _status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(base, 1),
            "above_baseline_mb": round(max(peak - base, 0.0), 1)}


def model_from_spec(spec: dict) -> nn.Module:
    """Build the model a bench row describes: a registered name or our model file."""
    from mobilenets.models.registry import create_model, load_model

    if spec.get("model_file"):
        return load_model(spec["model_file"]).float().eval()
    torch.manual_seed(0)
    return create_model(spec["name"], num_classes=spec.get("num_classes", 1000)).eval()


@dataclass
class BenchRow:
    """One (variant, backend) measurement. Latencies in ms at batch 1; throughput in images/s.

    Memory in MB of 2^20 bytes: the measured peak RSS, and beside it the variant's analytic memory
    at fp32, batch 1 (the same for every backend of a variant): ``weights_mb`` (parameters x 4
    bytes), ``act_peak_mb`` (peak live activations with conv+BN+activation and bottlenecks as
    single operations, as an inference engine runs them: MobileNetV2's Table 3 setting) and
    ``act_peak_layers_mb`` (every leaf module a step, as eager PyTorch runs).
    """

    variant: str
    backend: str
    latency_ms: float
    latency_p90_ms: float
    batch: int
    throughput: float | None
    peak_rss_mb: float | None
    above_baseline_mb: float | None
    weights_mb: float
    act_peak_mb: float
    act_peak_layers_mb: float
    peer: str | None  # the eager peer of the variant's architecture (timm, torchvision)
    vs_peer: float | None  # latency / the peer's eager latency (lower is better)
    floor_ms: float  # 2 x Mult-Adds / the best measured fp32 GEMM rate (``gemm_rates``)
    madds: int
    setup_s: float  # s to export (or copy from the export cache) and load the file
    precision: str = "fp32"  # fp32, int8 or bf16
    cpu_ms: float | None = None  # median process CPU time per call (all threads of the process)
    cpu_wall: float | None = None  # cpu_ms / latency_ms: < 1 at one thread = waited for a core
    load: float | None = None  # highest 1-minute load average seen during the timing rounds


@restores_threads
def bench(specs: list[dict], backends=None, batch: int = 32, threads: int = 2,
          rounds: int = 10, iters: int = 10, throughput_rounds: int = 3, memory: bool = True,
          calibration_data: str = "fashion-mnist", progress: Callable[[str], None] | None = None,
          ort_spinning: bool = False) -> tuple[list[BenchRow], dict]:
    """Measure every backend for every model spec.

    Args:
        specs: Models, each ``{"name": registered name}`` or ``{"model_file": our .safetensors}``,
            with optional ``"resolution"`` (default: the model's).
        backends: Names from ``backends.BACKENDS``. Default: ``default_backends`` of each model's
            architecture (all but ``compile``, with that architecture's peers). A peer that does
            not exist for a model's architecture is a ``ValueError``, raised before any timing.
        batch: Batch of the throughput measurement, >= 1. Default 32.
        threads: Intra-op threads for torch and ONNX Runtime. Default 2.
        rounds: Interleaved rounds of the batch-1 timing. Default 10.
        iters: Calls per backend per round at batch 1. Default 10.
        throughput_rounds: Interleaved rounds at ``batch`` (one call each). Default 3.
        memory: Also measure each backend's peak RSS in a fresh process. Default True.
        calibration_data: Data for the int8 calibration (the training split): ``"fashion-mnist"``
            or an ImageFolder root. Default Fashion-MNIST.
        progress: Called with a line of text as the work advances. Default: silent.
        ort_spinning: Let ONNX Runtime's idle threads spin between calls. Default False: set
            explicitly either way, because spinning threads of one session slow whatever runs
            next on a busy CPU, while on an idle one spinning is ONNX Runtime's fastest setting
            with several threads (``machine["ort_spinning"]`` records the choice).

    Returns:
        (rows, machine): the measurements, and the machine description with the matmul floor.
    """
    from mobilenets.cost.memory import check_memory, inference_ops, trace_memory
    from mobilenets.cost.profiler import profile_model
    from mobilenets.engine.data import check_data_source
    from mobilenets.models.registry import config_name

    models = [model_from_spec(spec) for spec in specs]
    per_model = []
    for model in models:
        arch = model.config.arch
        names = check_backends(backends if backends is not None else default_backends(arch))
        for b in names:
            get_backend(b).check_arch(arch)
        per_model.append(names)
    for name, value in (("batch", batch), ("threads", threads), ("rounds", rounds), ("iters", iters)):
        check_int(name, value)
    if any(BACKENDS[b].precision == "int8" for names in per_model for b in names):
        check_data_source(calibration_data, "--calibration-data")  # before any timing
    say = progress or (lambda s: None)
    torch.set_num_threads(threads)
    rates = gemm_rates(threads)
    gflops = max(rates.values())
    machine = {**machine_info(threads), "matmul_gflops": gflops, "gemm_gflops": rates,
               "ort_spinning": bool(ort_spinning)}
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    say("fp32 GEMM 1024^3 (GFLOP/s): " + ", ".join(f"{k} {v:g}" for k, v in rates.items()))
    rows: list[BenchRow] = []
    mib = 2 ** 20
    for spec, model, backends in zip(specs, models, per_model):
        res = spec.get("resolution") or model.config.input_size
        shape = (model.config.in_channels, res, res)
        check_memory(model, shape, batch, flags="--resolution or --batch")
        variant = spec.get("label") or config_name(model.config.replace(resolution=res))
        madds = profile_model(model, shape).total_madds
        analytic = (round(sum(p.numel() for p in model.parameters()) * 4 / mib, 3),
                    round(trace_memory(model, shape, 4, fuse=inference_ops()).peak_bytes / mib, 3),
                    round(trace_memory(model, shape, 4).peak_bytes / mib, 3))
        calibration = None
        if any(BACKENDS[b].precision == "int8" for b in backends):
            calibration = calibration_images(calibration_data, shape, 256)
        with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as tmp:
            prepared = []
            for b in backends:
                say(f"{variant}: preparing {b}")
                prepared.append(prepare_backend(b, model, shape, Path(tmp), calibration,
                                                ort_spinning=ort_spinning))
            say(f"{variant}: timing batch 1 ({rounds} rounds x {iters} calls x {len(prepared)} backends)")
            cpu, load = {}, []
            lat = time_interleaved(prepared, torch.randn(1, *shape), rounds, iters, cpu=cpu,
                                   load=load, pause=SPIN_PAUSE_S if ort_spinning else 0.0)
            thr = {}
            if batch > 1:
                say(f"{variant}: timing batch {batch}")
                samples = time_interleaved(prepared, torch.randn(batch, *shape), throughput_rounds, 1)
                thr = {k: batch / statistics.median(v) for k, v in samples.items()}
            mem = {}
            if memory:
                for p in prepared:
                    say(f"{variant}: peak memory of {p.name}")
                    mem[p.name] = peak_memory(p.name, {**spec, "shape": list(shape)}, p.path,
                                              threads)
        peer = eager_peer(model.config.arch)
        peer_ms = statistics.median(lat[peer]) * 1e3 if peer in lat else None
        for p in prepared:
            ms = statistics.median(lat[p.name]) * 1e3
            cpu_ms = statistics.median(cpu[p.name]) * 1e3
            m = mem.get(p.name, {})
            rows.append(BenchRow(
                variant, p.name, round(ms, 2), round(percentile(lat[p.name], 90) * 1e3, 2), batch,
                round(thr[p.name], 1) if p.name in thr else round(1e3 / ms, 1),
                m.get("peak_rss_mb"), m.get("above_baseline_mb"), *analytic,
                peer if peer_ms else None, round(ms / peer_ms, 3) if peer_ms else None,
                round(2 * madds / gflops / 1e6, 2), madds, round(p.setup_s, 1),
                BACKENDS[p.name].precision, round(cpu_ms, 3), round(cpu_ms / ms, 2),
                round(max(load), 2)))
    return rows, machine


if __name__ == "__main__":  # the peak-memory worker: python -m mobilenets.deploy.bench '<job json>'
    print(json.dumps(_memory_worker(json.loads(sys.argv[1]))))
