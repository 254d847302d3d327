"""ShuffleNet V1 against its Table 1 and Megvii's reference widths; the unit of the slides'
Figure 2 and the channel shuffle; options, registry names, save/load, ONNX export, training and
bench; its costs against the slides' Tables 3 and 4 and the ShuffleNet paper's Tables 1, 2, 5."""
import json

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mobilenets as M
from mobilenets.cli import main
from mobilenets.cost.memory import KB
from mobilenets.cost.profiler import profile_model
from mobilenets.deploy.bench import bench, default_backends
from mobilenets.deploy.layer_times import by_layer_type, kernel_times
from mobilenets.deploy.onnx_export import (POOL_AS_CONV, OnnxModule, export_onnx, quantize_int8,
                                           rewrite_pools)
from mobilenets.models.layers import ChannelShuffle, Pool2d, ShuffleUnit
from mobilenets.models.registry import build_from_config, config_name, variant_name
from mobilenets.models.shufflenet import (SHUFFLENET_STAGE_CHANNELS, ShuffleNetV1,
                                          shufflenet_blocks, shufflenet_channels)
from mobilenets.paper import TABLE3_V2_SHUFFLENET, paper_comparisons, table3_v2_trace


def units(model):
    return [m for m in model.modules() if isinstance(m, ShuffleUnit)]


def tiny(**kw):
    """0.25x, g = 3: 12-channel stem, 60/120/240 stages."""
    torch.manual_seed(0)
    return ShuffleNetV1(**{"width_mult": 0.25, "groups": 3, "num_classes": 10, **kw}).eval()


# ------------------------------------------------------------------------------ architecture

@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_table1_stage_by_stage(groups):
    model = ShuffleNetV1(groups=groups)
    stem, pool = model.features[0], model.features[1]
    assert (stem.conv.out_channels, stem.conv.stride, stem.conv.kernel_size) == (24, (2, 2), (3, 3))
    assert isinstance(pool.pool, nn.MaxPool2d) and pool.pool.stride == 2
    sizes = []
    hooks = [u.register_forward_hook(lambda m, i, o: sizes.append((o.shape[1], o.shape[-1])))
             for u in units(model)]
    assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape[-1] == 7
    for h in hooks:
        h.remove()
    c2, c3, c4 = SHUFFLENET_STAGE_CHANNELS[groups]
    # Table 1: Stage 2 at 28x28 (1 + 3 units), Stage 3 at 14x14 (1 + 7), Stage 4 at 7x7 (1 + 3).
    assert sizes == [(c2, 28)] * 4 + [(c3, 14)] * 8 + [(c4, 7)] * 4
    for i, u in enumerate(units(model)):
        out = u.expand.conv.out_channels + (u.compress.conv.in_channels if u.concat else 0)
        assert u.concat == (i in (0, 4, 12)) and out == sizes[i][0]
        assert u.compress.conv.out_channels == sizes[i][0] // 4  # bottleneck = out / 4
        # The first pointwise convolution of Stage 2 is not grouped; every other one is.
        assert u.compress.conv.groups == (1 if i == 0 else groups)
        assert u.expand.conv.groups == groups
        assert u.dw.conv.groups == u.dw.conv.in_channels and isinstance(u.dw.act, nn.Identity)
        assert isinstance(u.expand.act, nn.Identity) and isinstance(u.act, nn.ReLU)
        assert (u.shortcut is not None) == u.concat
        assert u.dw.conv.stride == ((2, 2) if u.concat else (1, 1))
    assert model.classifier.in_features == c4 and model.classifier.out_features == 1000


