"""One call interface for every runtime a model is shipped to: float NCHW images in, float
logits out, whatever the file holds inside (int8 inputs and outputs, NHWC layout, a batch-1
program).

Runners (each an ``nn.Module``, so classification's ``evaluate`` runs an exported file unchanged):

    OnnxModule         ``.onnx``   ONNX Runtime (``onnx_export``)
    ExecuTorchRunner   ``.pte``    ExecuTorch with the XNNPACK delegate
    LiteRTRunner       ``.tflite`` LiteRT (XNNPACK delegate by default)
    OpenVINORunner     ``.xml``    OpenVINO's CPU plugin, fp32 or bf16

``load_runner(path)`` picks one by the file's suffix. The tool-chains are optional extras
(``pip install 'mobilenets[executorch]'``, ``[litert]``, ``[openvino]``); ``require`` imports one
or fails with a single line naming the extra to install.

The tool-chains log a great deal (TensorFlow's and absl's C++ logging, LiteRT-Torch's progress,
OpenVINO's tracer warnings, ExecuTorch's runtime): ``require`` keeps their loggers at errors
(``quiet_toolchains``, before they load), and ``toolchain_output`` drops what they print
regardless, so a failed export ends with our one line.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenets.deploy.onnx_export import ExportError, OnnxModule, check_input

#: The optional extras: the modules each provides, and what to install.
EXTRAS = {
    "export": ("onnxruntime", "ONNX Runtime (onnx, onnxruntime, onnxscript)"),
    "executorch": ("executorch", "ExecuTorch"),
    "litert": ("litert_torch", "LiteRT (litert-torch and ai-edge-litert)"),
    "openvino": ("openvino", "OpenVINO"),
}
#: The module each extra needs, where it is not the first one (``require(extra, module)``).
_RUNTIME_MODULES = {"export": "onnxruntime", "litert": "ai_edge_litert.interpreter",
                    "openvino": "openvino", "executorch": "executorch.runtime"}


#: Environment variables that keep the tool-chains' own logging to errors; read when their
#: libraries load, so set before (a value the user set is kept).
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's and LiteRT's C++ logging: errors only
    "TF_CPP_MAX_VLOG_LEVEL": "0",
    "GLOG_minloglevel": "2",  # glog (absl-based tool-chains): errors only
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # LiteRT-Torch's "[START] ... [ DONE]" lines
}
#: Python loggers of the tool-chains (and of torch parts only they use), kept to errors.
QUIET_LOGGERS = ("absl", "tensorflow", "litert_torch", "openvino", "executorch", "torchao",
                 "torch.utils._pytree", "torch._export", "torch.export")
#: Lines native code prints on stderr whatever the settings: TFLite's "INFO: Created TensorFlow
#: Lite XNNPACK delegate", absl's and glog's "I0101 00:00:00.0 ...", ExecuTorch's
#: "[file.cpp:71] ...".
NATIVE_LOG_LINE = re.compile(r"(INFO|WARNING): |[IW]\d{4} \d\d:\d\d:\d\d|\[[\w.]+\.(cpp|cc|h):\d+\] ")


def quiet_toolchains() -> None:
    """Keep the tool-chains' logging to errors (``QUIET_ENVIRONMENT``, ``QUIET_LOGGERS``): called
    by ``require`` before any of them is imported."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def toolchain_output():
    """Run tool-chain code (converters, runtimes being loaded) without its chatter: Python
    warnings are ignored, and of what native code writes to the stderr file descriptor, the lines
    of ``NATIVE_LOG_LINE`` are dropped and the rest written when the block ends."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        saved = None
    with tempfile.TemporaryFile() as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if saved is not None:
            os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            if saved is not None:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                kept = [line for line in caught.read().decode(errors="replace").splitlines(True)
                        if not NATIVE_LOG_LINE.match(line)]
                if kept:
                    sys.stderr.write("".join(kept))
                    sys.stderr.flush()


class MissingExtraError(ValueError):
    """A runtime's tool-chain is not installed; the message names the pip extra to install."""


