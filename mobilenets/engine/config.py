"""Run configs: the fields every training run shares, presets, and the one ``--set`` parser.

Every task's recipe is a dataclass that subclasses ``RunConfig`` (classification's
``tasks.classification.train.TrainConfig``, ``tasks.detection.train.DetectConfig``, ...), changes
its defaults and adds its own fields. ``RunConfig.validate`` checks the type of every field from
its annotation once for all of them (a bool is not a number; numbers are finite), then each class
checks its ranges. ``config_from_preset`` and ``parse_assignments`` are the only ways the library and the
command line build one.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields, replace

from mobilenets.checks import check_choice, check_range

#: The learning-rate schedules of ``engine.optim.lr_factor``.
LR_SCHEDULES = ("exponential", "cosine", "linear", "poly")
#: The optimizers of ``engine.optim.make_optimizer``.
OPTIMIZERS = ("rmsprop", "sgd", "adamw")


@dataclass
class RunConfig:
    """The fields of every training run: optimizer, learning-rate schedule and run folder.

    The defaults are the MobileNet paper's recipe (section 3.2 names RMSprop; the numbers are
    TF-Slim's ``train_image_classifier.py`` defaults and the MobileNetV2 paper's section 6.1, the
    same team's recipe); task configs override them with their own papers' values.
    """

    # Optimisation
    epochs: float = 10
    batch_size: int = 96  # per process (MobileNetV2 paper 6.1: 96 per worker)
    optimizer: str = "rmsprop"  # paper 3.2; TensorFlow's RMSprop | sgd (momentum) | adamw
    lr: float = 0.045  # MobileNetV2 paper 6.1; for one process, x processes if scale_lr
    scale_lr: bool = True  # the linear scaling rule under torchrun
    lr_schedule: str = "exponential"  # exponential | cosine | linear | poly, after a warm-up
    # The multiplier of lr at the run's last step: every schedule is fitted to the run's length
    # (exponential decays at the rate that reaches it), so any --epochs ends with a low lr.
    # (The classification presets use 0.01: the paper's 0.98 per epoch reaches it after 228
    # epochs.) None: exponential decays lr_decay per lr_decay_steps whatever the run's length
    # (the published form); the others end at 0.
    lr_final: float | None = None
    lr_decay: float = 0.98  # MobileNetV2 paper 6.1: 0.98 per epoch; used when lr_final is None
    lr_decay_steps: int | None = None  # exponential without lr_final: steps per decay; None: epoch
    lr_power: float = 0.9  # poly: (1 - t) ** lr_power
    warmup_epochs: float = 0.0
    momentum: float = 0.9  # TF-Slim rmsprop_momentum 0.9
    nesterov: bool = True  # sgd only
    rmsprop_decay: float = 0.9  # TF-Slim rmsprop_decay 0.9
    eps: float = 1.0  # TF-Slim opt_epsilon 1.0
    weight_decay: float = 4e-5  # MobileNetV2 paper 6.1
    depthwise_weight_decay: float = 0.0  # paper 3.2: little or none on depthwise filters
    grad_clip: float | None = None  # largest gradient norm; None: no clipping
    ema_decay: float | None = None  # e.g. 0.9999 (TF-Slim); evaluation then uses the EMA weights
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = False  # channels-last tensors (faster convolutions on CPU)
    # Run
    seed: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = 200  # steps
    eval_every_epoch: bool = True
    progress: bool = True
    log_every: int = 50  # steps between progress lines when the output is not a terminal
    tensorboard: bool = False

    def validate(self):
        """Check every field's type, then the shared ranges; return self.

        Raises:
            ValueError: naming the first bad field.
        """
        check_field_types(self)
        for name in ("epochs", "batch_size", "lr", "checkpoint_every", "log_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("warmup_epochs", "weight_decay", "depthwise_weight_decay", "lr_power"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        check_range("seed", self.seed)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_final is not None and not 0 <= self.lr_final <= 1:
            raise ValueError(f"lr_final must be in [0, 1] or None, got {self.lr_final!r}")
        if self.lr_schedule == "exponential" and self.lr_final == 0:
            raise ValueError("lr_final must be > 0 for the exponential schedule (it never reaches "
                             "0); use cosine or linear to end at 0")
        if self.lr_final is not None and self.lr_schedule == "exponential":
            # A fixed decay rate and a fitted one cannot both hold: refuse rather than ignore one.
            default = type(self).__dataclass_fields__["lr_decay"].default
            if self.lr_decay != default or self.lr_decay_steps is not None:
                raise ValueError(f"lr_decay/lr_decay_steps set a fixed decay rate, used only with "
                                 f"lr_final=none; lr_final={self.lr_final} fits the rate to the "
                                 "run's length: set one or the other")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            raise ValueError(f"lr_decay_steps must be >= 1, got {self.lr_decay_steps!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 <= self.rmsprop_decay < 1:
            raise ValueError(f"rmsprop_decay must be in [0, 1), got {self.rmsprop_decay!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not self.out_dir:
            raise ValueError("out_dir must name a folder")
        return self


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        item = (typing.get_args(hint) or (typing.Any,))[0]
        return isinstance(value, (tuple, list)) and all(_type_ok(v, item) for v in value)
    return True


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) in (tuple, list):
        return f"comma-separated {_type_name(typing.get_args(hint)[0])}s"
    return getattr(hint, "__name__", str(hint))


def check_field_types(cfg) -> None:
    """Check that every field of the dataclass ``cfg`` holds a value of its annotated type.

    ``bool`` fields take only ``True``/``False``; ``int`` fields no bools or floats; ``float``
    fields any finite int or float (no bool, inf or NaN); ``X | None`` also ``None``.
    (The field's ``validate()`` then checks its range.)

    Raises:
        ValueError: naming the first field with a value of the wrong type.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not _type_ok(value, hints[f.name]):
            finite = " (finite)" if "float" in _type_name(hints[f.name]) else ""
            raise ValueError(f"{f.name} must be {_type_name(hints[f.name])}{finite}, got "
                             f"{value!r}")


def config_from_preset(presets: dict, preset: str, what: str = "preset", **overrides):
    """``presets[preset]`` (a config dataclass with ``validate()``) with some fields replaced,
    validated.

    Args:
        presets: Configs by name.
        preset: The name to start from.
        what: The argument's name in the error message. Default ``"preset"``.
        **overrides: Fields to replace.

    Raises:
        ValueError: for an unknown preset or field name, or a bad value (named).
    """
    if preset not in presets:
        raise ValueError(f"{what} must be one of {', '.join(sorted(presets))}; got {preset!r}")
    base = presets[preset]
    names = {f.name for f in fields(base)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {type(base).__name__} fields {unknown}; known: {sorted(names)}")
    return replace(base, **overrides).validate()


def parse_value(text: str, hint, key: str):
    """The value of ``--set KEY=TEXT`` for a field annotated ``hint``.

    ``none``/``null`` give None where the field allows it; bools are ``true``/``false``/``1``/
    ``0``; ints must be integers; tuples and lists are comma-separated. Ranges are left to the
    config's ``validate()``.

    Raises:
        ValueError: naming ``--set KEY`` and the type it expected.
    """
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union,
                                                                 types.UnionType) else (hint,)
    if type(None) in args and text.strip().lower() in ("none", "null"):
        return None
    for h in (a for a in args if a is not type(None)):
        try:
            if h is bool:
                low = text.strip().lower()
                if low in ("true", "1"):
                    return True
                if low in ("false", "0"):
                    return False
                continue
            if h is int:
                return int(text)
            if h is float:
                value = float(text)
                if math.isfinite(value):
                    return value
                continue
            if typing.get_origin(h) in (tuple, list):
                item = typing.get_args(h)[0]
                return tuple(parse_value(p, item, key) for p in text.split(",") if p.strip())
            if h is str:
                return text
        except ValueError:
            continue
    raise ValueError(f"--set {key}={text!r}: expected {_type_name(hint)}")


def parse_assignments(config_class: type, items) -> dict:
    """``--set KEY=VALUE`` strings -> ``{field: value}`` for a config dataclass.

    Raises:
        ValueError: for a malformed item or an unknown field (naming the nearest fields).
    """
    import difflib

    hints = typing.get_type_hints(config_class)
    names = [f.name for f in fields(config_class)]
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"--set takes KEY=VALUE with KEY a field of {config_class.__name__}; "
                             f"{key!r} is not one{hint}")
        out[key] = parse_value(value, hints[key], key)
    return out
