"""Batch-1 latency on a device, predicted from a model's structure and a few coefficients fitted
to a few measurements on that device.

Mult-Adds alone predict latency badly: at equal Mult-Adds the higher-resolution, narrower model
is slower, because it moves more activations per Mult-Add, and every layer and every call costs
something whatever its arithmetic. So the model here sums, over the layers of the profiler's
description (``cost.profiler.profile_model``: each convolution, fully connected layer and pool,
and the additions, concatenations and channel shuffles between them), a few terms that are linear
in per-device coefficients::

    latency = call + sum over layers of (madds / compute rate of the layer's class
                                          + bytes moved / memory rate + per-layer cost)

where the bytes moved are the layer's input and output activations and its weights at the
device's element size (4 bytes fp32, 1 int8, 2 bf16), and the classes are ``CLASSES``
(pointwise 1x1, depthwise, full convolutions, fully connected). The batch norms and activations
of the convolutions (``Profile.elementwise``) are layers of their own only on a runtime that runs
them as separate passes (``Device.separate``: torch eager runs both, a BN-folded torch model the
activations; the exporting runtimes fuse them into the convolution), a fact about the runtime,
not a fitted figure. Likewise some runtimes fuse data operations away (``Device.fused``,
``FUSIBLE``): a residual addition computed inside the convolution that produces one of its
inputs, with the activation after it (ONNX Runtime's and OpenVINO's fp32 graphs), or an
activation after an addition or concatenation folded into that operation's int8 output range;
those cost nothing. Each coefficient is a time per
unit (ms per million Mult-Adds, ms per MB, ms per layer, ms per call), so the fit is a
non-negative least-squares problem on the *relative* error of each measurement
(``fit_device``): every row is divided by its measured latency, so a 1 ms model counts as much
as a 20 ms one, and no coefficient can be negative (no layer makes a model faster).

A handful of whole-model latencies cannot tell many coefficients apart, so the terms come in the
order ``LADDER`` and a fit uses as many of them as it has measurements (``form="auto"``): two
measurements fit a compute and a memory rate, four add a per-layer cost and the depthwise layers'
own rate, and so on. The two forms a new user would try are here too, for comparison:
``"madds"`` (latency proportional to Mult-Adds) and ``"madds+const"``. Coefficients that the
measured models share with others (the memory rate, the per-layer cost) carry over to
architectures the fit never saw: V2's residual additions and ShuffleNet's channel shuffles are
priced at the memory rate and per-layer cost fitted on V1.

No device's figures are built in: a ``Device`` holds only what ``fit_device`` computed from the
measurements it was given, and what they were.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from mobilenets.cost.profiler import LayerCost, Profile

#: Layer classes with a compute rate of their own, and the Table 2 kinds they hold.
CLASSES = ("pointwise", "depthwise", "conv", "fc")
#: The terms of the layer model, in the order a fit adds them (``fit_device``, ``form="auto"``).
LADDER = ("mac", "memory", "layer", "mac_depthwise", "call", "mac_conv", "mac_fc")
#: Every term: what one unit is, and what its coefficient means.
TERMS = {
    "mac": "million Mult-Adds of every layer (ms per million; the classes split off below)",
    "memory": "MB of activations read and written and of weights read (ms per MB)",
    "layer": "layers and data operations run (ms per layer)",
    "call": "calls (ms per call)",
    **{f"mac_{c}": f"million Mult-Adds of the {c} layers, instead of the shared rate (ms per "
       "million)" for c in CLASSES},
}
#: The forms ``fit_device`` knows: their terms (``"auto"``: the first K of ``LADDER``).
FORMS = {"auto": LADDER, "layers": LADDER, "madds": ("mac",), "madds+const": ("call", "mac")}
#: Bytes of one element, by the precision a device computes in.
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
#: The kinds of ``Profile.data_ops`` rows, and how many inputs of ``input_shape`` each reads.
DATA_OP_INPUTS = {"Add": 2, "Channel Shuffle": 1}
#: The kinds of ``Profile.elementwise`` rows: what ``Device.separate`` may name.
SEPARABLE = ("Norm", "Activation")
#: The ``Profile.data_ops`` a runtime may fuse away (``Device.fused``): ``"Add"``, a residual
#: addition and the activation right after it, computed by the convolution that produces one
#: of its inputs (a sum post-op); ``"Activation"``, every activation after an addition or a
#: concatenation, folded into that operation (an int8 output range, a fused activation).
FUSIBLE = ("Add", "Activation")
_MB = 1e6
_MILLION = 1e6


def layer_class(row: LayerCost) -> str:
    """The ``CLASSES`` entry of a profile row, or ``"pool"`` / ``"data"`` for rows without a
    compute rate of their own (pools; additions, concatenations, channel shuffles)."""
    kind = row.kind
    if kind.startswith("Conv DW"):
        return "depthwise"
    if kind.startswith("Conv 1x1"):  # grouped 1x1 (ShuffleNet) too: a GEMM per group
        return "pointwise"
    if kind.startswith("Conv"):
        return "conv"
    if kind == "Fully Connected":
        return "fc"
    return "pool" if kind == "Pool" else "data"


def layer_terms(row: LayerCost, element_bytes: int = 4) -> dict[str, float]:
    """The units of every term one profile row costs (``TERMS``; ``call`` excluded).

    Args:
        row: A ``Profile.rows`` or ``Profile.data_ops`` entry.
        element_bytes: Bytes per activation and weight element (``ELEMENT_BYTES``). Default 4.
    """
    out_elems = math.prod(row.output_shape)
    if row.kind == "Concat":  # reads each input once: as much as it writes
        in_elems = out_elems
    else:
        in_elems = math.prod(row.input_shape) * DATA_OP_INPUTS.get(row.kind, 1)
    terms = {"mac": row.madds / _MILLION,
             "memory": (in_elems + out_elems + row.params) * element_bytes / _MB,
             "layer": 1.0}
    cls = layer_class(row)
    if cls in CLASSES:
        terms[f"mac_{cls}"] = row.madds / _MILLION
    return terms


def unfused_data_ops(data_ops: list[LayerCost],
                     fused: tuple[str, ...] | list[str] = ()) -> list[LayerCost]:
    """The rows of ``data_ops`` (``Profile.data_ops``, in execution order) a runtime that fuses
    the ``FUSIBLE`` kinds in ``fused`` still runs."""
    out, after_add = [], False
    for row in data_ops:
        gone = ((row.kind == "Add" and "Add" in fused)
                or (row.kind == "Activation" and ("Activation" in fused or after_add)))
        after_add = row.kind == "Add" and "Add" in fused
        if not gone:
            out.append(row)
    return out


def model_terms(profile: Profile, element_bytes: int = 4,
                separate: tuple[str, ...] | list[str] = (),
                fused: tuple[str, ...] | list[str] = ()) -> dict[str, float]:
    """The units of every term a whole call of a profiled model costs: ``layer_terms`` summed
    over its layers, its data operations but those of the kinds in ``fused`` (``FUSIBLE``,
    ``unfused_data_ops``), the element-wise rows of the kinds in ``separate`` (``SEPARABLE``:
    run as passes of their own), and one ``call``."""
    total = {t: 0.0 for t in TERMS}
    passes = [r for r in profile.elementwise if r.kind in separate]
    for row in (*profile.rows, *unfused_data_ops(profile.data_ops, fused), *passes):
        for t, v in layer_terms(row, element_bytes).items():
            total[t] += v
    total["call"] = 1.0
    return total


def design(terms: list[dict[str, float]], names: tuple[str, ...]) -> np.ndarray:
    """The design matrix of ``terms`` (one dict per row) over the coefficients ``names``.

    A class term (``mac_depthwise``) takes its Mult-Adds out of the shared ``mac`` column, so
    adding it lets that class have a rate of its own without counting its work twice."""
    x = np.array([[row.get(n, 0.0) for n in names] for row in terms], dtype=float)
    if "mac" in names:
        shared = names.index("mac")
        for i, n in enumerate(names):
            if n.startswith("mac_"):
                x[:, shared] -= x[:, i]
    return x


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares: ``x >= 0`` minimising ``|a x - b|``. SciPy's solver where
    SciPy is installed; otherwise Lawson and Hanson's active-set method, written out."""
    try:
        from scipy.optimize import nnls as scipy_nnls
    except ImportError:
        return _lawson_hanson(a, b)
    return scipy_nnls(a, b)[0]


