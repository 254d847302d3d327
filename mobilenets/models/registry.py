"""The registry: every architecture the project builds, the named variants of the classifiers,
and the one loader of our model files.

- ``ARCHS``: the classifier classes (MobileNet V1, V2, ShuffleNet V1) by the ``arch`` key of
  their config; MobileNet V1 and V2 are also the backbones of every task model.
- ``BUILDERS``: the task models (SSD, SSDLite, Faster R-CNN, DeepLabv3, the embedding net), each
  ``builder(config) -> model`` with its config's class, registered by its module with
  ``register_builder`` when imported; ``TASK_MODULES`` names the module, so ``load_model`` can
  import it on demand.
- ``MODELS``: the named variants (``mobilenet_v1_0.75_160``, ``shufflenet_v1_g3_1.5_224``, ...),
  which drive the CLI, the tests
  and the README's model table; ``TIMM_NAMES`` lets timm's names answer too.

Every model's ``config`` is a typed record (``models.config.ModelConfig``: ``MobileNetV1Config``,
``DetectorConfig``, ...). ``config_from_dict`` reads one back from a model file's JSON and
``build_from_config`` makes its model; ``load_model(path)`` does both for any model file this
package writes, dispatching on the config's ``arch`` as timm's ``create_model`` dispatches on a
name.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, NamedTuple

import torch
from torch import nn

from mobilenets.checks import check_choice
from mobilenets.models.base import MobileNetBase
from mobilenets.models.config import ClassifierConfig, ModelConfig
from mobilenets.models.mobilenet_v1 import V1_SHALLOW_BLOCKS, MobileNetV1
from mobilenets.models.mobilenet_v2 import MobileNetV2
from mobilenets.models.modelfile import load_state_dict_checked, read_model_file
from mobilenets.models.shufflenet import ShuffleNetV1

#: Classifier classes by the ``arch`` of their config (each names its class in ``config_class``).
ARCHS: dict[str, type[MobileNetBase]] = {"mobilenet_v1": MobileNetV1,
                                         "mobilenet_v2": MobileNetV2,
                                         "shufflenet_v1": ShuffleNetV1}


class TaskModel(NamedTuple):
    """A task model's entry in ``BUILDERS``: ``build(config) -> model``, the ``kind`` of model
    (one of ``KINDS``) and the class of its ``config``."""

    build: Callable[[ModelConfig], nn.Module]
    kind: str
    config_class: type[ModelConfig]


#: Task models by ``arch`` (``register_builder``).
BUILDERS: dict[str, TaskModel] = {}
#: Where each task model's builder lives (imported by ``build_from_config`` when needed).
TASK_MODULES = {"ssd": "mobilenets.tasks.detection.model",
                "ssdlite": "mobilenets.tasks.detection.model",
                "faster_rcnn": "mobilenets.tasks.detection.model",
                "deeplabv3": "mobilenets.tasks.segmentation.model",
                "embedding_net": "mobilenets.tasks.faces.model"}
#: What ``load_model(kind=...)`` checks: the kind of every architecture.
KINDS = ("classifier", "detector", "segmenter", "embedding")
#: The short names of the command line's ``--arch`` flags (profile, sweep, pick).
ARCH_ALIASES = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}


@dataclass(frozen=True)
class ModelSpec:
    """One named variant.

    Attributes:
        name: Registry name, e.g. ``mobilenet_v1_0.75_160``, ``mobilenet_v2_1.4_224`` or
            ``shufflenet_v1_g3_1.5_224``.
        config: The variant's config (``create_model`` builds it): its ``arch`` (a key of
            ``ARCHS``), its default input size ``resolution`` (square, which sets the resolution
            multiplier rho), its ``name`` and its constructor arguments.
        name_fields: The fields of ``config`` the name stands for (besides ``arch``), e.g.
            ``("width_mult",)``, or ``("block",)`` for Table 4's Conv MobileNet.
        paper: What the paper (V1's, MobileNetV2's for ``mobilenet_v2_*``, ShuffleNet's or the
            MobileNetV2 slides' for ``shufflenet_v1_*``) prints for it on ImageNet, where it does
            (``params_m`` None where it prints none):
            ``{"table": ..., "top1": %, "madds_m": millions, "params_m": millions}``.
        released_top1: ImageNet top-1 (%) of the released TF-Slim checkpoint of the same variant
            (``research/slim/nets/mobilenet_v1.md``, release 2018-02-22; for MobileNetV2
            ``research/slim/nets/mobilenet/README.md``; for ShuffleNet V1 Megvii's
            ``ShuffleNet-Series/ShuffleNetV1/README.md``), where there is one: the only source for
            the grid points the papers show as dots in their figures.
    """

    name: str
    config: ClassifierConfig
    name_fields: tuple[str, ...] = ("width_mult",)
    paper: dict | None = None
    released_top1: float | None = None

    @property
    def arch(self) -> str:
        """The variant's ``config.arch``: a key of ``ARCHS``."""
        return self.config.arch

    @property
    def resolution(self) -> int:
        """The variant's ``config.resolution``: its default input size."""
        return self.config.resolution


def _spec(name: str, arch: str, resolution: int, kwargs: dict, name_fields: tuple[str, ...],
          paper: dict | None, released_top1: float | None = None) -> ModelSpec:
    config = ARCHS[arch].config_class(resolution=resolution, name=name, **kwargs)
    return ModelSpec(name, config, name_fields, paper, released_top1)


def _paper(table: str, top1: float, madds_m: float, params_m: float | None) -> dict:
    return {"table": table, "top1": top1, "madds_m": madds_m, "params_m": params_m}


# ImageNet figures the paper prints for these variants (Tables 4-9); the other grid points appear
# only in Figures 4 and 5, as dots.
_PAPER_V1 = {
    (1.0, 224): _paper("6, 7, 8", 70.6, 569, 4.2),
    (0.75, 224): _paper("5, 6", 68.4, 325, 2.6),
    (0.5, 224): _paper("6", 63.7, 149, 1.3),
    (0.25, 224): _paper("6", 50.6, 41, 0.5),
    (1.0, 192): _paper("7", 69.1, 418, 4.2),
    (1.0, 160): _paper("7", 67.2, 290, 4.2),
    (1.0, 128): _paper("7", 64.4, 186, 4.2),
    (0.5, 160): _paper("9", 60.2, 76, 1.32),
}

# TF-Slim's released checkpoints (research/slim/nets/mobilenet_v1.md, 2018-02-22), top-1 %.
_RELEASED_TOP1 = {
    (1.0, 224): 70.9, (1.0, 192): 70.0, (1.0, 160): 68.0, (1.0, 128): 65.2,
    (0.75, 224): 68.4, (0.75, 192): 67.2, (0.75, 160): 65.3, (0.75, 128): 62.1,
    (0.5, 224): 63.3, (0.5, 192): 61.7, (0.5, 160): 59.1, (0.5, 128): 56.3,
    (0.25, 224): 49.8, (0.25, 192): 47.7, (0.25, 160): 45.5, (0.25, 128): 41.5,
}

WIDTH_MULTS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)

