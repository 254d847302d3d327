"""Hostile input and faults: every command answers with one clear line, and nothing is ever lost.

One section per class of failure of issue 15, each with data made here:

1. resume after kill -9 is exact on ImageFolder data with dropout (num_workers 0 and 2);
2. a run folder belongs to one process;
3. no command writes over a file it was given to read;
4. what a user can cause ends with one line naming the file or parameter (exit status 2);
5. no silently wrong data (16-bit and float images, FIFOs, images that fail late, CSV encodings);
6. nonsense values are refused, naming the parameter;
7. messages do not mislead;
8. no leftovers, and memory flat in the number of images predicted;
9. training asserts learning whatever the kernel's rounding (scripts/cpu_matrix.sh runs it on each);
10. Keras imports reproduce their source at every input size it accepts.
"""
import errno
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (assert_one_clear_line, assert_resumed_exactly, kill_at_first_checkpoint,
                     make_image_folder, run_cli)
from PIL import Image

from mobilenets.engine.data import ImageFolderDataset, load_image
from mobilenets.engine.runfolder import load_checkpoint, lock_run_folder, release_run_folder
from mobilenets.fileio import command_inputs, write_json
from mobilenets.models.modelfile import save_model
from mobilenets.models.registry import create_model, load_model

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(create_model("mobilenet_v1_0.25_128", num_classes=2), path,
               extra={"class_names": ["class0", "class1"]})
    return path


def train_args(data, out, *extra):
    return ["train", "--preset", "smoke", "--data", data, "--out", out, "--limit-train", "32",
            "--batch-size", "8", "--epochs", "1", *extra]


def png_bytes(width: int, height: int, idat: bytes) -> bytes:
    """A PNG file with the given size and IDAT payload, every chunk's CRC correct."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks forever)."""
    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- 1. exact resume

def _train_process(data, out, workers, *extra):
    argv = [sys.executable, "-m", "mobilenets", *map(str, train_args(
        data, out, "--limit-train", "64", "--epochs", "2", "--set", "dropout=0.5",
        "--set", "checkpoint_every=2", "--set", f"num_workers={workers}", *extra))]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.mark.numerics
def test_resume_after_kill_9_is_exact_on_imagefolder_with_dropout(data, tmp_path, capsys):
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "full", "--limit-train", "64",
                                               "--epochs", "2", "--set", "dropout=0.5",
                                               "--set", "checkpoint_every=2"))
    assert code == 0, err
    full = load_model(tmp_path / "full" / "model.safetensors").state_dict()
    for workers in (0, 2):
        out = tmp_path / f"killed{workers}"
        step = kill_at_first_checkpoint(_train_process(data, out, workers),
                                        out / "checkpoint.pt")
        assert 0 < step < 16 and not (out / "model.safetensors").exists()
        resumed = _train_process(data, out, workers, "--resume")
        log = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0 and f"at step {step}" in log, log
        assert_resumed_exactly(full, load_model(out / "model.safetensors").state_dict(),
                               f"num_workers={workers}")


# --------------------------------------------------------------------------- 2. run ownership

def test_a_run_folder_belongs_to_one_process(data, tmp_path, capsys):
    out = tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from mobilenets.engine.runfolder import lock_run_folder; "
         "lock_run_folder(Path(sys.argv[1])); print('locked', flush=True); time.sleep(300)",
         str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        code, _, err = run_cli(capsys, *train_args(data, out))
        assert_one_clear_line(code, err, out, f"process {owner.pid}")
        assert not (out / "config.json").exists()  # nothing of the second run was written
    finally:
        owner.kill()
        owner.wait()
    code, _, err = run_cli(capsys, *train_args(data, out))  # the dead owner's lock is taken over
    assert code == 0, err
    # The same process may take its own folder again; another folder is independent.
    lock_run_folder(tmp_path / "mine")
    lock_run_folder(tmp_path / "mine")
    release_run_folder(tmp_path / "mine")


# --------------------------------------------------------------------------- 3. inputs stay