def _lawson_hanson(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        w = a.T @ (b - a @ x)
        if passive.all() or w[~passive].max(initial=-np.inf) <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                x = z
                break
            blocked = passive & (z <= tol)
            step = np.min(x[blocked] / (x[blocked] - z[blocked]))
            x = x + step * (z - x)
            passive &= x > tol
    return x


@dataclass
class Device:
    """The latency coefficients of one device (one runtime at one precision and thread count on
    one piece of hardware) and what they were fitted on: what ``mobilenets latency fit`` writes
    as DEVICE.json.

    Attributes:
        name: What the device is called (the user's label, or the measurements' file name).
        precision: ``"fp32"``, ``"int8"`` or ``"bf16"``: the bytes per element of the memory
            term (``ELEMENT_BYTES``).
        form: The form fitted (``FORMS``), and ``terms`` the coefficients it has, in order.
        terms: The coefficients' names (``TERMS``).
        coefficients: ms per unit of each term (``TERMS`` says what a unit is).
        fitted_on: One dict per measurement: ``model``, ``measured_ms``, ``predicted_ms`` and
            ``residual_pct`` (100 x (predicted / measured - 1)): the fit's residuals.
        backend: The runtime and precision measured (``"litert-int8"``, ...), when known.
        threads: The threads the measurements used, when known.
        source: Where the measurements came from (file names, or ``"this machine"``).
        machine: The machine measured on (``deploy.machine.machine_info``) when it was this one.
        separate: The ``SEPARABLE`` kinds the runtime runs as passes of their own (priced as
            layers), not fused into the convolutions.
        fused: The ``FUSIBLE`` data operations the runtime fuses away (not priced).
    """

    name: str
    precision: str
    form: str
    terms: list[str]
    coefficients: dict[str, float]
    fitted_on: list[dict] = field(default_factory=list)
    backend: str | None = None
    threads: int | None = None
    source: str = ""
    machine: dict | None = None
    separate: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)

    def predict_ms(self, profile: Profile) -> float:
        """The predicted batch-1 latency of a profiled model, in ms."""
        x = design([model_terms(profile, ELEMENT_BYTES[self.precision], self.separate,
                                self.fused)], tuple(self.terms))
        return float(x[0] @ np.array([self.coefficients[t] for t in self.terms]))

    def residual_summary(self) -> str:
        """The fit's residuals in a phrase: ``"4 models, residuals -2.1% to +3.0%"``."""
        res = [r["residual_pct"] for r in self.fitted_on]
        if not res:
            return "no measurements"
        return (f"{len(res)} model{'s' if len(res) > 1 else ''}, residuals "
                f"{min(res):+.1f}% to {max(res):+.1f}%")

    def to_dict(self) -> dict:
        """JSON-ready: the fields, with each term's unit (``units``) for a reader of the file."""
        return {"format": DEVICE_FORMAT, **asdict(self),
                "units": {t: TERMS[t] for t in self.terms}}

    @classmethod
    def from_dict(cls, data: dict, source: str = "device file") -> "Device":
        """The ``Device`` a ``to_dict`` holds.

        Raises:
            ValueError: naming ``source`` and the first field that is missing or wrong.
        """
        if not isinstance(data, dict) or data.get("format") != DEVICE_FORMAT:
            raise ValueError(f"{source} is not a device file written by `mobilenets latency "
                             f"fit` (no \"format\": \"{DEVICE_FORMAT}\")")
        try:
            device = cls(**{k: data[k] for k in ("name", "precision", "form", "terms",
                                                 "coefficients")},
                         **{k: data[k] for k in ("fitted_on", "backend", "threads", "source",
                                                 "machine", "separate", "fused") if k in data})
        except KeyError as e:
            raise ValueError(f"{source}: the field {e.args[0]!r} is missing") from None
        if not isinstance(device.separate, list) or any(k not in SEPARABLE
                                                         for k in device.separate):
            raise ValueError(f"{source}: separate must be a list of {', '.join(SEPARABLE)}, got "
                             f"{device.separate!r}")
        if not isinstance(device.fused, list) or any(k not in FUSIBLE for k in device.fused):
            raise ValueError(f"{source}: fused must be a list of {', '.join(FUSIBLE)}, got "
                             f"{device.fused!r}")
        if device.precision not in ELEMENT_BYTES:
            raise ValueError(f"{source}: precision must be one of {', '.join(ELEMENT_BYTES)}, "
                             f"got {device.precision!r}")
        if (not isinstance(device.terms, list) or not device.terms
                or any(t not in TERMS for t in device.terms)):
            raise ValueError(f"{source}: terms must be a list of {', '.join(TERMS)}, got "
                             f"{device.terms!r}")
        for t in device.terms:
            v = device.coefficients.get(t) if isinstance(device.coefficients, dict) else None
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or v < 0):
                raise ValueError(f"{source}: the coefficient {t!r} must be a finite number "
                                 f">= 0, got {v!r}")
        return device