MODELS: dict[str, ModelSpec] = {}


def _add_grid(arch: str, points, paper: dict, released: dict | None = None,
              prefix: str | None = None, **kwargs) -> None:
    """Register ``{prefix}_{alpha}_{resolution}`` for each (alpha, resolution) point, with
    ``width_mult=alpha`` and ``kwargs`` (``prefix`` defaults to ``arch``)."""
    for alpha, res in points:
        name = f"{prefix or arch}_{alpha}_{res}"
        MODELS[name] = _spec(name, arch, res, {"width_mult": alpha, **kwargs},
                             ("width_mult", *kwargs), paper.get((alpha, res)),
                             (released or {}).get((alpha, res)))


_add_grid("mobilenet_v1", [(a, r) for a in WIDTH_MULTS for r in RESOLUTIONS], _PAPER_V1,
          _RELEASED_TOP1)

MODELS["mobilenet_v1_conv_224"] = _spec(  # Table 4: full convolutions instead of separable
    "mobilenet_v1_conv_224", "mobilenet_v1", 224, {"block": "full"}, ("block",),
    _paper("4", 71.7, 4866, 29.3))
MODELS["mobilenet_v1_shallow_224"] = _spec(  # Table 5: the five 14x14x512 blocks removed
    "mobilenet_v1_shallow_224", "mobilenet_v1", 224,
    {"blocks": [list(r) for r in V1_SHALLOW_BLOCKS]}, ("blocks",), _paper("5", 65.3, 307, 2.9))

