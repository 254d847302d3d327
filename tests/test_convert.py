"""Weight import: converted models reproduce the timm, torchvision and Keras reference models'
logits (MobileNet V1 from timm and Keras, MobileNetV2 from torchvision and Keras).

The references are built offline (timm ``pretrained=False``, torchvision and Keras
``weights=None``) with
randomised BatchNorm parameters whose running statistics are calibrated on random images, so that
activations neither vanish nor saturate (fresh BN statistics would make every test trivial), then
saved in each file format, converted and compared in eval mode on random inputs. The Keras
references and the comparison helpers are in references.py (test_hostile uses them too).
"""
import h5py
import numpy as np
import pytest
import timm
import torch
from references import (FEATURE_MAP_TOL, TOL, assert_meaningful, keras, keras_forward,
                        keras_reference, max_diff)  # keras: imported there, on the torch backend
from safetensors.torch import save_file

from mobilenets import load_model
from mobilenets.deploy.convert import (convert, detect_source, load_timm_mobilenet_v1,
                                       load_torchvision_mobilenet_v2)
from mobilenets.deploy.convert_keras import (keras_arch, load_keras_mobilenet,
                                             load_keras_mobilenet_v2)
from mobilenets.models.modelfile import read_model_file
from mobilenets.models.registry import build_from_config

# Keras' torch backend converts tensors with np.array(), which NumPy 2 flags; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# ----------------------------------------------------------------------------------------- Keras

def _write_keras2_weights_h5(model, path) -> None:
    """A weights-only legacy .h5 laid out as Keras 2's ``save_weights`` writes it (as the files
    Keras Applications publishes are): ``layer_names`` / ``weight_names`` attributes, ``:0``
    suffixes and DepthwiseConv2D's ``depthwise_kernel``."""
    layers = [l for l in model.layers if l.weights]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [l.name.encode() for l in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            group = f.create_group(layer.name)
            names = []
            for w in layer.weights:
                var = w.name
                if isinstance(layer, keras.layers.DepthwiseConv2D) and var == "kernel":
                    var = "depthwise_kernel"
                name = f"{layer.name}/{var}:0"
                group.create_dataset(name, data=keras.ops.convert_to_numpy(w))
                names.append(name.encode())
            group.attrs["weight_names"] = names


def _save_keras(model, fmt: str, tmp_path):
    if fmt == "keras":
        path = tmp_path / "m.keras"
        model.save(path)
    elif fmt == "weights.h5":
        path = tmp_path / "m.weights.h5"
        model.save_weights(path)
    elif fmt == "full.h5":
        path = tmp_path / "m.h5"
        model.save(path)  # legacy HDF5 full model
    else:
        path = tmp_path / "m_keras2.h5"
        _write_keras2_weights_h5(model, path)
    return path


KERAS_CASES = [
    # alpha, resolution, file format, include_top, classes, background_class
    (0.25, 128, "keras", True, 1000, False),
    (0.5, 160, "weights.h5", True, 1000, False),
    (1.0, 224, "full.h5", True, 1000, False),
    (0.5, 128, "keras2_weights.h5", True, 1001, True),
    (0.25, 160, "weights.h5", False, None, False),
]


@pytest.mark.numerics
@pytest.mark.parametrize("alpha,res,fmt,include_top,classes,background", KERAS_CASES,
                         ids=[f"a{c[0]}-r{c[1]}-{c[2]}-{'top' if c[3] else 'notop'}"
                              f"{'-bg' if c[5] else ''}" for c in KERAS_CASES])
def test_keras_equivalence(alpha, res, fmt, include_top, classes, background, tmp_path):
    ref_model = keras_reference(alpha, res, include_top, classes or 1000)
    path = _save_keras(ref_model, fmt, tmp_path)
    kwargs = {"background_class": True} if background else {}
    model = load_keras_mobilenet(path, **kwargs)
    assert model.width_mult == alpha
    assert model.include_top == include_top
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))
    ref = keras_forward(ref_model, x)
    with torch.no_grad():
        out = model(x).numpy()
    if background:  # forward drops TF-Slim's background logit 0
        assert model.classifier.out_features == 1001 and out.shape == (2, 1000)
        ref = ref[:, 1:]
    assert out.shape == ref.shape
    assert_meaningful(ref)
    diff = max_diff(out, ref)
    print(f"keras {fmt} alpha={alpha} res={res}: max diff {diff:.2e}")
    if include_top:
        assert diff < TOL
    else:
        assert diff < FEATURE_MAP_TOL
        assert max_diff(out.mean(axis=(2, 3)), ref.mean(axis=(2, 3))) < TOL