def test_widths_are_megvii_reference_widths():
    # github.com/megvii-model/ShuffleNet-Series, ShuffleNetV1/network.py: [stem, stage 2, 3, 4].
    megvii = {(3, 0.5): [12, 120, 240, 480], (3, 1.0): [24, 240, 480, 960],
              (3, 1.5): [24, 360, 720, 1440], (3, 2.0): [48, 480, 960, 1920],
              (8, 0.5): [16, 192, 384, 768], (8, 1.0): [24, 384, 768, 1536],
              (8, 1.5): [24, 576, 1152, 2304], (8, 2.0): [48, 768, 1536, 3072]}
    for (g, s), widths in megvii.items():
        stem, stages = shufflenet_channels(s, g, shufflenet_blocks(g))
        assert [stem, *stages] == widths
    for g in (1, 2, 3, 4, 8):  # every width divides into the groups, at every scale
        for s in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
            stem, stages = shufflenet_channels(s, g, shufflenet_blocks(g))
            assert stem % g == 0 and all(c % (4 * g) == 0 for c in stages)
            ShuffleNetV1(s, g)  # builds


def test_channel_shuffle_is_the_papers_transpose():
    x = torch.arange(12.0).view(1, 12, 1, 1)
    # g = 3 groups of n = 4: reshape to (3, 4), transpose, flatten.
    expected = torch.arange(12.0).view(3, 4).t().reshape(-1)
    assert torch.equal(ChannelShuffle(3)(x).flatten(), expected)
    assert expected.tolist()[:3] == [0.0, 4.0, 8.0]  # the first output group reads every group
    assert torch.equal(ChannelShuffle(1)(x), x)
    cl = torch.randn(2, 12, 5, 5).contiguous(memory_format=torch.channels_last)
    y = ChannelShuffle(4)(cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ChannelShuffle(4)(cl.contiguous()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="12 channels do not split into 5 groups"):
        ChannelShuffle(5)(x)
    with pytest.raises(ValueError, match="groups must be an integer >= 1"):
        ChannelShuffle(0)


def test_shuffle_connects_every_group():
    # Figure 1: two stacked group convolutions see only their own group unless the channels are
    # shuffled between them; with the shuffle every output depends on every input.
    torch.manual_seed(0)  # 3 groups of 3 channels (a group needs >= g channels to read all g)
    g1, g2 = nn.Conv2d(9, 9, 1, groups=3, bias=False), nn.Conv2d(9, 9, 1, groups=3, bias=False)
    for shuffle, connected in ((nn.Identity(), False), (ChannelShuffle(3), True)):
        jac = torch.autograd.functional.jacobian(
            lambda v: g2(shuffle(g1(v.view(1, 9, 1, 1)))).flatten(), torch.randn(9))
        assert bool((jac != 0).all()) == connected


@pytest.mark.numerics
def test_units_add_or_concatenate():
    torch.manual_seed(0)
    unit = ShuffleUnit(24, 24, 3).eval()
    x = torch.rand(2, 24, 8, 8)
    with torch.no_grad():
        branch = unit.expand(unit.dw(unit.shuffle(unit.compress(x))))
        torch.testing.assert_close(unit(x), F.relu(x + branch))
    down = ShuffleUnit(24, 60, 3, stride=2, first_groups=1).eval()
    with torch.no_grad():
        y = down(x)
    assert y.shape == (2, 60, 4, 4) and down.expand.conv.out_channels == 36
    # The first 24 channels are the 3x3 average pool of the (non-negative) input.
    torch.testing.assert_close(y[:, :24], F.avg_pool2d(x, 3, 2, 1))
    with pytest.raises(ValueError, match="bottleneck"):
        ShuffleUnit(24, 40, 3)  # 40 / 4 = 10 does not divide into 3 groups
    with pytest.raises(ValueError, match="branch"):
        ShuffleUnit(60, 60, 3, stride=2)  # concatenating to as many channels leaves no branch


def test_pool_tf_same_pads_like_tensorflow():
    x = torch.rand(1, 2, 8, 8)  # non-negative, as after the stem's ReLU
    same = Pool2d("max", 3, 2, "tf_same")(x)
    ref = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)  # TF: bottom/right
    torch.testing.assert_close(same, ref)
    assert Pool2d("avg", 3, 1)(x).shape == x.shape
    with pytest.raises(ValueError, match="kind"):
        Pool2d("min")


# ----------------------------------------------------------------------------------- options