def test_no_command_writes_over_its_input(model_file, tmp_path, capsys):
    before = model_file.read_bytes()
    code, _, err = run_cli(capsys, "distill", "--teacher", model_file, "--teacher-cache",
                           model_file, "--out", tmp_path / "d")
    assert_one_clear_line(code, err, model_file, "--teacher")
    code, _, err = run_cli(capsys, "export", model_file, "--format", "safetensors", "--output",
                           model_file)
    assert_one_clear_line(code, err, "input")
    link = tmp_path / "link.safetensors"  # another name for the same file is caught too
    link.symlink_to(model_file)
    code, _, err = run_cli(capsys, "export", model_file, "--format", "safetensors", "--output",
                           link)
    assert_one_clear_line(code, err, "input")
    assert model_file.read_bytes() == before
    # Inputs read on the way (a model file named nowhere on the command line) count too.
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(before)
    with command_inputs():
        model = load_model(copy)
        with pytest.raises(ValueError, match="input of this command"):
            save_model(model, copy)
    save_model(model, copy)  # outside a command, the library writes where it is told


# --------------------------------------------------------------------------- 4. one clear line

def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    target = tmp_path / "models.csv"
    target.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("mobilenets.fileio.os.fsync", full)
    code, _, err = run_cli(capsys, "models", "--pattern", "*0.25_128", "--format", "csv",
                           "--output", target)
    assert_one_clear_line(code, err, "no space left", target)
    assert target.read_text() == "old\n" and not list(tmp_path.glob(".*.tmp"))


def test_output_folder_and_out_file(model_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "models", "--pattern", "*0.25_128", "--output", tmp_path)
    assert_one_clear_line(code, err, tmp_path, "folder")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, _, err = run_cli(capsys, *train_args(make_image_folder(tmp_path / "d", per_class=8),
                                               not_a_folder))
    assert_one_clear_line(code, err, not_a_folder, "is a file")


def test_non_finite_loss_is_one_line(data, tmp_path, capsys):
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "nan", "--lr", "1e30", "--epochs",
                                               "8", "--set", "checkpoint_every=1"))
    assert_one_clear_line(code, err, "loss became", "lower lr")


def test_resume_with_another_class_count(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(data, out, "--limit-train", "16"))
    assert code == 0, err
    make_image_folder(tmp_path / "data", classes=3, per_class=8)  # a third class appears
    code, _, err = run_cli(capsys, *train_args(data, out, "--limit-train", "16", "--resume"))
    assert_one_clear_line(code, err, out / "checkpoint.pt", "class count")


def test_sizes_that_cannot_fit_are_refused_before_allocating(data, model_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "w", "--width-mult", "1000"))
    assert_one_clear_line(code, err, "width_mult 1000", "needs about")
    image = data / "val" / "class0" / "000.png"
    code, _, err = run_cli(capsys, "predict", model_file, image, "--resolution", "100000")
    assert_one_clear_line(code, err, "resolution 100000", "needs about")
    # A model file whose config asks for terabytes is refused before the model is built.
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(model_file), framework="pt") as f:
        meta = f.metadata()
    huge = tmp_path / "huge.safetensors"
    save_file(load_file(str(model_file)), str(huge), metadata={
        **meta, "config": json.dumps({**json.loads(meta["config"]), "width_mult": 1000.0})})
    code, _, err = run_cli(capsys, "predict", huge, image)
    assert_one_clear_line(code, err, huge, "needs about")
    # profile only counts: it answers for any size, on the meta device.
    code, out, err = run_cli(capsys, "profile", "--width-mult", "1000", "--format", "json")
    assert code == 0 and json.loads(out)["totals"]["params"] > 1e12, err


def test_wrong_metadata_in_our_model_file(model_file, tmp_path, capsys):
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(model_file), framework="pt") as f:
        meta = f.metadata()
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(image)
    for config in ("{not json", "[1, 2]", json.dumps({"arch": "mobilenet_v1", "width_mult": "x"}),
                   json.dumps({"arch": ["mobilenet_v1"]})):
        bad = tmp_path / "bad.safetensors"
        save_file(load_file(str(model_file)), str(bad), metadata={**meta, "config": config})
        code, _, err = run_cli(capsys, "predict", bad, image)
        assert_one_clear_line(code, err, bad)


