"""Inference latency, throughput and memory on this machine, for every backend we offer and the
peers (MobileNet V1: timm eager, ONNX Runtime on timm's export; MobileNetV2: torchvision eager),
measured in one process and interleaved so that machine noise hits every backend alike; and the
model picker built on it.

Backends (``BACKENDS``):
    eager      our model as built: torch eager, NCHW, BatchNorm as separate layers
    torch      BN folded into the convolutions, channels_last, inference_mode
    compile    ``torch`` plus ``torch.compile`` (slow to start: it compiles on first call)
    onnx       ONNX Runtime, fp32, on our export (BN folded, full graph optimisation)
    int8       ONNX Runtime on our int8 static-quantized export (QDQ, per-channel weights)
    timm       peer: timm's MobileNet V1 with the same alpha, eager
    timm-onnx  peer: ONNX Runtime on timm's model exported the same way
    torchvision  peer (MobileNetV2): torchvision's mobilenet_v2 with the same alpha, eager

Each row also carries the analytic memory of its variant beside the measured peak RSS: the weights
and the peak live activations of one image at fp32 (``mobilenets.cost.memory.trace_memory``).
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilenets.deploy.onnx_export import (OnnxModule, calibration_batches, export_onnx,
                                           fold_batchnorm, quantize_int8)

BACKENDS = {
    "eager": "torch eager, NCHW, BN separate (our model as built)",
    "torch": "torch, BN folded, channels_last, inference_mode",
    "compile": "torch, BN folded, channels_last, torch.compile",
    "onnx": "ONNX Runtime fp32 on our export",
    "int8": "ONNX Runtime int8 (static, per-channel) on our export",
    "timm": "peer: timm MobileNet V1, eager",
    "timm-onnx": "peer: ONNX Runtime fp32 on timm's export",
    "torchvision": "peer: torchvision MobileNetV2, eager",
}
#: The peer backends and the one architecture each exists for.
PEERS = {"timm": "mobilenet_v1", "timm-onnx": "mobilenet_v1", "torchvision": "mobilenet_v2"}
#: The eager peer each architecture's latencies are compared with (``BenchRow.vs_peer``).
EAGER_PEER = {"mobilenet_v1": "timm", "mobilenet_v2": "torchvision"}
_OURS = ("eager", "torch", "onnx", "int8")


def default_backends(arch: str = "mobilenet_v1") -> tuple[str, ...]:
    """Our backends but ``compile``, and the peers of ``arch`` (a key of ``registry.ARCHS``)."""
    return _OURS + tuple(p for p, a in PEERS.items() if a == arch)


DEFAULT_BACKENDS = default_backends("mobilenet_v1")


def check_backends(names) -> list[str]:
    """Validate backend names (a list or a comma-separated string); ``ValueError`` names the bad one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError("--backends must name at least one backend")
    for n in names:
        if n not in BACKENDS:
            raise ValueError(f"unknown backend {n!r}; known: {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def timm_mobilenet_v1(width_mult: float, num_classes: int = 1000) -> nn.Module:
    """timm's MobileNet V1 with any width multiplier (timm registers only 1.0 and 1.25 by name,
    so other alphas use the generator behind them)."""
    import timm

    named = {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"}
    try:
        from timm.models.efficientnet import _gen_mobilenet_v1
    except ImportError:  # a timm without the generator: the named variants only
        if width_mult not in named:
            raise ValueError(f"this timm has no MobileNet V1 with width_mult {width_mult}") from None
        return timm.create_model(named[width_mult], pretrained=False, num_classes=num_classes)
    return _gen_mobilenet_v1(named.get(width_mult, "mobilenetv1_100"), channel_multiplier=width_mult,
                             pretrained=False, num_classes=num_classes)


def torchvision_mobilenet_v2(width_mult: float, num_classes: int = 1000) -> nn.Module:
    """torchvision's MobileNetV2 with any width multiplier, fresh weights (its channels are ours)."""
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, width_mult=width_mult, num_classes=num_classes)


@dataclass
class Prepared:
    """A backend made ready to time: ``run(x)`` computes logits; ``files`` are its model files."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool = False
    files: dict = field(default_factory=dict)
    setup_s: float = 0.0


def prepare_backend(name: str, model: nn.Module, shape: tuple[int, int, int], workdir: Path,
                    calibration: list[torch.Tensor] | None = None,
                    ort_spinning: bool = True) -> Prepared:
    """Build backend ``name`` for ``model`` (float, eval) at input ``shape`` = (C, H, W).

    ONNX files go to ``workdir``. ``int8`` needs ``calibration`` batches of real images.
    ``ort_spinning=False`` stops ONNX Runtime's idle threads from spinning (see ``ort_session``).
    """
    t0 = time.perf_counter()
    model = model.eval()
    files: dict = {}
    cl = False
    if name == "eager":
        run = _no_grad(model)
    elif name in ("torch", "compile"):
        folded = fold_batchnorm(model).to(memory_format=torch.channels_last)
        run = _no_grad(torch.compile(folded, dynamic=False) if name == "compile" else folded)
        cl = True
    elif name in ("onnx", "timm-onnx"):
        src = peer_model(name, model) if name == "timm-onnx" else model
        path = workdir / f"{name}.onnx"
        export_onnx(src, path, resolution=shape[1])
        files["onnx"] = str(path)
        run = OnnxModule(path, spinning=ort_spinning)
    elif name == "int8":
        if not calibration:
            raise ValueError("the int8 backend needs calibration images")
        path = workdir / "int8.onnx"
        # Latency only: fresh (untrained) weights make top-1 agreement meaningless, so no minimum.
        quantize_int8(model, path, calibration, resolution=shape[1], min_top1_agreement=0.0)
        files["onnx"] = str(path)
        run = OnnxModule(path, spinning=ort_spinning)
    elif name in ("timm", "torchvision"):
        run = _no_grad(peer_model(name, model))
    else:
        check_backends([name])
    prepared = Prepared(name, run, cl, files)
    prepared.run(prepared_input(prepared, torch.randn(1, *shape)))  # first call: compilation, ORT arena set-up
    prepared.setup_s = time.perf_counter() - t0
    return prepared


def check_peer(backend: str, arch: str) -> None:
    """``ValueError`` if ``backend`` is a peer that does not exist for ``arch``, naming the one that
    does (timm has MobileNet V1, torchvision MobileNetV2)."""
    if backend in PEERS and PEERS[backend] != arch:
        raise ValueError(f"the {backend!r} peer exists for {PEERS[backend]} only, not {arch}; "
                         f"compare {arch} with {EAGER_PEER[arch]!r}")


def peer_model(backend: str, model: nn.Module) -> nn.Module:
    """The peer ``backend``'s model with ``model``'s width and class count, in eval mode."""
    cfg = getattr(model, "config", {}) or {}
    check_peer(backend, cfg.get("arch", "mobilenet_v1"))
    build = torchvision_mobilenet_v2 if backend == "torchvision" else timm_mobilenet_v1
    peer = build(cfg.get("width_mult", 1.0), cfg.get("num_classes", 1000))
    peer.config = {"resolution": cfg.get("resolution", 224)}
    return peer.eval()


def _no_grad(module: nn.Module) -> Callable:
    def run(x):
        with torch.inference_mode():
            return module(x)
    return run


def prepared_input(p: Prepared, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if p.channels_last else x


def time_interleaved(prepared: list[Prepared], x: torch.Tensor | dict[str, torch.Tensor],
                     rounds: int, iters: int, settle: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each backend on ``x`` (one input for all, or one per backend name):
    ``rounds`` rounds, each running ``iters`` calls of every backend in an order rotated every round
    (noise hits all alike). Returns all samples.

    Each backend's block starts with ``settle`` untimed calls: the thread pools of the runtime that
    ran before (OpenMP's, ONNX Runtime's) keep spinning for a few ms after their last call and would
    otherwise be charged to the next backend's first calls."""
    inputs = {p.name: prepared_input(p, x[p.name] if isinstance(x, dict) else x) for p in prepared}
    samples: dict[str, list[float]] = {p.name: [] for p in prepared}
    for r in range(rounds):
        order = prepared[r % len(prepared):] + prepared[:r % len(prepared)]
        for p in order:
            xi = inputs[p.name]
            for _ in range(settle):
                p.run(xi)
            for _ in range(iters):
                t0 = time.perf_counter()
                p.run(xi)
                samples[p.name].append(time.perf_counter() - t0)
    return samples


def calibration_images(data: str, shape: tuple[int, int, int], count: int) -> list[torch.Tensor]:
    """``count`` training images of ``data`` at input ``shape``, for int8 calibration."""
    from mobilenets.engine.data import BatchTransform, open_dataset

    ds = open_dataset(data, "train", shape[1], 1.0)
    return calibration_batches(ds, BatchTransform(shape[1], False, eval_crop=1.0,
                                                  out_channels=shape[0]), count)


def _restores_threads(fn: Callable) -> Callable:
    """Decorate a function that sets torch's thread count so the caller's count comes back."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


#: The instruction-set flags that decide which kernels run (fp32 AVX2/AVX-512, int8 VNNI, bf16).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
             "amx_int8")


def cpu_info() -> dict:
    """The CPU every figure was measured on: ``{"cpu": model name, "isa": [flags of ISA_FLAGS
    present], "cpu_capability": torch's kernel choice (e.g. "AVX2", "AVX512")}``, from
    /proc/cpuinfo ("unknown" and [] where it cannot be read)."""
    cpu, flags = "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return {"cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags],
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine_line(machine: dict) -> str:
    """One line naming the machine of a measurement: CPU, ISA flags, threads, date, matmul floor."""
    isa = "+".join(machine.get("isa", [])) or "no AVX2"
    parts = [f"{machine.get('cpu', 'unknown CPU')} ({isa})", f"{machine.get('cpu_count')} cores",
             f"{machine.get('threads')} thread{'' if machine.get('threads') == 1 else 's'}", f"torch {machine.get('torch')}"]
    if "matmul_gflops" in machine:
        parts.append(f"fp32 matmul {machine['matmul_gflops']:g} GFLOP/s")
    if "date" in machine:
        parts.append(str(machine["date"]))
    return "machine: " + ", ".join(parts)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 GFLOP/s of an ``n``-cube matmul (best of ``repeats``): the machine's floor."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def timed(fn) -> float:
    """Seconds of wall time one call of ``fn()`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_memory(backend: str, spec: dict, onnx_file: str | None, threads: int) -> dict:
    """Peak RSS of a fresh process that loads ``backend`` and runs batch 1 (in a subprocess, so
    every backend starts from the same state). Returns MB: the peak while loading and running the
    model, and that peak above the process's RSS after its imports (torch, ONNX Runtime)."""
    job = {"backend": backend, "spec": spec, "onnx": onnx_file, "threads": threads}
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

    if job["backend"] in PEERS:  # the peer's library too: its imports are not the model's memory
        importlib.import_module("torchvision.models" if job["backend"] == "torchvision" else "timm")

    shape = tuple(job["spec"]["shape"])
    x = torch.randn(1, *shape)
    # Importing torch peaks far above what it keeps; reset the high-water mark so the peak
    # measured is that of loading and running the model (Linux: clear_refs 5 resets VmHWM).
    base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if job["onnx"]:
        run = OnnxModule(job["onnx"], threads=job["threads"])
    else:
        model = model_from_spec(job["spec"])
        run = prepare_backend(job["backend"], model, shape, Path(tempfile.gettempdir())).run
        if job["backend"] in ("torch", "compile"):
            x = x.contiguous(memory_format=torch.channels_last)
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
    floor_ms: float  # 2 x Mult-Adds / measured matmul GFLOP/s
    madds: int
    setup_s: float


@_restores_threads
def bench(specs: list[dict], backends=None, batch: int = 32, threads: int = 2,
          rounds: int = 10, iters: int = 10, throughput_rounds: int = 3, memory: bool = True,
          calibration_data: str = "fashion-mnist", progress: Callable[[str], None] | None = None
          ) -> tuple[list[BenchRow], dict]:
    """Measure every backend for every model spec.

    Args:
        specs: Models, each ``{"name": registered name}`` or ``{"model_file": our .safetensors}``,
            with optional ``"resolution"`` (default: the model's).
        backends: Names from ``BACKENDS``. Default: ``default_backends`` of each model's
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

    Returns:
        (rows, machine): the measurements, and the machine description with the matmul floor.
    """
    from mobilenets.cost.memory import inference_ops, trace_memory
    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import config_name

    models = [model_from_spec(spec) for spec in specs]
    per_model = []
    for model in models:
        arch = model.config.get("arch", "mobilenet_v1")
        names = check_backends(backends if backends is not None else default_backends(arch))
        for b in names:
            check_peer(b, arch)
        per_model.append(names)
    for name, value in (("batch", batch), ("threads", threads), ("rounds", rounds), ("iters", iters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    say = progress or (lambda s: None)
    torch.set_num_threads(threads)
    gflops = matmul_gflops()
    machine = {**cpu_info(), "cpu_count": os.cpu_count(), "threads": threads,
               "torch": torch.__version__, "matmul_gflops": round(gflops, 1),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    say(f"fp32 matmul 1024^3: {gflops:.0f} GFLOP/s")
    rows: list[BenchRow] = []
    mib = 2 ** 20
    for spec, model, backends in zip(specs, models, per_model):
        res = spec.get("resolution") or model.config.get("resolution", 224)
        shape = (model.config.get("in_channels", 3), res, res)
        variant = spec.get("label") or config_name({**model.config, "resolution": res})
        madds = profile_model(model, shape).total_madds
        analytic = (round(sum(p.numel() for p in model.parameters()) * 4 / mib, 3),
                    round(trace_memory(model, shape, 4, fuse=inference_ops()).peak_bytes / mib, 3),
                    round(trace_memory(model, shape, 4).peak_bytes / mib, 3))
        calibration = None
        if "int8" in backends:
            calibration = calibration_images(calibration_data, shape, 256)
        with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as tmp:
            prepared = []
            for b in backends:
                say(f"{variant}: preparing {b}")
                prepared.append(prepare_backend(b, model, shape, Path(tmp), calibration))
            say(f"{variant}: timing batch 1 ({rounds} rounds x {iters} calls x {len(prepared)} backends)")
            lat = time_interleaved(prepared, torch.randn(1, *shape), rounds, iters)
            thr = {}
            if batch > 1:
                say(f"{variant}: timing batch {batch}")
                samples = time_interleaved(prepared, torch.randn(batch, *shape), throughput_rounds, 1)
                thr = {k: batch / statistics.median(v) for k, v in samples.items()}
            mem = {}
            if memory:
                for p in prepared:
                    say(f"{variant}: peak memory of {p.name}")
                    mem[p.name] = peak_memory(p.name, {**spec, "shape": list(shape)},
                                              p.files.get("onnx"), threads)
        peer = EAGER_PEER.get(model.config.get("arch", "mobilenet_v1"))
        peer_ms = statistics.median(lat[peer]) * 1e3 if peer in lat else None
        for p in prepared:
            ms = statistics.median(lat[p.name]) * 1e3
            m = mem.get(p.name, {})
            rows.append(BenchRow(
                variant, p.name, round(ms, 2), round(percentile(lat[p.name], 90) * 1e3, 2), batch,
                round(thr[p.name], 1) if p.name in thr else round(1e3 / ms, 1),
                m.get("peak_rss_mb"), m.get("above_baseline_mb"), *analytic,
                peer if peer_ms else None, round(ms / peer_ms, 3) if peer_ms else None,
                round(2 * madds / gflops / 1e6, 2), madds, round(p.setup_s, 1)))
    return rows, machine


def candidates(accuracy_csv: str | None = None, arch: str | None = None) -> list[dict]:
    """The models ``pick`` chooses among, with their accuracy and its source.

    With ``accuracy_csv`` (a ``mobilenets sweep`` CSV): its grid points (only those of ``arch``
    when given), with the top-1 measured on the user's data and the trained model files when they
    still exist. Otherwise the registered variants of ``arch`` (default ``"v1"``) with ImageNet
    top-1: the paper's figure where it prints one, else TF-Slim's released checkpoint's. V1: the 16
    alpha x resolution variants (paper Tables 6-9, ``research/slim/nets/mobilenet_v1.md``). V2: the
    22 registered variants (MobileNetV2's Table 4 for 1.0 and 1.4 at 224; the others from
    ``research/slim/nets/mobilenet/README.md``, see ``registry._RELEASED_TOP1_V2``).
    """
    from mobilenets.models.registry import MODELS, arch_name, list_models, variant_name

    if accuracy_csv:
        from mobilenets.engine.sweep import read_rows

        if not Path(accuracy_csv).is_file():
            raise FileNotFoundError(f"--accuracy file not found: {accuracy_csv}")
        rows = read_rows(accuracy_csv)
        if arch:
            rows = [r for r in rows if r["arch"] == arch_name(arch)]
        if not rows:
            raise ValueError(f"--accuracy {accuracy_csv} holds no sweep rows"
                             + (f" of --arch {arch}" if arch else ""))
        out = []
        for r in rows:
            label = variant_name(f"{r['arch']}_1.0_224", r["width_mult"], r["resolution"])
            spec = {"label": label, "arch": r["arch"], "width_mult": r["width_mult"],
                    "resolution": r["resolution"],
                    "top1": r["top1"], "accuracy_source": f"sweep ({Path(accuracy_csv).name})"}
            if r.get("model_path") and Path(r["model_path"]).is_file():
                spec["model_file"] = r["model_path"]
            else:
                spec["arch_kwargs"] = {"width_mult": r["width_mult"], "num_classes": 10}
            out.append(spec)
        return out
    out = []
    arch = arch_name(arch or "v1")
    for name in list_models(f"{arch}_*"):
        spec = MODELS[name]
        a = spec.kwargs.get("width_mult")
        if a is None:  # V1's ablation baselines (full convolutions, shallow): not a grid point
            continue
        top1, source = (spec.paper["top1"], "paper") if spec.paper else \
            (spec.released_top1, "TF-Slim release")
        out.append({"label": name, "name": name, "arch": arch,
                    "width_mult": a, "resolution": spec.resolution, "top1": top1,
                    "accuracy_source": source})
    return out


@_restores_threads
def pick(latency_ms: float | None = None, max_params: float | None = None,
         max_madds: float | None = None, backend: str = "onnx", accuracy_csv: str | None = None,
         threads: int = 2, rounds: int = 5, iters: int = 5, plot: str | None = None,
         calibration_data: str = "fashion-mnist", arch: str | None = None,
         progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict]:
    """Choose the most accurate MobileNet within a latency, size and compute budget, measuring the
    latency of every candidate on this machine and backend: the paper's promise, made measurable.

    Args:
        latency_ms: Largest median batch-1 latency allowed, in ms (> 0). Default: no limit.
        max_params: Largest parameter count (conv + FC weights, the paper's count). Default none.
        max_madds: Largest Mult-Adds per image. Default none.
        backend: Where latency is measured, a name from ``BACKENDS`` except the peers.
            Default ``"onnx"``.
        accuracy_csv: A ``mobilenets sweep`` CSV to take candidates and accuracy from; default the
            registered ImageNet variants of ``arch`` (see ``candidates``).
        threads: Intra-op threads. Default 2.
        rounds: Interleaved timing rounds over all candidates. Default 5.
        iters: Calls per candidate per round. Default 5.
        plot: Write the accuracy-against-measured-latency frontier to this PNG. Default none.
        calibration_data: Calibration data for ``backend="int8"``. Default Fashion-MNIST.
        arch: ``"v1"`` or ``"v2"``: choose among that architecture's variants (or sweep rows).
            Default: V1's registered variants, or every row of ``accuracy_csv``.
        progress: Called with a line of text as the work advances.

    Returns:
        (rows, choice): every candidate with ``latency_ms``, ``params``, ``madds``, ``fits``,
        and the chosen row (the most accurate that fits; the faster on a tie).

    Raises:
        ValueError: if no budget is given, a budget is not > 0, the backend is unknown or a peer,
            or no candidate fits (the message names the cheapest candidate).
    """
    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import ARCHS

    budgets = {"latency_ms": latency_ms, "max_params": max_params, "max_madds": max_madds}
    if all(v is None for v in budgets.values()):
        raise ValueError("give at least one budget: --latency-ms, --max-params or --max-madds")
    for k, v in budgets.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"--{k.replace('_', '-')} must be a number > 0, got {v!r}")
    if check_backends([backend])[0] in PEERS:
        raise ValueError(f"--backend {backend!r} is a peer; pick measures our own backends")
    say = progress or (lambda s: None)
    torch.set_num_threads(threads)
    rows = candidates(accuracy_csv, arch)
    with tempfile.TemporaryDirectory(prefix="mobilenets-pick-") as tmp:
        prepared, inputs = [], {}
        for i, row in enumerate(rows):
            if "model_file" in row or "name" in row:
                model = model_from_spec(row)
            else:
                model = ARCHS[row["arch"]](**row["arch_kwargs"]).eval()
            model.config["resolution"] = row["resolution"]
            shape = (model.config.get("in_channels", 3), row["resolution"], row["resolution"])
            prof = profile_model(model, shape)
            row["params"] = prof.layer_params
            row["madds"] = prof.total_madds
            calibration = None
            if backend == "int8":
                calibration = calibration_images(calibration_data, shape, 128)
            say(f"preparing {row['label']} ({backend})")
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            # 16 sessions take turns on the same cores: no spinning (else the idle sessions'
            # threads slow the timed one, by up to 3x for the mid-sized models here).
            p = prepare_backend(backend, model, shape, workdir, calibration, ort_spinning=False)
            p.name = row["label"]
            prepared.append(p)
            inputs[p.name] = torch.randn(1, *shape)
        say(f"timing {len(prepared)} candidates, {rounds} rounds x {iters} calls")
        samples = time_interleaved(prepared, inputs, rounds, iters)  # each its own input size
    for row in rows:
        row["latency_ms"] = round(statistics.median(samples[row["label"]]) * 1e3, 3)
        row["fits"] = ((latency_ms is None or row["latency_ms"] <= latency_ms)
                       and (max_params is None or row["params"] <= max_params)
                       and (max_madds is None or row["madds"] <= max_madds))
        row.pop("arch_kwargs", None)
    fitting = [r for r in rows if r["fits"]]
    if plot:
        from mobilenets.engine.plots import plot_frontier

        plot_frontier(rows, plot, "latency_ms", f"Measured latency (ms), batch 1, {backend}",
                      budget=latency_ms, title=f"Accuracy vs latency on this machine ({backend})")
    if not fitting:
        fastest = min(rows, key=lambda r: r["latency_ms"])
        raise ValueError(f"no candidate fits the budget; the fastest is {fastest['label']} at "
                         f"{fastest['latency_ms']:.2f} ms, {fastest['params'] / 1e6:.2f}M params, "
                         f"{fastest['madds'] / 1e6:.0f}M Mult-Adds")
    choice = max(fitting, key=lambda r: (r["top1"], -r["latency_ms"]))
    for row in rows:
        row["chosen"] = row is choice
    return rows, choice


if __name__ == "__main__":  # the peak-memory worker: python -m mobilenets.deploy.bench '<job json>'
    print(json.dumps(_memory_worker(json.loads(sys.argv[1]))))