def test_options_and_heads():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert tiny(include_top=False)(x).shape == (2, 240, 1, 1)
    gray = tiny(in_channels=1)
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    bg = tiny(background_class=True)
    assert bg.classifier.out_features == 11 and bg(x).shape == (2, 10)
    model.reset_classifier(0)
    assert model(x).shape == (2, 240) and model.config.num_classes == 0
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert torch.allclose(tiny().predict(x).sum(1), torch.ones(2))
    six = tiny(activation="relu6")
    assert all(isinstance(u.act, nn.ReLU6) for u in units(six))
    assert tiny(padding="tf_same")(torch.randn(1, 3, 33, 33)).shape == (1, 10)
    assert tiny(dropout=0.5).dropout.p == 0.5
    custom = ShuffleNetV1(1.0, groups=6, blocks=[[96, 2, 2], [192, 2, 2], [384, 1, 2]])
    assert custom(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert units(custom)[1].expand.conv.groups == 6


@pytest.mark.parametrize("kwargs, match", [
    ({"groups": 5}, "groups must be one of"),
    ({"groups": 0}, "groups must be an integer >= 1"),
    ({"width_mult": 0}, "width_mult"),
    ({"num_classes": 0}, "num_classes"),
    ({"dropout": 1.0}, "dropout"),
    ({"blocks": [[96, 0, 2]]}, "blocks rows"),
    ({"output_stride": 4}, "output_stride"),
    ({"activation": "gelu"}, "activation"),
    ({"padding": "same"}, "padding"),
])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShuffleNetV1(**kwargs)
    with pytest.raises(ValueError, match="at least 32x32"):
        tiny()(torch.randn(1, 3, 16, 16))


def test_feature_info_and_output_stride():
    model = tiny()
    assert [(f["reduction"], f["channels"]) for f in model.feature_info] == [
        (2, 12), (4, 12), (8, 60), (16, 120), (32, 240)]
    feats = model.extract_features(torch.randn(1, 3, 64, 64), (4, 8, 16, 32))
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(12, 16, 16), (60, 8, 8), (120, 4, 4),
                                                            (240, 2, 2)]
    dense = tiny(output_stride=8)
    x = torch.randn(1, 3, 64, 64)
    assert dense.forward_features(x).shape == (1, 240, 8, 8)
    assert [u.dw.conv.dilation for u in units(dense)][-1] == (4, 4)
    assert dense(x).shape == (1, 10)
    assert dense.extract_features(x, (32,))[32].shape[-1] == 8
    with pytest.raises(ValueError, match="reductions"):
        model.extract_features(x, (64,))