def test_decompression_bomb_in_predict(model_file, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(40_000, 40_000, zlib.compress(b"")))  # 1.6e9 pixels
    code, _, err = run_cli(capsys, "predict", model_file, bomb)
    assert_one_clear_line(code, err, bomb, "decompression bomb")


def test_errors_in_data_loading_workers_are_one_line(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", per_class=8, val_per_class=1)
    bad = data / "train" / "class1" / "bad.png"
    bad.write_bytes(png_bytes(8, 8, b"not zlib data"))  # passes verify(), fails to decode
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run", "--limit-train", "17",
                                               "--batch-size", "17", "--set", "num_workers=2"))
    assert_one_clear_line(code, err, bad)
    assert len(err.strip().splitlines()) == 1


def test_a_bug_says_it_is_one(capsys, monkeypatch):
    def broken(args):
        return {}["missing"]
    monkeypatch.setattr("mobilenets.cli.models.cmd_models", broken)
    code, _, err = run_cli(capsys, "models")
    assert code == 1 and "internal error" in err and "Traceback" in err


# --------------------------------------------------------------------------- 5. no wrong data

def test_16_bit_and_float_images_by_their_range(tmp_path):
    png16 = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(png16)
    assert Image.open(png16).mode.startswith("I")
    assert abs(load_image(png16, 32).float().mean().item() - 127.5) < 1  # not all white
    tif = tmp_path / "float.tif"
    Image.fromarray(np.full((40, 40), 0.25, np.float32)).save(tif)
    assert abs(load_image(tif, 32).float().mean().item() - 64) < 1  # not all black
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.full((40, 40), 1000.0, np.float32)).save(wide)
    with pytest.raises(ValueError, match=f"{wide}.*outside"):
        load_image(wide, 32)


def test_special_files_and_late_decode_failures(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2, val_per_class=1)
    fifo = root / "train" / "class0" / "fifo.png"
    os.mkfifo(fifo)
    late = root / "train" / "class1" / "late.png"
    late.write_bytes(png_bytes(8, 8, b"not zlib data at all"))  # passes verify(), no decode
    with Image.open(late) as im:
        im.verify()
    with deadline(60):
        with pytest.raises(ValueError, match=f"{fifo} is a FIFO"):
            ImageFolderDataset(root, "train", 32)
        ds = ImageFolderDataset(root, "train", 32, skip_bad_files=True)
    assert sorted(ds.skipped) == sorted([str(fifo), str(late)]) and len(ds) == 4
    fifo.unlink()
    ds = ImageFolderDataset(root, "train", 32)  # without skipping: named when it is decoded
    with pytest.raises(ValueError, match=str(late)):
        [ds[i] for i in range(len(ds))]


def test_csv_encodings(tmp_path):
    from mobilenets.tasks.geo.data import read_geo_csv

    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffimage,latitude,longitude\na.png,1.5,2\n".encode("utf-8"))
    assert [p.latitude for p in read_geo_csv(bom, check_images=False)] == [1.5]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,latitude,longitude\ncaf\xe9.png,1,2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{latin} is not UTF-8"):
        read_geo_csv(latin, check_images=False)


# --------------------------------------------------------------------------- 6. nonsense

