"""MobileNetV2 against its Tables 1-2 and torchvision, its options and registry entries; the cost
profile against the slides' Table 4; activation memory against hand-computed values and Table 3."""
import json

import pytest
import torch
import torchvision
from helpers import run_cli_captured
from torch import nn

import mobilenets as M
from mobilenets.cli import main
from mobilenets.cost.memory import KB, inference_ops, trace_memory
from mobilenets.cost.profiler import profile_model
from mobilenets.models.layers import ConvBNAct, InvertedResidual
from mobilenets.models.mobilenet_v2 import V2_BLOCKS, MobileNetV2, make_divisible
from mobilenets.models.registry import build_from_config
from mobilenets.paper import TABLE3_V2, paper_comparisons, table3_v2_trace

# Table 2, one row per bottleneck block: (t, output channels c, stride), and the input sizes.
TABLE2 = [(t, c, s if i == 0 else 1) for t, c, n, s in V2_BLOCKS for i in range(n)]
# Table 2's Input column gives each row's first block; the row's other blocks see its output size.
TABLE2_INPUT_SIZES = [112, 112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 14, 7, 7, 7]


def blocks(model):
    return [m for m in model.modules() if isinstance(m, InvertedResidual)]


def test_table2_block_by_block():
    model = MobileNetV2().eval()
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1]))
             for b in blocks(model)]
    assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    for h in hooks:
        h.remove()
    assert len(blocks(model)) == 17 and sizes == TABLE2_INPUT_SIZES
    in_channels = 32  # the stem: conv2d 3x3, 32, stride 2
    assert model.features[0].conv.out_channels == 32 and model.features[0].conv.stride == (2, 2)
    for block, (t, c, s) in zip(blocks(model), TABLE2):
        assert (block.expand is None) == (t == 1)  # no expansion layer for t = 1
        if block.expand is not None:
            assert block.expand.conv.out_channels == t * in_channels
            assert isinstance(block.expand.act, nn.ReLU6)
        assert block.dw.conv.groups == block.dw.conv.in_channels == t * in_channels
        assert block.dw.conv.stride == (s, s) and isinstance(block.dw.act, nn.ReLU6)
        assert block.project.conv.out_channels == c and block.project.conv.kernel_size == (1, 1)
        assert isinstance(block.project.act, nn.Identity)  # the linear bottleneck
        assert block.use_residual == (s == 1 and in_channels == c)
        in_channels = c
    assert sum(b.use_residual for b in blocks(model)) == 10
    last = model.features[-1]
    assert isinstance(last, ConvBNAct) and last.conv.kernel_size == (1, 1)
    assert (last.conv.in_channels, last.conv.out_channels) == (320, 1280)
    assert model.classifier.in_features == 1280 and model.classifier.out_features == 1000
    assert model.dropout.p == 0.2


@pytest.mark.numerics
def test_residual_adds_the_input():
    block = InvertedResidual(8, 8, 1, 6).eval()
    x = torch.randn(2, 8, 9, 9)
    inner = block.project(block.dw(block.expand(x)))
    torch.testing.assert_close(block(x), x + inner)
    assert not InvertedResidual(8, 8, 2, 6).use_residual
    assert not InvertedResidual(8, 16, 1, 6).use_residual


@pytest.mark.parametrize("alpha, last", [(0.35, 1280), (0.5, 1280), (0.75, 1280), (1.0, 1280),
                                         (1.3, 1664), (1.4, 1792)])
def test_same_layers_as_torchvision(alpha, last):
    ours = MobileNetV2(width_mult=alpha)
    ref = torchvision.models.mobilenet_v2(weights=None, width_mult=alpha)
    shapes = [v.shape for v in ours.state_dict().values()]
    assert shapes == [v.shape for v in ref.state_dict().values()]
    assert ours.num_features == last
    stem = make_divisible(32 * alpha)
    assert ours.features[0].conv.out_channels == stem and stem % 8 == 0


def test_parameters_of_1_0_equal_torchvision():
    assert sum(p.numel() for p in MobileNetV2().parameters()) == 3_504_872


def test_init_like_torchvision():
    torch.manual_seed(0)
    model = MobileNetV2()
    dw = model.features[5].dw.conv  # 192 channels, 3x3: PyTorch's fan_out = 192 * 9
    assert dw.weight.std().item() == pytest.approx((2 / (192 * 9)) ** 0.5, rel=0.1)
    bn = model.features[5].dw.bn
    assert bool((bn.weight == 1).all() and (bn.bias == 0).all())
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)