def require(extra: str, module: str | None = None):
    """Import ``module`` (default: the extra's main module) of the optional ``extra``.

    Raises:
        MissingExtraError: one line, e.g. ``ExecuTorch export needs the executorch extra: pip
            install 'mobilenets[executorch]'``.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    name = module or EXTRAS[extra][0]
    quiet_toolchains()
    if extra == "openvino":
        block_openvino_telemetry()
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingExtraError(
            f"{EXTRAS[extra][1]} is not installed ({e.name or name} missing): "
            f"pip install 'mobilenets[{extra}]'") from None


def block_openvino_telemetry() -> None:
    """Keep OpenVINO from sending usage telemetry. Unless a user has opted out, importing
    ``openvino`` and every ``convert_model`` write a client id under ``~/intel`` and fork a
    process per event to post it; offline, each waits for its time-out, which stalls every later
    export in the same process (``docs/deployment.md``, "pick in 5 minutes"). OpenVINO's
    modules fall back to their own no-op stub when ``openvino_telemetry`` cannot be imported."""
    # None in sys.modules makes ``import openvino_telemetry`` fail: OpenVINO then uses its stub.
    if sys.modules.setdefault("openvino_telemetry", None) is None:
        return
    # Imported before us (by the user's code): point the converter's modules at the stub.
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils, utils
    except ImportError:  # no OpenVINO: ``require`` says so
        return
    convert_impl.tm = telemetry_utils.tm = utils.tm = telemetry_stub


def available(extra: str) -> bool:
    """Whether the optional ``extra``'s runtime can be imported."""
    try:
        require(extra, _RUNTIME_MODULES[extra])
        return True
    except MissingExtraError:
        return False


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().float().contiguous().numpy()


# --------------------------------------------------------------------------- ExecuTorch

_executorch_pool: int | None = None


def executorch_threads(threads: int | None = None) -> int:
    """Size ExecuTorch's thread pool (XNNPACK's), once per process, and return its size.

    The pool is process-wide and the only knob, ``_unsafe_reset_threadpool``, is unsafe as named
    (ExecuTorch 1.5.1): a method loaded before a reset crashes on its next call, and after a
    second reset even freshly loaded ones crash about one run in three. So the first call sizes
    the pool (``threads``, default ``torch.get_num_threads()``) and any later call asking for
    another size is an error: time other thread counts in another process (every ``mobilenets``
    command is one).

    Raises:
        ValueError: if the pool already has another size than ``threads``.
    """
    global _executorch_pool
    if _executorch_pool is None:
        portable = require("executorch", "executorch.extension.pybindings.portable_lib")
        n = threads or torch.get_num_threads()
        portable._unsafe_reset_threadpool(n)
        _executorch_pool = n
    elif threads is not None and threads != _executorch_pool:
        raise ValueError(f"ExecuTorch's thread pool is process-wide and already has "
                         f"{_executorch_pool} thread(s); {threads} needs another process")
    return _executorch_pool


