"""Faults that the hostile harness of issue 25 found, each answered at the shared layer:

1. logs read well off a terminal: evaluation prints lines, not carriage-return bars;
2. nothing is lost: a file that is not a teacher cache is never overwritten as one, and
   OpenVINO's .xml and .bin change as one whatever moment a writer is killed;
3. one line, not a traceback: a checkpoint that is not one, a full disk while training or
   converting;
4. a diverging run stops, says so, and keeps its last good checkpoint;
5. a failed export is one line, not forty lines of tool-chain logging;
6. a run folder copied elsewhere resumes there, to the same weights.
"""
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import assert_one_clear_line, assert_resumed_exactly, make_image_folder, run_cli

from mobilenets.engine.loop import (DIVERGENCE_FACTOR, DivergedError, NonFiniteLossError,
                                    check_loss, fit)
from mobilenets.engine.progress import Progress, RunLog
from mobilenets.engine.runfolder import load_checkpoint, release_run_folder
from mobilenets.fileio import atomic_files
from mobilenets.models.modelfile import save_model
from mobilenets.models.registry import create_model, load_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"), per_class=16)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    model = create_model("mobilenet_v1_0.25_128", num_classes=2)
    model.config.resolution = 32
    save_model(model, path, extra={"class_names": ["class0", "class1"]})
    return path


def train_args(data, out, *extra):
    """A small classification run on the ImageFolder: 4 steps of 8 images, dropout on."""
    return ["train", "--preset", "smoke", "--data", data, "--out", out, "--limit-train", "32",
            "--batch-size", "8", "--epochs", "1", "--set", "checkpoint_every=2",
            "--set", "dropout=0.5", *extra]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    """The model file of ``train_args``'s run, never interrupted."""
    from mobilenets.cli import main

    out = tmp_path_factory.mktemp("uninterrupted")
    assert main([str(a) for a in train_args(data, out)]) == 0
    return out / "model.safetensors"


def same_weights(a: Path, b: Path) -> None:
    """The model files ``a`` (uninterrupted) and ``b`` (resumed) hold the same weights, by the
    project's one standard (``helpers.assert_resumed_exactly``)."""
    assert_resumed_exactly(load_model(a).state_dict(), load_model(b).state_dict(), str(b))


# --------------------------------------------------------------------------- 1. logs

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_lines_off_a_terminal_and_a_bar_on_one():
    log = io.StringIO()
    p = Progress(40, "eval", unit="batch", stream=log)
    for _ in range(40):
        p.update()
    p.close()
    # One line per tenth of the loop, no carriage return: what a log file should hold.
    assert log.getvalue().splitlines() == [f"eval: {n}/40 batches" for n in range(4, 41, 4)]
    tty = Terminal()
    p = Progress(40, "eval", unit="batch", stream=tty)
    for _ in range(40):
        p.update()
    p.close()
    assert "\r" in tty.getvalue() and "40/40" in tty.getvalue()


def test_training_logs_every_log_every_steps(tmp_path):
    from mobilenets.tasks.classification.train import make_config

    log = io.StringIO()
    cfg = make_config("smoke", out_dir=str(tmp_path), log_every=3, progress=True)
    run_log = RunLog(tmp_path, cfg, True, total=7, initial=0, desc="train")
    run_log.progress.stream = log
    for step in range(1, 8):
        run_log.step(step, 0, {"loss": 1.0}, 0.1, 10.0)
    lines = log.getvalue().splitlines()
    assert [line.split(" epoch")[0] for line in lines] == ["step 3/7", "step 6/7", "step 7/7"]
    assert "\r" not in log.getvalue()
    # An epoch's line stays within 100 columns, however many digits a slow run's seconds take.
    record = {"epoch": 3, "step": 7, "lr": 1.033e-06, "train_loss": 1.145, "seconds": 331.7,
              "val_top1": 72.2, "val_top5": 99.5, "val_loss": 0.7696}
    log.seek(0)
    log.truncate()
    run_log.epoch(record, [record])
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and max(map(len, lines)) <= 100, lines
    assert " ".join(line.strip() for line in lines).endswith("val_top5 99.5, val_loss 0.7696")
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == record


def test_evaluation_prints_lines_not_bars_into_a_log(model_file, data, capsys):
    # stderr is not a terminal here, as in a job's log. 8 images, 1 per batch.
    code, out, err = run_cli(capsys, "eval", model_file, "--data", data, "--batch-size", "1")
    assert code == 0, err
    assert "\r" not in err
    progress = [line for line in err.splitlines() if line.startswith("eval")]
    assert progress and progress[-1] == "eval: 8/8 batches" and len(progress) == 8, err
    assert "top-1" in out  # the report stays on stdout


# --------------------------------------------------------------------------- 2. nothing lost

