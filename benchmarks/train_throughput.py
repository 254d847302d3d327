"""Training-throughput benchmark: our MobileNet V1 1.0 training step against timm's, on CPU.

Measures images/s of one full training step (zero_grad, forward, cross-entropy, backward,
RMSprop step) on synthetic data (data loading excluded) for several ways of running OUR step
("modes"), against timm's ``mobilenetv1_100`` run plainly (mode ``timm``, the reference of the
ratios). All modes of a setting are measured in ONE process, interleaved: each round runs one timed
step of every mode, in an order rotated every round, so machine noise hits all modes alike; the
reported step time is the median over rounds. Warm-up steps, and torch.compile's compilation
(timed apart), are excluded.

A mode is ``eager`` or ``timm``, or a ``+``-joined set of options applied to our model (or to timm's
when it starts with ``timm+``):

    channels_last          model and input in torch.channels_last
    compile                torch.compile(model)
    compile_max_autotune   torch.compile(model, mode="max-autotune-no-cudagraphs")
    foreach                RMSprop(foreach=True) (PyTorch's CPU default is the for-loop)
    zero_grad_zeros        optimizer.zero_grad(set_to_none=False) (the default is True)
    no_mkldnn              torch.backends.mkldnn disabled around the step
    no_small_dw            our depthwise convolutions on maps of <= 4 pixels (the 2x2 and 1x1 maps
                           of a 32x32 input) sent to oneDNN like any other instead of the library's
                           dense per-channel product (mobilenets.models.layers.DepthwiseConv2d, ~10x faster
                           there); the library's default is the product, so modes without this
                           option are what `mobilenets train` runs
    small_dw               timm's depthwise convolutions swapped for the library's DepthwiseConv2d
    bf16                   torch.autocast("cpu", torch.bfloat16): NOT fp32, for information only

``--malloc tuned`` sets glibc's allocator thresholds (mallopt) for the whole process so freed
activations stay in the heap instead of being unmapped and page-faulted back in every step; it is a
process setting, so it applies to every mode of the run, timm included (run the benchmark twice to
compare).

Before timing, every mode of ours is checked (1) in fp32 against plain eager NCHW fp32 (oneDNN
for every convolution) from the
same initialisation on the same batches (first-step gradients, losses and parameters after
``--check-steps`` steps), with eager fp32 against float64 as the rounding-noise floor (this
network's gradients at initialisation are nearly-cancelling sums, so two correct fp32
implementations differ by up to a few 1e-2 relative); and (2) run in float64 on a small batch
against eager float64, where a mode that computes the same function agrees to ~1e-12.

Usage (from the repository root):

    .venv/bin/python benchmarks/train_throughput.py                # full run (5-8 min on 2 cores)
    .venv/bin/python benchmarks/train_throughput.py --malloc tuned
    .venv/bin/python benchmarks/train_throughput.py --modes extra --rounds 3   # the other modes
    .venv/bin/python benchmarks/train_throughput.py --quick        # < 1 min smoke run
    .venv/bin/python benchmarks/train_throughput.py --modes timm,eager,channels_last+compile

This is a benchmark, not a test: it asserts nothing and only reports.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import mobilenets
from mobilenets.deploy.machine import machine_info, note_load_after
from mobilenets.fileio import write_json
from mobilenets.tables import render_table
from mobilenets.models.layers import DepthwiseConv2d

ROOT = Path(__file__).resolve().parents[1]

#: The optimizer of the paper's training setup (TF-Slim's RMSprop), identical for every mode.
OPTIM = dict(lr=0.045, alpha=0.9, momentum=0.9, eps=1.0, weight_decay=4e-5)

REFERENCE = "timm"
MAX_AUTOTUNE = "max-autotune-no-cudagraphs"

OPTIONS = {
    "channels_last": "channels_last model and input",
    "compile": "torch.compile(model)",
    "compile_max_autotune": f"torch.compile(model, mode={MAX_AUTOTUNE!r})",
    "foreach": "RMSprop(foreach=True)",
    "zero_grad_zeros": "zero_grad(set_to_none=False)",
    "no_mkldnn": "torch.backends.mkldnn disabled",
    "small_dw": "timm's depthwise convs swapped for ours (dense product on <=4-pixel maps)",
    "no_small_dw": "our depthwise convs on <=4-pixel maps through oneDNN (plain nn.Conv2d)",
    "bf16": "bf16 autocast (NOT fp32)",
}

DEFAULT_MODES = [
    "timm", "timm+channels_last", "eager+no_small_dw", "eager", "channels_last+no_small_dw",
    "channels_last", "channels_last+compile",
]
#: Measured once (benchmarks/README.md) but left out of the default run to keep it under ~8 minutes.
EXTRA_MODES = [
    "eager+foreach", "eager+zero_grad_zeros", "channels_last+foreach", "compile",
    "compile_max_autotune", "channels_last+compile_max_autotune",
    "timm+channels_last+small_dw", "channels_last+bf16", "no_mkldnn",
]
QUICK_MODES = ["timm", "eager+no_small_dw", "channels_last+no_small_dw", "channels_last"]


@dataclass(frozen=True)
class Mode:
    """One way of running a training step, parsed from a name like ``channels_last+compile``."""

    name: str
    model: str = "ours"
    channels_last: bool = False
    compile: str | None = None
    foreach: bool | None = None
    set_to_none: bool = True
    mkldnn: bool = True
    small_dw: bool = False
    no_small_dw: bool = False
    bf16: bool = False

    @classmethod
    def parse(cls, name: str) -> "Mode":
        tokens = [t for t in name.split("+") if t]
        kw: dict = {}
        if tokens and tokens[0] in ("timm", "eager", "ours"):
            if tokens[0] == "timm":
                kw["model"] = "timm"
            tokens = tokens[1:]
        for t in tokens:
            if t not in OPTIONS:
                raise ValueError(f"unknown option {t!r} in mode {name!r}; options: {', '.join(OPTIONS)}")
            if t == "channels_last":
                kw["channels_last"] = True
            elif t in ("compile", "compile_max_autotune"):
                if "compile" in kw:
                    raise ValueError(f"mode {name!r} names two compile options")
                kw["compile"] = "default" if t == "compile" else MAX_AUTOTUNE
            elif t == "foreach":
                kw["foreach"] = True
            elif t == "zero_grad_zeros":
                kw["set_to_none"] = False
            elif t == "no_mkldnn":
                kw["mkldnn"] = False
            else:
                kw[t] = True
        return cls(name=name, **kw)

    @property
    def fp32(self) -> bool:
        return not self.bf16

    def describe(self) -> str:
        opts = [OPTIONS[t] for t in self.name.split("+") if t in OPTIONS]
        who = "timm mobilenetv1_100" if self.model == "timm" else "ours (mobilenets.MobileNetV1())"
        return who + ", " + (" + ".join(opts) if opts else "eager NCHW")


# --------------------------------------------------------------------------------------------------
# The small-map depthwise convolution (options small_dw / no_small_dw)
# --------------------------------------------------------------------------------------------------

def use_small_map_depthwise(model: nn.Module) -> int:
    """Turn every depthwise nn.Conv2d of ``model`` (timm's) into the library's DepthwiseConv2d, in
    place (same parameters, same state_dict). Returns how many."""
    count = 0
    for m in model.modules():
        if (type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels == m.out_channels):
            m.__class__ = DepthwiseConv2d
            count += 1
    return count


# --------------------------------------------------------------------------------------------------
# The allocator (--malloc tuned)
# --------------------------------------------------------------------------------------------------

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_malloc() -> dict:
    """Keep freed memory in glibc's heap: no mmap for big blocks, no trimming. Equivalent to
    ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment."""
    libc = ctypes.CDLL("libc.so.6")
    ok = [libc.mallopt(M_MMAP_THRESHOLD, 1 << 30), libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)]
    return {"mmap_threshold": 1 << 30, "trim_threshold": 2**31 - 1, "mallopt_ok": all(v == 1 for v in ok)}


# --------------------------------------------------------------------------------------------------
# Building and stepping
# --------------------------------------------------------------------------------------------------

def build_model(kind: str) -> nn.Module:
    if kind == "ours":
        return mobilenets.MobileNetV1()
    import timm
    return timm.create_model("mobilenetv1_100", pretrained=False)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Runner:
    """A model, its optimizer and its step function for one mode and one setting."""

    def __init__(self, mode: Mode, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.mode = mode
        self.model = model.train()
        if mode.small_dw:
            use_small_map_depthwise(self.model)
        if mode.no_small_dw:
            for m in self.model.modules():
                if isinstance(m, DepthwiseConv2d):
                    m.small_map_pixels = 0
        if mode.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.x, self.y = self.prepare(x), y
        self.forward = self.model
        if mode.compile is not None:
            # dynamic=False: one static graph per setting (dynamo would otherwise mark the batch and
            # spatial sizes dynamic on the second setting, which is slower and breaks max-autotune).
            self.forward = torch.compile(self.model, mode=None if mode.compile == "default" else mode.compile,
                                         dynamic=False)
        self.optimizer = self.new_optimizer()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.mode.channels_last else x

    def new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.model.parameters(), foreach=self.mode.foreach, **OPTIM)

    def context(self):
        stack = contextlib.ExitStack()
        if not self.mode.mkldnn:
            stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
        if self.mode.bf16:
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack

    def step(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, grads: dict | None = None):
        """One training step; returns the loss. If ``grads`` is a dict, the gradients are copied
        into it before the optimizer step."""
        x = self.x if x is None else self.prepare(x)
        y = self.y if y is None else y
        self.optimizer.zero_grad(set_to_none=self.mode.set_to_none)
        with self.context():
            loss = F.cross_entropy(self.forward(x), y)
        loss.backward()
        if grads is not None:
            grads.update({n: p.grad.detach().clone() for n, p in self.model.named_parameters()})
        self.optimizer.step()
        return loss.detach()

    def reset(self, state: dict) -> None:
        """Load ``state`` (a state_dict) and start a fresh optimizer."""
        with torch.no_grad():
            self.model.load_state_dict(state)
        self.optimizer = self.new_optimizer()


# --------------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------------

def _global_rel(a: dict, b: dict) -> float:
    """max over all tensors of |a - b|, divided by max |b|."""
    num = max((a[k].double() - b[k].double()).abs().max().item() for k in b)
    den = max(b[k].double().abs().max().item() for k in b)
    return num / max(den, 1e-30)


def compare(run: dict, ref: dict, init: dict) -> dict:
    """How far a checked run is from a reference run, both from ``init``.

    ``grad_rel_diff``: first-step gradients, max|g - g_ref| / max|g_ref| over all parameters.
    ``param_rel_diff``: parameters after the check steps, max|p - p_ref| / max|p_ref|.
    ``update_rel_diff``: ||p - p_ref|| / ||p_ref - p_init|| (L2 over all parameters): the difference
    relative to how far training moved the weights, the strictest of the three.
    ``max_loss_abs_diff``: over the check steps' losses.
    """
    diff_sq = sum((run["params"][k].double() - ref["params"][k].double()).pow(2).sum().item() for k in ref["params"])
    upd_sq = sum((ref["params"][k].double() - init[k].double()).pow(2).sum().item() for k in ref["params"])
    return {
        "grad_rel_diff": _global_rel(run["grads"], ref["grads"]),
        "param_rel_diff": _global_rel(run["params"], ref["params"]),
        "update_rel_diff": (diff_sq / max(upd_sq, 1e-300)) ** 0.5,
        "max_loss_abs_diff": max(abs(a - b) for a, b in zip(run["losses"], ref["losses"])),
    }


def check_run(runner: Runner, init: dict, batches, seed: int = 7, double: bool = False) -> dict:
    runner.reset(init)
    torch.manual_seed(seed)
    grads: dict = {}
    losses = []
    t0 = time.perf_counter()
    first = None
    for i, (bx, by) in enumerate(batches):
        losses.append(runner.step(bx.double() if double else bx, by, grads if i == 0 else None).item())
        if i == 0:
            first = time.perf_counter() - t0
    params = {n: p.detach().clone() for n, p in runner.model.named_parameters()}
    return {"losses": losses, "grads": grads, "params": params, "first_step_s": first}


def check_line(c: dict) -> str:
    return (f"grad {c['grad_rel_diff']:.1e}  param {c['param_rel_diff']:.1e}  "
            f"update {c['update_rel_diff']:.1e}  loss {c['max_loss_abs_diff']:.1e}")


# --------------------------------------------------------------------------------------------------
# One setting
# --------------------------------------------------------------------------------------------------

def run_setting(res: int, batch: int, modes: list[Mode], args) -> dict:
    print(f"\n=== {res}x{res}, batch {batch} ===", flush=True)
    torch._dynamo.reset()  # each setting compiles from scratch (the on-disk cache may still hit)
    gen = torch.Generator().manual_seed(1234)
    batches = [(torch.randn(batch, 3, res, res, generator=gen),
                torch.randint(0, 1000, (batch,), generator=gen)) for _ in range(max(args.check_steps, 1))]
    x, y = batches[0]

    torch.manual_seed(0)
    ours_init = mobilenets.MobileNetV1().state_dict()
    torch.manual_seed(0)
    timm_init = build_model("timm").state_dict()

    results: dict[str, dict] = {}
    runners: dict[str, Runner] = {}

    def fail(name: str, e: BaseException, where: str) -> None:
        results[name]["error"] = f"{where}: {type(e).__name__}: {e}"
        results[name]["traceback"] = traceback.format_exc(limit=4)
        print(f"    {name}: FAILED ({where}): {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
              flush=True)
        runners.pop(name, None)

    for mode in modes:
        results[mode.name] = {"description": mode.describe(), "fp32": mode.fp32, "config": asdict(mode)}
        try:
            model = build_model(mode.model)
            model.load_state_dict(ours_init if mode.model == "ours" else timm_init)
            runners[mode.name] = Runner(mode, model, x.clone(), y.clone())
        except Exception as e:  # noqa: BLE001 - record and move on
            fail(mode.name, e, "build")

    # ---- Correctness ----
    # (1) fp32, the configuration timed below: every mode of ours from the same init on the same
    #     batches with the same seed (dropout; compiled dropout uses the eager generator through
    #     inductor's fallback_random), against eager NCHW fp32. The same steps in float64 give the
    #     fp32 noise floor: this network's gradients at initialisation are sums that nearly cancel
    #     (every BN removes the per-channel mean), so two correct fp32 implementations that sum in
    #     different orders differ by about a percent.
    # (2) float64 equivalence: the mode's transformation (channels_last, small_dw, ...) run in
    #     float64 on a small batch against eager float64: differences there are ~1e-12 unless the
    #     mode computes something else. Compiled and bf16 modes are not run in float64.
    check = None
    if args.check_steps > 0 and any(r.mode.model == "ours" for r in runners.values()):
        cb = batches[:args.check_steps]
        print(f"  correctness check ({args.check_steps} steps from the same init; relative diffs vs eager fp32; "
              f"float64 equivalence on batch {min(batch, args.fp64_batch)}) ...", flush=True)
        ref = check_run(Runner(Mode.parse("eager+no_small_dw"), mobilenets.MobileNetV1(), x, y), ours_init, cb)
        check = {"steps": args.check_steps, "reference": "eager NCHW fp32, plain convolutions", "reference_losses": ref["losses"]}
        init64 = {k: v.double() if v.is_floating_point() else v for k, v in ours_init.items()}
        if args.fp64_floor:
            f64 = check_run(Runner(Mode.parse("eager+no_small_dw"), mobilenets.MobileNetV1().double(), x.double(), y),
                            init64, cb, double=True)
            check["fp64_losses"] = f64["losses"]
            check["fp32_noise_floor"] = compare(ref, f64, init64)
            check["fp32_noise_floor"]["note"] = "eager fp32 vs the same steps in float64"
            print(f"    {'(eager fp32 vs float64)':<32} {check_line(check['fp32_noise_floor'])}", flush=True)
            del f64
        nb = min(batch, args.fp64_batch)
        small = [(bx[:nb].double(), by[:nb]) for bx, by in cb]
        ref64 = None
        for name in list(runners):
            runner = runners[name]
            if runner.mode.model != "ours":
                continue
            entry = results[name]
            try:
                run = check_run(runner, ours_init, cb)
            except Exception as e:  # noqa: BLE001
                fail(name, e, "check")
                continue
            entry["first_step_s"] = run["first_step_s"]
            c = entry["check"] = {"losses": run["losses"], "vs_eager_fp32": compare(run, ref, ours_init)}
            line = f"    {name:<32} {check_line(c['vs_eager_fp32'])}"
            m = runner.mode
            if args.fp64_equivalence and m.compile is None and not m.bf16 and name != "eager":
                try:
                    if ref64 is None:
                        ref64 = check_run(Runner(Mode.parse("eager+no_small_dw"), mobilenets.MobileNetV1().double(),
                                                 small[0][0], small[0][1]), init64, small, double=True)
                    r64 = check_run(Runner(m, mobilenets.MobileNetV1().double(), small[0][0], small[0][1]),
                                    init64, small, double=True)
                    eq = c["fp64_equivalence"] = compare(r64, ref64, init64)
                    eq["batch"] = nb
                    c["same_math"] = max(eq["grad_rel_diff"], eq["update_rel_diff"]) < 1e-6
                    line += f"   [float64: update {eq['update_rel_diff']:.0e} -> {'same' if c['same_math'] else 'DIFFERENT'}]"
                except Exception as e:  # noqa: BLE001
                    c["fp64_equivalence_error"] = f"{type(e).__name__}: {e}"
                    line += f"   [float64 check failed: {type(e).__name__}]"
            print(line, flush=True)
        del ref, ref64

    # ---- Warm-up (a compiled mode compiles in its first step, in the check or here) ----
    print(f"  warm-up ({args.warmup} steps per mode) ...", flush=True)
    for name in list(runners):
        runner, entry = runners[name], results[name]
        try:
            for i in range(args.warmup):
                t0 = time.perf_counter()
                runner.step()
                if i == 0 and "first_step_s" not in entry:
                    entry["first_step_s"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            fail(name, e, "warm-up")

    # ---- Timed rounds, interleaved; the order rotates every round ----
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    faults: dict[str, list[int]] = {n: [] for n in names}
    print(f"  timing {args.rounds} rounds x {len(names)} modes ...", flush=True)
    t_setting = time.perf_counter()
    for r in range(args.rounds):
        k = r % len(names) if names else 0
        order = names[k:] + names[:k]
        for name in order:
            if name not in runners:
                continue
            try:
                f0 = minor_faults()
                t0 = time.perf_counter()
                runners[name].step()
                times[name].append(time.perf_counter() - t0)
                faults[name].append(minor_faults() - f0)
            except Exception as e:  # noqa: BLE001
                fail(name, e, "timing")
        if args.verbose:
            print(f"    round {r + 1}: " + "  ".join(f"{n}={times[n][-1]:.3f}s" for n in order if n in runners),
                  flush=True)

    for name, ts in times.items():
        if not ts or "error" in results[name]:
            continue
        med = statistics.median(ts)
        e = results[name]
        e.update(step_times_s=ts, median_step_s=med, min_step_s=min(ts), images_per_s=batch / med,
                 images_per_s_best=batch / min(ts), minor_page_faults_per_step=statistics.median(faults[name]))
        if e["config"]["compile"] and "first_step_s" in e:
            e["compile_s"] = max(e["first_step_s"] - med, 0.0)  # first step minus a normal step
    ref_ips = results.get(REFERENCE, {}).get("images_per_s")
    ref_best = results.get(REFERENCE, {}).get("images_per_s_best")
    if ref_ips:
        for e in results.values():
            if "images_per_s" in e:
                e["ratio_vs_timm"] = e["images_per_s"] / ref_ips
                e["ratio_vs_timm_best"] = e["images_per_s_best"] / ref_best
    runners.clear()  # the models go before the next setting (not del: ``fail`` refers to it)
    gc.collect()
    return {"resolution": res, "batch": batch, "rounds": args.rounds, "warmup": args.warmup,
            "timing_wall_s": time.perf_counter() - t_setting, "correctness": check, "modes": results}


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------

def machine(threads: int) -> dict:
    """``machine_info`` with timm's version and, as the allocator is part of what is measured,
    the Python, glibc and platform versions."""
    return {**machine_info(threads, packages=("timm",)), "python": platform.python_version(),
            "glibc": "-".join(platform.libc_ver()), "platform": platform.platform()}


def print_table(report: dict) -> None:
    for s in report["settings"]:
        print(f"\n{s['resolution']}x{s['resolution']} batch {s['batch']}  (median of {s['rounds']} interleaved "
              f"rounds; malloc {report['malloc']['mode']})")
        rows, failed = [], []
        for name, e in s["modes"].items():
            if "error" in e:
                failed.append(f"  {name} FAILED: {e['error'].splitlines()[0][:90]}")
                continue
            if "images_per_s" not in e:
                continue
            c = e.get("check", {})
            rows.append({
                "mode": name, "img/s": f"{e['images_per_s']:.1f}",
                "x timm": f"{e['ratio_vs_timm']:.2f}" if "ratio_vs_timm" in e else "-",
                "best": f"{e['images_per_s_best']:.1f}",
                "best x timm":
                    f"{e['ratio_vs_timm_best']:.2f}" if "ratio_vs_timm_best" in e else "-",
                "step ms": f"{1000 * e['median_step_s']:.0f}",
                "faults": f"{e['minor_page_faults_per_step']:.0f}",
                "compile s": f"{e['compile_s']:.1f}" if "compile_s" in e else "-",
                "upd diff": f"{c['vs_eager_fp32']['update_rel_diff']:.1e}" if c else "-",
                "same math (fp64)": {True: "yes", False: "NO"}.get(c.get("same_math"), "-")
                + ("" if e["fp32"] else "  (bf16, not fp32)")})
        numeric = ("img/s", "x timm", "best", "best x timm", "step ms", "faults", "compile s",
                   "upd diff")
        text = render_table(rows, right=numeric, width=None)
        print("\n".join(["  " + line for line in text.splitlines()] + failed))
        c = s.get("correctness") or {}
        if "fp32_noise_floor" in c:
            nf = c["fp32_noise_floor"]
            print(f"  upd diff: ||p - p_eager|| / ||p_eager - p_init|| after {c['steps']} fp32 steps; eager fp32 vs "
                  f"float64 itself: {nf['update_rel_diff']:.1e} (grads {nf['grad_rel_diff']:.1e})")


def parse_settings(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        res, _, batch = item.strip().partition("x")
        if not res.isdigit() or not batch.isdigit() or int(res) < 32 or int(batch) < 2:
            raise argparse.ArgumentTypeError(f"a setting is RESxBATCH with RES >= 32, BATCH >= 2; got {item!r}")
        out.append((int(res), int(batch)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--settings", type=parse_settings, default=None,
                   help="comma-separated RESxBATCH list (default 224x32,32x256)")
    p.add_argument("--modes", default=None,
                   help=f"comma-separated modes (default {','.join(DEFAULT_MODES)}); 'extra' for "
                        f"{','.join(EXTRA_MODES)}; '{REFERENCE}' is always added")
    p.add_argument("--rounds", type=int, default=None, help="timed interleaved rounds (default 7)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per mode after the check (default 1; the check steps warm up too)")
    p.add_argument("--check-steps", type=int, default=None,
                   help="steps of the correctness check (default 3; 0 skips it)")
    p.add_argument("--no-fp64-floor", dest="fp64_floor", action="store_false",
                   help="skip the float64 run that gives the fp32 noise floor")
    p.add_argument("--fp64-batch", type=int, default=8,
                   help="batch of the float64 equivalence check (default 8)")
    p.add_argument("--no-fp64-equivalence", dest="fp64_equivalence", action="store_false",
                   help="skip the float64 equivalence check of each mode")
    p.add_argument("--malloc", choices=("default", "tuned"), default="default",
                   help="'tuned': glibc mallopt so freed activations are not unmapped (whole process)")
    p.add_argument("--fresh-compile-cache", action="store_true",
                   help="compile into an empty TORCHINDUCTOR_CACHE_DIR (cold compile times)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--quick", action="store_true",
                   help=f"~1 minute smoke run: 64x16,32x64, modes {','.join(QUICK_MODES)}, 2 rounds, 1 check step")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results (default benchmarks/results/train_throughput.json; with --quick "
                        "benchmarks/results/train_throughput_quick.json)")
    p.add_argument("--verbose", action="store_true", help="print every round's step times")
    args = p.parse_args(argv)

    q = args.quick
    args.settings = args.settings or parse_settings("64x16,32x64" if q else "224x32,32x256")
    args.rounds = args.rounds if args.rounds is not None else (2 if q else 7)
    args.warmup = args.warmup if args.warmup is not None else 1
    args.check_steps = args.check_steps if args.check_steps is not None else (1 if q else 3)
    args.output = args.output or ROOT / "benchmarks" / "results" / (
        "train_throughput_quick.json" if q else "train_throughput.json")
    if args.modes == "extra":
        names = EXTRA_MODES
    else:
        names = [n.strip() for n in args.modes.split(",") if n.strip()] if args.modes else (
            QUICK_MODES if q else DEFAULT_MODES)
    try:
        modes = [Mode.parse(n) for n in dict.fromkeys([REFERENCE] + names)]
    except ValueError as e:
        p.error(str(e))

    malloc = {"mode": args.malloc}
    if args.malloc == "tuned":
        malloc.update(tune_malloc())
    torch.set_num_threads(args.threads)
    if args.fresh_compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_cache_")
    import torch._inductor.config as inductor_config
    inductor_config.fallback_random = True  # compiled dropout draws the eager masks (for the check)

    argv_used = sys.argv[1:] if argv is None else list(argv)
    report = {
        "benchmark": "train_throughput",
        "command": "python benchmarks/train_throughput.py " + " ".join(argv_used),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(args.threads),
        "malloc": malloc,
        "compile_cache": "fresh (cold)" if args.fresh_compile_cache else "default TORCHINDUCTOR_CACHE_DIR (may be warm)",
        "step": "zero_grad; cross_entropy(model(x), y).backward(); RMSprop.step (synthetic data, train mode, fp32)",
        "optimizer": {"name": "RMSprop", **OPTIM},
        "reference": REFERENCE,
        "metric": "images/s = batch / median step time over interleaved rounds (warm-up excluded); "
                  "'best' uses the fastest round",
        "settings": [],
    }
    t_start = time.perf_counter()
    for res, batch in args.settings:
        report["settings"].append(run_setting(res, batch, modes, args))
        report["total_wall_s"] = time.perf_counter() - t_start
        write_json(args.output, report)  # partial results survive a later crash
    note_load_after(report["machine"])
    report["total_wall_s"] = time.perf_counter() - t_start
    write_json(args.output, report)
    print_table(report)
    print(f"\ntotal {report['total_wall_s']:.0f} s; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
