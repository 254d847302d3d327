"""Deployment: BN folding, ONNX export with its parity check, int8, bench and pick."""

from collections import Counter

import onnx
import pytest
import torch
from torch import nn

import mobilenets as M
from mobilenets.deploy import onnx_export as deploy
from mobilenets.deploy.backends import check_backends
from mobilenets.deploy.bench import bench
from mobilenets.deploy.onnx_export import (ExportError, OnnxModule, export_onnx, fold_batchnorm,
                                           quantize_int8)
from mobilenets.deploy.peers import timm_mobilenet_v1
from mobilenets.deploy.pick import pick


def _model(width_mult=0.25, res=32, classes=10, seed=0):
    torch.manual_seed(seed)
    model = M.MobileNetV1(width_mult=width_mult, num_classes=classes)
    for m in model.modules():  # BN statistics far from identity, so folding is really tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.config.resolution = res
    return model.eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """``_model()`` exported once, for the tests that only read the file."""
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(_model(), path)
    return path


@pytest.mark.numerics
def test_fold_batchnorm_is_the_same_function():
    model = _model()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.numerics
def test_export_onnx_matches_torch_with_dynamic_batch(tmp_path):
    model = _model()
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, extra={"class_names": list("abcdefghij")})
    assert report.max_abs_diff < 1e-4 and report.check_batches == (1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary files left
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded
    session = OnnxModule(path)
    assert session.config.width_mult == 0.25 and session.extra["class_names"][0] == "a"
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(session(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.numerics
def test_export_mismatch_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    real_export = deploy._torch_export

    def wrong_export(model, path, shape, opset):  # an exporter bug: a different function
        broken = fold_batchnorm(model)
        broken.classifier.bias.data += 1.0
        real_export(broken, path, shape, opset)

    monkeypatch.setattr(deploy, "_torch_export", wrong_export)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="disagrees with the torch model"):
        export_onnx(_model(), path)
    assert path.read_bytes() == b"previous export" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.numerics
def test_quantize_int8_per_channel(tmp_path, onnx_file):
    model = _model(width_mult=0.5)
    calib = [torch.rand(16, 3, 32, 32) * 2 - 1 for _ in range(2)]
    path = tmp_path / "q.onnx"
    report = quantize_int8(model, path, calib, min_top1_agreement=0.0)
    assert report.format == "onnx-int8"
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in proto.graph.initializer}
    # per-channel: some weight scale has one entry per output channel (the first quantized
    # layer, the first pointwise conv: 32 at alpha 0.5)
    scale_sizes = {tuple(inits[n.input[1]].dims) for n in proto.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[1] in inits}
    assert (32,) in scale_sizes
    # float_layers=2: the stem and the first depthwise conv keep float weights, the rest int8
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    float_weight = [n.input[1] in inits and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
                    for n in convs]
    assert float_weight[:3] == [True, True, False] and not any(float_weight[2:])
    # V1 has no pool for ``rewrite_pools`` (its global pool is no AveragePool): the int8 file is
    # the float export's graph (the same model at another width) with quantize/dequantize added
    # and the ReLUs of the int8 layers folded into their output ranges
    int8_ops = Counter(n.op_type for n in proto.graph.node)
    fp32_ops = Counter(n.op_type for n in onnx.load(str(onnx_file)).graph.node)
    assert int8_ops - Counter({k: int8_ops[k] for k in ("QuantizeLinear", "DequantizeLinear")}) \
        == fp32_ops - Counter(Relu=fp32_ops["Relu"] - 2)
    all_int8 = quantize_int8(model, tmp_path / "all.onnx", calib, min_top1_agreement=0.0,
                             float_layers=0)
    assert all_int8.format == "onnx-int8"
    graph = onnx.load(str(tmp_path / "all.onnx")).graph
    assert not any(n.input[1] in {i.name for i in graph.initializer} for n in graph.node
                   if n.op_type == "Conv")
    (tmp_path / "all.onnx").unlink()
    with pytest.raises(ValueError, match="float_layers must be"):
        quantize_int8(model, tmp_path / "x.onnx", calib, float_layers=-1)
    x = calib[0]
    with torch.no_grad():
        ref = model(x)
    out = OnnxModule(path)(x)
    cos = nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
    assert cos > 0.95
    # The report's agreement is on the first calibration batch: counted here, within one image.
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert abs(report.top1_agreement - agreement) <= 1 / len(x) + 1e-9
    with pytest.raises(ExportError, match="agrees with the float model on only"):
        quantize_int8(model, tmp_path / "never.onnx", calib, min_top1_agreement=1.01)
    assert not (tmp_path / "never.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]
    with pytest.raises(ValueError, match="calibration batches must be"):
        quantize_int8(model, tmp_path / "x.onnx", [torch.rand(2, 3, 64, 64)])


def test_bad_files_and_inputs_name_the_problem(tmp_path, onnx_file):
    path = onnx_file
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ExportError, match="truncated.onnx is not a usable ONNX model"):
        OnnxModule(truncated)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxModule(tmp_path / "nope.onnx")
    session = OnnxModule(path)
    with pytest.raises(ValueError, match=r"takes input of shape Nx3x32x32, got 1x3x64x64"):
        session(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="takes float images, got dtype torch.uint8"):
        session(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        check_backends("onnx,tensorrt")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(_model(), tmp_path / "o.onnx", opset=13)


def test_timm_peer_has_our_channels():
    for alpha in (0.25, 1.0):
        ours = M.MobileNetV1(width_mult=alpha)
        peer = timm_mobilenet_v1(alpha)
        assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in ours.parameters())


def test_bench_rows(tmp_path):
    before = torch.get_num_threads()
    rows, machine = bench([{"name": "mobilenet_v1_0.25_128", "resolution": 32}],
                          ["eager", "torch", "onnx", "timm"], batch=2, rounds=1, iters=2,
                          throughput_rounds=1, memory=False, threads=before + 1)
    assert machine["threads"] == before + 1
    assert torch.get_num_threads() == before  # the caller's thread count comes back
    assert machine["matmul_gflops"] > 0
    assert [r.backend for r in rows] == ["eager", "torch", "onnx", "timm"]
    for r in rows:
        assert r.latency_ms > 0 and r.latency_p90_ms > 0 and r.throughput > 0 and r.batch == 2
        assert r.floor_ms > 0 and r.madds == rows[0].madds
    assert rows[-1].vs_peer == 1.0 and {r.peer for r in rows} == {"timm"}


def test_pick_from_a_sweep_csv(tmp_path):
    csv_path = tmp_path / "sweep.csv"
    csv_path.write_text(
        "label,width_mult,resolution,madds,params,top1,top5,epochs,train_seconds,model_path\n"
        "0.5-32,0.5,32,1,1,80.0,99.0,1,1,\n0.25-32,0.25,32,1,1,70.0,98.0,1,1,\n")
    rows, choice = pick(max_params=1e9, backend="torch", accuracy_csv=str(csv_path), rounds=1,
                        iters=2, plot=str(tmp_path / "frontier.png"))
    # named as the registry names models, whatever the CSV's labels say
    assert choice["label"] == "mobilenet_v1_0.5_32" and choice["chosen"]
    assert sum(r["chosen"] for r in rows) == 1
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    small = min(r["params"] for r in rows)
    rows, choice = pick(max_params=small, backend="torch", accuracy_csv=str(csv_path), rounds=1,
                        iters=2)
    assert choice["label"] == "mobilenet_v1_0.25_32"  # the larger one no longer fits
    with pytest.raises(ValueError, match="no candidate fits the budget; the fastest is"):
        pick(latency_ms=1e-6, backend="torch", accuracy_csv=str(csv_path), rounds=1, iters=1)
    with pytest.raises(ValueError, match="give at least one budget"):
        pick(backend="torch", accuracy_csv=str(csv_path))
    with pytest.raises(ValueError, match="--latency-ms must be a finite number > 0"):
        pick(latency_ms=-1, backend="torch")
    with pytest.raises(ValueError, match="is a peer"):
        pick(latency_ms=5, backend="timm")


def test_pick_candidates_cover_the_grid_with_imagenet_accuracy():
    from mobilenets.deploy.pick import candidates

    rows = candidates()
    assert len(rows) == 16 and all(r["top1"] for r in rows)
    by = {r["label"]: r for r in rows}
    assert set(by) == set(M.list_models("mobilenet_v1_0*")) | set(M.list_models("mobilenet_v1_1*"))
    assert by["mobilenet_v1_1.0_224"]["top1"] == 70.6
    assert by["mobilenet_v1_1.0_224"]["accuracy_source"] == "paper"
    assert by["mobilenet_v1_0.75_192"]["accuracy_source"] == "TF-Slim release"


@pytest.mark.numerics
def test_quantize_int8_mobilenet_v2(tmp_path):
    torch.manual_seed(0)
    model = M.MobileNetV2(width_mult=0.35, num_classes=10).eval()
    model.config.resolution = 32
    calib = [torch.rand(16, 3, 32, 32) * 2 - 1]
    # BN statistics of these images, not fresh ones (logits ~1e-9, cosine 0.97 after int8): the
    # int8 ranges fit, and the cosine (0.9997) clears the bound whatever the int8 kernels round.
    with torch.no_grad():
        for _ in range(3):
            model.train()(calib[0])
    model.eval()
    report = quantize_int8(model, tmp_path / "v2.onnx", calib, min_top1_agreement=0.0)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "v2.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Add"} <= ops  # the residual adds survive
    with torch.no_grad():
        ref = model(calib[0])
    out = OnnxModule(tmp_path / "v2.onnx")(calib[0])
    assert nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.9
    assert report.format == "onnx-int8"