@pytest.mark.numerics
def test_keras_padding_matters(tmp_path):
    """The equivalence tests can tell: symmetric padding gives clearly different logits."""
    ref_model = keras_reference(0.25, 128)
    model = load_keras_mobilenet(_save_keras(ref_model, "keras", tmp_path))
    wrong = build_from_config(model.config.replace(padding="symmetric")).eval()
    wrong.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert max_diff(wrong(x).numpy(), keras_forward(ref_model, x)) > 10 * TOL


# ------------------------------------------------------------------------------------------ timm

def _timm_reference(name: str, res: int, num_classes: int = 1000, seed: int = 0):
    """A timm model with random gamma/beta and running statistics calibrated on random images."""
    torch.manual_seed(seed)
    return _calibrated(timm.create_model(name, pretrained=False, num_classes=num_classes), res,
                       head=lambda m: m.classifier)


def _calibrated(model, res: int, head):
    """``model`` with random BN gamma/beta, running statistics calibrated on random images and a
    random bias in ``head(model)``, in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.2)
            bn.momentum = 1.0  # one training pass sets the running statistics to the batch's
        model.train()(torch.randn(4, 3, res, res))
        for bn in bns:
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
            bn.momentum = 0.1
        head(model).bias.normal_(0, 0.1)
    return model.eval()


def _check_against(ref_model, model, res, drop_background=False):
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ref_model(x).numpy()
        out = model(x).numpy()
    if drop_background:
        ref = ref[:, 1:]
    assert out.shape == ref.shape
    assert_meaningful(ref)
    return max_diff(out, ref)


@pytest.fixture(scope="module")
def timm100():
    return _timm_reference("mobilenetv1_100", 160)


@pytest.mark.numerics
@pytest.mark.parametrize("name,res,ext", [("mobilenetv1_100", 160, ".pth"),
                                          ("mobilenetv1_125", 128, ".safetensors")])
def test_timm_equivalence(name, res, ext, timm100, tmp_path):
    ref_model = timm100 if name == "mobilenetv1_100" else _timm_reference(name, res)
    path = tmp_path / f"{name}{ext}"
    if ext == ".pth":
        torch.save(ref_model.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in ref_model.state_dict().items()}, str(path))
    model = load_timm_mobilenet_v1(path)
    assert model.width_mult == {"mobilenetv1_100": 1.0, "mobilenetv1_125": 1.25}[name]
    assert model.config.activation == "relu6" and model.config.padding == "symmetric"
    diff = _check_against(ref_model, model, res)
    print(f"timm {name}{ext} res={res}: max diff {diff:.2e}")
    assert diff < TOL


@pytest.mark.numerics
def test_timm_wrapped_checkpoints(timm100, tmp_path):
    """A state dict passed directly, and timm training checkpoints wrapping it (DataParallel's
    ``module.`` prefix included)."""
    state = timm100.state_dict()
    assert _check_against(timm100, load_timm_mobilenet_v1(state), 160) < TOL
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "arch": "mobilenetv1_100", "state_dict": state}, path)
    assert _check_against(timm100, load_timm_mobilenet_v1(path), 160) < TOL
    wrapped = {"model": {f"module.{k}": v for k, v in state.items()}}
    assert _check_against(timm100, load_timm_mobilenet_v1(wrapped), 160) < TOL


@pytest.mark.numerics
def test_timm_1001_classes_background():
    """A 1001-way (TF-Slim) head: with background_class=True, logit 0 is dropped; without, it is
    an ordinary 1001-class model."""
    ref_model = _timm_reference("mobilenetv1_100", 128, num_classes=1001)
    state = ref_model.state_dict()
    model = load_timm_mobilenet_v1(state, background_class=True)
    assert model.num_classes == 1000 and model.classifier.out_features == 1001
    diff = _check_against(ref_model, model, 128, drop_background=True)
    print(f"timm 1001-class background: max diff {diff:.2e}")
    assert diff < TOL
    plain = load_timm_mobilenet_v1(state)
    assert plain.num_classes == 1001 and not plain.background_class
    assert _check_against(ref_model, plain, 128) < TOL


# --------------------------------------------------------------------------------------- errors

def test_shape_mismatch_lists_key(timm100):
    state = dict(timm100.state_dict())
    state["blocks.3.2.conv_pw.weight"] = torch.zeros(512, 500, 1, 1)
    with pytest.raises(ValueError) as e:
        load_timm_mobilenet_v1(state)
    msg = str(e.value)
    assert "blocks.3.2.conv_pw.weight" in msg and "features.8.pw.conv.weight" in msg
    assert "(512, 500, 1, 1)" in msg


def test_not_a_mobilenet_v1(timm100):
    state = {k: v for k, v in timm100.state_dict().items() if not k.startswith("blocks.3.5.")}
    with pytest.raises(ValueError, match=r"\[1, 2, 2, 5, 2\]"):
        load_timm_mobilenet_v1(state)
    with pytest.raises(ValueError, match="conv_stem"):
        load_timm_mobilenet_v1({"fc.weight": torch.zeros(3, 3)})


def test_keras_h5_not_a_mobilenet(tmp_path):
    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((4, 2), "float32"))
    with pytest.raises(ValueError, match="other.weights.h5"):
        load_keras_mobilenet(path)


@pytest.mark.parametrize("loader", [load_timm_mobilenet_v1, load_keras_mobilenet, convert])
def test_missing_file(loader, tmp_path):
    path = tmp_path / "nope.pth"
    args = (path, tmp_path / "out.safetensors") if loader is convert else (path,)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        loader(*args)


@pytest.mark.parametrize("name", ["junk.pth", "junk.safetensors", "junk.h5", "junk.keras"])
def test_corrupt_file(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(64) + b"not a model" * 10)
    loader = load_keras_mobilenet if name.endswith((".h5", ".keras")) else load_timm_mobilenet_v1
    with pytest.raises(ValueError, match=name):
        loader(path)
    with pytest.raises(ValueError, match=name):
        convert(path, tmp_path / "out.safetensors")


def test_truncated_keras_files(tmp_path):
    """Files that start right but are cut short (an interrupted download)."""
    for name, magic in (("cut.h5", b"\x89HDF\r\n\x1a\n"), ("cut.keras", b"PK\x03\x04")):
        path = tmp_path / name
        path.write_bytes(magic + b"\0" * 100)
        with pytest.raises(ValueError, match=name):
            load_keras_mobilenet(path)


# -------------------------------------------------------------------------------------- convert

@pytest.mark.numerics
def test_convert_round_trip(timm100, tmp_path):
    src = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in timm100.state_dict().items()}, str(src))
    assert detect_source(src) == "timm"
    dst = convert(src, tmp_path / "out" / "ours.safetensors")
    assert dst == tmp_path / "out" / "ours.safetensors" and dst.is_file()
    assert detect_source(dst) == "mobilenets"
    config, _, extra = read_model_file(dst)
    assert config["activation"] == "relu6" and config["width_mult"] == 1.0
    assert extra["source_format"] == "timm"
    model = load_model(dst)
    assert _check_against(timm100, model, 160) < TOL
    # Our own format converts to itself.
    again = convert(dst, tmp_path / "again.safetensors")
    assert _check_against(timm100, load_model(again), 160) < TOL
    with pytest.raises(ValueError, match="source"):
        convert(src, tmp_path / "x.safetensors", source="onnx")


@pytest.mark.numerics
def test_convert_keras_auto(tmp_path):
    ref_model = keras_reference(0.25, 128, seed=3)
    src = _save_keras(ref_model, "weights.h5", tmp_path)
    assert detect_source(src) == "keras"
    dst = convert(src, tmp_path / "k.safetensors")
    model = load_model(dst)
    assert model.config.padding == "keras" and model.config.bn_eps == 1e-3
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert max_diff(model(x).numpy(), keras_forward(ref_model, x)) < TOL


# ----------------------------------------------------------------------------------- MobileNetV2

def _torchvision_reference(width_mult: float, res: int, num_classes: int = 1000, seed: int = 0):
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult,
                                            num_classes=num_classes)
    return _calibrated(model, res, head=lambda m: m.classifier[1])


@pytest.mark.numerics
@pytest.mark.parametrize("width_mult,res,ext", [(0.5, 96, ".pth"), (1.4, 64, ".safetensors")])
def test_torchvision_v2_equivalence(width_mult, res, ext, tmp_path):
    ref_model = _torchvision_reference(width_mult, res, num_classes=10)
    path = tmp_path / f"mobilenet_v2{ext}"
    if ext == ".pth":
        torch.save(ref_model.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in ref_model.state_dict().items()}, str(path))
    assert detect_source(path) == "torchvision"
    model = load_torchvision_mobilenet_v2(path)
    assert model.width_mult == width_mult and model.num_classes == 10
    assert model.config.padding == "symmetric" and model.config.bn_eps == 1e-5
    diff = _check_against(ref_model, model, res)
    print(f"torchvision mobilenet_v2 width_mult={width_mult}{ext} res={res}: max diff "
          f"{diff:.2e}")
    assert diff < TOL
    # convert() finds the format itself and its output rebuilds the same model.
    dst = convert(path, tmp_path / "ours.safetensors")
    assert read_model_file(dst)[2]["source_format"] == "torchvision"
    assert _check_against(ref_model, load_model(dst), res) < TOL


def test_torchvision_v2_not_a_mobilenet_v2():
    state = _torchvision_reference(0.35, 32).state_dict()
    state["features.5.conv.1.0.weight"] = torch.zeros(3, 1, 3, 3)
    with pytest.raises(ValueError, match=r"features\.5\.dw\.conv\.weight <- features\.5\.conv\.1\."):
        load_torchvision_mobilenet_v2(state, width_mult=0.35)
    without_block = {k: v for k, v in state.items() if not k.startswith("features.5.")}
    with pytest.raises(ValueError, match="cannot infer width_mult"):
        load_torchvision_mobilenet_v2(without_block)
    with pytest.raises(ValueError, match="features.0.0.weight"):
        load_torchvision_mobilenet_v2({"conv_stem.weight": torch.zeros(8, 3, 3, 3)})


@pytest.fixture(scope="module")
def keras_v2():
    return keras_reference(0.35, 64, classes=10, app="MobileNetV2")


@pytest.mark.numerics
@pytest.mark.parametrize("fmt", ["keras", "weights.h5", "keras2_weights.h5"])
def test_keras_v2_equivalence(fmt, keras_v2, tmp_path):
    path = _save_keras(keras_v2, fmt, tmp_path)
    assert detect_source(path) == "keras" and keras_arch(path) == "mobilenet_v2"
    dst = convert(path, tmp_path / "ours.safetensors")  # picks load_keras_mobilenet_v2
    model = load_model(dst)
    assert model.config.arch == "mobilenet_v2" and model.width_mult == 0.35
    assert model.config.padding == "tf_same" and model.num_classes == 10
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = keras_forward(keras_v2, x)
    assert_meaningful(ref)
    with torch.no_grad():
        diff = max_diff(model.eval()(x).numpy(), ref)
    print(f"keras MobileNetV2 {fmt} alpha=0.35 res=64: max diff {diff:.2e}")
    assert diff < TOL
    # Symmetric padding gives clearly different logits: the comparison can tell.
    wrong = build_from_config(model.config.replace(padding="symmetric")).eval()
    wrong.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert max_diff(wrong(x).numpy(), ref) > 10 * TOL


@pytest.mark.numerics
def test_keras_v2_headless_legacy_h5(tmp_path):
    ref_model = keras_reference(0.5, 96, include_top=False, seed=2, app="MobileNetV2")
    path = _save_keras(ref_model, "full.h5", tmp_path)
    assert keras_arch(path) == "mobilenet_v2"
    model = load_keras_mobilenet_v2(path)
    assert not model.include_top and model.width_mult == 0.5
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    ref = keras_forward(ref_model, x)
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == ref.shape == (2, 1280, 3, 3)
    assert_meaningful(ref)
    diff = max_diff(out, ref)
    print(f"keras MobileNetV2 headless full.h5 alpha=0.5 res=96: max diff {diff:.2e}")
    assert diff < FEATURE_MAP_TOL
    assert max_diff(out.mean(axis=(2, 3)), ref.mean(axis=(2, 3))) < TOL
    with pytest.raises(ValueError, match="not a Keras Applications MobileNet:"):
        load_keras_mobilenet(path)  # the V1 loader names what is missing