# MobileNetV2's Table 4 (the seeds' slides): the other grid points appear only in its Figure 5.
_PAPER_V2 = {
    (1.0, 224): _paper("V2: 4", 72.0, 300, 3.4),
    (1.4, 224): _paper("V2: 4", 74.7, 585, 6.9),
}
# TF-Slim's released MobileNetV2 checkpoints (research/slim/nets/mobilenet/README.md, "Mobilenet
# V2 Imagenet Checkpoints"), top-1 %: every registered V2 variant has one.
_RELEASED_TOP1_V2 = {
    (1.4, 224): 75.0, (1.3, 224): 74.4,
    (1.0, 224): 71.8, (1.0, 192): 70.7, (1.0, 160): 68.8, (1.0, 128): 65.3, (1.0, 96): 60.3,
    (0.75, 224): 69.8, (0.75, 192): 68.7, (0.75, 160): 66.4, (0.75, 128): 63.2, (0.75, 96): 58.8,
    (0.5, 224): 65.4, (0.5, 192): 63.9, (0.5, 160): 61.0, (0.5, 128): 57.7, (0.5, 96): 51.2,
    (0.35, 224): 60.3, (0.35, 192): 58.2, (0.35, 160): 55.7, (0.35, 128): 50.8, (0.35, 96): 45.5,
}
#: Keras Applications' MobileNetV2 grid; the paper adds 1.3 and 1.4, at 224 only.
V2_WIDTH_MULTS = (1.0, 0.75, 0.5, 0.35)
V2_RESOLUTIONS = (224, 192, 160, 128, 96)
_add_grid("mobilenet_v2", [*((a, r) for a in V2_WIDTH_MULTS for r in V2_RESOLUTIONS),
                           (1.3, 224), (1.4, 224)], _PAPER_V2, _RELEASED_TOP1_V2)


# ShuffleNet V1 (Zhang et al., 2018). Top-1 is 100 minus the error the ShuffleNet paper prints:
# its Table 2 (1x, 0.5x, 0.25x for every g, with channel shuffle) and Table 5 (1.5x and 2x, g = 3;
# the slides' Table 4 prints the same 71.5 and 73.7 with 3.4M and 5.4M parameters). Mult-Adds: Table
# 1's per-g complexity at 1x, Table 2's one figure per scale at 0.5x and 0.25x, Table 5's at 1.5x
# and 2x. The paper is not among the seeds: these are its arXiv v2 figures.
_SN_TABLE2_ERR = {1.0: (140, {1: 33.6, 2: 32.7, 3: 32.6, 4: 32.8, 8: 32.4}),
                  0.5: (38, {1: 45.1, 2: 44.4, 3: 43.2, 4: 41.6, 8: 42.3}),
                  0.25: (13, {1: 57.1, 2: 56.8, 3: 55.0, 4: 54.2, 8: 52.7})}