class ExecuTorchRunner(nn.Module):
    """A ``.pte`` program's ``forward`` through ExecuTorch's runtime.

    Args:
        path: The ``.pte`` file.
        threads: XNNPACK threads; see ``executorch_threads`` (default: the pool as it is, or
            torch's thread count if it is not sized yet).

    The program takes the batch it was exported with (1); larger batches run image by image.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ExportError: if it is not a program ExecuTorch can load.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        runtime = require("executorch", "executorch.runtime")
        self.path = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"ExecuTorch program not found: {path}")
        self.threads = executorch_threads(threads)
        try:
            # Keep the Program: the Method points into it (dropping it crashes execute).
            self.program = runtime.Runtime.get().load_program(str(path))
            self.method = self.program.load_method("forward")
        except Exception as e:  # RuntimeError with an ExecuTorch error code
            raise ExportError(f"{path} is not a usable ExecuTorch program: {e}") from None
        meta = self.method.metadata.input_tensor_meta(0)
        self.input_shape = list(meta.sizes())
        self.input_layout = "NCHW"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, ["N", *self.input_shape[1:]], self.path)
        x = x.detach().float().contiguous()
        b = self.input_shape[0]
        outs = [self.method.execute([x[i:i + b]])[0] for i in range(0, len(x), b)]
        return torch.cat([torch.as_tensor(o).float() for o in outs])


# --------------------------------------------------------------------------- LiteRT

class LiteRTRunner(nn.Module):
    """A ``.tflite`` model through LiteRT's interpreter (XNNPACK delegate, as LiteRT applies it
    by default on CPUs).

    Takes float NCHW images and returns float logits whatever the file holds: an NHWC file gets
    its images transposed, an int8 (or uint8) input is quantized with the input tensor's scale and
    zero point, an int8 output dequantized with the output's. Which of these a file needs depends
    on the layers left float at quantization (``io`` describes it), so it is read from the file,
    never assumed. Any batch: the input is resized when the batch changes.

    Args:
        path: The ``.tflite`` file.
        threads: Interpreter threads. Default: torch's thread count.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        interpreter = require("litert", "ai_edge_litert.interpreter")
        self.path = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"LiteRT model not found: {path}")
        self.threads = threads or torch.get_num_threads()
        try:
            self.it = interpreter.Interpreter(model_path=str(path), num_threads=self.threads)
            self.it.allocate_tensors()
        except Exception as e:  # ValueError/RuntimeError from the flatbuffer reader
            raise ExportError(f"{path} is not a usable LiteRT model: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._details()
        shape = [int(s) for s in self.inp["shape"]]
        # Our inputs are square: NCHW ends in (R, R); NHWC ends in (R, C).
        self.input_layout = "NCHW" if shape[-1] == shape[-2] else "NHWC"
        self.input_shape = (shape if self.input_layout == "NCHW"
                            else [shape[0], shape[3], shape[1], shape[2]])

    def _details(self) -> None:
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]

    @property
    def io(self) -> dict:
        """Input and output dtype, shape and (scale, zero point) of the file, and its layout."""
        def tensor(d):
            scale, zero = d["quantization"]
            return {"dtype": np.dtype(d["dtype"]).name, "shape": [int(s) for s in d["shape"]],
                    **({"scale": float(scale), "zero_point": int(zero)} if scale else {})}
        return {"input": tensor(self.inp), "output": tensor(self.out), "layout": self.input_layout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, ["N", *self.input_shape[1:]], self.path)
        a = _to_numpy(x)
        if self.input_layout == "NHWC":
            a = np.ascontiguousarray(a.transpose(0, 2, 3, 1))
        if a.shape[0] != int(self.inp["shape"][0]):
            self.it.resize_tensor_input(self.inp["index"], list(a.shape), strict=False)
            self.it.allocate_tensors()
            self._details()
        if self.inp["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(self.inp["dtype"])
            scale, zero = self.inp["quantization"]
            a = np.clip(np.round(a / scale) + zero, info.min, info.max).astype(self.inp["dtype"])
        self.it.set_tensor(self.inp["index"], a)
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])
        if self.out["dtype"] in (np.int8, np.uint8):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return torch.from_numpy(np.array(y, dtype=np.float32))


def litert_delegation(path: str | os.PathLike) -> dict:
    """Which ops of a ``.tflite`` file run inside the XNNPACK delegate, and which outside.

    After delegation the interpreter still lists the ops the delegate replaced; the ones that
    run are found by walking back from the outputs, where a DELEGATE node (listed last) is the
    producer of every tensor it took over.

    Returns:
        ``{"delegates": number of DELEGATE nodes run, "delegated_ops": ops in the file that the
        delegate runs, "outside": {op name: count} of ops run outside it}``.
    """
    interpreter = require("litert", "ai_edge_litert.interpreter")
    it = interpreter.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    ops = it._get_ops_details()
    producer = {}
    for op in ops:  # later nodes (the delegate) override the replaced ones
        for t in op["outputs"]:
            producer[int(t)] = op
    executed, seen = Counter(), set()
    stack = [int(d["index"]) for d in it.get_output_details()]
    while stack:
        op = producer.get(stack.pop())
        if op is None or op["index"] in seen:
            continue
        seen.add(op["index"])
        executed[op["op_name"]] += 1
        stack.extend(int(i) for i in op["inputs"] if i >= 0)
    listed = sum(1 for o in ops if o["op_name"] != "DELEGATE")
    outside = {k: v for k, v in executed.items() if k != "DELEGATE"}
    return {"delegates": executed.get("DELEGATE", 0),
            "delegated_ops": listed - sum(outside.values()), "outside": outside}