def test_pick_exports_in_worker_processes_like_in_one(tmp_path):
    """Exports in two spawned workers give the same rows as in this process; bad counts refused."""
    csv_path = tmp_path / "sweep.csv"
    csv_path.write_text(
        "label,width_mult,resolution,madds,params,top1,top5,epochs,train_seconds,model_path\n"
        "0.5-32,0.5,32,1,1,80.0,99.0,1,1,\n0.25-32,0.25,32,1,1,70.0,98.0,1,1,\n")
    seen = {}
    for workers in (1, 2):
        lines = []
        rows, choice = pick(max_params=1e9, backend="torch,onnx", accuracy_csv=str(csv_path),
                            rounds=1, iters=1, threads=1, export_workers=workers,
                            progress=lines.append)
        assert any(f"in {workers} process" in line for line in lines)
        assert sum(line.startswith("exported") for line in lines) == 2  # the ONNX files only
        seen[workers] = sorted((r["label"], r["backend"], r["params"]) for r in rows)
        assert all(r["latency_ms"] > 0 for r in rows)
    assert seen[1] == seen[2] and len(seen[1]) == 4
    with pytest.raises(ValueError, match="--export-workers must be an integer >= 1"):
        pick(max_params=1e9, backend="onnx", accuracy_csv=str(csv_path), export_workers=0)


