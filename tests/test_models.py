"""MobileNet V1 against Table 1, its options, and the registry."""
import os

import pytest
import torch
from torch import nn

import mobilenets as M
from mobilenets.models.layers import DepthwiseConv2d, small_map_depthwise, tf_same_padding
from mobilenets.models.mobilenet_v1 import V1_BLOCKS, scale_channels

# Table 1 of the paper, row by row: (type, stride, input channels, output channels, input size).
TABLE1 = [
    ("conv", 2, 3, 32, 224),
    ("dw", 1, 32, 32, 112), ("pw", 1, 32, 64, 112),
    ("dw", 2, 64, 64, 112), ("pw", 1, 64, 128, 56),
    ("dw", 1, 128, 128, 56), ("pw", 1, 128, 128, 56),
    ("dw", 2, 128, 128, 56), ("pw", 1, 128, 256, 28),
    ("dw", 1, 256, 256, 28), ("pw", 1, 256, 256, 28),
    ("dw", 2, 256, 256, 28), ("pw", 1, 256, 512, 14),
    *[r for _ in range(5) for r in (("dw", 1, 512, 512, 14), ("pw", 1, 512, 512, 14))],
    ("dw", 2, 512, 512, 14), ("pw", 1, 512, 1024, 7),
    ("dw", 1, 1024, 1024, 7), ("pw", 1, 1024, 1024, 7),  # Table 1 misprints this dw as s2
]


def conv_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_table1_layer_by_layer():
    model = M.MobileNetV1().eval()
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1]))
             for m in conv_layers(model)]
    model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    convs = conv_layers(model)
    assert len(convs) + 1 == 28  # 27 conv layers + the FC layer: the paper's "28 layers"
    for conv, size, (kind, s, cin, cout, din) in zip(convs, sizes, TABLE1):
        assert (conv.in_channels, conv.out_channels, conv.stride[0], size) == (cin, cout, s, din)
        assert conv.kernel_size[0] == (1 if kind == "pw" else 3)
        assert conv.groups == (cin if kind == "dw" else 1)
        assert conv.bias is None  # BN follows every conv
    assert model.classifier.in_features == 1024 and model.classifier.out_features == 1000
    assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)


def test_every_conv_followed_by_bn_and_relu():
    model = M.MobileNetV1()
    blocks = [m for m in model.modules() if isinstance(m, M.ConvBNAct)]
    assert len(blocks) == 27
    assert all(isinstance(b.bn, nn.BatchNorm2d) and isinstance(b.act, nn.ReLU) for b in blocks)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0, 1.25])
def test_channel_rule_matches_references_for_typical_alpha(alpha):
    # Keras Applications: int(c * alpha); TF-Slim: max(int(c * alpha), 8);
    # timm: make_divisible(c * alpha, 8) (round to the nearest multiple of 8, not below 90%).
    def timm_rule(v, divisor=8):
        new = max(divisor, int(v + divisor / 2) // divisor * divisor)
        return new + divisor if new < 0.9 * v else new

    for c in [32] + [row[0] for row in V1_BLOCKS]:
        ours = scale_channels(c, alpha)
        assert ours == int(c * alpha) == max(int(c * alpha), 8) == timm_rule(c * alpha)
    model = M.MobileNetV1(width_mult=alpha)
    assert model.num_features == int(1024 * alpha)


def test_alpha_above_one_and_odd_alpha_build():
    assert M.MobileNetV1(width_mult=1.4).num_features == 1433
    assert M.MobileNetV1(width_mult=0.1).feature_info[0]["channels"] == 8  # min_channels


@pytest.mark.parametrize("size", [(32, 32), (160, 96), (97, 131)])
def test_any_resolution_at_least_32(size):
    model = M.MobileNetV1(width_mult=0.25, num_classes=7).eval()
    assert model(torch.randn(2, 3, *size)).shape == (2, 7)


@pytest.mark.parametrize("kwargs, message", [
    ({"width_mult": 0}, "width_mult"), ({"width_mult": -0.5}, "width_mult"),
    ({"width_mult": "1"}, "width_mult"), ({"num_classes": 0}, "num_classes"),
    ({"in_channels": 0}, "in_channels"), ({"output_stride": 4}, "output_stride"),
    ({"activation": "gelu"}, "activation"), ({"padding": "valid"}, "padding"),
    ({"block": "dense"}, "block"), ({"dropout": 1.0}, "dropout"),
])
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M.MobileNetV1(**kwargs)


def test_bad_inputs_name_the_problem():
    model = M.MobileNetV1(width_mult=0.25).eval()
    with pytest.raises(ValueError, match="in_channels=3"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 32"):
        model(torch.zeros(1, 3, 31, 64))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.zeros(3, 64, 64))


def test_in_channels_grayscale():
    model = M.MobileNetV1(width_mult=0.25, in_channels=1, num_classes=10).eval()
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_include_top_false_returns_feature_map_and_reset_classifier():
    model = M.MobileNetV1(width_mult=0.5, include_top=False).eval()
    x = torch.randn(1, 3, 128, 128)
    assert model(x).shape == (1, 512, 4, 4)
    model.reset_classifier(0)
    assert model(x).shape == (1, 512)  # pooled features, as timm
    model.reset_classifier(5)
    assert model(x).shape == (1, 5) and model.config.num_classes == 5
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


def test_extract_features_strides_8_16_32():
    model = M.MobileNetV1(width_mult=0.75).eval()
    feats = model.extract_features(torch.randn(1, 3, 300, 300))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        8: (192, 38, 38), 16: (384, 19, 19), 32: (768, 10, 10)}
    channels = {f["reduction"]: f["channels"] for f in model.feature_info}
    assert channels == {2: 48, 4: 96, 8: 192, 16: 384, 32: 768}
    with pytest.raises(ValueError, match="reductions"):
        model.extract_features(torch.randn(1, 3, 64, 64), reductions=(64,))


