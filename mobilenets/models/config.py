"""A model's configuration: one typed record per architecture, as nanoGPT's ``GPTConfig``.

Every model this package builds carries one in ``model.config``: everything needed to rebuild
it (``registry.build_from_config``), with each field's one default. ``ModelConfig`` holds what
every model has (``arch``, ``resolution``, ``name``), ``ClassifierConfig`` what MobileNet V1, V2
and ShuffleNet V1 share; each architecture's config (``MobileNetV1Config``, ``DetectorConfig``,
...) lives beside its model and sets its own defaults.

A model file stores ``to_dict()`` as JSON (``modelfile.save_model``), the shape files have
always had, and ``registry.config_from_dict`` reads it back, files written before these records
included.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Mapping, TypeVar

C = TypeVar("C", bound="ModelConfig")
#: ``ModelConfig``'s fields that a model file leaves out when they are None.
_OPTIONAL = ("resolution", "name")


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """What every model's config holds.

    Attributes:
        arch: The architecture: a key of ``registry.ARCHS`` (a classifier) or of
            ``registry.BUILDERS`` (a task model).
        resolution: The square input size the model was made or trained for, which sets the
            resolution multiplier rho. Default None: not recorded (a model built by its
            constructor, or converted); ``input_size`` is then 224.
        name: The registry name it was made from (``create_model``), if any. Default None.
    """

    #: Fields holding another model's config (a task model's ``backbone``), read back as one.
    NESTED: ClassVar[tuple[str, ...]] = ()

    arch: str
    resolution: int | None = None
    name: str | None = None

    @property
    def input_size(self) -> int:
        """The square input size to run the model at: ``resolution``, or where none is recorded
        224 (the paper's ImageNet input)."""
        return self.resolution or 224

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (nested configs as dicts), as model files store it:
        an unrecorded (None) ``resolution`` or ``name`` is left out, as files have always left
        them out (absent and null read back the same)."""
        return dataclasses.asdict(self, dict_factory=lambda items: {
            k: v for k, v in items if not (v is None and k in _OPTIONAL)})

    def replace(self: C, **changes) -> C:
        """A copy with some fields changed (``dataclasses.replace``).

        Raises:
            TypeError: for a name that is not a field.
        """
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls: type[C], data: Mapping, source: str = "config") -> C:
        """The config ``data`` describes (nested configs already read, ``registry.config_from_dict``).

        A field absent from ``data``, or null there, takes its default: files written before the
        field existed still load. Derived fields (``init=False``, e.g. a detector's ``detector``)
        are recomputed, not read.

        Raises:
            ValueError: naming ``source``, every unknown field and every missing required one.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        has_default = {name for name, f in known.items()
                       if f.default is not dataclasses.MISSING
                       or f.default_factory is not dataclasses.MISSING}
        given = {k: v for k, v in data.items()
                 if not (k in known and (not known[k].init or (v is None and k in has_default)))}
        unknown = sorted(k for k in given if k not in known)
        missing = sorted(k for k, f in known.items()
                         if f.init and k not in has_default and k not in given)
        if unknown or missing:
            problems = ([f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"]
                        if unknown else [])
            problems += [f"no {', '.join(missing)}"] if missing else []
            fields = ", ".join(k for k, f in known.items() if f.init)
            raise ValueError(f"{source}: its {data.get('arch') or cls.__name__} config has "
                             f"{' and '.join(problems)} (fields: {fields})")
        return cls(**given)


@dataclass(kw_only=True, slots=True)
class ClassifierConfig(ModelConfig):
    """What the configs of MobileNet V1, V2 and ShuffleNet V1 share: the arguments of their
    constructors (see ``MobileNetV1`` for each), with the defaults all three have. ``dropout``,
    ``activation`` and ``blocks`` take each architecture's own default.

    Each architecture's config (``MobileNetV1Config``, ``MobileNetV2Config``,
    ``ShuffleNetV1Config``) adds its own arguments; ``model.config`` holds one,
    ``registry.build_from_config(config)`` builds its model and ``save_model`` stores it.

    Example:
        >>> from mobilenets import MobileNetV1Config
        >>> from mobilenets.models.registry import build_from_config
        >>> config = MobileNetV1Config(width_mult=0.5, num_classes=10, resolution=160)
        >>> build_from_config(config).config == config
        True
    """

    width_mult: float = 1.0
    num_classes: int = 1000
    in_channels: int = 3
    dropout: float
    include_top: bool = True
    blocks: list[list[int]] | None
    activation: str
    padding: str = "symmetric"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    output_stride: int = 32
    background_class: bool = False

    def model_kwargs(self) -> dict:
        """The model constructor's arguments: every field but ``ModelConfig``'s."""
        shared = {f.name for f in dataclasses.fields(ModelConfig)}
        return {k: v for k, v in self.to_dict().items() if k not in shared}



@dataclass(kw_only=True, slots=True)
class TaskConfig(ModelConfig):
    """What the configs of the task models (detectors, DeepLabv3, the embedding net) share: the
    config of the MobileNet they are built on.

    Attributes:
        backbone: The backbone's config.
    """

    NESTED: ClassVar[tuple[str, ...]] = ("backbone",)

    backbone: ClassifierConfig

    @property
    def in_channels(self) -> int:
        """The input's channels: the backbone's."""
        return self.backbone.in_channels