@pytest.mark.parametrize("alpha, size", [(0.1, (32, 32)), (2.0, (40, 33)), (0.6, (97, 64))])
def test_any_width_and_resolution(alpha, size):
    model = MobileNetV2(width_mult=alpha, num_classes=5).eval()
    assert model(torch.randn(2, 3, *size)).shape == (2, 5)


@pytest.mark.parametrize("kwargs, message", [
    ({"width_mult": 0}, "width_mult"), ({"width_mult": True}, "width_mult"),
    ({"num_classes": 0}, "num_classes"), ({"in_channels": 0}, "in_channels"),
    ({"output_stride": 4}, "output_stride"), ({"activation": "gelu"}, "activation"),
    ({"padding": "valid"}, "padding"), ({"dropout": -0.1}, "dropout"),
    ({"blocks": [[6, 24, 2]]}, "blocks"), ({"round_nearest": 0}, "round_nearest"),
])
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV2(**kwargs)


def test_bad_inputs_name_the_problem():
    model = MobileNetV2(width_mult=0.35).eval()
    with pytest.raises(ValueError, match="in_channels=3"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 32"):
        model(torch.zeros(1, 3, 64, 31))


def test_head_options():
    model = MobileNetV2(width_mult=0.35, include_top=False, in_channels=1).eval()
    x = torch.randn(1, 1, 96, 64)
    assert model(x).shape == (1, 1280, 3, 2)  # the last 1x1 convolution's map, as Keras
    model.reset_classifier(0)
    assert model(x).shape == (1, 1280)
    model.reset_classifier(4, background_class=True)
    assert model.classifier.out_features == 5 and model(x).shape == (1, 4)
    assert model.config.num_classes == 4 and model.config.background_class
    probs = model.predict(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(1))


def test_extract_features_and_feature_info():
    model = MobileNetV2(width_mult=0.5).eval()
    assert {f["reduction"]: f["channels"] for f in model.feature_info} == {
        2: 8, 4: 16, 8: 16, 16: 48, 32: 1280}
    feats = model.extract_features(torch.randn(1, 3, 128, 128), reductions=(4, 16, 32))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        4: (16, 32, 32), 16: (48, 8, 8), 32: (1280, 4, 4)}


@pytest.mark.parametrize("output_stride, size", [(32, 2), (16, 4), (8, 8)])
def test_output_stride_by_dilation(output_stride, size):
    model = MobileNetV2(width_mult=0.35, output_stride=output_stride).eval()
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == size
    dws = [b.dw.conv for b in blocks(model)]
    assert max(c.dilation[0] for c in dws) == 32 // output_stride
    # Strided blocks: the first of the 24, 32, 64 and 160 rows; those past output_stride dilate.
    strided = {32: [1, 3, 6, 13], 16: [1, 3, 6], 8: [1, 3]}[output_stride]
    assert [i for i, c in enumerate(dws) if c.stride[0] == 2] == strided


@pytest.mark.numerics
def test_tf_same_padding_changes_the_result():
    # Training mode: BN normalises with the batch's statistics (fresh running statistics and
    # torchvision's init shrink eval-mode activations to ~1e-7).
    sym = MobileNetV2(width_mult=0.35).train()
    tf = MobileNetV2(width_mult=0.35, padding="tf_same").train()
    tf.load_state_dict(sym.state_dict())
    x = torch.randn(2, 3, 64, 64)
    a, b = sym.forward_features(x), tf.forward_features(x)
    assert a.shape == b.shape and (a - b).abs().max() > 1e-2


def test_training_step():
    model = MobileNetV2(width_mult=0.35, num_classes=3)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registry_and_config_round_trip(tmp_path):
    names = M.list_models("mobilenet_v2_*")
    assert len(names) == 4 * 5 + 2 and "mobilenet_v2_1.4_224" in names
    assert "mobilenet_v2_1.4_160" not in names and "mobilenet_v2_0.35_96" in names
    assert M.get_spec("mobilenet_v2_1.0_224").paper["top1"] == 72.0
    assert M.get_spec("mobilenet_v2_1.4_224").paper["madds_m"] == 585
    model = M.create_model("mobilenet_v2_0.35_96", num_classes=3).eval()
    assert model.config.resolution == 96 and model.config.arch == "mobilenet_v2"
    again = build_from_config(model.config).eval()
    assert isinstance(again, MobileNetV2) and again.config == model.config
    M.save_model(model, tmp_path / "m.safetensors")
    loaded = M.load_model(tmp_path / "m.safetensors").eval()
    x = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(loaded(x), model(x))