@pytest.mark.parametrize("argv, flag", [
    (["train", "--limit-train", "0"], "--limit-train"),
    (["train", "--limit-train", "-5"], "--limit-train"),
    (["train", "--resolution", "0"], "--resolution"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--epochs", "inf"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["eval", "m.safetensors", "--eval-crop", "0"], "--eval-crop"),
    (["eval", "m.safetensors", "--batch-size", "0"], "--batch-size"),
    (["predict", "m.safetensors", "x.png", "--top-k", "0"], "--top-k"),
    (["profile", "--num-classes", "0"], "--num-classes"),
    (["profile", "--width-mult", "inf"], "--width-mult"),
    (["train", "--set", "warmup_epochs=-1"], "warmup_epochs"),
    (["train", "--set", "weight_decay=-0.1"], "weight_decay"),
    (["train", "--set", "eps=nan"], "eps"),
    (["train", "--set", "random_erasing=1.5"], "random_erasing"),
])
def test_nonsense_values_name_the_parameter(capsys, argv, flag):
    code, _, err = run_cli(capsys, *argv)
    assert_one_clear_line(code, err, flag)


def test_float_layers_and_finetune_model(data, model_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", model_file, "--format", "int8", "--float-layers", "99",
                           "--data", data, "--calibration-images", "8", "--output",
                           tmp_path / "q.onnx")
    assert_one_clear_line(code, err, "--float-layers 99", "convolutions")
    code, _, err = run_cli(capsys, "finetune", "--init", model_file, "--model",
                           "mobilenet_v1_1.0_224", "--data", data, "--out", tmp_path / "ft")
    assert_one_clear_line(code, err, "--model mobilenet_v1_1.0_224", "--init", "width_mult")


def _coco(tmp_path, images=None, annotations=None, categories=None, size=(32, 32)):
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", size).save(tmp_path / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}],
            "categories": [{"id": 1, "name": "thing"}]}
    for key, value in (("images", images), ("annotations", annotations),
                       ("categories", categories)):
        if value is not None:
            coco[key] = value
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("change, message", [
    ({"images": [{"id": 1, "file_name": "a.png", "width": None, "height": 32}]},
     r"images\[0\] \(id 1\): 'width' must be a positive integer, got None"),
    ({"images": [{"id": 1, "width": 32, "height": 32}]}, r"images\[0\] \(id 1\) has no 'file_name'"),
    ({"images": [{"id": "1", "file_name": "a.png", "width": 32, "height": 32}]}, "'id' must be an integer"),
    ({"images": []}, "lists no images"),
    ({"categories": []}, "lists no categories"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}] * 2},
     r"duplicate image id 1 \(images\[0\] and images\[1\]\)"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 2, 3, 3]}]},
     r"annotations\[0\] \(id 1\): 'bbox' must be"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1}]}, "has no 'bbox'"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 32}]},
     "is 32x32, but the file gives width 64"),
])
def test_coco_schema_names_the_record(tmp_path, change, message):
    from mobilenets.tasks.detection.data import CocoDetection

    path = _coco(tmp_path, **change)
    with pytest.raises(ValueError, match=message):
        CocoDetection(path)


def test_coco_errors_reach_the_command_line(tmp_path, capsys):
    path = _coco(tmp_path, images=[{"id": 1, "file_name": "a.png", "width": 32, "height": 32}] * 2)
    code, _, err = run_cli(capsys, "detect", "train", path, "--out", tmp_path / "run")
    assert_one_clear_line(code, err, path, "duplicate image id 1")


# --------------------------------------------------------------------------- 7. messages

def test_unsafe_checkpoint_message_does_not_advise_unsafe_loading(tmp_path, capsys):
    import argparse

    evil = tmp_path / "evil.pth"
    torch.save({"x": argparse.Namespace(a=1)}, evil)  # an object a safe load refuses
    code, _, err = run_cli(capsys, "convert", evil, tmp_path / "out.safetensors", "--source",
                           "timm")
    assert_one_clear_line(code, err, evil, "may be unsafe")
    assert "weights_only" not in err
    with pytest.raises(ValueError, match="may be unsafe") as info:
        load_checkpoint(evil)
    assert "weights_only" not in str(info.value)


def test_broken_json_names_its_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"model": "mobilenet_v1_0.25_128",')
    write_json(run_dir / "eval.json", {"top1": 1.0})
    code, _, err = run_cli(capsys, "compare", run_dir)
    assert_one_clear_line(code, err, run_dir / "config.json", "not valid JSON")


# --------------------------------------------------------------------------- 8. leftovers, memory

def test_stale_temporaries_are_cleaned_on_the_next_write(tmp_path):
    target = tmp_path / "result.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".result.json.{dead.pid}.abc123.tmp", tmp_path / ".result.json.xyz.tmp"]
    live = tmp_path / f".result.json.{os.getpid()}.def456.tmp"  # a write in progress
    other = tmp_path / f".other.json.{dead.pid}.abc.tmp"  # another target's
    for p in (*stale, live, other):
        p.write_bytes(b"\0" * 1000)
    write_json(target, {"ok": True})
    assert json.loads(target.read_text()) == {"ok": True}
    assert not any(p.exists() for p in stale) and live.exists() and other.exists()