#: The ``format`` field of a device file.
DEVICE_FORMAT = "mobilenets-device/1"


def form_terms(form: str, count: int) -> tuple[str, ...]:
    """The terms a fit of ``form`` uses with ``count`` measurements: ``"auto"`` takes the first
    ``count`` of ``LADDER`` (at most all of them); the other forms all their terms; a tuple of
    ``TERMS`` names is its own form.

    Raises:
        ValueError: for an unknown form.
    """
    if isinstance(form, (tuple, list)):
        if not form or any(t not in TERMS for t in form) or len(set(form)) < len(form):
            raise ValueError(f"form must name distinct terms of {', '.join(TERMS)}, got "
                             f"{form!r}")
        return tuple(form)
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    return FORMS[form][:max(count, 1)] if form == "auto" else FORMS[form]


def fit_device(profiles: list[Profile], latencies_ms: list[float], *,
               names: list[str] | None = None,
               form: str = "auto", precision: str = "fp32", name: str = "device",
               separate: tuple[str, ...] | list[str] = (),
               fused: tuple[str, ...] | list[str] = (), **about) -> Device:
    """Fit a device's coefficients to measured batch-1 latencies of a few models.

    Each measurement is a row of the terms its model costs (``model_terms``) divided by its
    latency, so the fit minimises the sum of squared *relative* errors; the coefficients are
    non-negative (``nnls``). With ``form="auto"`` it uses as many terms of ``LADDER`` as there
    are distinct models measured (a second timing of a model adds no new direction).

    Args:
        profiles: The measured models' profiles (``profile_model``), one per measurement.
        latencies_ms: Their measured latencies in ms, each finite and > 0.
        names: The models' names, for ``fitted_on``. Default: each profile's ``model``.
        form: A key of ``FORMS``, or a tuple of ``TERMS`` names. Default ``"auto"``.
        precision: ``"fp32"``, ``"int8"`` or ``"bf16"`` (``ELEMENT_BYTES``). Default fp32.
        name: The device's name. Default ``"device"``.
        separate: The ``SEPARABLE`` kinds the runtime runs as passes of their own (the
            backend's ``separate``). Default none: fused into the convolutions.
        fused: The ``FUSIBLE`` data operations the runtime fuses away (the backend's
            ``fused``). Default none: each runs.
        **about: ``backend``, ``threads``, ``source``, ``machine``: stored as given.

    Returns:
        The ``Device``, with the fit's residuals in ``fitted_on``.

    Raises:
        ValueError: for a latency that is not finite and > 0, an unknown form or precision, or
            fewer distinct models than the form has coefficients.
    """
    if precision not in ELEMENT_BYTES:
        raise ValueError(f"precision must be one of {', '.join(ELEMENT_BYTES)}, got "
                         f"{precision!r}")
    names = list(names or [p.model for p in profiles])
    if not (len(profiles) == len(latencies_ms) == len(names)):
        raise ValueError("profiles, latencies_ms and names must have one entry per measurement")
    y = np.array(latencies_ms, dtype=float)
    bad = [i for i, v in enumerate(y) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"latency of {names[bad[0]]} must be a finite number > 0 (ms), got "
                         f"{latencies_ms[bad[0]]!r}")
    distinct = len(set(names))
    terms = form_terms(form, distinct)
    need = max(len(terms), 2 if form == "auto" else 1)
    if distinct < need:
        raise ValueError(f"{distinct} model{'s' if distinct != 1 else ''} measured, but the "
                         f"{form if isinstance(form, str) else 'custom'} latency model has "
                         f"{need} coefficients: measure at least {need} different models")
    if any(k not in SEPARABLE for k in separate):
        raise ValueError(f"separate must name kinds of {', '.join(SEPARABLE)}, got {separate!r}")
    if any(k not in FUSIBLE for k in fused):
        raise ValueError(f"fused must name kinds of {', '.join(FUSIBLE)}, got {fused!r}")
    rows = [model_terms(p, ELEMENT_BYTES[precision], separate, fused) for p in profiles]
    x = design(rows, terms)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    theta = nnls(x / scale / y[:, None], np.ones(len(y))) / scale
    predicted = x @ theta
    fitted = [{"model": n, "measured_ms": round(float(m), 4), "predicted_ms": round(float(p), 4),
               "residual_pct": round(100 * (p / m - 1), 2)}
              for n, m, p in zip(names, y, predicted)]
    return Device(name, precision, form if isinstance(form, str) else "custom", list(terms),
                  {t: float(v) for t, v in zip(terms, theta)}, fitted, **about,
                  separate=list(separate), fused=list(fused))