# -------------------------------------------------------------------------------------------- cost

@pytest.mark.parametrize("name, madds, params, paper_madds_m", [
    ("mobilenet_v2_1.0_224", 300_774_272, 3_504_872, 300),
    ("mobilenet_v2_1.4_224", 582_195_824, 6_108_776, 585),
])
def test_cost_against_table4_and_torchvision(name, madds, params, paper_madds_m):
    prof = profile_model(M.create_model(name), (3, 224, 224))
    assert prof.total_madds == madds and prof.total_params == params
    assert prof.total_madds / 1e6 == pytest.approx(paper_madds_m, rel=0.01)
    alpha = M.get_spec(name).config.width_mult
    ref = profile_model(torchvision.models.mobilenet_v2(weights=None, width_mult=alpha))
    assert (ref.total_madds, ref.total_params) == (madds, params)


def test_table4_rows_in_paper_tables():
    rows = {(r.model, r.quantity): r for r in paper_comparisons({"V2-4"})}
    assert rows[("MobileNetV2", "Mult-Adds (M)")].status == "match"
    assert rows[("MobileNetV2 (1.4)", "Mult-Adds (M)")].status == "match"
    # 3.47M and 6.06M conv + FC parameters against the slides' 3.4M and 6.9M: explained (D11).
    assert rows[("MobileNetV2", "Params (M)")].note.startswith("D11")
    assert rows[("MobileNetV2 (1.4)", "Params (M)")].computed == pytest.approx(6.06, abs=0.005)


# ------------------------------------------------------------------------------------------ memory

class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x)))


def test_memory_of_a_sequential_model_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(4, 8, 1, stride=2), nn.Flatten())
    trace = trace_memory(model, (3, 8, 8), dtype_bytes=1)
    # conv: 3x8x8 in + 4x8x8 out; in-place ReLU: one tensor; strided conv: 4x8x8 + 8x4x4; the
    # flatten is a view of its input: one tensor.
    assert [(s.name, s.live_bytes) for s in trace.steps] == [
        ("0", 192 + 256), ("1", 256), ("2", 256 + 128), ("3", 128)]
    assert trace.peak_bytes == 448 and trace.peak.name == "0"
    assert trace.steps[2].resolution == (8, 8) and trace.steps[2].output_shape == (4, 4, 8)
    doubled = trace_memory(model, (3, 8, 8), dtype_bytes=2, batch_size=3)
    assert doubled.peak_bytes == 448 * 2 * 3
    by_res = {r["resolution"]: r for r in trace.by_resolution()}
    assert by_res[(8, 8)]["largest_tensor_bytes"] == 256 and by_res[(8, 8)]["peak_bytes"] == 448
    assert by_res[(4, 4)]["largest_tensor_channels"] == 8


def test_memory_keeps_the_shortcut_live():
    model = _Residual()
    trace = trace_memory(model, (4, 8, 8), dtype_bytes=1)  # x: 256 bytes, the 8-channel maps 512
    assert [(s.name, s.live_bytes, s.live_tensors) for s in trace.steps] == [
        ("conv1", 256 + 512, 2),
        ("relu", 512 + 512 + 256, 3),  # x waits for the addition
        ("conv2", 512 + 256 + 256, 3),
        ("add", 256 * 3, 3)]  # an operation outside any leaf module is a step of its own
    fused = trace_memory(model, (4, 8, 8), dtype_bytes=1, fuse=(_Residual,))
    assert [(s.name, s.live_bytes) for s in fused.steps] == [("_Residual", 512)]
    wrapped = nn.Sequential(_Residual(), _Residual())
    fused = trace_memory(wrapped, (4, 8, 8), dtype_bytes=1, fuse=(_Residual,))
    assert [(s.name, s.input_bytes, s.output_bytes, s.live_bytes) for s in fused.steps] == [
        ("0", 256, 256, 512), ("1", 256, 256, 512)]


def test_memory_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dtype_bytes"):
        trace_memory(nn.Conv2d(3, 3, 1), (3, 8, 8), dtype_bytes=0)
    with pytest.raises(ValueError, match="input_size"):
        trace_memory(nn.Conv2d(3, 3, 1), (3, 0, 8))


