"""Peak activation memory of any torch model: which tensors are live at each step of one forward
pass, the most at any step, and the most at each spatial resolution (MobileNetV2's Table 3).

One forward pass runs with hooks on every module and a ``TorchFunctionMode`` that sees every
torch operation, also those called as functions (the residual ``x + y``, ``torch.flatten``,
``F.pad``). Each operation's input and output tensors are identified by their storage, so views
and in-place operations (``ReLU(inplace=True)``) share one buffer. A *step* is one call of a leaf
module (a module without children), one call of a *fused* module (its inner tensors are
disposable: never counted, as in MobileNetV2's memory-efficient inference, section 5), or one
operation called outside leaf modules. Only activations count: tensors computed from the input,
not parameters, buffers or constants derived from them.

At each step the live tensors are its inputs, its outputs and every tensor produced earlier and
still needed later (a residual shortcut), the definition of MobileNetV2's section 5.1: "the
total amount of memory ... is the maximum total size of combined inputs and outputs across all
operations" plus what must be kept for later operations. Sizes are elements times an assumed
activation size (``dtype_bytes``, 2 for the 16-bit floats of Table 3), whatever dtype the model
runs in. A leaf step's own temporaries (a module computing several operations) are not counted.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from mobilenets.tables import TABLE_WIDTH, render_table, wrap_text

#: 1 KB = 1000 bytes, the unit Table 3 prints ("Kb"): its 800K for MobileNetV1 is 56x56x128 x 2
#: bytes = 802,816 bytes (784 KiB would print as 784).
KB = 1000


@dataclass
class MemoryStep:
    """One step of the forward pass.

    Attributes:
        name: The module's qualified name, or ``"{parent}.{operation}"`` for an operation called
            outside leaf modules (``"features.3.add"`` for a residual addition).
        kind: The module's class name or the operation's name.
        resolution: (H, W) of the step's largest 4-D input; (1, 1) for vectors (after pooling).
        input_bytes: Its inputs produced by earlier steps.
        output_bytes: Its outputs (including those written in place into an input).
        live_bytes: Every tensor live during the step: inputs, outputs and tensors kept for later
            steps, each counted once.
        live_tensors: How many tensors that is.
        output_shape: (H, W, C) of its largest output.
    """

    name: str
    kind: str
    resolution: tuple[int, int]
    input_bytes: int
    output_bytes: int
    live_bytes: int
    live_tensors: int
    output_shape: tuple[int, int, int]


@dataclass
class MemoryTrace:
    """The activation memory of a model at one input size.

    Attributes:
        model: A name for the model.
        input_size: (C, H, W) of one image.
        dtype_bytes: Bytes per activation element assumed.
        batch_size: Images per batch traced.
        fused: Class names of the modules traced as single steps.
        steps: The steps in execution order.
        tensors: Every materialized tensor (the input and each step's outputs) as
            ``((H, W, C), bytes)``.
    """

    model: str
    input_size: tuple[int, int, int]
    dtype_bytes: int
    batch_size: int
    fused: list[str] = field(default_factory=list)
    steps: list[MemoryStep] = field(default_factory=list)
    tensors: list[tuple[tuple[int, int, int], int]] = field(default_factory=list)

    @property
    def peak(self) -> MemoryStep:
        """The first step with the most live memory."""
        return max(self.steps, key=lambda s: s.live_bytes)

    @property
    def peak_bytes(self) -> int:
        """The most memory live at any step: what the forward pass needs for activations."""
        return self.peak.live_bytes

    def by_resolution(self) -> list[dict]:
        """The maximum per spatial resolution, largest resolution first.

        Returns:
            One dict per resolution: ``resolution`` (H, W); ``peak_bytes`` and ``peak_step``, the
            most live memory of the steps whose input has that resolution (0 and "" if none);
            ``largest_tensor_bytes`` and ``largest_tensor_channels``, the largest single tensor of
            that resolution that is materialized (0 if none): the measure Table 3 prints.
        """
        rows: dict[tuple[int, int], dict] = {}

        def row(res):
            return rows.setdefault(tuple(res), {
                "resolution": tuple(res), "peak_bytes": 0, "peak_step": "",
                "largest_tensor_bytes": 0, "largest_tensor_channels": 0})

        for s in self.steps:
            r = row(s.resolution)
            if s.live_bytes > r["peak_bytes"]:
                r["peak_bytes"], r["peak_step"] = s.live_bytes, s.name
        for (h, w, c), nbytes in self.tensors:
            r = row((h, w))
            if nbytes > r["largest_tensor_bytes"]:
                r["largest_tensor_bytes"], r["largest_tensor_channels"] = nbytes, c
        return sorted(rows.values(), key=lambda r: -r["resolution"][0] * r["resolution"][1])

    def below_stem(self) -> dict | None:
        """The maxima over the resolutions below the stem's output (below 112x112 at 224x224):
        MobileNetV2's Table 3 figure, which leaves the first layers out (its "O(1)" 112x112 row:
        the paper's section 5 first-layer trick).

        Returns:
            ``{"resolution": (H/2, W/2), "peak_bytes", "peak_step", "largest_tensor_bytes",
            "largest_tensor_shape": (h, w, c)}``, or None when no step runs below that size.
        """
        _, h, w = self.input_size
        below = [r for r in self.by_resolution()
                 if r["resolution"][0] * r["resolution"][1] < (h // 2) * (w // 2)]
        if not below:
            return None
        peak = max(below, key=lambda r: r["peak_bytes"])
        big = max(below, key=lambda r: r["largest_tensor_bytes"])
        return {"resolution": (h // 2, w // 2), "peak_bytes": peak["peak_bytes"],
                "peak_step": peak["peak_step"], "largest_tensor_bytes": big["largest_tensor_bytes"],
                "largest_tensor_shape": (*big["resolution"], big["largest_tensor_channels"])}

    def to_dict(self) -> dict:
        """Steps, peak, per-resolution maxima and those below the stem, JSON-ready."""
        return {
            "model": self.model, "input_size": list(self.input_size),
            "dtype_bytes": self.dtype_bytes, "batch_size": self.batch_size, "fused": self.fused,
            "steps": [asdict(s) for s in self.steps],
            "peak": {"bytes": self.peak_bytes, "step": self.peak.name},
            "by_resolution": self.by_resolution(),
            "below_stem": self.below_stem(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One CSV row per step, then a PEAK row."""
        rows = [{"name": s.name, "kind": s.kind, "resolution": _res(s.resolution),
                 "output_size": " x ".join(map(str, s.output_shape)),
                 "input_bytes": s.input_bytes, "output_bytes": s.output_bytes,
                 "live_bytes": s.live_bytes, "live_tensors": s.live_tensors} for s in self.steps]
        rows.append({"name": "PEAK", "kind": self.peak.name,
                     "resolution": _res(self.peak.resolution), "output_size": "",
                     "input_bytes": "", "output_bytes": "", "live_bytes": self.peak_bytes,
                     "live_tensors": ""})
        return render_table(rows, "csv") + "\n"

    def format_table(self, width: int | None = TABLE_WIDTH) -> str:
        """Per-step live memory, then the maxima per resolution (Table 3's layout), overall and
        below the stem (Table 3's figure); lines at most ``width`` wide (None: unlimited)."""
        c, h, w = self.input_size
        how = (f"; {', '.join(self.fused)} as single steps (inner tensors not materialized)"
               if self.fused else "; every leaf module a step")
        head = (f"Activation memory: {self.model} at {h}x{w}x{c}, batch {self.batch_size}, "
                f"{self.dtype_bytes} bytes per activation{how}. KB = 1000 bytes.")
        out = wrap_text(head, width)
        kb = ("Inputs KB", "Outputs KB", "Live KB")
        out.append(render_table([{"Step": s.name, "Kind": s.kind, "Resolution": _res(s.resolution),
                                  **dict(zip(kb, map(_kb, (s.input_bytes, s.output_bytes,
                                                           s.live_bytes))))}
                                 for s in self.steps], right=kb, width=width))
        out.append("")
        out.append(render_table(
            [{"Resolution": _res(r["resolution"]), "Peak live KB": _kb(r["peak_bytes"]),
              "at step": r["peak_step"] or "-", "Largest tensor KB": _kb(r["largest_tensor_bytes"]),
              "channels": str(r["largest_tensor_channels"] or "-")}
             for r in self.by_resolution()], right=("Peak live KB", "Largest tensor KB",
                                                     "channels"), width=width))
        largest = max(self.tensors, key=lambda t: t[1])
        out.append("")
        out += wrap_text(f"Peak live memory: {_kb(self.peak_bytes)} KB at {self.peak.name} "
                         f"({_res(self.peak.resolution)}); largest tensor: {_kb(largest[1])} KB "
                         f"({' x '.join(map(str, largest[0]))})", width)
        below = self.below_stem()
        if below:
            out += wrap_text(f"Below {_res(below['resolution'])} (Table 3's max, the first layers "
                             f"left out): peak live {_kb(below['peak_bytes'])} KB at "
                             f"{below['peak_step']}; largest tensor "
                             f"{_kb(below['largest_tensor_bytes'])} KB "
                             f"({' x '.join(map(str, below['largest_tensor_shape']))})", width)
        return "\n".join(out)


def _res(res: tuple[int, int]) -> str:
    return f"{res[0]}x{res[1]}"


def _kb(nbytes: int) -> str:
    return f"{nbytes / KB:,.1f}"


def _hwc(shape: torch.Size) -> tuple[int, int, int]:
    if len(shape) == 4:
        return int(shape[2]), int(shape[3]), int(shape[1])
    n = max(int(shape[0]), 1) if len(shape) else 1
    return 1, 1, int(torch.Size(shape).numel()) // n


def inference_ops() -> tuple[type[nn.Module], ...]:
    """The modules an inference engine runs as single operations, to trace as single steps.

    Convolution + BatchNorm + activation (our ``ConvBNAct``, torchvision's
    ``Conv2dNormActivation``): BatchNorm folds into the convolution and the activation is applied
    in place, so only the block's input and output exist. MobileNetV2's bottleneck residual
    block (our ``InvertedResidual``, torchvision's): its section 5 computes the expanded tensor in
    slices, so it is never materialized whole and the block costs its input and output.
    ShuffleNet's unit (``ShuffleUnit``), as the MobileNetV2 slides' Table 3 treats it: the
    bottleneck is computed the same way and only the unit's input and output ("the
    non-bottleneck tensors", which the shortcuts keep) are materialized.
    """
    from torchvision.models.mobilenetv2 import InvertedResidual as TorchvisionInvertedResidual
    from torchvision.ops.misc import Conv2dNormActivation

    from mobilenets.models.layers import ConvBNAct, InvertedResidual, ShuffleUnit

    return (ConvBNAct, Conv2dNormActivation, InvertedResidual, TorchvisionInvertedResidual,
            ShuffleUnit)


@dataclass
class _Buffer:
    """One storage seen during the trace."""

    shape: torch.Size
    elements: int
    producer: int  # step index; -1 for the model input
    last_use: int


@dataclass
class _Step:
    key: tuple
    name: str
    kind: str
    inputs: set = field(default_factory=set)
    produced: set = field(default_factory=set)
    returned: set = field(default_factory=set)


class _Tracer(TorchFunctionMode):
    """Records, per step, which activation buffers each operation reads and writes."""

    def __init__(self, model: nn.Module, fuse: tuple[type[nn.Module], ...]):
        super().__init__()
        self.names = {m: n for n, m in model.named_modules()}
        self.fuse = fuse
        self.buffers: dict[int, _Buffer] = {}
        self.steps: list[_Step] = []
        self.stack: list[tuple[nn.Module, int]] = []  # active module calls
        self.calls = 0
        self.keep: list[torch.Tensor] = []  # holding every tensor keeps storages from being reused

    @staticmethod
    def _key(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def add(self, t: torch.Tensor, step: int) -> None:
        """A new activation buffer, produced by ``step`` (-1: the model input)."""
        self.keep.append(t)
        self.buffers[self._key(t)] = _Buffer(
            t.shape, t.untyped_storage().nbytes() // t.element_size(), step, step)

    # Module hooks: keep the stack of active calls; a step's returned tensors are its outputs.
    def pre_hook(self, module, args) -> None:
        self.calls += 1
        self.stack.append((module, self.calls))

    def post_hook(self, module, args, output) -> None:
        _, call = self.stack.pop()
        if self.steps and self.steps[-1].key == ("module", call):
            self.steps[-1].returned |= self._activations(output)

    def _activations(self, obj) -> set[int]:
        leaves, _ = tree_flatten(obj)
        return {self._key(t) for t in leaves if isinstance(t, torch.Tensor) and t.numel()
                and self._key(t) in self.buffers}

    def _step_for(self, func) -> _Step:
        fused = next((e for e in self.stack if isinstance(e[0], self.fuse)), None)
        inner = self.stack[-1] if self.stack else None
        target = fused or (inner if inner and not any(True for _ in inner[0].children()) else None)
        if target is not None:
            key = ("module", target[1])
            if not self.steps or self.steps[-1].key != key:
                module = target[0]
                name = self.names.get(module) or type(module).__name__  # the root is ""
                self.steps.append(_Step(key, name, type(module).__name__))
            return self.steps[-1]
        op = getattr(func, "__name__", str(func)).strip("_")
        parent = self.names.get(inner[0], "") if inner else ""
        self.steps.append(_Step(("op", len(self.steps)), f"{parent}.{op}" if parent else op, op))
        return self.steps[-1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.numel()]
        if not outs:  # shape queries and the like: no data flows
            return out
        reads = self._activations((args, kwargs))
        if not reads:  # weights, constants: not activations
            return out
        step = self._step_for(func)
        index = len(self.steps) - 1
        for k in reads:
            buf = self.buffers[k]
            if buf.producer != index:
                step.inputs.add(k)
            buf.last_use = max(buf.last_use, index)
        for t in outs:
            k = self._key(t)
            if k not in self.buffers:
                self.add(t, index)
                step.produced.add(k)
            else:  # a view or an in-place result
                self.keep.append(t)
        if step.key[0] == "op":
            step.returned |= {self._key(t) for t in outs}
        return out


def trace_memory(model: nn.Module, input_size=(3, 224, 224), dtype_bytes: int = 2,
                 batch_size: int = 1, fuse: tuple[type[nn.Module], ...] = (),
                 name: str | None = None, example_input=None) -> MemoryTrace:
    """Trace the activation memory of one forward pass.

    Args:
        model: Any ``nn.Module``. It is run once, in eval mode, under ``torch.no_grad``; its
            training mode is restored afterwards.
        input_size: (C, H, W) of one image, or (H, W) for 3 channels. Default (3, 224, 224).
        dtype_bytes: Bytes per activation element, >= 1. Default 2 (16-bit, as MobileNetV2's
            Table 3 assumes).
        batch_size: Images in the traced batch, >= 1. Default 1 (Table 3's).
        fuse: Module classes to trace as single steps, e.g. ``inference_ops()``: what an
            inference engine runs, with MobileNetV2's memory-efficient bottlenecks (Table 3's
            setting). Default none: every leaf module is a step, as eager PyTorch runs them.
        name: Label for the report. Default: the model's registry name or class name.
        example_input: Used instead of a zero tensor of ``(batch_size, *input_size)``.

    Returns:
        A ``MemoryTrace``.
    """
    if len(input_size) == 2:
        input_size = (3, *input_size)
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f"input_size must be (C, H, W) positive integers, got {input_size!r}")
    for arg, value in (("dtype_bytes", dtype_bytes), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
    name = name or getattr(getattr(model, "config", None), "name", None) or type(model).__name__
    if example_input is None:
        param = next(model.parameters(), None)
        kwargs = {"device": param.device} if param is not None else {}
        example_input = torch.zeros(batch_size, *input_size, **kwargs)
    tracer = _Tracer(model, tuple(fuse))
    for t in tree_flatten(example_input)[0]:
        if isinstance(t, torch.Tensor):
            tracer.add(t, -1)
    handles = [h for m in model.modules()
               for h in (m.register_forward_pre_hook(tracer.pre_hook),
                         m.register_forward_hook(tracer.post_hook))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tracer:
            output = model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return _summarise(tracer, output, name, tuple(input_size), dtype_bytes, batch_size, fuse)


def _summarise(tracer: _Tracer, output, name, input_size, dtype_bytes, batch_size, fuse
               ) -> MemoryTrace:
    bufs, steps = tracer.buffers, tracer.steps
    last = len(steps) - 1
    for k in tracer._activations(output):  # the result is held to the end
        bufs[k].last_use = last
    size = {k: b.elements * dtype_bytes for k, b in bufs.items()}
    # A step's outputs: what it returns and what later steps read; the rest is disposable.
    outputs = [{k for k in s.produced if bufs[k].last_use > i} | s.returned
               for i, s in enumerate(steps)]
    trace = MemoryTrace(name, input_size, dtype_bytes, batch_size,
                        sorted({f.__name__ for f in fuse}))
    trace.tensors = [(_hwc(b.shape), size[k]) for k, b in bufs.items()
                     if b.producer < 0 or any(k in o for o in outputs)]
    for i, s in enumerate(steps):
        live = {k for k, b in bufs.items() if b.producer < i <= b.last_use} | outputs[i]
        res = [bufs[k].shape for k in s.inputs if len(bufs[k].shape) == 4]
        resolution = max((tuple(sh[2:]) for sh in res), key=lambda r: r[0] * r[1], default=(1, 1))
        first_out = max(outputs[i] or s.inputs, key=size.get, default=None)
        trace.steps.append(MemoryStep(
            s.name, s.kind, (int(resolution[0]), int(resolution[1])),
            sum(size[k] for k in s.inputs), sum(size[k] for k in outputs[i]),
            sum(size[k] for k in live), len(live),
            _hwc(bufs[first_out].shape) if first_out is not None else (0, 0, 0)))
    return trace



def estimate_memory(model: nn.Module, input_size, batch_size: int = 1, training: bool = False,
                    probe: int = 64) -> int:
    """Bytes that running ``model`` on a batch would need, found without allocating it.

    Counts the parameters and buffers (three times when training: weights, gradients and at
    least one optimizer moment), the float32 input, and the activations: every layer's output
    when training (autograd keeps them for the backward pass; an in-place layer's once), the two
    largest at inference. A lower bound of what eager PyTorch takes, so a size it refuses cannot
    fit. The
    activations are measured on one ``probe`` x ``probe`` image and scaled by the input's area
    and the batch (a convolutional network's maps grow with its input's area); a model that does
    not run on the probe is counted by its parameters and input alone.

    Args:
        model: The model; a copy of it runs the probe (in eval mode, without gradients or the
            model's hooks).
        input_size: (C, H, W) of one image.
        batch_size: Images per batch. Default 1.
        training: Count what a training step keeps. Default False.
        probe: Side of the image measured. Default 64.

    Returns:
        The estimate in bytes.
    """
    c, h, w = input_size
    params = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    total = params * (3 if training else 1) + 4 * batch_size * c * h * w
    outputs: list[int] = []

    kept: dict[int, torch.Tensor] = {}  # held, so that no freed storage's address is reused

    def hook(module, args, output):
        if list(module.children()):  # leaves only: a container's output is a leaf's
            return
        for t in tree_flatten(output)[0]:
            # An in-place layer (ReLU) returns its input's storage: count each storage once.
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in kept:
                kept[t.untyped_storage().data_ptr()] = t
                outputs.append(4 * t.numel())

    # A copy, so the model's own state and hooks see nothing of the probe.
    copy_ = copy.deepcopy(model).eval()
    for m in copy_.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m.register_forward_hook(hook)
    param = next(copy_.parameters(), None)
    try:
        with torch.no_grad():
            copy_(torch.zeros(1, c, probe, probe,
                              device=param.device if param is not None else None))
    except Exception:  # a model that does not take a plain image batch
        outputs.clear()
    scale = batch_size * h * w / (probe * probe)
    return int(total + scale * (sum(outputs) if training else sum(sorted(outputs)[-2:])))


def check_memory(model: nn.Module, input_size, batch_size: int = 1, training: bool = False,
                 flags: str = "--resolution or --batch-size") -> None:
    """Refuse to run ``model`` on a batch that cannot fit in the memory available, before anything
    is allocated (``estimate_memory``, ``resources.check_fits``).

    Args:
        model: The model.
        input_size: (C, H, W) of one image.
        batch_size: Images per batch. Default 1.
        training: A training step (keeps every activation). Default False.
        flags: The flags to lower, for the message.

    Raises:
        ValueError: naming the resolution, the batch size and the memory needed.
    """
    from mobilenets.resources import check_fits

    c, h, w = input_size
    size = f"{h}" if h == w else f"{h}x{w}"
    name = getattr(getattr(model, "config", None), "name", None) or "the model"
    check_fits(estimate_memory(model, input_size, batch_size, training),
               f"{'training' if training else 'running'} {name} at resolution {size} with batch "
               f"size {batch_size}", f"lower {flags}")