def test_time_interleaved_pauses_between_blocks_and_times_the_gemm():
    """The GEMM that sets the floor runs as a backend beside the models; a pause after each
    block keeps ONNX Runtime's spinning threads off the next backend's clock."""
    import time

    from mobilenets.deploy.bench import ort_matmul, time_interleaved

    gemm = ort_matmul(64, threads=1)
    assert gemm.run(torch.randn(64, 64)).shape == (64, 64)
    t0 = time.perf_counter()
    cpu: dict = {}
    samples = time_interleaved([gemm], torch.randn(64, 64), rounds=3, iters=2, settle=0,
                               pause=0.05, cpu=cpu)
    assert time.perf_counter() - t0 >= 3 * 0.05
    assert len(samples[gemm.name]) == 6 and all(s > 0 for s in samples[gemm.name])
    # CPU time per call, one figure per round (a block's CPU over its calls), never the pause.
    assert len(cpu[gemm.name]) == 3 and all(0 < c < 0.05 for c in cpu[gemm.name])


@pytest.mark.numerics
def test_compile_backend_freezes_without_leaking_the_setting(tmp_path, monkeypatch):
    """``compile`` is torch.compile with Inductor's freezing: it computes the model's logits,
    its convolutions were rewritten by the freezing passes (oneDNN conv+ReLU fusion, which
    needs the weights as constants), and freezing is on only inside its calls."""
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from mobilenets.deploy.bench import prepare_backend, prepared_input

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)  # the passes must run here
    torch._dynamo.reset()
    counters.clear()
    model = _model()
    p = prepare_backend("compile", model, (3, 32, 32), tmp_path, None)
    if torch.backends.mkldnn.enabled:  # not under pytest --no-mkldnn: no oneDNN, no fusion
        assert counters["inductor"]["mkldnn_unary_fusion_matcher_count"] > 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    got = p.run(prepared_input(p, x))
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert inductor_config.freezing is False


