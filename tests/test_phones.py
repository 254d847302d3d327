"""Phone and edge runtimes: ExecuTorch, LiteRT and OpenVINO exports are verified against torch,
refuse ops off the XNNPACK delegate, and run through one runner interface; tiny models at 32 px."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mobilenets.cli import main
from mobilenets.deploy.backends import BACKENDS
from mobilenets.deploy.compare import (GEMM_N, checks_over_repeats, latency_checks, per_round,
                                       sign_test)
from mobilenets.deploy.layer_times import by_layer_type, operator_times
from mobilenets.deploy.mobile import bf16_supported, verify
from mobilenets.deploy.onnx_export import ExportError
from mobilenets.deploy.quantize import float_module_names, keep_float
from mobilenets.deploy.runtimes import MissingExtraError, load_runner, require
from mobilenets.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]


def tiny(seed: int = 0) -> nn.Module:
    """V1 0.25 at 32 px with BN statistics from a few train-mode batches, so that the logits carry
    information (a fresh net's eval-mode logits are near zero: any export would pass)."""
    torch.manual_seed(seed)
    model = create_model("mobilenet_v1_0.25_128")
    model.config.resolution = 32
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2)
    return model.eval()


def images(n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.numerics
def test_verify_refuses_a_file_that_computes_something_else():
    model = tiny()

    class Zeros(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 1000)

    with pytest.raises(ExportError, match="disagrees with the torch model"):
        verify(model, Zeros(), (3, 32, 32), quantized=False)
    with pytest.raises(ExportError, match="agrees with the float model on only"):
        verify(model, Zeros(), (3, 32, 32), quantized=True, min_top1_agreement=0.9,
               check_inputs=images())
    assert verify(model, model, (3, 32, 32), quantized=False)["max_abs_diff"] == 0


def test_float_modules_policy_and_guard():
    model = tiny()
    assert float_module_names(model, 2) == ["features.0", "features.1.dw", "classifier"]
    assert float_module_names(model, 0, float_classifier=False) == []
    with pytest.raises(ValueError, match="--float-layers"):
        float_module_names(model, -1)

    class Quantizer:
        def annotate(self, gm):
            return gm

    gm = torch.export.export(model, (images(1),)).module()
    with pytest.raises(ValueError, match="not found in the exported graph"):
        keep_float(Quantizer(), ["model.features.0"]).annotate(gm)


def test_missing_extra_names_the_pip_command():
    with pytest.raises(MissingExtraError, match=r"pip install 'mobilenets\[litert\]'"):
        require("litert", "no_such_module_for_this_test")


def test_a_file_type_is_read_by_one_runtime():
    """``load_runner`` picks the runtime by suffix from the backend records: a suffix that two
    runtimes claimed could not be dispatched, and an unknown one names every known one."""
    runtimes: dict[str, set] = {}
    for b in BACKENDS.values():
        if b.suffix:
            runtimes.setdefault(b.suffix, set()).add(b.runtime)
    assert all(len(r) == 1 for r in runtimes.values()), runtimes
    with pytest.raises(ValueError, match=r"model\.bin: unknown model file type; known: \.onnx "
                       r"\(onnxruntime\), \.pte \(executorch\), \.tflite \(litert\), "
                       r"\.xml \(openvino\)$"):
        load_runner("model.bin")


@pytest.mark.numerics
def test_executorch_fp32_int8_and_portable_fallback(tmp_path):
    model = tiny()
    report = BACKENDS["executorch"].export(model, tmp_path / "m.pte")
    assert report.delegation["outside"] == {} and report.delegation["delegated_ops"] > 20
    assert report.max_abs_diff <= report.tolerance and report.logit_scale >= 1
    runner = load_runner(tmp_path / "m.pte")
    x = images(2)
    torch.testing.assert_close(runner(x), model(x), rtol=0, atol=1e-4 * report.logit_scale)

    q = BACKENDS["executorch-int8"].export(model, tmp_path / "q.pte",
                                           [images(32, s) for s in (2, 3)],
                                           check_inputs=images(), min_top1_agreement=0.5)
    assert q.top1_agreement >= 0.5 and q.delegation["outside"] == {}
    assert q.float_modules == ["features.0", "features.1.dw", "classifier"]
    assert q.bytes < report.bytes  # int8 weights

    class LogSoftmax(nn.Module):  # ExecuTorch's XNNPACK has no log_softmax: portable kernels
        def __init__(self):
            super().__init__()
            self.net, self.config = model, model.config

        def forward(self, x):
            return torch.log_softmax(self.net(x), 1)

    with pytest.raises(ExportError, match="log_softmax.*--allow-portable"):
        BACKENDS["executorch"].export(LogSoftmax(), tmp_path / "p.pte")
    assert not (tmp_path / "p.pte").exists() and len(list(tmp_path.iterdir())) == 2
    slow = BACKENDS["executorch"].export(LogSoftmax(), tmp_path / "p.pte", allow_portable=True)
    assert "aten._log_softmax.default" in slow.delegation["outside"]

    # deploy.layer_times (benchmarks/xnnpack_layers.py): ExecuTorch's event tracer times every
    # XNNPACK operator, and the k-th convolution or fully connected operator is the model's k-th
    # layer.
    for f in ("m.pte", "q.pte"):
        ops, delegate_us = operator_times(tmp_path / f, (3, 32, 32), 3, tmp_path)
        kinds = by_layer_type(model, (3, 32, 32), ops)  # raises if the count differs
        assert delegate_us > 0.9 * sum(us for _, us in ops) > 0  # the operators run inside the call
        assert {"Conv 3x3", "Conv DW 3x3", "Conv 1x1", "Fully Connected"} <= set(kinds)
        assert all(us > 0 for k, us in kinds.items() if k.startswith(("Conv", "Fully")))
    assert any(op == "Convert (NC)" for op, _ in ops)  # int8: the quantize after float layers


@pytest.mark.numerics
def test_litert_int8_nhwc_runner_quantizes_its_io(tmp_path):
    model = tiny()
    calibration = [images(32, s) for s in (2, 3)]
    report = BACKENDS["litert-int8"].export(model, tmp_path / "q.tflite", calibration, nhwc=True,
                                            float_layers=0, float_classifier=False,
                                            check_inputs=images(), min_top1_agreement=0.5)
    assert report.delegation["outside"] == {} and report.io["layout"] == "NHWC"
    # All layers int8: the file takes and returns int8; the runner hides it.
    assert report.io["input"]["dtype"] == "int8" and report.io["output"]["dtype"] == "int8"
    runner = load_runner(tmp_path / "q.tflite")
    out = runner(images(3))  # NCHW float in, float logits out, any batch
    assert out.dtype == torch.float32 and out.shape == (3, 1000)


@pytest.mark.numerics
def test_openvino_fp32_and_bf16(tmp_path):
    model = tiny()
    report = BACKENDS["openvino"].export(model, tmp_path / "m.xml")
    assert report.max_abs_diff <= report.tolerance
    assert all(k.endswith(":f32") for k in report.delegation["runtime_precisions"])
    assert (tmp_path / "m.bin").is_file()
    if bf16_supported():
        b = BACKENDS["openvino-bf16"].export(model, tmp_path / "b.xml", check_inputs=images(),
                                             min_top1_agreement=0.5)
        assert any(k.endswith(":bf16") for k in b.delegation["runtime_precisions"])
        assert load_runner(tmp_path / "b.xml").precision == "bf16"
    else:
        with pytest.raises(ExportError, match="avx512_bf16"):
            BACKENDS["openvino-bf16"].export(model, tmp_path / "b.xml")


@pytest.mark.numerics
def test_openvino_int8_is_one_record(tmp_path):
    """OpenVINO int8 is one record of ``deploy.backends``: OpenVINO runs our int8 ONNX with its own
    int8 kernels, verified against torch like every int8 export, and the commands that read the
    registry offer it (``--backends all``, ``export --format``, ``--float-layers auto``)."""
    from mobilenets.deploy.backends import export_formats, installed_backends
    from mobilenets.deploy.tune import int8_formats

    model, backend = tiny(), BACKENDS["openvino-int8"]
    calibration = [images(32, s) for s in (2, 3)]
    report = backend.export(model, tmp_path / "q.xml", calibration, check_inputs=images(),
                            min_top1_agreement=0.5)
    assert report.format == "openvino-int8" and report.top1_agreement >= 0.5
    assert report.float_modules == ["features.0", "features.1.dw", "classifier"]
    # Table 1's 27 convolutions (the stem, 13 depthwise, 13 pointwise) run in int8 but the two
    # kept float; the classifier stays fp32.
    ran = report.delegation["runtime_precisions"]
    assert sum(n for k, n in ran.items() if k in ("Convolution:u8", "Convolution:i8")) == 25
    assert ran.get("Convolution:f32") == 2 and ran.get("FullyConnected:f32") == 1
    # The peer: ONNX Runtime runs the same QDQ graph (the int8 backend, same calibration). Both
    # compute the int8 layers in integers, so they differ only in rounding, far below the
    # logits' scale, and pick the same classes.
    BACKENDS["int8"].export(model, tmp_path / "q.onnx", calibration, check_inputs=images(),
                            min_top1_agreement=0.5)
    x = images(16, 5)
    with torch.no_grad():
        ours, peer, ref = backend.load(tmp_path / "q.xml")(x), BACKENDS["int8"].load(
            tmp_path / "q.onnx")(x), model(x)
    assert ours.shape == ref.shape == (16, 1000)
    assert float((ours - peer).abs().max()) <= 0.1 * float(ref.abs().max())
    assert float((ours.argmax(1) == peer.argmax(1)).float().mean()) >= 0.9
    with pytest.raises(ExportError, match="agrees with the float model on only"):
        backend.export(model, tmp_path / "never.xml", calibration, min_top1_agreement=1.01)
    with pytest.raises(ValueError, match="needs calibration"):
        backend.export(model, tmp_path / "never.xml")
    assert not [p for p in tmp_path.iterdir() if "never" in p.name]  # nothing written
    offered = set(installed_backends()) & set(export_formats()) & set(int8_formats())
    assert "openvino-int8" in offered


def test_openvino_export_sends_no_telemetry(tmp_path):
    """OpenVINO's converter writes a client id under ~/intel and posts usage events unless told
    not to; through our import it must do neither (a fresh process, HOME in tmp_path)."""
    code = ("import sys, torch; from mobilenets.deploy.mobile import export_mobile; "
            "from mobilenets.models.registry import create_model; "
            "m = create_model('mobilenet_v1_0.25_128').eval(); m.config.resolution = 32; "
            "export_mobile(m, sys.argv[1], 'openvino')")
    # CI=true alone would silence OpenVINO (its own CI check), and this test could not fail.
    env = {**os.environ, "HOME": str(tmp_path / "home"), "CI": ""}
    (tmp_path / "home").mkdir()
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.xml")], env=env, check=True,
                   cwd=ROOT, capture_output=True)
    assert (tmp_path / "m.xml").is_file()
    assert list((tmp_path / "home").iterdir()) == []
    # OpenVINO imported before ours (its import already reported): the converter goes quiet.
    code = ("import openvino; from mobilenets.deploy.runtimes import require; "
            "require('openvino'); from openvino.tools.ovc import convert_impl, telemetry_utils; "
            "print(convert_impl.tm.__name__, telemetry_utils.tm.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout.split()
    assert out == ["openvino.tools.ovc.telemetry_stub"] * 2


@pytest.mark.numerics
@pytest.mark.needs_data
def test_cli_export_litert_evaluates_and_refuses_bad_options(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--out", str(out), "--limit-train", "64",
                 "--limit-val", "32"]) == 0
    dst, rep = tmp_path / "m.tflite", tmp_path / "r.json"
    code = main(["export", str(out / "model.safetensors"), "--format", "litert", "--output",
                 str(dst), "--evaluate", "--limit", "32", "--report", str(rep)])
    stdout, err = capsys.readouterr()
    assert code == 0 and dst.is_file(), err
    report = json.loads(rep.read_text())
    assert report["drop"] == 0 and report["top1_agreement"] == 100 and "none outside" in stdout
    code = main(["export", "mobilenet_v1_0.25_128", "--format", "executorch", "--nhwc",
                 "--output", str(tmp_path / "x.pte")])
    _, err = capsys.readouterr()
    assert code == 2 and "--nhwc" in err and len(err.strip().splitlines()) == 1