# --------------------------------------------------------------------------- OpenVINO

#: Our precision names and OpenVINO's ``INFERENCE_PRECISION_HINT`` values.
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVINORunner(nn.Module):
    """An OpenVINO IR (``.xml`` + ``.bin``) compiled for the CPU plugin at one precision.

    On CPUs with AVX512_BF16 or AMX the plugin computes in bf16 unless told otherwise; this runner
    always says: ``precision`` if given, else the precision stored in the file by
    ``export_openvino`` (``runtime_options``), else fp32.

    Args:
        path: The ``.xml`` file (its ``.bin`` beside it).
        threads: Inference threads. Default: torch's thread count.
        precision: ``"fp32"`` or ``"bf16"``. Default: the file's, else fp32.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 precision: str | None = None):
        super().__init__()
        ov = require("openvino")
        self.path = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {path}")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise ExportError(f"{path} is not a usable OpenVINO model: "
                              f"{str(e).splitlines()[0]}") from None
        key = ["runtime_options", "INFERENCE_PRECISION_HINT"]
        stored = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "f32"
        if precision is None:
            precision = {v: k for k, v in OPENVINO_PRECISIONS.items()}.get(stored, "fp32")
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(OPENVINO_PRECISIONS)}, "
                             f"got {precision!r}")
        self.precision = precision
        self.threads = threads or torch.get_num_threads()
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1})
        self.request = self.compiled.create_infer_request()
        self.input_shape = [d.get_length() if d.is_static else "N"
                            for d in self.compiled.input(0).get_partial_shape()]
        self.input_layout = "NCHW"

    def runtime_precisions(self) -> dict[str, int]:
        """What the compiled model's convolutions and matrix products really run in:
        ``{"Convolution:bf16": 27, ...}``."""
        counts = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str)
            if kind in ("Convolution", "FullyConnected", "MatMul"):
                counts[f"{kind}:{info['runtimePrecision'].astype(str)}"] += 1
        return dict(counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_shape, self.path)
        out = self.request.infer({0: _to_numpy(x)})[self.compiled.output(0)]
        return torch.from_numpy(np.array(out, dtype=np.float32))


# --------------------------------------------------------------------------- by suffix

def file_runtimes() -> dict[str, str]:
    """File suffix -> the runtime that reads it (``{".onnx": "onnxruntime", ".pte": ...}``), from
    the backend registry: each backend with a file names its suffix and runtime once."""
    # Imported here: backends imports this module (its runners), so this one cannot at load time.
    from mobilenets.deploy.backends import BACKENDS

    return {b.suffix: b.runtime for b in BACKENDS.values() if b.suffix}


def load_runner(path: str | os.PathLike, threads: int | None = None,
                precision: str | None = None, runtime: str | None = None) -> nn.Module:
    """The runner of an exported file, chosen by its suffix (or ``runtime``).

    Args:
        path: ``.onnx``, ``.pte``, ``.tflite`` or ``.xml`` (OpenVINO IR).
        threads: Threads of the runtime. Default: torch's thread count (ExecuTorch: its pool).
        precision: OpenVINO only: ``"fp32"`` or ``"bf16"`` (default: the file's, else fp32).
        runtime: ``"onnxruntime"``, ``"executorch"``, ``"litert"`` or ``"openvino"``, for a path
            without the usual suffix.

    Returns:
        An ``nn.Module``: float NCHW images in, float logits out, any batch.

    Raises:
        ValueError: for an unknown suffix, naming the known ones (``file_runtimes``).
    """
    suffixes = file_runtimes()
    runtime = runtime or suffixes.get(Path(path).suffix.lower())
    if runtime == "onnxruntime":
        return OnnxModule(path, threads, spinning=False)
    runners = {"executorch": lambda: ExecuTorchRunner(path, threads),
               "litert": lambda: LiteRTRunner(path, threads),
               "openvino": lambda: OpenVINORunner(path, threads, precision)}
    if runtime in runners:
        with toolchain_output():  # loading a runtime logs its set-up on first use
            return runners[runtime]()
    raise ValueError(f"{path}: unknown model file type; known: "
                     + ", ".join(f"{s} ({r})" for s, r in suffixes.items()))