_SN_TABLE1_MADDS = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}  # Table 1's "Complexity" row
_PAPER_SN = {
    **{(g, s, 224): _paper("SN: 1, 2" if s == 1.0 else "SN: 2", round(100 - err, 1),
                           _SN_TABLE1_MADDS[g] if s == 1.0 else madds, None)
       for s, (madds, errs) in _SN_TABLE2_ERR.items() for g, err in errs.items()},
    (3, 1.5, 224): _paper("SN: 5; V2: 4", 71.5, 292, 3.4),
    (3, 2.0, 224): _paper("SN: 5; V2: 4", 73.7, 524, 5.4),
}
# Megvii's reference checkpoints (github.com/megvii-model/ShuffleNet-Series, ShuffleNetV1/README.md),
# top-1 = 100 - their top-1 error.
_RELEASED_TOP1_SN = {(3, 2.0, 224): 74.1, (8, 2.0, 224): 72.9, (3, 1.5, 224): 71.6,
                     (8, 1.5, 224): 71.0, (3, 1.0, 224): 67.8, (8, 1.0, 224): 68.0,
                     (3, 0.5, 224): 57.3, (8, 0.5, 224): 58.8}
#: ShuffleNet's scale factors s (0.25-2 in its paper) and group counts g (Table 1's columns).
SHUFFLENET_SCALES = (0.25, 0.5, 1.0, 1.5, 2.0)
SHUFFLENET_GROUPS = (1, 2, 3, 4, 8)
SHUFFLENET_RESOLUTIONS = (224, 160, 128)
for _g in SHUFFLENET_GROUPS:  # every g at 224 (Table 2), g = 3 (the paper's default) also lower
    _add_grid("shufflenet_v1", [(s, r) for s in SHUFFLENET_SCALES
                                for r in (SHUFFLENET_RESOLUTIONS if _g == 3 else (224,))],
              {k[1:]: v for k, v in _PAPER_SN.items() if k[0] == _g},
              {k[1:]: v for k, v in _RELEASED_TOP1_SN.items() if k[0] == _g},
              prefix=f"shufflenet_v1_g{_g}", groups=_g)