def test_pick_across_runtimes_and_precisions_draws_one_curve_each(tmp_path):
    from mobilenets.deploy.pick import candidates, pick

    csv_path = tmp_path / "sweep.csv"
    csv_path.write_text(
        "label,width_mult,resolution,madds,params,top1,top5,epochs,train_seconds,model_path\n"
        "0.5-32,0.5,32,1,1,80.0,99.0,1,1,\n0.25-32,0.25,32,1,1,70.0,98.0,1,1,\n")
    rows, choice = pick(max_params=1e9, backend="torch,litert-int8",
                        accuracy_csv=str(csv_path), rounds=1, iters=2,
                        threads=torch.get_num_threads(), plot=str(tmp_path / "f.png"))
    assert sorted((r["label"], r["backend"]) for r in rows) == sorted(
        (m, b) for m in ("mobilenet_v1_0.25_32", "mobilenet_v1_0.5_32")
        for b in ("torch", "litert-int8"))
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    assert all(r["latency_ms"] > 0 and r["cpu_ms"] > 0 for r in rows)
    assert choice["label"] == "mobilenet_v1_0.5_32"
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    shufflenets = candidates(arch="shufflenet_v1")  # the registered ones with a published top-1
    assert len(shufflenets) >= 16 and all(r["top1"] for r in shufflenets)