def test_a_file_that_is_not_a_teacher_cache_is_never_overwritten(model_file, data, tmp_path,
                                                                   capsys):
    from mobilenets.engine.data import BatchTransform, open_dataset
    from mobilenets.tasks.distillation.train import teacher_outputs

    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(3)}, weights)
    before = weights.read_bytes()
    code, _, err = run_cli(capsys, "distill", "--preset", "smoke", "--teacher", model_file,
                           "--data", data, "--teacher-cache", weights, "--out", tmp_path / "a")
    assert_one_clear_line(code, err, weights, "not a teacher cache")
    assert weights.read_bytes() == before
    # A teacher cache is written, read back, and rewritten for another teacher.
    images = open_dataset(str(data), "val", 32)
    transform = BatchTransform(32, False)
    cache = tmp_path / "teacher.safetensors"
    teacher = load_model(model_file)
    first = teacher_outputs(teacher, images, transform, cache=cache)
    torch.testing.assert_close(teacher_outputs(None, images, transform, cache=cache), first)
    with torch.no_grad():
        teacher.classifier.bias.add_(1.0)
    second = teacher_outputs(teacher, images, transform, cache=cache)
    torch.testing.assert_close(second, first + 1.0)
    with pytest.raises(ValueError, match="not a teacher cache"):
        teacher_outputs(teacher, images, transform, cache=weights)


KILLED_WRITE = """
import importlib.util, os, sys
from pathlib import Path

# fileio alone (standard library only): a process per kill point stays cheap.
spec = importlib.util.spec_from_file_location("fileio", sys.argv[3])
fileio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fileio)

# A kill at the n-th call of os.replace or os.symlink: the process ends there, no clean-up runs.
n, calls = int(sys.argv[2]), [0]
def dying(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os._exit(9)
        return real(*args, **kwargs)
    return call
fileio.os.replace, fileio.os.symlink = dying(os.replace), dying(os.symlink)
path = Path(sys.argv[1])
with fileio.atomic_files(path, [".bin"]) as work:
    (work / path.name).write_text("new xml")
    (work / path.with_suffix(".bin").name).write_text("new bin")
print("done")
"""


@pytest.mark.parametrize("before", ["plain", "group"], ids=["plain-files", "file-group"])
def test_a_file_group_changes_as_one_whatever_the_moment_of_a_kill(tmp_path, before):
    """OpenVINO's .xml and .bin (fileio.atomic_files): killed at each step of a write, a reader
    sees the old pair or the new one, never a mix; the next write cleans what the killed one
    left, its version folder (a full model copy) included."""
    for n in range(1, 20):
        folder = tmp_path / f"kill{n}"
        folder.mkdir()
        xml, binary = folder / "m.xml", folder / "m.bin"
        if before == "plain":  # files of an earlier layout
            xml.write_text("old xml")
            binary.write_text("old bin")
        else:
            with atomic_files(xml, [".bin"]) as work:
                (work / "m.xml").write_text("old xml")
                (work / "m.bin").write_text("old bin")
        proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(xml), str(n),
                               str(ROOT / "mobilenets" / "fileio.py")], cwd=ROOT,
                              capture_output=True, text=True)
        pair = (xml.read_text(), binary.read_text())
        assert pair in {("old xml", "old bin"), ("new xml", "new bin")}, (n, pair)
        if proc.returncode == 0:  # n is past the write's last step: every kill point was tried
            assert proc.stdout.strip() == "done" and pair == ("new xml", "new bin")
            break
        assert proc.returncode == 9, proc.stderr
        with atomic_files(xml, [".bin"]) as work:  # the next write
            (work / "m.xml").write_text("next xml")
            (work / "m.bin").write_text("next bin")
        assert (xml.read_text(), binary.read_text()) == ("next xml", "next bin")
        store = folder / ".m.xml.files"
        assert sorted(p.name for p in store.iterdir()) == ["current",
                                                          os.readlink(store / "current")], n
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], n
    else:
        pytest.fail("the write was killed at every one of 19 steps: it never finished")
    assert n > 2  # the test killed the write at several steps


@pytest.mark.numerics
def test_openvino_export_changes_its_pair_as_one(tmp_path):
    from mobilenets.deploy.mobile import export_mobile
    from mobilenets.deploy.runtimes import available, load_runner

    if not available("openvino"):  # not importorskip: a bare import sends OpenVINO's telemetry
        pytest.skip("openvino not installed")
    xml = tmp_path / "m.xml"
    xml.write_text("an earlier export's .xml")  # plain files, as earlier versions wrote them
    xml.with_suffix(".bin").write_text("and its .bin")
    model = create_model("mobilenet_v1_0.25_128", num_classes=10).eval()
    model.config.resolution = 32
    report = export_mobile(model, xml, "openvino")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the file read back is the pair just written
        torch.testing.assert_close(load_runner(xml)(x), model(x), atol=1e-4, rtol=1e-4)
    assert report.bytes == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    # The earlier pair and the export's work are gone: one version is left, nothing else.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.xml.files", "m.bin", "m.xml"]
    assert len(list((tmp_path / ".m.xml.files").iterdir())) == 2  # current and its folder