def test_residual_units_start_as_the_identity():
    model = tiny()
    for u in units(model):  # the adding units' last BN scale starts at 0, the others at 1
        assert bool((u.expand.bn.weight == 0).all()) == (not u.concat)
    assert all(bool((u.expand.bn.weight == 1).all()) for u in units(tiny(zero_init_residual=False)))
    x = torch.rand(1, 60, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(units(model)[1](x), x)  # relu(x + 0) on a non-negative x


@pytest.mark.numerics
def test_train_step_and_channels_last():
    model = tiny().train()
    x = torch.randn(4, 3, 32, 32)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)),
                                   model(x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------- registry

def test_registry_names():
    names = M.list_models("shufflenet_v1_*")
    assert len(names) == 35
    for g in (1, 2, 3, 4, 8):
        for s in ("0.25", "0.5", "1.0", "1.5", "2.0"):
            assert f"shufflenet_v1_g{g}_{s}_224" in names
    assert len(M.list_models("shufflenet_v1_g3_*_128")) == 5
    spec = M.get_spec("shufflenet_v1_g3_1.5_224")
    assert (spec.config.width_mult, spec.config.groups, spec.arch) == (1.5, 3, "shufflenet_v1")
    assert spec.name_fields == ("width_mult", "groups")
    assert spec.paper == {"table": "SN: 5; V2: 4", "top1": 71.5, "madds_m": 292, "params_m": 3.4}
    assert M.get_spec("shufflenet_v1_g8_1.0_224").paper["top1"] == pytest.approx(67.6)
    assert M.get_spec("shufflenet_v1_g8_2.0_224").released_top1 == 72.9
    model = M.create_model("shufflenet_v1_g2_0.5_224", num_classes=7)
    assert model.groups == 2 and model.config.resolution == 224
    assert model.config.name == "shufflenet_v1_g2_0.5_224" and model.classifier.out_features == 7
    with pytest.raises(ValueError, match="did you mean"):
        M.get_spec("shufflenet_v1_g3_1.5_225")
    # Every command names a model the same way; ShuffleNet's names keep their group count.
    assert variant_name("shufflenet_v1_g8_1.0_224", resolution=32) == "shufflenet_v1_g8_1.0_32"
    assert config_name(model.config) == "shufflenet_v1_g2_0.5_224"
    assert config_name(ShuffleNetV1(1.0, 6, blocks=[[96, 1, 2]]).config) == "shufflenet_v1_g6_1.0_224"


def test_save_load_round_trip(tmp_path):
    model = tiny()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    M.save_model(model, tmp_path / "sn.safetensors", extra={"class_names": list("abcdefghij")})
    loaded = M.load_model(tmp_path / "sn.safetensors", kind="classifier")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert isinstance(loaded, ShuffleNetV1) and loaded.metadata["class_names"][0] == "a"
    assert build_from_config(model.config).config == model.config
    assert M.load_model(tmp_path / "sn.safetensors", output_stride=16).feature_info[-1][
        "stride"] == 16


@pytest.mark.numerics
def test_onnx_fp32_and_int8_export(tmp_path):
    model = tiny()
    model.config.resolution = 32
    report = export_onnx(model, tmp_path / "sn.onnx")
    assert report.max_abs_diff < 1e-4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "sn.onnx")).graph.node}
    assert {"Conv", "Transpose", "Concat", "AveragePool", "MaxPool", "Add"} <= ops
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModule(tmp_path / "sn.onnx")(x), model(x),
                                   rtol=1e-4, atol=1e-4)
    calib = [torch.rand(16, 3, 32, 32) * 2 - 1]
    # BN statistics of these images, not fresh ones (cosine 0.94 after int8): the int8 ranges
    # fit, and the cosine (0.995) clears the bound whatever the int8 kernels round.
    with torch.no_grad():
        for _ in range(3):
            model.train()(calib[0])
    model.eval()
    int8 = quantize_int8(model, tmp_path / "sn8.onnx", calib, min_top1_agreement=0.0)
    assert int8.format == "onnx-int8"
    out = OnnxModule(tmp_path / "sn8.onnx")(calib[0])
    with torch.no_grad():
        ref = model(calib[0])
    assert F.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.9


def test_rewrite_pools_computes_the_same_function(tmp_path):
    """The average pools become depthwise convolutions that compute them (the float file still
    agrees with torch), the max pool and the Pad before it are named to stay fp32, with the
    layers that read it."""
    import onnxruntime as ort

    model = tiny()
    model.config.resolution = 40  # odd sizes below (10, 5, 3): the pads and the strides matter
    export_onnx(model, tmp_path / "sn.onnx")
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "sn.onnx")))
    keep = rewrite_pools(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert "AveragePool" not in ops
    assert sum(POOL_AS_CONV in n.name and n.op_type == "Conv" for n in proto.graph.node) == 3
    by_name = {n.name: n for n in proto.graph.node}
    pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    # the max pool, its Pad, and what reads it: unit 1's shortcut pool and first 1x1 convolution
    assert {by_name[k].op_type for k in keep} == {"MaxPool", "Pad", "Conv"} and len(keep) == 4
    assert all(pool.output[0] in by_name[k].input for k in keep if by_name[k].op_type == "Conv")
    onnx.save_model(proto, str(tmp_path / "rewritten.onnx"))
    session = ort.InferenceSession(str(tmp_path / "rewritten.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        ref = model(x)
    out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def ort_optimized_graph(path, tmp_path):
    """The graph ONNX Runtime runs for ``path``: its optimizer's output at the level
    ``onnx_export.ort_session`` uses, with the tensors' types."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath).graph


@pytest.mark.numerics
def test_int8_pools_stay_off_the_uint8_pool_kernels(tmp_path):
    """ONNX Runtime's uint8 pools (an NCHW MaxPool on uint8, QLinearAveragePool) are slower
    than its fp32 pools and int8 convolutions (benchmarks/results/int8_pools.md): in the int8
    ShuffleNet ORT runs every pool on float32, the average pools as convolutions (profiled as
    the pools, so the kernels still map onto the layers), and the logits stay the float model's."""
    model = tiny(width_mult=0.5)
    model.config.resolution = 64
    calib = [torch.rand(16, 3, 64, 64) * 2 - 1]
    with torch.no_grad():  # BN statistics of these images, so that the int8 ranges fit
        for _ in range(3):
            model.train()(calib[0])
    model.eval()
    path = tmp_path / "sn8.onnx"
    quantize_int8(model, path, calib, min_top1_agreement=0.0)
    graph = ort_optimized_graph(path, tmp_path)
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input]}
    pools = [n for n in graph.node if "Pool" in n.op_type]
    assert pools and not any(n.op_type.startswith("QLinear") for n in pools)
    assert all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in pools)
    kernels = kernel_times(path, (3, 64, 64), threads=1, runs=1)
    assert [op for op, _ in kernels].count("AveragePool") == 3  # one per stage's first unit
    by_layer_type(model, (3, 64, 64), kernels)  # raises if the pools were counted as layers
    with torch.no_grad():
        ref = model(calib[0])
    out = OnnxModule(path)(calib[0])
    assert F.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.98


