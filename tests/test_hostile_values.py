"""Hostile values (issue 25, part 5): each answered with one line naming the parameter or file,
exit status 2, before any work, nothing lost.

1. model files: class names that do not match the class count, non-finite weights or outputs,
   a changed byte (the checksum), on every command that reads one;
2. data that does not fit the model: a 3-class model evaluated on 10 classes; a CSV that is not
   a sweep; a class folder whose name is not UTF-8 (accepted);
3. ranges and combinations refused at parsing: ``--min-agreement``, seeds and ``--seeds``,
   int8-only options on other formats, a synthetic image too large for memory;
4. outputs checked before any work: a folder where a file is due, a read-only folder, a missing
   ``--calibration-data``.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mobilenets.cli import build_parser
from mobilenets.fileio import write_text
from mobilenets.models.modelfile import save_model
from mobilenets.models.registry import create_model, load_model
from mobilenets.tasks.classification.sweep import run_sweep
from mobilenets.tasks.classification.train import PRESETS

MODEL = "mobilenet_v1_0.25_128"


def rewrite(src: Path, dst: Path, metadata: dict | None = None, drop=(), tensors=None) -> Path:
    """``src`` written again as ``dst`` by safetensors itself (as an editor or another tool
    would): its metadata updated with ``metadata``, the keys ``drop`` removed."""
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    meta = {k: v for k, v in {**meta, **(metadata or {})}.items() if k not in drop}
    save_file(tensors if tensors is not None else load_file(str(src)), str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A 3-class model with names, one without, and an image to classify."""
    root = tmp_path_factory.mktemp("values")
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=3)
    named = save_model(model, root / "named.safetensors", extra={"class_names": ["a", "b", "c"]})
    unnamed = save_model(model, root / "unnamed.safetensors")
    image = root / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
                    ).save(image)
    return {"named": named, "unnamed": unnamed, "image": image, "root": root}


