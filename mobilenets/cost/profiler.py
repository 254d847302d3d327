"""A cost profiler for any torch model: per-layer Mult-Adds and parameters laid out like Table 1,
totals, and the breakdown by layer type of Table 2.

It runs one forward pass with hooks on the layers that carry the cost the paper counts
(convolutions and fully connected layers) and on pooling layers (listed, zero cost). Mult-Adds
count multiply-accumulates per image (the forward pass runs on a batch of one image, and a layer
applied to many crops of it, like a detector's box head, counts them all), as the paper does: biases, BatchNorm, activations and
element-wise additions cost nothing. Operations called as functions (``F.linear``, ``x @ w``)
are not seen by hooks and are not counted.

The same pass also lists the operations that cost no Mult-Adds but move whole activations
(``Profile.data_ops``: MobileNetV2's residual additions, ShuffleNet's concatenations, channel
shuffles and the activations after them), and the batch norms and activations that follow a
convolution (``Profile.elementwise``: a runtime may fuse them into it or run them as passes of
their own), which latency depends on (``cost.latency``); Table 1 and 2 leave them out.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mobilenets.tables import TABLE_WIDTH, render_table

_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d)
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)
#: Element-wise modules, by the kind their rows get (``Profile.elementwise``, ``data_ops``).
ELEMENTWISE = {nn.BatchNorm2d: "Norm", nn.ReLU: "Activation", nn.Hardtanh: "Activation",
               nn.Hardswish: "Activation", nn.SiLU: "Activation"}
#: Functions that move whole activations without Mult-Adds, by the kind their rows get.
DATA_OPS = {"add": "Add", "__add__": "Add", "cat": "Concat", "concat": "Concat",
            "concatenate": "Concat", "channel_shuffle": "Channel Shuffle",
            "native_channel_shuffle": "Channel Shuffle"}


@dataclass
class LayerCost:
    """One row of the profile.

    Attributes:
        name: The module's qualified name in the model.
        label: Table 1's "Type / Stride", e.g. ``"Conv dw / s2"``.
        kind: Table 2's layer type, e.g. ``"Conv DW 3x3"``, ``"Conv 1x1"``, ``"Fully Connected"``.
        filter_shape: Table 1's "Filter Shape", e.g. ``"3 x 3 x 32 dw"``.
        input_shape: (H, W, C) of the input (C only for fully connected layers: (1, 1, C)).
        output_shape: (H, W, C) of the output.
        madds: Multiply-accumulates per image.
        params: Parameters of this layer (weights and bias); 0 for a module already counted.
        bias_params: The bias part of ``params``.
        stride: The layer's stride (1 for fully connected layers and global pools).
        groups: The convolution's groups (``input channels`` for a depthwise layer; 1 else).
    """

    name: str
    label: str
    kind: str
    filter_shape: str
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    madds: int
    params: int
    bias_params: int = 0
    stride: int = 1
    groups: int = 1


@dataclass
class Profile:
    """The cost of a model at one input size.

    Attributes:
        model: A name for the model.
        input_size: (C, H, W) profiled.
        rows: The layers in execution order.
        total_params: Every parameter of the model (BatchNorm included), as timm and
            torchvision count them.
        data_ops: The operations between layers that move whole activations and cost no
            Mult-Adds (kind ``"Add"``, ``"Concat"`` or ``"Channel Shuffle"``; ``input_shape`` is
            one input's), in execution order; not part of Table 1 or 2. An activation
            (kind ``"Activation"``) that follows no convolution is one of them.
        elementwise: The batch norms and activations of the convolutions (kind ``"Norm"`` or
            ``"Activation"``: modules beside a convolution in its block, as in ``ConvBNAct``),
            in execution order; not part of Table 1 or 2.
    """

    model: str
    input_size: tuple[int, int, int]
    rows: list[LayerCost] = field(default_factory=list)
    total_params: int = 0
    data_ops: list[LayerCost] = field(default_factory=list)
    elementwise: list[LayerCost] = field(default_factory=list)

    @property
    def total_madds(self) -> int:
        """Multiply-accumulates per image, all layers."""
        return sum(r.madds for r in self.rows)

    @property
    def layer_params(self) -> int:
        """Parameters of the conv and fully connected layers (the paper's count, with biases)."""
        return sum(r.params for r in self.rows)

    def by_type(self, weights_only: bool = False) -> list[dict]:
        """Table 2: Mult-Adds and parameters per layer type, with shares in percent.

        Args:
            weights_only: Count weights without biases, as the paper's Table 2 does
                (its 24.33% for the FC layer is 1024x1000 weights over all weights). Default False.

        Returns:
            One dict per type (``kind, madds, params, madds_pct, params_pct``), largest Mult-Adds first.
        """
        totals: dict[str, list[int]] = {}
        for r in self.rows:
            if r.kind == "Pool":
                continue
            t = totals.setdefault(r.kind, [0, 0])
            t[0] += r.madds
            t[1] += r.params - (r.bias_params if weights_only else 0)
        all_madds = sum(t[0] for t in totals.values()) or 1
        all_params = sum(t[1] for t in totals.values()) or 1
        out = [{"kind": k, "madds": m, "params": p, "madds_pct": 100.0 * m / all_madds,
                "params_pct": 100.0 * p / all_params} for k, (m, p) in totals.items()]
        return sorted(out, key=lambda d: -d["madds"])

    def to_dict(self) -> dict:
        """Rows, totals and the type breakdown, JSON-ready."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "layers": [asdict(r) for r in self.rows],
            "totals": {"madds": self.total_madds, "params": self.total_params,
                       "layer_params": self.layer_params, "conv_layers": self.count_convs()},
            "by_type": self.by_type(),
        }

    def count_convs(self) -> int:
        """Convolution layers (depthwise and pointwise counted apart, as the paper's "28 layers")."""
        return sum(1 for r in self.rows if r.kind.startswith("Conv"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One CSV row per layer, then a TOTAL row."""
        rows = [{"name": r.name, "type_stride": r.label, "kind": r.kind,
                 "filter_shape": r.filter_shape, "input_size": _hwc(r.input_shape),
                 "output_size": _hwc(r.output_shape), "madds": r.madds, "params": r.params}
                for r in self.rows]
        rows.append({"name": "TOTAL", "type_stride": "", "kind": "", "filter_shape": "",
                     "input_size": "", "output_size": "", "madds": self.total_madds,
                     "params": self.total_params})
        return render_table(rows, "csv") + "\n"

    def format_table(self, width: int | None = TABLE_WIDTH) -> str:
        """A text table like Table 1 with cost columns, then the totals and Table 2; lines at
        most ``width`` wide (None: unlimited)."""
        body = [{"Type / Stride": r.label, "Filter Shape": r.filter_shape,
                 "Input Size": _hwc(r.input_shape), "Mult-Adds": f"{r.madds:,}",
                 "Params": f"{r.params:,}"} for r in self.rows]
        c, h, w = self.input_size
        out = [f"{self.model} at {h}x{w}x{c}",
               render_table(body, right=("Mult-Adds", "Params"), width=width), ""]
        out.append(f"Mult-Adds: {self.total_madds:,} ({self.total_madds / 1e6:.1f}M)")
        out.append(f"Parameters: {self.total_params:,} ({self.total_params / 1e6:.2f}M; conv+FC "
                   f"{self.layer_params:,})")
        out.append(f"Layers: {self.count_convs()} conv + "
                   f"{sum(r.kind == 'Fully Connected' for r in self.rows)} FC")
        out.append("")
        out.append(f"{'Type':<18}{'Mult-Adds':>12}{'Parameters':>12}")
        for t in self.by_type():
            out.append(f"{t['kind']:<18}{t['madds_pct']:>11.2f}%{t['params_pct']:>11.2f}%")
        return "\n".join(out)


def _hwc(shape: tuple[int, int, int]) -> str:
    return " x ".join(str(s) for s in shape)


def _kind_and_labels(module: nn.Module, in_shape: tuple) -> tuple[str, str, str]:
    """(Table 2 kind, Table 1 "Type / Stride", Table 1 filter shape) of a module."""
    if isinstance(module, _CONVS):
        kh, kw = module.kernel_size
        s = module.stride[0]
        dil = f" d{module.dilation[0]}" if module.dilation[0] > 1 else ""
        cin, cout, g = module.in_channels, module.out_channels, module.groups
        if g > 1 and g == cin == cout:
            return f"Conv DW {kh}x{kw}", f"Conv dw / s{s}{dil}", f"{kh} x {kw} x {cin} dw"
        grouped = f" g{g}" if g > 1 else ""
        kind = "Conv Transpose" if isinstance(module, nn.ConvTranspose2d) else "Conv"
        return (f"{kind} {kh}x{kw}{grouped}", f"{kind} / s{s}{dil}",
                f"{kh} x {kw} x {cin // g} x {cout}")
    if isinstance(module, nn.Linear):
        return "Fully Connected", "FC / s1", f"{module.in_features} x {module.out_features}"
    kind = "Avg Pool" if "Avg" in type(module).__name__ else "Max Pool"
    return "Pool", f"{kind} / s1", f"Pool {in_shape[0]} x {in_shape[1]}"


def _as_hwc(t: torch.Tensor) -> tuple[int, int, int]:
    if t.ndim == 4:
        return int(t.shape[2]), int(t.shape[3]), int(t.shape[1])
    return 1, 1, int(t.shape[-1])


def profile_model(model: nn.Module, input_size=(3, 224, 224), name: str | None = None,
                  example_input=None) -> Profile:
    """Profile a model's cost at one input size.

    Args:
        model: Any ``nn.Module``. It is run once, in eval mode, under ``torch.no_grad``; its
            training mode is restored afterwards.
        input_size: (C, H, W) of one image, or (H, W) for 3 channels. Default (3, 224, 224).
        name: Label for the report. Default: the model's registry name or class name.
        example_input: Used instead of a zero tensor, for models that take something else
            (a list of images, a dict). Its batch must hold one image.

    Returns:
        A ``Profile``. Mult-Adds are per image: each layer's whole output over the one image,
        so a layer run on many regions of the image (a detector's box head over its proposals)
        counts every region.
    """
    if len(input_size) == 2:
        input_size = (3, *input_size)
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f"input_size must be (C, H, W) positive integers, got {input_size!r}")
    name = name or getattr(getattr(model, "config", None), "name", None) or type(model).__name__
    prof = Profile(name, tuple(input_size), total_params=sum(p.numel() for p in model.parameters()))
    names = {m: n for n, m in model.named_modules()}
    counted: set[int] = set()

    def hook(module, inputs, output):
        x = inputs[0]
        out = output[0] if isinstance(output, (tuple, list)) else output
        in_shape, out_shape = _as_hwc(x), _as_hwc(out)
        kind, label, filt = _kind_and_labels(module, in_shape)
        per_image = out.numel()  # the batch holds one image (see the docstring)
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            madds = per_image * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            madds = x.numel() * (module.out_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            madds = per_image * module.in_features
        else:
            madds = 0
        params = bias = 0
        if id(module) not in counted:  # a module called twice holds its parameters once
            counted.add(id(module))
            params = sum(p.numel() for p in module.parameters(recurse=False))
            bias = module.bias.numel() if getattr(module, "bias", None) is not None else 0
        stride = getattr(module, "stride", 1)
        stride = stride[0] if isinstance(stride, (tuple, list)) else stride
        prof.rows.append(LayerCost(names.get(module, "?"), label, kind, filt, in_shape, out_shape,
                                   int(madds), int(params), int(bias), int(stride or 1),
                                   int(getattr(module, "groups", 1))))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (*_CONVS, nn.Linear, *_POOLS))]
    beside_conv = {n for m, n in names.items() if any(isinstance(c, _CONVS) for c in m.children())}

    def elementwise_hook(module, inputs, output):
        kind = next(k for cls, k in ELEMENTWISE.items() if isinstance(module, cls))
        name = names.get(module, "?")
        row = LayerCost(name, f"{kind} / s1", kind, "", _as_hwc(inputs[0]), _as_hwc(output), 0, 0)
        # Part of a convolution's block (fusable into it), or a pass of its own.
        fused = name.rpartition(".")[0] in beside_conv
        (prof.elementwise if fused else prof.data_ops).append(row)

    handles += [m.register_forward_hook(elementwise_hook) for m in model.modules()
                if isinstance(m, tuple(ELEMENTWISE))]
    where: list[str] = []  # the modules being run, innermost last: a data op's name

    def enter(module, inputs) -> None:
        where.append(names.get(module, "?"))

    def leave(module, inputs, output) -> None:
        if where:
            where.pop()

    for m in model.modules():
        handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _DataOps(prof.data_ops, where):
            if example_input is None:
                param = next(model.parameters(), None)
                kwargs = {"device": param.device} if param is not None else {}
                example_input = torch.zeros(1, *input_size, **kwargs)
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return prof


class _DataOps(TorchFunctionMode):
    """Records every call of a ``DATA_OPS`` function on activations (4-D tensors of one image)
    as a ``LayerCost`` row of ``rows``, named after the innermost module running (``where``)."""

    def __init__(self, rows: list[LayerCost], where: list[str]):
        super().__init__()
        self.rows, self.where = rows, where

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        kind = DATA_OPS.get(getattr(func, "__name__", ""))
        first = args[0] if args else None
        if kind == "Concat" and isinstance(first, (list, tuple)) and first:
            first = first[0]
        if (kind and isinstance(first, torch.Tensor) and isinstance(out, torch.Tensor)
                and first.ndim == out.ndim == 4 and out.shape[0] == 1
                and (kind != "Add" or (isinstance(args[1], torch.Tensor)
                                       and args[1].shape == first.shape))):
            stride = first.shape[-1] // out.shape[-1] if out.shape[-1] else 1
            label = f"{kind} / s{max(stride, 1)}"
            self.rows.append(LayerCost(self.where[-1] if self.where else "?", label, kind, "",
                                       _as_hwc(first), _as_hwc(out), 0, 0))
        return out