def test_memory_of_v1_and_v2_against_table3():
    # The slides' Table 3: the largest tensor materialized at each resolution, 16-bit, batch 1.
    v1 = {r["resolution"][0]: r for r in table3_v2_trace("v1_1.0_224").by_resolution()}
    v2 = {r["resolution"][0]: r for r in table3_v2_trace("v2_1.0_224").by_resolution()}
    assert [v1[r]["largest_tensor_bytes"] for r in (56, 28, 14, 7, 1)] == [
        56 * 56 * 128 * 2, 28 * 28 * 256 * 2, 14 * 14 * 512 * 2, 7 * 7 * 1024 * 2, 1024 * 2]
    assert [v1[r]["largest_tensor_channels"] for r, _, _ in TABLE3_V2] == [
        v1_cell[0] for _, v1_cell, _ in TABLE3_V2]
    assert max(v1[r]["largest_tensor_bytes"] for r in (56, 28, 14, 7, 1)) / KB == \
        pytest.approx(800, rel=0.01)  # the slides' 800K
    # MobileNetV2: bottleneck blocks as single operations materialize only 24 channels at 56x56.
    assert max(v2[r]["largest_tensor_bytes"] for r in (56, 28, 14, 7, 1)) == 56 * 56 * 24 * 2
    # Section 5.1's measure, inputs + outputs of each operation: the 24->32 stride-2 block is
    # the slides' 200K exactly, the residual 24->24 blocks need 301K.
    assert v2[56]["peak_bytes"] == 2 * 56 * 56 * 24 * 2 and v2[56]["peak_step"] == "features.3"
    trace = table3_v2_trace("v2_1.0_224")
    assert {s.name: s.live_bytes for s in trace.steps}["features.4"] == 200_704
    # The slides' MobileNetV2 figures are Table 2's c of the rows whose input has that size
    # times H x W x 2 bytes (docs/paper-discrepancies.md, D12).
    for res, _, (channels, kb) in TABLE3_V2[:4]:
        inputs = [112, 112, 56, 28, 14, 14, 7]  # each V2_BLOCKS row's input size
        assert channels == max(c for (_, c, _, _), r in zip(V2_BLOCKS, inputs) if r == res)
        assert int(channels * res * res * 2 / KB) in (kb, kb - 1)


def test_eager_layers_need_more_than_inference_ops():
    model = M.create_model("mobilenet_v2_0.35_96")
    layers = trace_memory(model, (3, 96, 96))
    ops = trace_memory(model, (3, 96, 96), fuse=inference_ops())
    assert ops.peak_bytes < layers.peak_bytes
    assert len(ops.steps) < len(layers.steps) and layers.peak.kind == "BatchNorm2d"
    tv = trace_memory(torchvision.models.mobilenet_v2(weights=None, width_mult=0.35), (3, 96, 96),
                      fuse=inference_ops())
    assert [s.live_bytes for s in tv.steps if s.kind != "flatten"] == [
        s.live_bytes for s in ops.steps if s.kind != "flatten"]