def test_ort_kernel_times_map_onto_the_layers(onnx_file):
    """deploy.layer_times (benchmarks/ort_layers.py): ONNX Runtime's profiler gives one compute
    kernel per layer with Mult-Adds, Table 1's 27 convolutions and the classifier, in order, and
    their times sum per Table 2 layer type."""
    from mobilenets.deploy.layer_times import (COMPUTE_OPS, OTHER, by_layer_type, kernel_times,
                                               ort_latency_us)

    model, path = _model(), onnx_file
    kernels = kernel_times(path, (3, 32, 32), threads=1, runs=3)
    assert sum(op in COMPUTE_OPS for op, _ in kernels) == 1 + 13 + 13 + 1
    kinds = by_layer_type(model, (3, 32, 32), kernels)
    assert set(kinds) - {OTHER} == {"Conv 3x3", "Conv DW 3x3", "Conv 1x1", "Fully Connected"}
    assert sum(kinds.values()) == pytest.approx(sum(us for _, us in kernels))
    first = next(i for i, (op, _) in enumerate(kernels) if op in COMPUTE_OPS)
    with pytest.raises(RuntimeError, match="27 compute kernels for 28 layers"):
        by_layer_type(model, (3, 32, 32), kernels[:first] + kernels[first + 1:])
    assert ort_latency_us(path, (3, 32, 32), threads=1, runs=2) > 0


def test_layer_rows_put_int8_beside_fp32():
    """Per layer type, fp32 and int8 times with their ratio and fp32's GFLOP/s (2 x Mult-Adds
    over the time), then the totals and the whole model; as Markdown, one table per model."""
    from mobilenets.deploy.layer_times import OTHER, layer_markdown, layer_rows

    madds = {"Conv 1x1": 2_000_000, "Conv DW 3x3": 500_000}
    times = {"fp32": {"Conv 1x1": 10.0, "Conv DW 3x3": 5.0},
             "int8": {"Conv 1x1": 4.0, "Conv DW 3x3": 6.0, OTHER: 2.0}}
    rows = layer_rows(madds, times, {"fp32": 16.0, "int8": 13.0}, "whole")
    assert [tuple(r.values()) for r in rows] == [
        ("Conv 1x1", 2.0, 10.0, 4.0, 0.4, 400.0), ("Conv DW 3x3", 0.5, 5.0, 6.0, 1.2, 200.0),
        (OTHER, 0.0, 0.0, 2.0, None, None), ("total", 2.5, 15.0, 12.0, 0.8, 333.3),
        ("whole", 2.5, 16.0, 13.0, 0.81, 312.5)]
    md = layer_markdown([{"variant": "v", "rows": rows}], "machine: m", what="operator")
    assert md.splitlines()[:6] == [
        "machine: m", "", "**v** (operator time per image, batch 1)", "",
        "| layer type | Mult-Adds (M) | fp32 us | int8 us | int8 / fp32 | fp32 GFLOP/s |",
        "|---|---|---|---|---|---|"]
    assert f"| {OTHER} | 0.0 | 0.0 | 2.0 |  |  |" in md


def test_machine_line_names_the_versions_and_the_load():
    import onnxruntime

    from mobilenets.deploy.machine import machine_info, machine_line, note_load_after

    m = machine_info(3, packages=("onnxruntime", "no-such-distribution"))
    assert m["threads"] == 3 and m["torch"] == torch.__version__
    assert m["onnxruntime"] == onnxruntime.__version__ and m["no-such-distribution"] is None
    line = machine_line(m)
    assert "3 threads" in line and f"onnxruntime {onnxruntime.__version__}" in line
    assert f"load {m['load_before']:g}," in line
    assert note_load_after(m) is m and f"before, {m['load_after']:g} after" in machine_line(m)