#: timm's names of the same architectures (timm's ``mobilenetv1_100`` is our 1.0 MobileNet-224).
TIMM_NAMES = {"mobilenetv1_100": "mobilenet_v1_1.0_224",
              **{f"mobilenetv2_{round(a * 100):03d}": f"mobilenet_v2_{a}_224"
                 for a in (0.35, 0.5, 0.75, 1.0, 1.4)}}


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (default: all), in registry order."""
    return [n for n in MODELS if fnmatch.fnmatch(n, pattern)]


def register_builder(arch: str, builder: Callable[[ModelConfig], nn.Module], kind: str,
                     config_class: type[ModelConfig]) -> None:
    """Register a task model: ``builder(config)`` makes a fresh model from the ``config`` that
    model stores, a ``config_class`` whose ``arch`` is ``arch``; ``kind`` is one of ``KINDS``."""
    check_choice("kind", kind, KINDS)
    BUILDERS[arch] = TaskModel(builder, kind, config_class)


def arch_name(arch: str) -> str:
    """``"v1"``/``"v2"`` (or a key of ``ARCHS``) -> the ``ARCHS`` key; ``ValueError`` otherwise."""
    if arch in ARCHS:
        return arch
    if arch not in ARCH_ALIASES:
        raise ValueError(f"--arch must be one of {sorted(ARCH_ALIASES)}, got {arch!r}")
    return ARCH_ALIASES[arch]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model (or of timm's name for it, ``TIMM_NAMES``).

    Raises:
        ValueError: for an unknown name, suggesting the nearest registered names, closest first.
    """
    name = TIMM_NAMES.get(name, name)
    if name not in MODELS:
        close = difflib.get_close_matches(name, [*MODELS, *TIMM_NAMES], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (`mobilenets models` lists all "
                         f"{len(MODELS)})")
    return MODELS[name]


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


class _SkipInitOnMeta(torch.overrides.TorchFunctionMode):
    """Skip in-place initialisers (``normal_``, ``zero_``, ...) of meta tensors: they hold no
    values, and torch's meta ``normal_`` imports its compiler (seconds) on first use."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        t = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
        if (name.endswith("_") and not name.endswith("__") and isinstance(t, torch.Tensor)
                and t.is_meta):
            return t
        return func(*args, **kwargs)


@contextmanager
def meta_device() -> Iterator[None]:
    """Build models on the meta device: shapes without memory (their initialisers skipped)."""
    with torch.device("meta"), _SkipInitOnMeta():
        yield


def build_checked(factory: Callable[[], nn.Module], what: str) -> nn.Module:
    """``factory()``, after a build on the meta device (no memory) has shown that its weights fit
    in the memory available (``resources.check_fits``).

    Args:
        factory: Builds the model.
        what: The model's size parameters for the message, e.g. ``"width_mult 1000"``.

    Raises:
        ValueError: naming ``what`` and the memory it would need, before anything is allocated.
    """
    from mobilenets.resources import check_fits

    if torch.get_default_device().type != "meta":
        with meta_device():
            trial = factory()
        params = sum(p.numel() for p in trial.parameters())
        check_fits(model_bytes(trial), f"a model of {what} ({params:.3g} parameters)",
                   "lower width_mult (or the class count)")
    return factory()


def _size_args(config: ModelConfig) -> str:
    shown = [f"{k} {getattr(config, k)!r}" for k in ("width_mult", "num_classes")
             if hasattr(config, k)]
    return ", ".join([*shown, f"name {config.name!r}" if config.name else f"arch {config.arch!r}"])


def variant_name(model: str, width_mult: float | None = None,
                 resolution: int | None = None) -> str:
    """The registry's name for ``model`` at another width or input size, so that every command
    names a model the same way: ``{arch}_{alpha}_{resolution}``, as the registered variants.

    Args:
        model: A registered name (or timm's), e.g. ``"mobilenet_v1_1.0_224"``.
        width_mult: Alpha, if not the model's. Default: the model's.
        resolution: Input size, if not the model's. Default: the model's.

    Returns:
        E.g. ``"mobilenet_v1_1.0_64"`` for 1.0 MobileNet trained at 64x64, ``"mobilenet_v1_0.5_160"``
        (registered), ``"mobilenet_v1_conv_32"`` for the full-convolution baseline at 32x32 or
        ``"shufflenet_v1_g3_1.5_32"`` (ShuffleNet's names keep their group count).

    Example:
        >>> variant_name("mobilenet_v1_1.0_224", resolution=64)
        'mobilenet_v1_1.0_64'
        >>> variant_name("mobilenet_v2_1.0_224", width_mult=0.35, resolution=96)
        'mobilenet_v2_0.35_96'
    """
    spec = get_spec(model)
    res = int(resolution or spec.resolution)
    if "width_mult" not in spec.name_fields:  # the ablation baselines: their name without the size
        base = spec.name.rsplit("_", 1)[0]
        return f"{base}_{res}" if width_mult in (None, 1.0) else f"{base}_{float(width_mult)}_{res}"
    alpha = float(spec.config.width_mult if width_mult is None else width_mult)
    return f"{spec.name.rsplit('_', 2)[0]}_{alpha}_{res}"  # the grid's prefix: arch (and g)


def config_name(config: ClassifierConfig) -> str:
    """``variant_name`` of a classifier's ``config`` (``model.config``: its ``name`` or ``arch``,
    ``width_mult`` and ``resolution``), e.g. ``"mobilenet_v1_1.0_64"``."""
    if config.arch == "shufflenet_v1" and not config.name:  # any g, registered or not
        return f"shufflenet_v1_g{config.groups}_{float(config.width_mult)}_{config.input_size}"
    base = config.name or f"{config.arch}_1.0_224"
    return variant_name(base, config.width_mult, config.resolution)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered variant, freshly initialised.

    Args:
        name: A name from ``list_models()``, e.g. ``"mobilenet_v1_0.5_160"``.
        **overrides: Constructor arguments that replace the variant's (``num_classes``,
            ``dropout``, ``activation``, ...).

    Returns:
        The model; ``model.config.resolution`` holds the variant's input size.

    Raises:
        TypeError: for an override that is not a field of the variant's config.
    """
    return build_from_config(get_spec(name).config.replace(**overrides))


def arch_of(config: Mapping) -> str | None:
    """The ``arch`` a config dict stored in a file names (files written before task models stored
    one name theirs by ``detector`` or ``head``)."""
    for key in ("arch", "detector"):
        if key in config:
            return config[key] if isinstance(config[key], str) else None
    return "embedding_net" if config.get("head") == "embedding" else None


def kind_of(arch: str | None) -> str | None:
    """The kind (``KINDS``) of an architecture, or None for an unknown one."""
    if arch in ARCHS:
        return "classifier"
    if arch in TASK_MODULES and arch not in BUILDERS:
        importlib.import_module(TASK_MODULES[arch])
    return BUILDERS[arch].kind if arch in BUILDERS else None


def config_class(arch: str | None) -> type[ModelConfig]:
    """The config class of an architecture.

    Raises:
        ValueError: for an unknown ``arch``, listing the known ones.
    """
    if kind_of(arch) is None:
        known = sorted({*ARCHS, *TASK_MODULES, *BUILDERS})
        raise ValueError(f"config names unknown arch {arch!r}; known: {', '.join(known)}")
    return ARCHS[arch].config_class if arch in ARCHS else BUILDERS[arch].config_class


def config_from_dict(data: Mapping, source: str = "config") -> ModelConfig:
    """The typed config a model file stores as JSON (``ModelConfig.to_dict``), files written
    before configs were typed included: its ``arch`` picks the class, absent fields take their
    defaults, nested configs (a task model's ``backbone``) are read the same way.

    Args:
        data: The config dict.
        source: What it came from (a file name), for the messages.

    Raises:
        ValueError: naming ``source``, for an unknown ``arch``, unknown fields or missing required
            ones.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: its model config is a {type(data).__name__}, not a JSON object")
    arch = arch_of(data)
    try:
        cls = config_class(arch)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    data = {**data, "arch": arch}
    for key in cls.NESTED:
        if isinstance(data.get(key), Mapping):
            data[key] = config_from_dict(data[key], f"{source} ({key})")
    return cls.from_dict(data, source)


def build_from_config(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of ``config`` (a classifier of ``ARCHS`` or a task model of
    ``BUILDERS``), whose own ``config`` equals it.

    Raises:
        ValueError: for a config that names no known architecture, or a bad value.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig (config_from_dict reads a dict), got "
                        f"{type(config).__name__}")
    config_class(config.arch)  # a known arch, or a clear error
    what = _size_args(config)
    if config.arch not in ARCHS:
        return build_checked(lambda: BUILDERS[config.arch].build(config), what)
    model = build_checked(lambda: ARCHS[config.arch](**config.model_kwargs()), what)
    model.config.resolution, model.config.name = config.resolution, config.name
    return model


def load_model(path: str | os.PathLike, kind: str | None = None, **overrides) -> nn.Module:
    """Rebuild and load any model file this package writes (``mobilenets train``, ``convert``,
    ``detect train``, ``segment train``, ``embeddings train``, ...).

    Args:
        path: The ``.safetensors`` file.
        kind: If given, the kind of model expected (``"classifier"``, ``"detector"``,
            ``"segmenter"`` or ``"embedding"``); another kind is an error naming the file.
        **overrides: Config entries to change that do not alter weight shapes (e.g.
            ``dropout``, ``output_stride``).

    Returns:
        The model, in eval mode, with ``model.metadata``: what the file stores beside the
        weights (``class_names``, ``train_config``, ...).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is not one of ours, is another kind of model, its
            config is wrong or asks for more memory than there is (refused before the model is
            built), or its weights do not fit its config.
    """
    stored, state, extra = read_model_file(path)
    if kind is not None:
        check_choice("kind", kind, KINDS)
        found = kind_of(arch_of(stored))
        if found != kind:
            raise ValueError(f"{path} holds a {found or 'unknown'} model "
                             f"({arch_of(stored)!r}), not a {kind}")
    config = config_from_dict(stored, str(path))
    try:
        model = build_from_config(config.replace(**overrides))
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: its model config does not describe a model this package "
                         f"builds: {e}") from None
    load_state_dict_checked(model, state, source=str(path))
    model.metadata = extra
    return model.eval()