def test_profile_cli_arch_and_memory(capsys, tmp_path):
    assert main(["profile", "--arch", "v2", "--width-mult", "0.35", "--resolution", "96",
                 "--memory", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "0.35 MobileNetV2-96" and data["totals"]["params"] == 1_677_128
    assert data["memory"]["peak"]["bytes"] > 0 and data["memory"]["dtype_bytes"] == 2
    assert main(["profile", "--model", "mobilenet_v2_0.35_96", "--memory", "layers",
                 "--activation-bytes", "4", "--format", "csv"]) == 0
    first, second = capsys.readouterr().out.split("\n\n")
    assert first.startswith("name,type_stride") and second.startswith("name,kind,resolution")
    assert "BatchNorm2d" in second  # every leaf module is a step
    out = tmp_path / "p.txt"
    assert main(["profile", "--model", "mobilenet_v1_0.25_128", "--memory", "--output",
                 str(out)]) == 0
    assert "Peak live memory" in out.read_text() and "Resolution" in out.read_text()
    assert main(["profile", "--model", "mobilenet_v2_1.0_224", "--arch", "v2"]) == 2
    assert "--arch" in capsys.readouterr().err


# --------------------------------------------------------------------------- everything else for V2

def _v2_with_bn_statistics(width_mult=0.35, res=32, classes=10):
    torch.manual_seed(0)
    model = MobileNetV2(width_mult=width_mult, num_classes=classes)
    for m in model.modules():  # BN far from identity, and larger logits, so folding is tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.classifier.weight.data.normal_(0, 0.1)
    model.config.resolution = res
    return model.eval()


def test_no_weight_decay_on_v2_depthwise_filters():
    from mobilenets.engine.optim import param_groups

    model = M.create_model("mobilenet_v2_0.35_96")
    groups = {g["name"]: g for g in param_groups(model, 4e-5)}
    dw = [m.dw.conv.weight for m in blocks(model)]
    assert len(groups["depthwise"]["params"]) == 17 and groups["depthwise"]["weight_decay"] == 0
    assert {id(p) for p in groups["depthwise"]["params"]} == {id(p) for p in dw}
    # stem, 16 expansions (the first block has none), 17 projections, last 1x1 conv, FC
    assert len(groups["decay"]["params"]) == 1 + 16 + 17 + 1 + 1


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory):
    """A smoke run of 0.35 MobileNetV2 at 32x32 on Fashion-MNIST, from the command line."""
    out = tmp_path_factory.mktemp("v2") / "run"
    code, _, err = run_cli_captured("train", "--preset", "smoke", "--model",
                                    "mobilenet_v2_0.35_96", "--resolution", "32", "--limit-train",
                                    "64", "--limit-val", "32", "--out", out)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def v2_finetuned(v2_run):
    """``v2_run`` fine-tuned with its body frozen."""
    out = v2_run.parent / "ft"
    code, _, err = run_cli_captured("finetune", "--preset", "smoke", "--init",
                                    v2_run / "model.safetensors", "--freeze-body", "--limit-train",
                                    "64", "--limit-val", "32", "--out", out)
    assert code == 0, err
    return out


@pytest.mark.needs_data
def test_v2_trains_from_the_command_line(v2_run):
    model = M.load_model(v2_run / "model.safetensors")
    assert isinstance(model, MobileNetV2) and model.config.width_mult == 0.35
    assert model.config.resolution == 32 and model.config.dropout == 0.001


@pytest.mark.needs_data
def test_v2_eval_from_the_command_line(v2_run, capsys):
    assert main(["eval", str(v2_run / "model.safetensors"), "--limit", "16", "--format",
                 "json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 16


@pytest.mark.needs_data
def test_v2_finetune_with_a_frozen_body_moves_only_the_classifier(v2_run, v2_finetuned):
    model = M.load_model(v2_run / "model.safetensors")
    tuned = M.load_model(v2_finetuned / "model.safetensors").state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, tuned[k]) != k.startswith("classifier."), k


@pytest.mark.needs_data
def test_compare_names_and_costs_v2_runs_at_their_input_size(v2_run, v2_finetuned, capsys):
    assert main(["compare", str(v2_run), str(v2_finetuned), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["mobilenet_v2_0.35_32"] * 2  # named at its input size
    at_32 = profile_model(MobileNetV2(0.35, num_classes=10), (3, 32, 32)).total_madds / 1e6
    assert rows[0]["madds_m"] == rows[1]["madds_m"] == round(at_32, 2)  # not at 96
    assert rows[0]["resolution"] == 32


@pytest.mark.needs_data
def test_sweep_arch_v2_next_to_an_old_v1_csv(capsys, tmp_path):
    from mobilenets.engine.results import read_sweep_rows

    (tmp_path / "sweep.csv").write_text(  # a V1 sweep written before the arch column existed
        "label,width_mult,resolution,madds,params,top1,top5,epochs,train_seconds,model_path\n"
        "0.25-32,0.25,32,500000,200000,60.0,95.0,1.0,1.0,\n")
    argv = ["sweep", "--preset", "smoke", "--arch", "v2", "--width-mults", "0.35",
            "--resolutions", "32", "--limit-train", "32", "--limit-val", "32", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = read_sweep_rows(tmp_path / "sweep.csv")
    assert [(r["label"], r["arch"]) for r in rows] == [("0.25-32", "mobilenet_v1"),
                                                      ("mobilenet_v2_0.35_32", "mobilenet_v2")]
    model = M.load_model(rows[1]["model_path"])
    assert model.config.arch == "mobilenet_v2"
    assert rows[1]["params"] == sum(p.numel() for p in model.parameters())  # BN's included
    assert (tmp_path / "v2_a0.35_r32" / "model.safetensors").exists()
    assert main(argv) == 0 and read_sweep_rows(tmp_path / "sweep.csv") == rows  # done: skipped
    assert main(argv[:-2] + ["--model", "mobilenet_v1_0.25_128"]) == 2  # --arch disagrees


@pytest.mark.numerics
def test_fold_batchnorm_and_export_of_inverted_residuals(tmp_path):
    from mobilenets.deploy.onnx_export import OnnxModule, export_onnx, fold_batchnorm

    model = _v2_with_bn_statistics()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(b.use_residual == f.use_residual for b, f in zip(blocks(model), blocks(folded)))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4)
    assert ref.abs().max() > 0.1  # the check compares real numbers, not near-zero logits
    report = export_onnx(model, tmp_path / "v2.onnx")
    assert report.max_abs_diff < 1e-4
    assert OnnxModule(tmp_path / "v2.onnx").config.arch == "mobilenet_v2"
    # int8 goes through the same folded export (quantize_int8); not repeated here, for time


def test_bench_v2_against_torchvision_with_memory_columns():
    from mobilenets.deploy.bench import bench, default_backends

    assert default_backends("mobilenet_v2")[-1] == "torchvision"
    rows, _ = bench([{"name": "mobilenet_v2_0.35_96", "resolution": 32}], ["eager", "torchvision"],
                    batch=1, rounds=1, iters=2, throughput_rounds=1, memory=False)
    assert [r.backend for r in rows] == ["eager", "torchvision"]
    assert {r.peer for r in rows} == {"torchvision"} and rows[1].vs_peer == 1.0
    model = M.create_model("mobilenet_v2_0.35_96")
    weights = sum(p.numel() for p in model.parameters()) * 4 / 2 ** 20
    ops = trace_memory(model, (3, 32, 32), 4, fuse=inference_ops()).peak_bytes / 2 ** 20
    image = 3 * 32 * 32 * 4 / 2 ** 20
    for r in rows:  # the variant's analytic memory, fp32, batch 1, beside the measured columns
        assert r.weights_mb == round(weights, 3) and r.act_peak_mb == round(ops, 3)
        assert image < r.act_peak_mb < r.act_peak_layers_mb < r.weights_mb
        assert r.peak_rss_mb is None and r.above_baseline_mb is None  # memory=False
    with pytest.raises(ValueError, match="'timm' peer exists for mobilenet_v1 only"):
        bench([{"name": "mobilenet_v2_0.35_96"}], ["eager", "timm"], memory=False)
    with pytest.raises(ValueError, match="'torchvision' peer exists for mobilenet_v2 only"):
        bench([{"name": "mobilenet_v1_0.25_128"}], ["torchvision"], memory=False)


def test_pick_arch_v2_candidates_and_sweep_rows(tmp_path):
    from mobilenets.deploy.pick import candidates, pick

    rows = candidates(arch="v2")
    assert len(rows) == 22 and all(r["top1"] and r["arch"] == "mobilenet_v2" for r in rows)
    by = {r["label"]: r for r in rows}
    assert set(by) == set(M.list_models("mobilenet_v2_*"))  # the registry's names
    assert by["mobilenet_v2_1.0_224"]["top1"] == 72.0
    assert by["mobilenet_v2_1.0_224"]["accuracy_source"] == "paper"
    assert by["mobilenet_v2_0.35_96"]["top1"] == 45.5 and by["mobilenet_v2_1.3_224"]["top1"] == 74.4
    assert by["mobilenet_v2_0.35_96"]["accuracy_source"] == "TF-Slim release"
    assert len(candidates()) == 16  # V1 by default, as before
    csv_path = tmp_path / "sweep.csv"
    csv_path.write_text(
        "label,arch,width_mult,resolution,madds,params,top1,top5,epochs,train_seconds,model_path\n"
        "0.5-32,mobilenet_v1,0.5,32,1,1,90.0,99.0,1,1,\n"
        "v2-0.5-32,mobilenet_v2,0.5,32,1,1,80.0,99.0,1,1,\n"
        "v2-0.35-32,mobilenet_v2,0.35,32,1,1,70.0,98.0,1,1,\n")
    rows, choice = pick(max_params=1e9, backend="torch", accuracy_csv=str(csv_path), arch="v2",
                        rounds=1, iters=1)
    assert [r["label"] for r in rows] == ["mobilenet_v2_0.5_32", "mobilenet_v2_0.35_32"]
    assert choice["label"] == "mobilenet_v2_0.5_32"
    # params: the convolutions' and the classifier's weights (Table 4's count, without BN)
    layers = [m for m in MobileNetV2(0.35, num_classes=10).modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert rows[1]["params"] == sum(p.numel() for m in layers for p in m.parameters())
    with pytest.raises(ValueError, match="is a peer"):
        pick(latency_ms=5, backend="torchvision", arch="v2")
