"""A model's configuration: one typed record per architecture, stored in model files as the JSON
object files have always held (files written before the records still load, and files written
now keep that shape)."""
import inspect
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import mobilenets as M
from mobilenets.models.mobilenet_v1 import MobileNetV1Config
from mobilenets.models.registry import ARCHS, build_from_config, config_from_dict

# The config dict the code before typed configs wrote for
# create_model("mobilenet_v1_0.25_128", num_classes=3): every constructor argument by name, then
# the registry's resolution and name (mobilenet_v1.py and registry.create_model at 2cad70d).
OLD_V1 = {"arch": "mobilenet_v1", "width_mult": 0.25, "num_classes": 3, "in_channels": 3,
          "dropout": 0.001, "include_top": True, "block": "separable",
          "blocks": [[64, 1, 1], [128, 2, 2], [256, 2, 2], [512, 6, 2], [1024, 2, 2]],
          "activation": "relu", "padding": "symmetric", "bn_eps": 1e-5, "bn_momentum": 0.1,
          "output_stride": 32, "background_class": False, "min_channels": 8,
          "resolution": 128, "name": "mobilenet_v1_0.25_128"}


def write_old_file(path, model, config: dict) -> None:
    """A model file as the code before typed configs wrote it: the config dict as JSON in the
    safetensors metadata (no checksum, as the first files had none)."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "mobilenets", "version": "1",
                                           "config": json.dumps(config), "extra": "{}"})


def stored_config(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["config"])


def test_a_file_written_with_the_old_dict_loads_to_the_same_config(tmp_path):
    model = M.create_model("mobilenet_v1_0.25_128", num_classes=3).eval()
    path = tmp_path / "old.safetensors"
    write_old_file(path, model, OLD_V1)
    loaded = M.load_model(path)
    assert loaded.config == MobileNetV1Config(width_mult=0.25, num_classes=3, resolution=128,
                                              name="mobilenet_v1_0.25_128")
    assert loaded.config.to_dict() == OLD_V1  # the same dict back, key for key
    x = torch.randn(1, 3, 128, 128)
    assert torch.equal(loaded(x), model(x))


def test_old_files_without_later_fields_or_with_nulls_load_with_the_defaults(tmp_path):
    # A V1 file from before min_channels existed, and no resolution or name (built by its
    # constructor): the missing fields take the config's defaults.
    model = M.MobileNetV1(0.25, num_classes=3).eval()
    old = {k: v for k, v in OLD_V1.items() if k not in ("min_channels", "resolution", "name")}
    write_old_file(tmp_path / "v1.safetensors", model, old)
    config = M.load_model(tmp_path / "v1.safetensors").config
    assert (config.min_channels, config.resolution, config.name) == (8, None, None)
    assert config.input_size == 224  # the paper's ImageNet input where none is recorded
    # ShuffleNet wrote blocks null (Table 1's for its groups).
    sn = M.ShuffleNetV1(0.25, groups=2, num_classes=3)
    old_sn = {"arch": "shufflenet_v1", "width_mult": 0.25, "groups": 2, "num_classes": 3,
              "in_channels": 3, "dropout": 0.0, "include_top": True, "blocks": None,
              "activation": "relu", "padding": "symmetric", "bn_eps": 1e-5, "bn_momentum": 0.1,
              "output_stride": 32, "background_class": False, "zero_init_residual": True}
    write_old_file(tmp_path / "sn.safetensors", sn, old_sn)
    assert M.load_model(tmp_path / "sn.safetensors").config == sn.config
    M.save_model(sn, tmp_path / "sn_new.safetensors")
    assert stored_config(tmp_path / "sn_new.safetensors") == old_sn  # null blocks kept, as then


def test_old_task_model_files_load(tmp_path):
    from mobilenets.tasks.detection.model import build_detector
    from mobilenets.tasks.faces.model import EmbeddingNet

    # Detectors first stored their kind under "detector" only, the backbone without its name
    # and resolution; embedding nets had no arch but head "embedding", and a null resolution
    # when their backbone recorded none.
    det = build_detector("ssd", "v1", 0.25, num_classes=2, resolution=128)
    backbone = {k: v for k, v in OLD_V1.items() if k not in ("resolution", "name")}
    old_det = {"detector": "ssd", "backbone": {**backbone, "num_classes": 1000,
                                               "include_top": False},
               "num_classes": 2, "resolution": 128}
    write_old_file(tmp_path / "det.safetensors", det, old_det)
    config = M.load_model(tmp_path / "det.safetensors", kind="detector").config
    assert config == det.config and (config.arch, config.detector) == ("ssd", "ssd")
    assert (config.min_scale, config.max_scale) == (0.2, 0.95)  # the TF Object Detection API's
    emb = EmbeddingNet(M.MobileNetV1(0.25, include_top=False), 16)
    old_emb = {"head": "embedding", "embedding_dim": 16, "resolution": None,
               "backbone": {**backbone, "num_classes": 1000, "include_top": False}}
    write_old_file(tmp_path / "emb.safetensors", emb, old_emb)
    assert M.load_model(tmp_path / "emb.safetensors", kind="embedding").config == emb.config


def test_new_files_keep_the_old_dict_shape(tmp_path):
    # What the code before typed configs reads back: the constructor's arguments by name, with
    # resolution and name beside them (its build_from_config popped those two and passed the
    # rest to the constructor), and no null resolution or name.
    model = M.create_model("mobilenet_v1_0.25_128", num_classes=3)
    M.save_model(model, tmp_path / "m.safetensors")
    assert stored_config(tmp_path / "m.safetensors") == OLD_V1
    for cls in ARCHS.values():
        stored = cls(num_classes=2).config.to_dict()
        assert "resolution" not in stored and "name" not in stored
        params = set(inspect.signature(cls).parameters)
        assert set(stored) - {"arch"} <= params, cls


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_constructors_defaults_are_the_configs(arch):
    cls = ARCHS[arch]
    defaults = cls.config_class()
    for name, p in inspect.signature(cls).parameters.items():
        if name != "norm_layer":
            assert p.default == getattr(defaults, name), name
    assert cls().config == defaults


def test_every_registered_variant_round_trips_through_its_dict():
    for name in M.list_models("*_224"):
        config = M.get_spec(name).config
        assert config_from_dict(config.to_dict()) == config
    model = M.create_model("shufflenet_v1_g8_0.5_224", num_classes=4)
    assert build_from_config(model.config).config == model.config
    assert model.config is not M.get_spec("shufflenet_v1_g8_0.5_224").config  # not shared


@pytest.mark.parametrize("change, named", [
    ({"widht_mult": 0.5}, "widht_mult"),  # a misspelt field
    ({"depth": 3, "stem": 8}, "depth, stem"),
])
def test_unknown_fields_give_one_clear_error_naming_the_file(tmp_path, refused, change, named):
    path = tmp_path / "bad.safetensors"
    write_old_file(path, M.create_model("mobilenet_v1_0.25_128", num_classes=3),
                   {**OLD_V1, **change})
    with pytest.raises(ValueError) as e:
        M.load_model(path)
    assert str(path) in str(e.value) and f"unknown field{'s' if ',' in named else ''} {named}" \
        in str(e.value)
    refused(["export", path, "--output", tmp_path / "x.onnx"], path, named)


def test_missing_fields_give_one_clear_error_naming_the_file(tmp_path, refused):
    from mobilenets.tasks.detection.model import build_detector

    det = build_detector("ssd", "v1", 0.25, num_classes=2, resolution=128)
    path = tmp_path / "det.safetensors"
    write_old_file(path, det, {"arch": "ssd", "num_classes": 2})
    with pytest.raises(ValueError, match="no backbone, resolution") as e:
        M.load_model(path)
    assert str(path) in str(e.value)
    refused(["detect", "eval", path, tmp_path / "instances.json"], path, "no backbone, resolution")


def test_overrides_and_replace_are_checked_against_the_fields(tmp_path):
    model = M.create_model("mobilenet_v1_0.25_128", num_classes=3)
    with pytest.raises(TypeError, match="width"):
        M.create_model("mobilenet_v1_0.25_128", width=0.5)
    with pytest.raises(AttributeError):
        model.config.widht_mult = 0.5  # a typo is an error, not a new key
    path = M.save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=str(path)):
        M.load_model(path, widht_mult=0.5)
    assert M.load_model(path, dropout=0.5).config.dropout == 0.5