def test_predict_streams_in_batches(model_file, tmp_path, capsys, monkeypatch):
    from mobilenets.models.base import MobileNetBase

    seen = []
    predict = MobileNetBase.predict

    def spy(self, x):
        seen.append(x.shape[0])
        return predict(self, x)
    monkeypatch.setattr(MobileNetBase, "predict", spy)
    images = []
    for i in range(7):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 40), (i * 30, 0, 0)).save(images[-1])
    code, out, err = run_cli(capsys, "predict", model_file, *images, "--batch-size", "3",
                             "--top-k", "1", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and seen == [3, 3, 1], err
    assert [r["image"] for r in rows] == [str(p) for p in images]


# --------------------------------------------------------------------------- 9. every kernel

@pytest.mark.numerics
def test_training_learns_on_every_kernel(tmp_path):
    """One batch seen many times is fitted, whatever the kernels' rounding. The trajectory is
    chaotic (BatchNorm over 16 images: at lr 0.1 the last epochs ended at 0.001 to 5.7 x the first
    loss, by kernel), so the assertion is on the best epoch, at lr 0.05 (docs/reliability.md, 6)."""
    from mobilenets.engine.data import TensorImageDataset
    from mobilenets.engine.loop import fit
    from mobilenets.tasks.classification.train import make_config, train_augment

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(16) % 2
    images = (torch.rand(16, 3, 32, 32, generator=g) * 80 + 120 * labels.view(-1, 1, 1, 1)).byte()
    cfg = make_config("smoke", out_dir=str(tmp_path), batch_size=16, epochs=15, optimizer="sgd",
                      lr=0.05, flip=False, min_crop_area=1.0, dropout=0.0, eval_every_epoch=False,
                      checkpoint_every=1000)
    torch.manual_seed(0)
    model = create_model(cfg.model, num_classes=2, dropout=0.0)
    try:
        result = fit(cfg, model, TensorImageDataset(images, labels, ["a", "b"]),
                     lambda net, x, y, i: torch.nn.functional.cross_entropy(net(x), y),
                     augment=train_augment(cfg))
    finally:
        release_run_folder(tmp_path)
    losses = [h["train_loss"] for h in result.history]
    assert min(losses) < 0.25 * losses[0], losses


# --------------------------------------------------------------------------- 10. Keras sizes

KERAS_SIZES = [  # app, alpha, built for (None: any size), include_top, sizes compared
    ("MobileNet", 0.25, None, False, (33, 47, 64, 97)),
    ("MobileNetV2", 0.35, None, False, (33, 65, 97)),
    ("MobileNet", 0.25, 97, True, (97,)),
    ("MobileNetV2", 0.35, 97, True, (97,)),
]


@pytest.mark.numerics
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("app, alpha, built, top, sizes", KERAS_SIZES,
                         ids=[f"{c[0]}-{c[2] or 'any'}" for c in KERAS_SIZES])
def test_keras_import_reproduces_every_size_its_source_accepts(app, alpha, built, top, sizes,
                                                                tmp_path):
    from references import (FEATURE_MAP_TOL, TOL, assert_meaningful, keras_forward, keras_reference,
                            max_diff)

    from mobilenets.deploy.convert import convert
    from mobilenets.models.registry import build_from_config

    ref_model = keras_reference(alpha, built or 64, include_top=top, classes=10, app=app,
                                any_size=built is None)
    path = tmp_path / "m.keras"
    ref_model.save(path)
    model = load_model(convert(path, tmp_path / "m.safetensors"))
    other = "tf_same" if model.config.padding == "keras" else "keras"
    wrong = build_from_config(model.config.replace(padding=other)).eval()
    wrong.load_state_dict(model.state_dict())
    for size in sizes:
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        ref = keras_forward(ref_model, x)
        assert_meaningful(ref)
        with torch.no_grad():
            out, off = model(x).numpy(), wrong(x).numpy()
        assert out.shape == ref.shape, (size, out.shape, ref.shape)
        assert max_diff(out, ref) < (TOL if top else FEATURE_MAP_TOL), size
        if size % 2:  # on odd maps the other padding is wrong: the comparison can tell
            assert off.shape != ref.shape or max_diff(off, ref) > 10 * TOL, size