@pytest.mark.parametrize("output_stride, size", [(32, 7), (16, 14), (8, 28)])
def test_output_stride_by_dilation(output_stride, size):
    model = M.MobileNetV1(width_mult=0.25, output_stride=output_stride).eval()
    assert model.forward_features(torch.randn(1, 3, 224, 224)).shape[-1] == size
    # TF-Slim's rule: the layer that would pass output_stride keeps stride 1 and the depthwise
    # convolutions after it dilate by the stride it skipped.
    dws = [m for m in conv_layers(model) if m.groups > 1]
    assert max(m.dilation[0] for m in dws) == 32 // output_stride
    assert all(m.dilation[0] == 1 for m in conv_layers(model) if m.kernel_size[0] == 1)


def test_background_class_head():
    model = M.MobileNetV1(width_mult=0.25, background_class=True).eval()
    assert model.classifier.out_features == 1001
    x = torch.randn(2, 3, 64, 64)
    full = model.classifier(model.forward_head(model.forward_features(x), pre_logits=True))
    torch.testing.assert_close(model(x), full[:, 1:])


def test_tf_same_padding():
    assert tf_same_padding(224, 3, 2, 1) == (0, 1)  # even input: all padding after
    assert tf_same_padding(225, 3, 2, 1) == (1, 1)
    assert tf_same_padding(14, 3, 1, 1) == (1, 1)
    assert tf_same_padding(14, 3, 1, 2) == (2, 2)
    torch.manual_seed(0)
    sym = M.MobileNetV1(width_mult=0.25).eval()
    tf = M.MobileNetV1(width_mult=0.25, padding="tf_same", activation="relu6").eval()
    tf.load_state_dict(sym.state_dict())
    x = torch.randn(1, 3, 96, 96)
    assert sym(x).shape == tf(x).shape
    # Asymmetric padding really changes the result (relative to the logits, which a fresh
    # classifier keeps near 0.01: an absolute bound depended on the seed).
    assert (sym(x) - tf(x)).abs().max() > 0.05 * sym(x).abs().max()


def test_conv_and_shallow_baselines():
    conv = M.create_model("mobilenet_v1_conv_224")
    convs = conv_layers(conv)
    assert len(convs) == 14 and all(c.groups == 1 and c.kernel_size == (3, 3) for c in convs)
    shallow = M.create_model("mobilenet_v1_shallow_224")
    dws = [c for c in conv_layers(shallow) if c.groups > 1]
    assert len(dws) == 13 - 5
    assert sum(1 for c in dws if c.in_channels == 512 and c.stride[0] == 1) == 0


def test_registry_builds_every_variant():
    names = M.list_models("mobilenet_v1_*")
    assert len(names) == 18 and len(M.list_models("mobilenet_v1_*_160")) == 4
    for name in names:
        model = M.create_model(name, num_classes=3).eval()
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
        assert model.config.resolution == M.get_spec(name).resolution


def test_unknown_model_suggests_nearest():
    with pytest.raises(ValueError, match="did you mean mobilenet_v1_0.5_160"):
        M.create_model("mobilenet_v1_0.5_16")


def test_predict_softmax_and_training_step():
    model = M.MobileNetV1(width_mult=0.25, num_classes=4)
    x = torch.randn(4, 3, 64, 64)
    probs = model.predict(x)
    assert model.training  # predict restores the mode
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.numerics
@pytest.mark.parametrize("shape, stride, dilation", [
    ((3, 16, 2, 2), 1, 1), ((3, 16, 2, 2), 2, 1), ((2, 8, 1, 1), 1, 1), ((2, 8, 2, 1), 2, 1),
    ((2, 8, 2, 2), 1, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_small_map_depthwise_is_the_convolution(shape, stride, dilation, channels_last):
    torch.manual_seed(0)
    c = shape[1]
    w = torch.randn(c, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ref = nn.functional.conv2d(x, w, None, stride, dilation, dilation, c)
    out = small_map_depthwise(x, w, (stride, stride), (dilation, dilation), (dilation, dilation))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, w), g)
    ref_grads = torch.autograd.grad(ref, (x, w), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.numerics
def test_model_with_small_map_path_equals_plain_convolutions():
    torch.manual_seed(0)
    model = M.MobileNetV1(width_mult=0.25).double().eval()
    depthwise = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert len(depthwise) == 13
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fast = model(x)
    for m in depthwise:
        m.small_map_pixels = 0
    torch.testing.assert_close(fast, model(x), rtol=0, atol=1e-10)


def test_saved_model_round_trips_with_the_usual_file_mode(tmp_path):
    # safetensors writes its own 0600 file; a model file must get the umask's permissions.
    model = M.create_model("mobilenet_v1_0.25_128").eval()
    path = M.save_model(model, tmp_path / "m.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    x = torch.randn(1, 3, 128, 128)
    assert torch.equal(M.load_model(path).eval()(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