def image_folder(root: Path, classes, per_class: int = 2) -> Path:
    """An ImageFolder (train/ and val/) with ``classes`` (folder names: str or bytes)."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in classes:
            folder = os.path.join(os.fsencode(root), os.fsencode(split), os.fsencode(c))
            os.makedirs(folder)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                    os.fsdecode(os.path.join(folder, b"%d.png" % i)))
    return root


# --------------------------------------------------------------------------- 1. model files

def command_reading(name: str, model: Path, files: dict, tmp_path: Path) -> list:
    """The argv of ``name`` reading ``model``."""
    return {"predict": ["predict", model, files["image"]],
            "eval": ["eval", model, "--limit", "4"],
            "export": ["export", model, "--output", tmp_path / "out.onnx"],
            "convert": ["convert", model, tmp_path / "out.safetensors"]}[name]


@pytest.mark.parametrize("command", ["predict", "eval", "export", "convert"])
def test_fewer_class_names_than_outputs_is_refused_where_the_file_is_read(
        files, tmp_path, refused, command):
    edited = rewrite(files["named"], tmp_path / "edited.safetensors",
                     {"extra": json.dumps({"class_names": ["a"]})})
    refused(command_reading(command, edited, files, tmp_path), edited, "1 class name",
            "3 classes")
    assert not list(tmp_path.glob("out.*"))


def test_save_model_refuses_class_names_that_do_not_match(tmp_path):
    with pytest.raises(ValueError, match="lists 1 class name for a model with 3 classes"):
        save_model(create_model(MODEL, num_classes=3), tmp_path / "m.safetensors",
                   extra={"class_names": ["a"]})
    with pytest.raises(ValueError, match="class_names must be a list of strings"):
        save_model(create_model(MODEL, num_classes=3), tmp_path / "m.safetensors",
                   extra={"class_names": [1, 2, 3]})
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("command", ["predict", "eval", "export", "convert"])
def test_non_finite_weights_are_refused(files, tmp_path, refused, command):
    model = create_model(MODEL, num_classes=3)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    nan = save_model(model, tmp_path / "nan.safetensors", extra={"class_names": list("abc")})
    refused(command_reading(command, nan, files, tmp_path), nan, "not finite",
            "classifier.weight")
    assert not list(tmp_path.glob("out.*"))


def test_predict_refuses_outputs_that_overflow(files, tmp_path, cli, refused):
    model = create_model(MODEL, num_classes=3)
    with torch.no_grad():
        model.classifier.weight.fill_(3e38)  # finite, but the logits overflow float32
        assert not model.eval()(torch.rand(1, 3, 128, 128)).isfinite().all()  # the premise
    big = save_model(model, tmp_path / "big.safetensors", extra={"class_names": list("abc")})
    code, out, err = cli("predict", big, files["image"])
    assert code == 2 and "not finite" in err and "nan" not in out.lower(), err + out


def test_a_changed_byte_is_refused_and_files_without_a_checksum_load(files, tmp_path, cli,
                                                                       refused):
    data = bytearray(files["named"].read_bytes())
    header = int.from_bytes(data[:8], "little")
    damaged = tmp_path / "damaged.safetensors"
    data[8 + header + (len(data) - 8 - header) // 2] ^= 0x04  # one bit of one weight
    damaged.write_bytes(data)
    refused(["predict", damaged, files["image"]], damaged, "damaged", "checksum")
    # The same file as older versions and other tools write it, without a checksum: it loads.
    older = rewrite(damaged, tmp_path / "older.safetensors", drop=("checksum",))
    code, out, err = cli("predict", older, files["image"])
    assert code == 0 and "%" in out, err


def test_convert_keeps_the_metadata_of_our_own_files(files, tmp_path):
    out = tmp_path / "converted.safetensors"
    from mobilenets.deploy.convert import convert

    convert(files["named"], out)
    assert load_model(out).metadata["class_names"] == ["a", "b", "c"]


# --------------------------------------------------------------------------- 2. data

def test_eval_says_the_model_and_the_data_have_other_class_counts(files, tmp_path, refused):
    data = image_folder(tmp_path / "ten", [f"class{i}" for i in range(10)], per_class=1)
    refused(["eval", files["unnamed"], "--data", data], "model has 3 classes", "data 10",
            "--data")


def test_pick_names_a_csv_that_is_not_a_sweep(tmp_path, refused):
    other = tmp_path / "other.csv"
    other.write_text("name,score\nx,1\n")
    refused(["pick", "--accuracy", other, "--max-params", "1e7"], other, "width_mult", "top1")
    bad = tmp_path / "bad.csv"
    bad.write_text("width_mult,resolution,madds,params,top1,top5,epochs,train_seconds\n"
                   "0.5,64,1,1,80,99,1,1\n0.25,sixty,1,1,70,98,1,1\n")
    refused(["pick", "--accuracy", bad, "--max-params", "1e7"], bad, "line 3", "resolution",
            "'sixty'")


def test_a_class_folder_whose_name_is_not_utf8_trains(tmp_path, cli):
    try:
        data = image_folder(tmp_path / "data", [b"caf\xe9", "plain"], per_class=4)
    except OSError:  # a file system that takes only UTF-8 names
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--preset", "smoke", "--data", data, "--out", out,
                            "--limit-train", "8", "--batch-size", "4", "--epochs", "1")
    assert code == 0, err
    shown = "caf\\xe9"  # the byte that is not UTF-8, escaped
    assert shown in (out / "eval_report.txt").read_text(encoding="utf-8") and shown in stdout
    assert load_model(out / "model.safetensors").metadata["class_names"] == [shown, "plain"]
    code, stdout, err = cli("eval", out / "model.safetensors", "--data", data)  # found again
    assert code == 0 and shown in stdout, err


# --------------------------------------------------------------------------- 3. ranges

@pytest.mark.parametrize("value", ["-1", "2", "nan"])
def test_min_agreement_is_a_share(files, tmp_path, refused, value):
    refused(["export", files["named"], "--format", "int8", "--min-agreement", value,
             "--output", tmp_path / "q.onnx"], "--min-agreement", "[0, 1]")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("flags, fmt", [
    (["--float-layers", "5"], "litert"),
    (["--float-layers", "auto"], "onnx"),
    (["--int8-classifier"], "openvino"),
    (["--per-tensor"], "litert-int8"),
    (["--calibration-images", "32"], "onnx"),
    (["--no-fold-bn"], "int8"),
])
def test_options_of_other_formats_are_refused_not_ignored(files, tmp_path, refused,
                                                          monkeypatch, flags, fmt):
    def work(*_, **__):
        raise AssertionError("the export started")
    monkeypatch.setattr("mobilenets.cli.deploy.model_for_export", work)
    refused(["export", files["named"], "--format", fmt, *flags, "--output", tmp_path / "x"],
            flags[0], f"not --format {fmt}")


@pytest.mark.parametrize("seeds, named", [
    ("0,0", "repeats 0"),
    ("1,2,1", "repeats 1"),
    ("-1", "4294967295"),
    ("99999999999999999999", "4294967295"),
    ("0,,1", "comma-separated"),
])
def test_sweep_seeds_are_distinct_seeds(tmp_path, refused, seeds, named):
    refused(["sweep", "--preset", "smoke", "--seeds", seeds, "--out", tmp_path / "s"],
            "--seeds", named)
    assert not (tmp_path / "s").exists()


def test_sweep_lists_parse_to_their_values():
    args = build_parser().parse_args(["sweep", "--seeds", "3,1", "--resolutions", "64,48"])
    assert (args.seeds, args.resolutions, args.width_mults) == ([3, 1], [64, 48],
                                                                [1.0, 0.75, 0.5, 0.25])


def test_run_sweep_checks_every_point_before_training(tmp_path):
    with pytest.raises(ValueError, match="seeds must not repeat"):
        run_sweep(PRESETS["smoke"], [0.25], [32], tmp_path / "s", seeds=[0, 0])
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 4294967295"):
        run_sweep(PRESETS["smoke"], [0.25], [32], tmp_path / "s", seeds=[0, 2 ** 64])
    assert not (tmp_path / "s").exists()  # nothing was trained


@pytest.mark.parametrize("argv, named", [
    (["train", "--seed", str(2 ** 64)], "--seed"),
    (["train", "--set", f"seed={2 ** 64}"], "seed must be an integer from 0 to 4294967295"),
    (["train", "--set", "label_seed=-1"], "label_seed"),
    (["synth", "OUT", "--seed", str(2 ** 64)], "--seed"),
])
def test_huge_seeds_name_the_parameter(tmp_path, refused, argv, named):
    refused([a.replace("OUT", str(tmp_path / "s")) for a in argv], named)


def test_a_synthetic_image_too_large_for_memory_names_image_size(tmp_path, refused):
    err = refused(["synth", tmp_path / "s", "--num-images", "1", "--image-size", "1000000"],
                  "--image-size 1000000", "memory")
    assert "width_mult" not in err and not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- 4. outputs

@pytest.mark.parametrize("argv, flag", [
    (["models", "--pattern", MODEL, "--output", "DIR"], "--output"),
    (["bench", "--model", MODEL, "--output", "DIR"], "--output"),
    (["export", "NAMED", "--output", "DIR"], "--output"),
    (["export", "NAMED", "--evaluate", "--report", "DIR", "--output", "DIR/x.onnx"], "--report"),
    (["convert", "NAMED", "DIR"], "dst"),
    (["pick", "--max-params", "1e7", "--plot", "DIR"], "--plot"),
    (["train", "--out", "FILE"], "--out"),
    (["train", "--set", "out_dir=FILE"], "--set out_dir"),
    (["predict", "NAMED", "IMAGE", "--output-dir", "FILE"], "--output-dir"),
    (["synth", "FILE"], "out_dir"),
    (["models", "--output", "FILE/x.csv"], "--output"),
])
def test_outputs_are_checked_before_any_work(files, tmp_path, refused, monkeypatch, argv, flag):
    def work(*_, **__):
        raise AssertionError("the command started")
    for name in ("bench", "pick"):
        monkeypatch.setattr(f"mobilenets.deploy.{name}.{name}", work)
    (tmp_path / "file").write_text("kept\n")
    places = {"DIR": str(tmp_path), "FILE": str(tmp_path / "file"), "NAMED": str(files["named"]),
              "IMAGE": str(files["image"])}
    for key, value in places.items():
        argv = [a.replace(key, value) for a in argv]
    refused(argv, flag)
    assert (tmp_path / "file").read_text() == "kept\n"


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process may not write in: permissions, or for root (whom permissions do
    not stop) the immutable attribute; skipped where neither is available."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        try:
            immutable = subprocess.run(["chattr", "+i", str(folder)],
                                       capture_output=True).returncode == 0
        except OSError:
            pass
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder read-only here (root without chattr +i)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_output_folder_names_the_flag(read_only_folder, refused):
    target = read_only_folder / "models.csv"
    err = refused(["models", "--pattern", MODEL, "--output", target], "--output", target,
                  "permission denied")
    assert ".tmp" not in err
    refused(["train", "--out", read_only_folder / "run"], "--out", read_only_folder / "run")


def test_a_failed_temporary_file_is_named_by_its_target(tmp_path, monkeypatch):
    def denied(prefix="", suffix="", dir=None):
        raise PermissionError(13, "Permission denied", os.path.join(dir, prefix + "x" + suffix))
    monkeypatch.setattr("mobilenets.fileio.tempfile.mkstemp", denied)
    target = tmp_path / "report.txt"
    with pytest.raises(PermissionError) as e:
        write_text(target, "x")
    assert e.value.filename == str(target)


def test_bench_names_a_missing_calibration_data_before_timing(tmp_path, refused, monkeypatch):
    def work(*_, **__):
        raise AssertionError("the timing started")
    monkeypatch.setattr("mobilenets.deploy.bench.gemm_rates", work)
    refused(["bench", "--model", MODEL, "--backends", "int8", "--calibration-data",
             tmp_path / "missing"], "--calibration-data", tmp_path / "missing")
