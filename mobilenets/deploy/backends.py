"""The backends: every runtime x precision a model is shipped to or timed on, one ``Backend``
record each, in one registry (``BACKENDS``), as the models have ``registry.MODELS``.

A record says what the backend is (runtime, precision, the pip extra its tool-chain comes from,
the suffix of its file, the architecture it is a peer of) and does its two jobs:
``export(model, path, calibration)`` writes its file, verified against torch, and
``load(path, model)`` returns a runner (float NCHW images in, float logits out). ``bench``,
``pick``, ``export --format``, ``--float-layers auto`` (``tune``), ``--backends all``, the
benchmarks and the generated docs read this registry, so a new runtime is one record here (its
tool-chain code lives with the others: ``onnx_export``, ``mobile``, ``runtimes``) and one test.

Names: ``onnx`` and ``int8`` are ONNX Runtime's fp32 and int8; the phone runtimes are named by
runtime, with the precision appended where it is not fp32 (``executorch-int8``); ``eager``,
``torch`` and ``compile`` run in torch and write no file; the peers (``timm``, ``timm-onnx``,
``torchvision``) are the reference libraries' own models, timed beside ours.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilenets.deploy.mobile import bf16_supported, export_mobile
from mobilenets.deploy.onnx_export import (ExportReport, OnnxModule, export_onnx, fold_batchnorm,
                                           model_arch, quantize_int8)
from mobilenets.deploy.peers import peer_model
from mobilenets.deploy.runtimes import available, load_runner

#: The export options every int8 backend takes (``export``'s ``**options``).
INT8_OPTIONS = ("float_layers", "float_classifier", "min_top1_agreement", "check_inputs")


@dataclass(frozen=True)
class Backend:
    """One runtime at one precision.

    ``export(model, path, calibration, **options)`` writes its file, verified against torch;
    ``load(path, model)`` returns its runner; ``supported()`` says whether this machine runs it.

    Attributes:
        name: Registry name, e.g. ``onnx``, ``int8``, ``litert-int8``, ``openvino-bf16``.
        runtime: ``"torch"``, ``"onnxruntime"``, ``"executorch"``, ``"litert"`` or
            ``"openvino"`` (``runtimes.load_runner``'s names).
        description: One line for help texts and tables.
        precision: What it computes in: ``"fp32"``, ``"int8"`` or ``"bf16"``.
        extra: The pip extra its tool-chain comes from (``pip install 'mobilenets[EXTRA]'``);
            None: torch alone.
        suffix: The suffix of the file ``export`` writes; None: it runs in torch, no file.
        peer_of: Peers only: the architecture (``registry.ARCHS`` key) the peer library has.
        in_all: Whether ``--backends all`` takes it (where ``supported``).
        default: Whether ``bench`` times it unless told which (a peer: for its architecture).
        channels_last: Its runner takes channels_last input (``bench.prepared_input``).
        options: The keyword options its ``export`` takes (``export --format``'s flags).
        requires: What else this machine must have, as a check (bf16 arithmetic); None: nothing.
        separate: The element-wise operations its runtime runs as passes of their own instead of
            fusing them into the convolution (``cost.latency.SEPARABLE``: ``"Norm"``,
            ``"Activation"``): what the latency model prices as layers.
        fused: The data operations its runtime fuses away (``cost.latency.FUSIBLE``: ``"Add"``
            a residual addition into the convolution before it, ``"Activation"`` an activation
            into the addition or concatenation before it), as its per-operator profile of
            ShuffleNet shows (``benchmarks/results/latency_model_fusion.md``); () where not
            profiled: the latency model prices those operations.
        write: ``write(backend, model, path, calibration, resolution, **options)`` -> an
            ``ExportReport``: writes the verified file; None for the torch backends.
        run: ``run(backend, path, model, threads, ort_spinning)`` -> the runner.
    """

    name: str
    runtime: str
    description: str
    precision: str = "fp32"
    extra: str | None = None
    suffix: str | None = None
    peer_of: str | None = None
    in_all: bool = True
    default: bool = False
    channels_last: bool = False
    options: tuple[str, ...] = ()
    requires: Callable[[], bool] | None = None
    separate: tuple[str, ...] = ()
    fused: tuple[str, ...] = ()
    write: Callable[..., ExportReport] | None = None
    run: Callable[..., Callable] | None = None

    def supported(self) -> bool:
        """Whether it runs on this machine: its extra installed, and what it ``requires``."""
        return ((self.extra is None or available(self.extra))
                and (self.requires is None or self.requires()))

    def check_arch(self, arch: str) -> None:
        """``ValueError`` if this is a peer that does not exist for ``arch``, naming the one that
        does (timm has MobileNet V1, torchvision MobileNetV2)."""
        if self.peer_of and self.peer_of != arch:
            peer = eager_peer(arch)
            raise ValueError(f"the {self.name!r} peer exists for {self.peer_of} only, not {arch}; "
                             + (f"compare {arch} with {peer!r}" if peer else
                                f"{arch} has no peer library"))

    def export(self, model: nn.Module, path: str | os.PathLike,
               calibration: list[torch.Tensor] | None = None, *, resolution: int | None = None,
               **options) -> ExportReport | None:
        """Write ``model``'s file for this backend to ``path``, verified against torch.

        Args:
            model: The float model (its ``config`` gives the input size; it is not changed).
            path: The file to write (ending in ``suffix``); written only if the check passes.
            calibration: int8: real preprocessed batches (N, C, H, W) of the user's data.
            resolution: Input size (square). Default: the model's.
            **options: Any of ``options`` (e.g. ``float_layers=2``, ``tolerance=1e-4``,
                ``min_top1_agreement=0.9``), passed to the exporter.

        Returns:
            The exporter's ``ExportReport``; None, writing nothing, for the torch backends.

        Raises:
            ValueError: for an option it does not take, int8 without ``calibration``, a peer of
                another architecture; ``ExportError`` if the file disagrees with torch.
        """
        if self.write is None:
            return None
        self.check_arch(model_arch(model))
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"the {self.name} export takes no {', '.join(unknown)} (it takes: "
                             f"{', '.join(self.options) or 'none'})")
        if self.precision == "int8" and not calibration:
            raise ValueError(f"{self.name} needs calibration batches: a few hundred real images "
                             "of your data")
        return self.write(self, model, Path(path), calibration, resolution, **options)

    def accepted(self, options: dict) -> dict:
        """The entries of ``options`` its ``export`` takes (the others dropped)."""
        return {k: v for k, v in options.items() if k in self.options}

    def load(self, path: str | os.PathLike | None = None, model: nn.Module | None = None, *,
             threads: int | None = None, ort_spinning: bool = False) -> Callable:
        """The runner: a callable from float NCHW images to float logits, without autograd.

        Args:
            path: The file ``export`` wrote (backends with a ``suffix``).
            model: The float model (the torch backends and the eager peers).
            threads: Threads of the runtime. Default: the runtime's (torch's thread count;
                ExecuTorch: its process-wide pool as it is, ``runtimes.executorch_threads``).
            ort_spinning: ONNX Runtime only: its idle threads spin between calls
                (``onnx_export.ort_session``). Default False.

        Raises:
            ValueError: if the ``path`` or ``model`` it needs is missing.
        """
        if self.suffix and path is None:
            raise ValueError(f"{self.name} runs a file: give the path its export wrote")
        if not self.suffix and model is None:
            raise ValueError(f"{self.name} runs in torch: give the model")
        if model is not None:
            self.check_arch(model_arch(model))
        return self.run(self, path, model, threads, ort_spinning)


def no_grad(module: Callable) -> Callable:
    """``module`` called under ``torch.inference_mode``."""
    def run(x):
        with torch.inference_mode():
            return module(x)
    return run


def frozen_compile(module: nn.Module) -> Callable:
    """``torch.compile`` with Inductor's freezing, for inference: the weights become constants,
    packed once for oneDNN's convolutions instead of reordered on every call
    (``benchmarks/results/phones_latency_1t.md`` has it beside ``torch``). Freezing is a global
    Inductor setting that Dynamo reads when it traces (``torch.compile(options=...)`` comes too
    late), so it is switched on around the calls that compile: the first with each input
    layout, not for the process, and not around every call (entering the patch is not free)."""
    import torch._inductor.config as inductor_config

    compiled, traced = torch.compile(module, dynamic=False), set()

    def run(x):
        layout = (x.shape, x.stride(), x.dtype)  # what makes Dynamo compile again
        with torch.no_grad():
            if layout in traced:
                return compiled(x)
            with inductor_config.patch(freezing=True):
                out = compiled(x)
            traced.add(layout)
            return out
    return run


# --------------------------------------------------------------------------- writers and runners
# ``write(backend, model, path, calibration, resolution, **options)`` and
# ``run(backend, path, model, threads, ort_spinning)``, shared by the records below.

def _write_onnx(b, model, path, calibration, resolution, **options) -> ExportReport:
    return export_onnx(peer_model(model) if b.peer_of else model, path, resolution, **options)


def _write_int8(b, model, path, calibration, resolution, **options) -> ExportReport:
    return quantize_int8(model, path, calibration, resolution, **options)


def _write_mobile(b, model, path, calibration, resolution, **options) -> ExportReport:
    return export_mobile(model, path, b.name, resolution=resolution, calibration=calibration,
                         **options)


def _run_eager(b, path, model, threads, ort_spinning) -> Callable:
    return no_grad((peer_model(model) if b.peer_of else model).eval())


def _run_folded(b, path, model, threads, ort_spinning) -> Callable:
    return no_grad(fold_batchnorm(model).to(memory_format=torch.channels_last))


def _run_compiled(b, path, model, threads, ort_spinning) -> Callable:
    return frozen_compile(fold_batchnorm(model).to(memory_format=torch.channels_last))


def _run_ort(b, path, model, threads, ort_spinning) -> Callable:
    return OnnxModule(path, threads, spinning=ort_spinning)


def _run_file(b, path, model, threads, ort_spinning) -> Callable:
    return no_grad(load_runner(path, threads=threads, runtime=b.runtime))


_ONNX = dict(runtime="onnxruntime", extra="export", suffix=".onnx", run=_run_ort)
_PHONE = dict(write=_write_mobile, run=_run_file)

#: Every backend, by name, in the order help texts and tables list them.
#: Torch eager runs each batch norm and activation as a kernel of its own.
_EAGER = ("Norm", "Activation")

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("eager", "torch", "torch eager, NCHW, BN separate (our model as built)",
            default=True, separate=_EAGER, run=_run_eager),
    Backend("torch", "torch", "torch, BN folded, channels_last, inference_mode",
            default=True, channels_last=True, separate=("Activation",), run=_run_folded),
    Backend("compile", "torch", "torch, BN folded, channels_last, torch.compile with freezing "
            "(compiles on first call)", in_all=False, channels_last=True, run=_run_compiled),
    Backend("onnx", description="ONNX Runtime fp32 on our export", default=True,
            options=("tolerance", "fold_bn", "extra"), fused=("Add",), write=_write_onnx,
            **_ONNX),
    Backend("int8", description="ONNX Runtime int8 (static, per-channel) on our export",
            precision="int8", default=True, options=(*INT8_OPTIONS, "per_channel", "extra"),
            fused=("Activation",), write=_write_int8, **_ONNX),
    Backend("executorch", "executorch", "ExecuTorch fp32, XNNPACK delegate", extra="executorch",
            suffix=".pte", options=("tolerance", "allow_portable"), **_PHONE),
    Backend("executorch-int8", "executorch", "ExecuTorch int8 (PT2E static, per-channel), "
            "XNNPACK delegate", "int8", "executorch", ".pte",
            options=(*INT8_OPTIONS, "allow_portable"), **_PHONE),
    Backend("litert", "litert", "LiteRT fp32, XNNPACK delegate", extra="litert",
            suffix=".tflite", options=("tolerance", "allow_portable", "nhwc"), **_PHONE),
    Backend("litert-int8", "litert", "LiteRT int8 (PT2E static, per-channel), XNNPACK delegate",
            "int8", "litert", ".tflite", options=(*INT8_OPTIONS, "allow_portable", "nhwc"),
            **_PHONE),
    Backend("openvino", "openvino", "OpenVINO fp32, CPU plugin", extra="openvino", suffix=".xml",
            options=("tolerance",), fused=("Add",), **_PHONE),
    Backend("openvino-bf16", "openvino", "OpenVINO bf16, CPU plugin (AVX512_BF16 or AMX CPUs)",
            "bf16", "openvino", ".xml", options=("min_top1_agreement", "check_inputs"),
            requires=bf16_supported, **_PHONE),
    Backend("openvino-int8", "openvino", "OpenVINO int8, CPU plugin, on our int8 ONNX (static, "
            "per-channel)", "int8", "openvino", ".xml", options=INT8_OPTIONS,
            fused=("Add", "Activation"), **_PHONE),
    Backend("timm", "torch", "peer: timm MobileNet V1, eager", peer_of="mobilenet_v1",
            in_all=False, default=True, separate=_EAGER, run=_run_eager),
    Backend("timm-onnx", description="peer: ONNX Runtime fp32 on timm's export",
            peer_of="mobilenet_v1", in_all=False, default=True, fused=("Add",),
            write=_write_onnx, **_ONNX),
    Backend("torchvision", "torch", "peer: torchvision MobileNetV2, eager",
            peer_of="mobilenet_v2", in_all=False, default=True, separate=_EAGER, run=_run_eager),
)}


def get_backend(name: str) -> Backend:
    """The record of backend ``name``; ``ValueError`` naming the known ones."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: all, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def installed_backends() -> tuple[str, ...]:
    """What ``--backends all`` means: every backend ``in_all`` that this machine ``supported``
    (not ``compile``, not the peers; ``openvino-bf16`` only on CPUs with bf16 arithmetic)."""
    return tuple(b.name for b in BACKENDS.values() if b.in_all and b.supported())


def default_backends(arch: str = "mobilenet_v1") -> tuple[str, ...]:
    """``bench``'s backends for ``arch`` (a key of ``registry.ARCHS``): ours (eager, torch,
    onnx, int8) and the peers of that architecture."""
    return tuple(b.name for b in BACKENDS.values()
                 if b.default and b.peer_of in (None, arch))


def eager_peer(arch: str) -> str | None:
    """The eager peer latencies of ``arch`` are compared with (``BenchRow.vs_peer``), if any."""
    return next((b.name for b in BACKENDS.values()
                 if b.peer_of == arch and b.runtime == "torch"), None)


def fp32_backend(name: str) -> str | None:
    """Our fp32 backend on the runtime of backend ``name`` (``int8`` -> ``onnx``,
    ``openvino-int8`` -> ``openvino``): what its speed-up is measured against."""
    runtime = get_backend(name).runtime
    return next((b.name for b in BACKENDS.values() if b.runtime == runtime
                 and b.precision == "fp32" and not b.peer_of), None)


def export_formats() -> tuple[str, ...]:
    """The backends ``mobilenets export --format`` writes: ours that have a file."""
    return tuple(b.name for b in BACKENDS.values() if b.suffix and not b.peer_of)


def check_backends(names) -> list[str]:
    """Validate backend names (a list or a comma-separated string; ``all``: every one
    installed, ``installed_backends``), in order, once each; ``ValueError`` names the bad one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = [b for n in names for b in (installed_backends() if n == "all" else [n])]
    if not names:
        raise ValueError("--backends must name at least one backend")
    for n in names:
        get_backend(n)
    return list(dict.fromkeys(names))