# --------------------------------------------------------------------------- 3. one line

@pytest.mark.parametrize("state, message", [
    ([1, 2, 3], "holds a list"),
    ({"model": {}, "optimizer": {}, "scheduler": {}, "step": 2, "history": [],
      "epoch_loss": torch.zeros(2)}, "holds no run config"),
    ({"model": {}}, "is not a training checkpoint"),
])
def test_resume_from_a_checkpoint_that_is_not_one(data, tmp_path, capsys, state, message):
    out = tmp_path / "run"
    out.mkdir()
    torch.save(state, out / "checkpoint.pt")
    code, _, err = run_cli(capsys, *train_args(data, out, "--resume"))
    assert_one_clear_line(code, err, out / "checkpoint.pt", message)
    assert "other settings" not in err


@pytest.mark.numerics
def test_full_disk_while_training_keeps_the_last_checkpoint(data, uninterrupted, tmp_path, capsys,
                                                            monkeypatch):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_fills(obj, f, *args, **kwargs):
        """The second checkpoint meets a full disk: torch.save stops mid-file, as it does."""
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"PK\x03\x04 partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 "
                               "vs 534")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    monkeypatch.setattr("mobilenets.fileio.shutil.disk_usage",
                        lambda p: SimpleNamespace(total=10 ** 9, used=10 ** 9, free=0))
    code, _, err = run_cli(capsys, *train_args(data, out))
    assert_one_clear_line(code, err, "no space left", out / "checkpoint.pt")
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2  # the first one, intact
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    # Space freed: the run resumes and ends where an uninterrupted one does.
    code, _, err = run_cli(capsys, *train_args(data, out, "--resume"))
    assert code == 0, err
    same_weights(uninterrupted, out / "model.safetensors")


def test_full_disk_while_converting_keeps_the_old_file(model_file, tmp_path, capsys,
                                                       monkeypatch):
    from safetensors import SafetensorError

    dst = tmp_path / "converted.safetensors"
    dst.write_bytes(b"the previous file")

    def disk_full(tensors, filename, metadata=None):  # safetensors' own words for ENOSPC
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr("mobilenets.models.modelfile.save_file", disk_full)
    code, _, err = run_cli(capsys, "convert", model_file, dst)
    assert_one_clear_line(code, err, "no space left", dst)
    assert dst.read_bytes() == b"the previous file" and sorted(tmp_path.iterdir()) == [dst]


def test_a_real_failed_write_while_converting_names_the_file(model_file, tmp_path):
    """The writer's own failure, not a stand-in: a file-size limit makes the write fail in the
    kernel (EFBIG), the way a full disk does (ENOSPC)."""
    dst = tmp_path / "converted.safetensors"
    dst.write_bytes(b"the previous file")
    code = ("import resource, signal, sys; from mobilenets.cli import user_error; "
            "from mobilenets.deploy.convert import convert\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, hard))\n"
            "try:\n    convert(sys.argv[1], sys.argv[2])\n"
            "except Exception as e:\n    print(user_error(e))")
    proc = subprocess.run([sys.executable, "-c", code, str(model_file), str(dst)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == f"{dst}: {os.strerror(errno.EFBIG)}", proc.stdout + proc.stderr
    assert dst.read_bytes() == b"the previous file" and sorted(tmp_path.iterdir()) == [dst]


# --------------------------------------------------------------------------- 4. divergence

def test_the_divergence_rule():
    here = Path("nowhere/checkpoint.pt")
    assert check_loss(2.3, None, 0, 0, here, 0.1) == 2.3  # the first loss is the reference
    assert check_loss(DIVERGENCE_FACTOR * 2.3 - 1, 2.3, 5, 0, here, 0.1) == 2.3
    with pytest.raises(DivergedError, match="training diverged.*lower lr"):
        check_loss(DIVERGENCE_FACTOR * 2.3 + 1, 2.3, 5, 0, here, 0.1)
    # A small first loss (fine-tuning, distillation) is measured against 1, not itself.
    assert check_loss(DIVERGENCE_FACTOR - 1, 0.01, 5, 0, here, 0.1) == 0.01
    with pytest.raises(DivergedError):
        check_loss(DIVERGENCE_FACTOR + 1, 0.01, 5, 0, here, 0.1)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteLossError, match="loss became"):
            check_loss(bad, 2.3, 5, 0, here, 0.1)


def _scripted_run(out: Path, losses: list[float], resume: bool = False, epochs: int = 3):
    """The one training loop on 8 images in steps of 4 (2 a epoch), its loss scripted (the
    weights do not matter): ``losses[i]`` is the loss of this session's i-th step."""
    from mobilenets.engine.data import TensorImageDataset
    from mobilenets.tasks.classification.train import make_config, train_augment

    cfg = make_config("smoke", out_dir=str(out), batch_size=4, epochs=epochs, checkpoint_every=1,
                      eval_every_epoch=False, dropout=0.0)
    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    scripted = iter(losses)

    def loss_fn(net, x, y, i):
        return net(x).sum() * 0 + next(scripted)
    model = create_model(cfg.model, num_classes=2)
    try:
        return fit(cfg, model, TensorImageDataset(images, torch.arange(8) % 2, ["a", "b"]),
                   loss_fn, augment=train_augment(cfg), resume=resume)
    finally:
        release_run_folder(out)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"training diverged.*last good checkpoint is"):
        _scripted_run(out, [5.0, 4.0, 600.0])
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and state["first_loss"] == 5.0
    # Resumed, the run is measured against its first loss still (5, not 600).
    with pytest.raises(DivergedError, match="at step 2"):
        _scripted_run(out, [600.0], resume=True)
    # A loss that falls, or rises within the factor, is a run like any other.
    result = _scripted_run(tmp_path / "fine", [5.0, 9.0, 400.0, 1.0], epochs=2)
    assert result.steps == 4


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from mobilenets.tasks.synthetic.data import SceneConfig, write_dataset

    root = tmp_path_factory.mktemp("scenes")
    for split, n in (("train", 16), ("val", 4)):
        write_dataset(root / split, n, SceneConfig(image_size=64, min_objects=1, max_objects=2,
                                                   min_size=0.3, max_size=0.6, seed=len(split)))
    return root