def test_bench_offers_our_backends():
    assert default_backends("shufflenet_v1") == ("eager", "torch", "onnx", "int8")
    rows, _ = bench([{"name": "shufflenet_v1_g3_0.25_224", "resolution": 32}],
                    ["eager", "onnx"], batch=1, rounds=1, iters=1, memory=False, threads=1)
    assert [r.backend for r in rows] == ["eager", "onnx"]
    assert rows[0].madds == profile_model(M.create_model("shufflenet_v1_g3_0.25_224"),
                                          (3, 32, 32)).total_madds
    assert rows[0].peer is None and all(r.latency_ms > 0 for r in rows)


@pytest.mark.needs_data
def test_train_cli_trains_a_shufflenet(tmp_path, capsys):
    from mobilenets.engine.data import BatchTransform, load_fashion_mnist

    out = tmp_path / "run"
    code = main(["train", "--preset", "smoke", "--model", "shufflenet_v1_g3_0.25_224",
                 "--out-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    model = M.load_model(out / "model.safetensors")
    assert isinstance(model, ShuffleNetV1) and model.config.resolution == 32
    # The summary's top-1 is the saved model's on the smoke preset's 128 validation images (the
    # first of the test split), counted here: within one image, as a near-tie may round either way.
    test = load_fashion_mnist("test")
    x = BatchTransform(32, train=False, eval_crop=1.0)(test.images[:128])
    with torch.no_grad():
        correct = int((model(x.contiguous(memory_format=torch.channels_last)).argmax(1)
                       == test.labels[:128]).sum())
    top1 = json.loads((out / "summary.json").read_text())["top1"]
    assert abs(top1 - 100 * correct / 128) <= 100 / 128 + 1e-9, (top1, correct)


# --------------------------------------------------------------------------------------- cost

def test_slides_table4_rows_exactly():
    # The slides' Table 4: ShuffleNet (1.5) 292M / 3.4M, ShuffleNet (x2) 524M / 5.4M.
    for s, madds, params in ((1.5, 292_443_552, 3_405_448), (2.0, 524_045_184, 5_401_816)):
        prof = profile_model(ShuffleNetV1(s, 3))
        assert (prof.total_madds, prof.layer_params) == (madds, params)
    rows = {(r.model, r.quantity): r for r in paper_comparisons({"V2-4"})}
    for label in ("ShuffleNet (1.5)", "ShuffleNet (x2)"):
        assert rows[(label, "Mult-Adds (M)")].status == "match"
        assert rows[(label, "Params (M)")].status == "match"


def test_shufflenet_paper_tables():
    rows = paper_comparisons({"SN-1", "SN-2", "SN-5"})
    assert not [r for r in rows if r.status == "MISMATCH"]
    by = {(r.table, r.model): r for r in rows}
    # Table 1: 143, 140, 137, 133, 137M; the 1000-way FC layer puts g = 4 1.0% over (D24).
    assert [round(by[("SN-1", f"ShuffleNet 1x (g={g})")].computed, 1) for g in (1, 2, 3, 4, 8)] \
        == [143.1, 140.8, 137.5, 134.3, 138.4]
    assert by[("SN-1", "ShuffleNet 1x (g=4)")].note.startswith("D24")
    assert all(by[("SN-1", f"ShuffleNet 1x (g={g})")].status == "match" for g in (1, 2, 3, 8))
    # Table 5 and the 0.5x, 0.25x g = 3 rows of Table 2 match.
    for key in (("SN-5", "ShuffleNet 2x (g=3)"), ("SN-5", "ShuffleNet 1.5x (g=3)"),
                ("SN-5", "ShuffleNet 0.5x (g=4)"), ("SN-2", "ShuffleNet 0.5x (g=3)"),
                ("SN-2", "ShuffleNet 0.25x (g=3)")):
        assert by[key].status == "match", key
    assert by[("SN-2", "ShuffleNet 0.25x (g=8)")].note.startswith("D25")
    assert len(rows) == 5 + 15 + 4


def test_table1_complexities_are_the_body_without_fc():
    # D24: Table 1's figures are the body's Mult-Adds rounded to the unit.
    for g, paper in ((1, 143), (2, 140), (3, 137), (4, 133), (8, 137)):
        prof = profile_model(ShuffleNetV1(1.0, g))
        body = sum(r.madds for r in prof.rows if r.kind != "Fully Connected")
        assert round(body / 1e6) == paper


def test_table3_shufflenet_column():
    # The slides' column is ShuffleNet 2x g = 2's tensors (D23); 2x g = 3 has 480/960/1920.
    for build, widths in (("sn_g2_2.0", (48, 400, 800, 1600, 1600)),
                          ("sn_g3_2.0", (48, 480, 960, 1920, 1920))):
        by_res = {r["resolution"][0]: r for r in table3_v2_trace(build).by_resolution()}
        for (res, _), c in zip(TABLE3_V2_SHUFFLENET, widths):
            assert by_res[res]["largest_tensor_channels"] == c
            assert by_res[res]["largest_tensor_bytes"] == res * res * c * 2
        if build == "sn_g2_2.0":
            for res, (channels, kb) in TABLE3_V2_SHUFFLENET:
                assert by_res[res]["largest_tensor_channels"] == channels
                # 627.2 KB is printed 600K, 3.2 KB 3: within 5% or 1 KB of every cell.
                assert abs(by_res[res]["largest_tensor_bytes"] / KB - kb) <= max(0.05 * kb, 1)
        else:  # a residual unit's input and output at 28x28 are live together
            assert by_res[28]["peak_bytes"] == 2 * 28 * 28 * 480 * 2


# ---------------------------------------------------------------------------------------- CLI

def test_models_lists_the_shufflenets(capsys):
    assert main(["models", "--pattern", "shufflenet_v1_g3_*_224", "--format", "csv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 + 5 and out[1].startswith("shufflenet_v1_g3_0.25_224")


def test_paper_tables_prints_shufflenet_table5(capsys):
    assert main(["paper-tables", "--table", "SN-5", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["table"] for r in rows] == ["SN-5"] * 4


def test_profile_names_group_convolutions_and_traces_units_whole(capsys):
    assert main(["profile", "--model", "shufflenet_v1_g3_0.5_224", "--resolution", "64",
                 "--memory", "--format", "json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert any(t["kind"] == "Conv 1x1 g3" for t in prof["by_type"])
    assert "features.2" in {s["name"] for s in prof["memory"]["steps"]}  # a unit, one step


def test_train_names_an_unknown_shufflenet(capsys):
    code = main(["train", "--preset", "smoke", "--model", "shufflenet_v1_g5_1.0_224"])
    err = capsys.readouterr().err
    assert code == 2 and "shufflenet_v1_g5_1.0_224" in err and "Traceback" not in err