def test_bench_rows_carry_cpu_time_load_and_warnings():
    from mobilenets.deploy.bench import bench, honesty_warnings

    rows, machine = bench([{"name": "mobilenet_v1_0.25_128", "resolution": 32}], ["torch", "onnx"],
                          batch=1, threads=1, rounds=1, iters=2, memory=False)
    assert machine["ort_spinning"] is False and "onnxruntime" in machine["gemm_gflops"]
    for r in rows:
        assert r.cpu_ms > 0 and r.cpu_wall > 0 and r.load >= 0 and r.precision == "fp32"
    rows[0].cpu_wall, rows[0].load = 0.3, machine["threads"] + 5.0
    lines = honesty_warnings(rows, machine)
    assert len(lines) == 2 and "load average" in lines[0] and "0.30" in lines[1]


def test_float_layers_auto_measures_the_candidates(capsys, tmp_path):
    from mobilenets.deploy.tune import choose_float_layers

    model = tiny()
    choice, rows = choose_float_layers(model, "int8", [images(32, 2)], candidates=(0, 2),
                                       rounds=1, iters=2, check_inputs=images())
    assert [r["float_layers"] for r in rows] == [0, 2] and choice in (0, 2)
    assert sum(r["chosen"] for r in rows) == 1 and all(r["cpu_ms"] > 0 for r in rows)
    assert rows[0]["isa"] is not None and rows[0]["cpu"]
    with pytest.raises(ValueError, match="--float-layers auto is for int8"):
        choose_float_layers(model, "litert", [images(4)])
    code = main(["export", "mobilenet_v1_0.25_128", "--format", "int8", "--float-layers", "two",
                 "--output", str(tmp_path / "x.onnx")])
    _, err = capsys.readouterr()
    assert code == 2 and "--float-layers" in err