@pytest.mark.parametrize("command", ["train", "detect", "segment"])
def test_lr_1e9_stops_with_one_line(command, data, scenes, tmp_path, capsys):
    out = tmp_path / "run"
    argv = {"train": train_args(data, out),
            "detect": ["detect", "train", scenes / "train" / "annotations.json", "--preset",
                       "smoke", "--arch", "v1", "--out", out],
            "segment": ["segment", "train", "--preset", "smoke", "--data", scenes / "train",
                        "--val-data", scenes / "val", "--out", out]}[command]
    code, _, err = run_cli(capsys, *argv, "--lr", "1e9")
    # Blown up after one step: past the factor, or already NaN, on any CPU.
    assert_one_clear_line(code, err, "loss became", "lower lr (now 1e+09)")
    assert not (out / "model.safetensors").exists()


# --------------------------------------------------------------------------- 5. one line

FAILING_EXPORT = """
import json, sys
import mobilenets.deploy.mobile as mobile
from mobilenets.cli import main
from mobilenets.deploy.onnx_export import ExportError

def fail(*args, **kwargs):  # after the conversion and the runtime's set-up, all their logging
    raise ExportError("forced failure of the check")
mobile.verify = fail
for argv in json.loads(sys.argv[1]):  # exit statuses on stdout, stderr as a user sees it
    print(main(argv), flush=True)
"""


def test_a_failed_export_is_one_line_not_the_tool_chains_logs(tmp_path):
    from mobilenets.deploy.runtimes import available

    formats = [(f, s) for f, s in (("litert", ".tflite"), ("openvino", ".xml")) if available(f)]
    if not formats:
        pytest.skip("neither LiteRT nor OpenVINO is installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "GLOG", "LITERT"))}
    commands = [["export", "mobilenet_v1_0.25_128", "--resolution", "32", "--format", fmt,
                 "--output", str(tmp_path / f"m{suffix}")] for fmt, suffix in formats]
    proc = subprocess.run([sys.executable, "-c", FAILING_EXPORT, json.dumps(commands)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2"] * len(formats)
    assert proc.stderr.splitlines() == ["mobilenets export: error: forced failure of the check"
                                        ] * len(formats)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 6. moved folders

@pytest.mark.numerics
def test_a_copied_run_folder_resumes_to_the_same_weights(data, uninterrupted, tmp_path, capsys,
                                                         monkeypatch):
    import mobilenets.engine.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(path, state):  # killed just after the first checkpoint
        real_save(path, state)
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    code, _, _ = run_cli(capsys, *train_args(data, tmp_path / "here"))
    assert code == 130
    monkeypatch.undo()
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tmp_path / "here", moved)
    shutil.rmtree(tmp_path / "here")
    saved = json.loads((moved / "config.json").read_text())["out_dir"]
    assert saved == str(tmp_path / "here")  # the folder's own record names its old place
    code, out, err = run_cli(capsys, *train_args(data, moved, "--resume"))
    assert code == 0 and "resumed from" in out, err
    same_weights(uninterrupted, moved / "model.safetensors")
