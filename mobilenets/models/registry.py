"""The registry of named variants: it drives the CLI, the tests and the README's model table."""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field

from torch import nn

from mobilenets.models.mobilenet_v1 import V1_SHALLOW_BLOCKS, MobileNetV1
from mobilenets.models.mobilenet_v2 import MobileNetV2

#: Model classes by the ``arch`` key stored in every model's config.
ARCHS: dict[str, type[nn.Module]] = {"mobilenet_v1": MobileNetV1, "mobilenet_v2": MobileNetV2}
#: The short names of the command line's ``--arch`` flags (profile, sweep, pick).
ARCH_ALIASES = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}


@dataclass(frozen=True)
class ModelSpec:
    """One named variant.

    Attributes:
        name: Registry name, e.g. ``mobilenet_v1_0.75_160`` or ``mobilenet_v2_1.4_224``.
        arch: Key into ``ARCHS``.
        resolution: Default input size (square), which sets the resolution multiplier rho.
        kwargs: Constructor arguments of the arch.
        paper: What the paper (V1's, or MobileNetV2's for ``mobilenet_v2_*``) prints for it on
            ImageNet, where it does:
            ``{"table": ..., "top1": %, "madds_m": millions, "params_m": millions}``.
        released_top1: ImageNet top-1 (%) of the released TF-Slim checkpoint of the same variant
            (``research/slim/nets/mobilenet_v1.md``, release 2018-02-22; for MobileNetV2
            ``research/slim/nets/mobilenet/README.md``), where there is one: the only source for
            the grid points the papers show as dots in their figures.
    """

    name: str
    arch: str
    resolution: int
    kwargs: dict = field(default_factory=dict)
    paper: dict | None = None
    released_top1: float | None = None


def _paper(table: str, top1: float, madds_m: float, params_m: float) -> dict:
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


def _add_grid(arch: str, points, paper: dict, released: dict | None = None) -> None:
    """Register ``{arch}_{alpha}_{resolution}`` for each (alpha, resolution) point."""
    for alpha, res in points:
        name = f"{arch}_{alpha}_{res}"
        MODELS[name] = ModelSpec(name, arch, res, {"width_mult": alpha}, paper.get((alpha, res)),
                                 (released or {}).get((alpha, res)))


_add_grid("mobilenet_v1", [(a, r) for a in WIDTH_MULTS for r in RESOLUTIONS], _PAPER_V1,
          _RELEASED_TOP1)

MODELS["mobilenet_v1_conv_224"] = ModelSpec(  # Table 4: full convolutions instead of separable
    "mobilenet_v1_conv_224", "mobilenet_v1", 224, {"block": "full"},
    _paper("4", 71.7, 4866, 29.3))
MODELS["mobilenet_v1_shallow_224"] = ModelSpec(  # Table 5: the five 14x14x512 blocks removed
    "mobilenet_v1_shallow_224", "mobilenet_v1", 224,
    {"blocks": [list(r) for r in V1_SHALLOW_BLOCKS]}, _paper("5", 65.3, 307, 2.9))

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


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (default: all), in registry order."""
    return [n for n in MODELS if fnmatch.fnmatch(n, pattern)]


def arch_name(arch: str) -> str:
    """``"v1"``/``"v2"`` (or a key of ``ARCHS``) -> the ``ARCHS`` key; ``ValueError`` otherwise."""
    if arch in ARCHS:
        return arch
    if arch not in ARCH_ALIASES:
        raise ValueError(f"--arch must be one of {sorted(ARCH_ALIASES)}, got {arch!r}")
    return ARCH_ALIASES[arch]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model.

    Raises:
        ValueError: for an unknown name, suggesting the nearest registered names.
    """
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (`mobilenets models` lists all "
                         f"{len(MODELS)})")
    return MODELS[name]


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered variant, freshly initialised.

    Args:
        name: A name from ``list_models()``, e.g. ``"mobilenet_v1_0.5_160"``.
        **overrides: Constructor arguments that replace the variant's (``num_classes``,
            ``dropout``, ``activation``, ...).

    Returns:
        The model; ``model.config["resolution"]`` holds the variant's input size.
    """
    spec = get_spec(name)
    model = ARCHS[spec.arch](**{**spec.kwargs, **overrides})
    model.config["resolution"] = spec.resolution
    model.config["name"] = name
    return model


def build_from_config(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` dict (as stored by ``checkpoint.save_model``)."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in ARCHS:
        raise ValueError(f"config names unknown arch {arch!r}; known: {sorted(ARCHS)}")
    extra = {k: config.pop(k) for k in ("resolution", "name") if k in config}
    model = ARCHS[arch](**config)
    model.config.update(extra)
    return model