def variant_model(name: str, meta: bool = True):
    """A classifier built from a registered name, timm's name for one, an unregistered point of
    a registered grid named as the registry names them (``{prefix}_{alpha}_{resolution}``:
    ``"mobilenet_v1_0.6_200"``, ``"mobilenet_v2_1.2_256"``, ``"shufflenet_v1_g8_0.75_160"``),
    or one of our model files (``.safetensors``; its config, not its weights, is read).

    Args:
        name: The name or file.
        meta: Build on the meta device (shapes, no memory: enough to profile). Default True;
            False builds it with fresh weights (seed 0), to export and time.

    Returns:
        The model in eval mode, with ``config.resolution`` and ``config.name`` set.

    Raises:
        ValueError: for a name that is none of these (suggesting the nearest registered ones).
    """
    import contextlib
    import re
    from pathlib import Path

    import torch

    from mobilenets.models.registry import (ARCHS, MODELS, build_from_config, config_from_dict,
                                            config_name, create_model, get_spec, meta_device)

    device = meta_device() if meta else contextlib.nullcontext()
    torch.manual_seed(0)

    if str(name).endswith((".safetensors", ".st")) and Path(name).is_file():
        from mobilenets.models.modelfile import read_model_file

        config = config_from_dict(read_model_file(name)[0], source=str(name))
        with device:
            model = build_from_config(config)
        if not any(isinstance(model, cls) for cls in ARCHS.values()):
            raise ValueError(f"{name} holds a {config.arch} model; latency is predicted "
                             "for classifiers (MobileNet V1, V2, ShuffleNet)")
        model.config.resolution = model.config.input_size
        model.config.name = config_name(model.config)
        return model.eval()
    try:
        spec = get_spec(name)
    except ValueError as unknown:
        match = re.fullmatch(r"(.+)_(\d+(?:\.\d+)?)_(\d+)", str(name))
        grid = [s for s in MODELS.values() if match and "width_mult" in s.name_fields
                and s.name.rsplit("_", 2)[0] == match.group(1)]
        if not grid or float(match.group(2)) <= 0 or int(match.group(3)) < 32:
            raise unknown from None
        with device:
            model = build_from_config(grid[0].config.replace(
                width_mult=float(match.group(2)), resolution=int(match.group(3)), name=str(name)))
        return model.eval()
    with device:
        model = create_model(spec.name).eval()
    model.config.resolution = model.config.resolution or spec.resolution
    model.config.name = spec.name
    return model


def variant_profile(name, resolution: int | None = None) -> Profile:
    """``profile_model`` of ``variant_model(name)`` (or of ``name`` itself, a model that
    ``variant_model`` built) at its resolution (or ``resolution``)."""
    from mobilenets.cost.profiler import profile_model

    model = variant_model(name) if isinstance(name, str) else name
    res = int(resolution or model.config.input_size)
    return profile_model(model, (model.config.in_channels, res, res),
                         name=str(model.config.name or name))


def read_device(path) -> Device:
    """The ``Device`` a device file (``mobilenets latency fit``'s DEVICE.json) holds.

    Raises:
        FileNotFoundError: if it does not exist.
        ValueError: naming the file for anything that is not such a file.
    """
    from mobilenets.readers import read_json

    return Device.from_dict(read_json(path, "device file"), source=f"device file {path}")


def write_device(device: Device, path) -> None:
    """Write ``device`` to ``path`` (JSON, atomically): what ``read_device`` reads."""
    from mobilenets.fileio import write_json

    write_json(path, device.to_dict())
