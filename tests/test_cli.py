"""The command line: output formats and clear errors for bad input."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import run_cli, run_cli_captured

from mobilenets.cli import main
from mobilenets.cli.common import parse_resolution
from mobilenets.cost.profiler import profile_model
from mobilenets.models.mobilenet_v1 import MobileNetV1


def test_profile_json_by_name(capsys):
    code, out, _ = run_cli(capsys, "profile", "--model", "mobilenet_v1_0.5_160", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["totals"]["madds"] / 1e6 == pytest.approx(76, rel=0.01)  # Table 7
    assert data["input_size"] == [3, 160, 160] and len(data["layers"]) == 29


def test_profile_by_width_and_nonsquare_resolution(capsys, tmp_path):
    out_file = tmp_path / "p.csv"
    code, _, _ = run_cli(capsys, "profile", "--width-mult", "0.25", "--resolution", "128x96",
                         "--format", "csv", "--output", out_file)
    lines = out_file.read_text().splitlines()
    assert code == 0 and lines[0].startswith("name,type_stride") and "128 x 96 x 3" in lines[1]


@pytest.mark.parametrize("argv, message", [
    (["profile", "--width-mult", "0"], "width_mult"),
    (["profile", "--resolution", "31"], "--resolution"),
    (["profile", "--resolution", "abc"], "--resolution"),
    (["profile", "--model", "mobilenet_v1_1.0_255"], "did you mean"),
    (["models", "--pattern", "resnet*"], "--pattern"),
    (["paper-tables", "--table", "11"], "--table"),
    (["convert", "/nonexistent/weights.h5", "/tmp/out.safetensors"], "/nonexistent/weights.h5"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_parse_resolution():
    assert parse_resolution("224") == (224, 224) and parse_resolution("160x128") == (160, 128)


def test_paper_tables_and_models(capsys):
    code, out, _ = run_cli(capsys, "paper-tables", "--table", "3", "--table", "7", "--format",
                           "json")
    rows = json.loads(out)
    assert code == 0 and {r["table"] for r in rows} == {"3", "7"} and len(rows) == 16
    code, out, _ = run_cli(capsys, "models", "--pattern", "mobilenet_v1_0.25*", "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 4


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "mobilenets", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "paper-tables" in proc.stdout


def test_set_rejects_unknown_and_badly_typed_fields(capsys):
    code, _, err = run_cli(capsys, "train", "--preset", "smoke", "--set", "lr_rate=1")
    assert code == 2 and "--set takes KEY=VALUE" in err
    code, _, err = run_cli(capsys, "train", "--preset", "smoke", "--set", "batch_size=ten")
    assert code == 2 and "batch_size" in err
    code, _, err = run_cli(capsys, "train", "--preset", "smoke", "--data", "/no/such/folder")
    assert code == 2 and "/no/such/folder" in err


# ------------------------------------------------------------- what commands do with a trained run

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One smoke run on Fashion-MNIST (64 training, 32 validation images): its folder and what
    `train` printed. Shared by the tests below, each of one command."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code, stdout, err = run_cli_captured("train", "--preset", "smoke", "--out", out,
                                         "--limit-train", "64", "--limit-val", "32",
                                         "--set", "flip=false")
    assert code == 0, err
    return out, stdout


@pytest.mark.needs_data
def test_train_reports_and_writes_the_model(trained):
    out, stdout = trained
    assert "top-1" in stdout and (out / "model.safetensors").is_file()
    assert json.loads((out / "eval.json").read_text())["num_samples"] == 32  # --limit-val


@pytest.mark.needs_data
def test_eval_json_counts_the_limited_images(trained, capsys):
    out, _ = trained
    code, stdout, _ = run_cli(capsys, "eval", out / "model.safetensors", "--limit", "40",
                              "--format", "json")
    result = json.loads(stdout)
    matrix = result["confusion_matrix"]
    assert code == 0 and result["num_samples"] == 40 and len(matrix) == 10
    assert sum(map(sum, matrix)) == 40  # every image counted once
    assert result["top1"] == pytest.approx(100 * sum(matrix[i][i] for i in range(10)) / 40)


@pytest.mark.needs_data
def test_predict_ranks_the_top_k(trained, capsys, tmp_path):
    from PIL import Image

    from mobilenets.engine.data import load_fashion_mnist

    out, _ = trained
    test = load_fashion_mnist("test")
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(test.images[i, 0].numpy()).save(p)
        paths.append(str(p))
    code, stdout, _ = run_cli(capsys, "predict", out / "model.safetensors", *paths,
                              "--top-k", "3", "--format", "json")
    rows = json.loads(stdout)
    assert code == 0 and [r["image"] for r in rows] == paths
    for r in rows:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 100
        labels = [t["label"] for t in r["top"]]
        assert len(set(labels)) == 3 and set(labels) <= set(test.class_names)


@pytest.mark.needs_data
def test_predict_names_a_missing_image(trained, capsys, tmp_path):
    out, _ = trained
    code, _, err = run_cli(capsys, "predict", out / "model.safetensors", tmp_path / "nope.png")
    assert code == 2 and "nope.png" in err


@pytest.mark.needs_data
def test_compare_reads_the_run(trained, capsys):
    out, _ = trained
    code, stdout, _ = run_cli(capsys, "compare", out, "--format", "json")
    row = json.loads(stdout)[0]
    assert code == 0 and row["width_mult"] == 0.25 and row["resolution"] == 32
    assert row["top1"] == json.loads((out / "eval.json").read_text())["top1"]
    assert row["train_seconds"] > 0 and row["seed"] == 0
    cost = profile_model(MobileNetV1(0.25, num_classes=10), (3, 32, 32))  # at its input size
    assert row["madds_m"] == round(cost.total_madds / 1e6, 2)


@pytest.mark.needs_data
def test_compare_mean_merges_seeds_of_one_recipe(trained, capsys, tmp_path):
    """The same recipe with another seed: --mean merges the two; another recipe stays apart."""
    out, _ = trained
    top1 = json.loads((out / "eval.json").read_text())["top1"]
    for name, changes, other_top1 in (("s1", {"seed": 1}, top1 + 2), ("lr", {"lr": 0.5}, 50.0)):
        other = tmp_path / name
        shutil.copytree(out, other)
        cfg = json.loads((other / "config.json").read_text())
        (other / "config.json").write_text(json.dumps({**cfg, **changes, "out_dir": str(other)}))
        ev = json.loads((other / "eval.json").read_text())
        (other / "eval.json").write_text(json.dumps({**ev, "top1": other_top1}))
    code, stdout, _ = run_cli(capsys, "compare", out, tmp_path / "s1", tmp_path / "lr", "--mean",
                              "--format", "json")
    rows = json.loads(stdout)
    assert code == 0 and [r["seeds"] for r in rows] == [2, 1]
    assert rows[0]["top1"] == round(top1 + 1, 2) and rows[0]["top1_std"] == round(2 ** 0.5, 2)
    assert rows[1]["top1"] == 50.0 and rows[1]["top1_std"] == 0


@pytest.mark.needs_data
@pytest.mark.parametrize("fmt, extra", [
    ("onnx", ()), ("int8", ("--calibration-images", "32", "--min-agreement", "0"))])
def test_export_evaluates_the_export(trained, capsys, tmp_path, fmt, extra):
    out, _ = trained
    dst, report_file = tmp_path / f"m_{fmt}.onnx", tmp_path / f"{fmt}.json"
    code, stdout, err = run_cli(capsys, "export", out / "model.safetensors", "--format", fmt,
                                "--output", dst, *extra, "--evaluate", "--limit", "32",
                                "--report", report_file)
    assert code == 0 and dst.is_file(), err
    report = json.loads(report_file.read_text())
    assert report["images"] == 32 and report["format"] == fmt and "drop" in stdout
    assert report["drop"] == round(report["torch_top1"] - report["export_top1"], 2)
    if fmt == "onnx":
        assert report["drop"] == 0  # fp32: the same top-1


@pytest.mark.needs_data
def test_export_safetensors_keeps_the_model(trained, capsys, tmp_path):
    import mobilenets as M

    out, _ = trained
    dst = tmp_path / "m.safetensors"
    code, _, err = run_cli(capsys, "export", out / "model.safetensors", "--format", "safetensors",
                           "--output", dst)
    assert code == 0, err
    a, b = M.load_model(out / "model.safetensors"), M.load_model(dst)
    assert a.config == b.config
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.needs_data
def test_bench_a_model_file(trained, capsys):
    out, _ = trained
    code, stdout, _ = run_cli(capsys, "bench", "--model-file", out / "model.safetensors",
                              "--backends", "eager,onnx", "--rounds", "1", "--batch", "2",
                              "--no-memory", "--format", "json")
    rows = json.loads(stdout)["rows"]
    assert code == 0 and [r["backend"] for r in rows] == ["eager", "onnx"]


def test_export_and_bench_name_bad_input(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", tmp_path / "missing.safetensors", "--output",
                           tmp_path / "x.onnx")
    assert code == 2 and "missing.safetensors" in err
    code, _, err = run_cli(capsys, "bench", "--backends", "onnx,tpu")
    assert code == 2 and "unknown backend 'tpu'" in err


def _subparsers(parser):
    """Every (command path, parser) below ``parser``."""
    import argparse

    out = [("mobilenets", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{path} {name}" if path != "mobilenets" else f"mobilenets {name}", p)
                        for path, p in _subparsers(sub)]
    return out


def test_every_option_states_its_default():
    from mobilenets.cli import build_parser
    from mobilenets.cli.common import DefaultsFormatter

    missing = []
    for path, parser in _subparsers(build_parser()):
        formatter = DefaultsFormatter(path)
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            text = formatter._get_help_string(action)
            if "default" not in text and "(required)" not in text:
                missing.append(f"{path} {action.option_strings[0]}")
    assert not missing, missing


def test_version_and_timm_names(capsys):
    import mobilenets as M

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mobilenets {M.__version__}"
    assert M.get_spec("mobilenetv1_100").name == "mobilenet_v1_1.0_224"
    assert M.create_model("mobilenetv2_140").config.name == "mobilenet_v2_1.4_224"
    with pytest.raises(ValueError, match="did you mean mobilenet_v1_0.5_160"):
        M.get_spec("mobilenet_v1_0.5_16")


def test_one_loader_checks_the_kind(tmp_path, capsys):
    import mobilenets as M

    path = tmp_path / "m.safetensors"
    M.save_model(M.create_model("mobilenet_v1_0.25_128", num_classes=3), path,
                 extra={"class_names": ["a", "b", "c"]})
    model = M.load_model(path, kind="classifier")
    assert model.metadata["class_names"] == ["a", "b", "c"] and not model.training
    with pytest.raises(ValueError, match="holds a classifier model .* not a detector"):
        M.load_model(path, kind="detector")
    code, _, err = run_cli(capsys, "detect", "eval", str(path), str(tmp_path / "a.json"))
    assert code == 2 and "not a detector" in err
