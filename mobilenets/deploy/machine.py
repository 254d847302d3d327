"""The machine a measurement ran on, and the small timing helpers every benchmark shares.

Every latency figure is printed and saved with ``machine_line(machine_info(threads))``: the CPU
model, the instruction-set flags that decide which kernels run (AVX2, AVX-512, VNNI, BF16, AMX),
the core and thread counts, torch's version, the load average and the date. The CPUs this
project runs on differ between sessions (AVX2 only; AVX-512 with VNNI and BF16), so a figure
without them cannot be compared with another.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch


def restores_threads(fn: Callable) -> Callable:
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


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: Packages whose version ``machine_line`` names when a machine description records it: the
#: runtimes and peers a measurement may depend on besides torch.
PACKAGES = ("onnxruntime", "executorch", "openvino", "timm")


def machine_info(threads: int, packages: Sequence[str] = ()) -> dict:
    """What every measurement is printed and saved with.

    Args:
        threads: The thread count the measurement runs with.
        packages: Distributions whose versions the measurement depends on besides torch's, e.g.
            ``("onnxruntime",)``; each is recorded under its name (None if not installed).
            Default none.

    Returns:
        ``cpu_info()`` with the core count (``cpu_count``), ``threads``, torch's version (and
        those of ``packages``), the 1-minute load average (``load_before``; a caller that
        records it again at the end stores ``load_after``) and the date.

    Example:
        >>> m = machine_info(1, packages=("onnxruntime",))
        >>> sorted(m)[:4], m["threads"]
        (['cpu', 'cpu_capability', 'cpu_count', 'date'], 1)
    """
    from importlib.metadata import PackageNotFoundError, version

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {**cpu_info(), "cpu_count": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, **{p: installed(p) for p in packages},
            "load_before": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def note_load_after(machine: dict) -> dict:
    """``machine`` (a ``machine_info`` dict) with the 1-minute load average at the end of the
    measurement added as ``load_after``, in place: ``machine_line`` shows both."""
    machine["load_after"] = round(os.getloadavg()[0], 2)
    return machine


def machine_line(machine: dict) -> str:
    """One line naming the machine of a measurement (a ``machine_info`` dict): CPU, ISA flags,
    threads, versions (torch's and those of ``PACKAGES`` it records), the matmul floor where
    measured, the load average (before, and after where recorded) and the date."""
    isa = "+".join(machine.get("isa", [])) or "no AVX2"
    parts = [f"{machine.get('cpu', 'unknown CPU')} ({isa})", f"{machine.get('cpu_count')} cores",
             f"{machine.get('threads')} thread{'' if machine.get('threads') == 1 else 's'}",
             f"torch {machine.get('torch')}",
             *(f"{p} {machine[p]}" for p in PACKAGES if machine.get(p))]
    if "gemm_gflops" in machine:
        parts.append("fp32 GEMM " + ", ".join(f"{k} {v:g}" for k, v in machine["gemm_gflops"].items())
                     + " GFLOP/s (floor at the best)")
    elif "matmul_gflops" in machine:
        parts.append(f"fp32 matmul {machine['matmul_gflops']:g} GFLOP/s")
    if "load_before" in machine:
        parts.append(f"load {machine['load_before']:g}" + (
            f" before, {machine['load_after']:g} after" if "load_after" in machine else ""))
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