def test_peers_are_judged_on_paired_rounds():
    """deploy.compare (benchmarks/phones.py): per-round medians and the one-sided sign test
    behind "no slower"."""
    assert per_round([0.001, 0.003, 0.002, 0.004, 0.006, 0.005], 3) == [2.0, 5.0]
    assert sign_test([2.0] * 10, [1.0] * 10) == (10, 10, 1 / 1024)  # always slower
    k, n, p = sign_test([1.0, 2.0] * 5, [1.5] * 10)  # slower in half the rounds
    assert (k, n) == (5, 10) and p > 0.5
    assert sign_test([1.0] * 4, [1.0] * 4) == (0, 0, 1.0)  # ties carry no evidence
    assert sign_test([2.0, 2.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0]) == (3, 3, 1 / 8)


def test_phone_latency_targets_per_repeat():
    """deploy.compare (benchmarks/phones.py latency --repeats): every target judged on each
    timing against the GEMM timed in it, then per target over the repeats: each value, their
    median and how many met it."""
    def rows(gemm, onnx, int8, timm):
        def mk(model, backend, precision, ms):
            return {"model": model, "backend": backend, "precision": precision, "cpu_ms": ms,
                    "wall_ms": 2 * ms}
        return [mk("gemm", "onnxruntime", "fp32", gemm), mk("ours", "onnx", "fp32", onnx),
                mk("ours", "int8", "int8", int8), mk("timm", "onnx", "fp32", timm)]

    madds = GEMM_N ** 3 // 2  # floor = half the GEMM's time
    first, floor = latency_checks(rows(10.0, 5.5, 1.9, 6.0), madds, "cpu_ms", 99.0)
    assert floor == 5.0
    assert [(c["value"], c["met"]) for c in first] == [(1.1, True), (0.917, True), (0.345, True)]
    assert "CPU ms" in first[0]["target"] and "int8 / our onnx fp32" in first[2]["target"]
    # The floor moves with the GEMM of the same timing: the same model time misses it when the
    # GEMM ran faster.
    second, floor = latency_checks(rows(8.0, 5.5, 2.4, 5.0), madds, "cpu_ms", 99.0)
    assert floor == 4.0 and [c["met"] for c in second] == [False, False, False]
    # Without a GEMM in the rows, the floor measured before the rounds; on wall time.
    checks, floor = latency_checks(rows(8.0, 5.5, 2.4, 5.0)[1:], madds, "wall_ms", 10.0)
    assert floor == 10.0 and checks[0]["value"] == 1.1 and "wall ms" in checks[0]["target"]
    summary = checks_over_repeats([first, second])
    assert [c["target"] for c in summary] == [c["target"] for c in first]
    assert [c["values"] for c in summary] == ["1.1 1.375", "0.917 1.1", "0.345 0.436"]
    assert [c["median"] for c in summary] == pytest.approx([1.2375, 1.0085, 0.3905], abs=1e-3)
    assert [c["met"] for c in summary] == ["1 of 2"] * 3


def test_timm_comparison_is_met_unless_slower_in_significantly_many_rounds():
    """Ours slower by the medians but in few paired rounds: met; slower in every round: not."""
    def rows(ours_rounds):
        return [{"model": m, "backend": "onnx", "precision": "fp32", "cpu_ms": statistics.median(r),
                 "round_cpu_ms": r} for m, r in (("ours", ours_rounds), ("timm", [1.0] * 8))]

    few = [1.5, 1.5, 1.5, 0.9, 0.9, 0.9, 0.9, 1.2]  # median 1.05 > 1.0, slower in 4 of 8
    check = latency_checks(rows(few), 1, "cpu_ms", 1e-6)[0][1]
    assert check["value"] == 1.05 and check["met"] and check["slower rounds"] == "4/8, p=0.64"
    check = latency_checks(rows([1.1] * 8), 1, "cpu_ms", 1e-6)[0][1]
    assert not check["met"] and check["slower rounds"] == "8/8, p=0.00"
