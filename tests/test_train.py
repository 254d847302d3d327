"""Training: the recipe's pieces, a few real steps on Fashion-MNIST, resume after kill -9,
two-process DDP, fine-tuning and the sweep."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_resumed_exactly, kill_at_first_checkpoint

import mobilenets as M
from mobilenets.engine.loop import DivergedError
from mobilenets.engine.optim import RMSpropTF, param_groups
from mobilenets.engine.runfolder import load_checkpoint
from mobilenets.tasks.classification.train import make_config, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.numerics
def test_rmsprop_tf_matches_the_formula():
    f64 = {"dtype": torch.float64}  # the arithmetic is the point, not its rounding
    w = torch.tensor([1.0, -2.0], **f64, requires_grad=True)
    opt = RMSpropTF([w], lr=0.1, decay=0.9, momentum=0.9, eps=1.0, weight_decay=0.5)
    ms, mom, ref = torch.ones(2, **f64), torch.zeros(2, **f64), w.detach().clone()
    for _ in range(3):
        w.grad = (w.detach() * 3.0).clone()  # gradient of 1.5 w^2
        g = ref * 3.0 + 0.5 * ref
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / torch.sqrt(ms + 1.0)
        ref = ref - mom
        opt.step()
    torch.testing.assert_close(w.detach(), ref)


def test_no_weight_decay_on_depthwise_bn_or_bias():
    model = M.MobileNetV1(width_mult=0.25)
    groups = {g["name"]: g for g in param_groups(model, 4e-5)}
    assert groups["decay"]["weight_decay"] == 4e-5
    assert groups["depthwise"]["weight_decay"] == 0 and groups["no_decay"]["weight_decay"] == 0
    assert len(groups["depthwise"]["params"]) == 13  # one per separable block
    assert len(groups["decay"]["params"]) == 1 + 13 + 1  # stem, pointwise, FC
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['lr_rate'\\]"):
        make_config("smoke", lr_rate=0.1)
    with pytest.raises(ValueError, match="preset"):
        make_config("imagenet")
    with pytest.raises(ValueError, match="batch_size"):
        make_config("smoke", batch_size=0)
    with pytest.raises(ValueError, match="unknown model"):
        make_config("smoke", model="mobilenet_v9")


@pytest.mark.numerics
@pytest.mark.needs_data
def test_few_steps_loss_falls_and_run_folder(tmp_path):
    # One batch of 32 images, seen 40 times without augmentation: the loop must fit it. The
    # trajectory depends on the kernels' rounding (BatchNorm over 32 images), so the assertion is
    # on the best epoch, with a wide margin (docs/reliability.md, 6).
    cfg = make_config("smoke", out_dir=str(tmp_path), limit_train=32, batch_size=32, epochs=40,
                      optimizer="sgd", lr=0.05, flip=False, min_crop_area=1.0, dropout=0.0)
    result = train(cfg)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 40 and min(losses) < 0.5 * losses[0], losses
    assert result.evaluation["num_samples"] == 128 and 0 <= result.metrics["top1"] <= 100
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.pt", "config.json", "metrics.jsonl",
                                                    "model.safetensors", "eval.json"}
    assert not list(tmp_path.glob("*.tmp"))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 40
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == result.steps and {"model", "optimizer", "scheduler"} <= set(ckpt)
    model = M.load_model(tmp_path / "model.safetensors")
    assert model.config.num_classes == 10 and model.config.resolution == 32


def _run_train(out, extra=()):
    return subprocess.Popen(
        [sys.executable, "-m", "mobilenets", "train", "--preset", "smoke", "--out", str(out),
         "--limit-train", "512", "--epochs", "2", "--set", "checkpoint_every=2", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.numerics
@pytest.mark.needs_data
def test_resume_after_kill_9_reaches_the_same_weights(tmp_path):
    full = _run_train(tmp_path / "full")
    assert full.wait(timeout=300) == 0, full.stdout.read()
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    step = kill_at_first_checkpoint(_run_train(tmp_path / "killed"), ckpt)
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    assert 0 < step < 32
    resumed = _run_train(tmp_path / "killed", ["--resume"])
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0 and f"resumed from {ckpt} at step {step}" in out, out
    assert_resumed_exactly(M.load_model(tmp_path / "full" / "model.safetensors").state_dict(),
                           M.load_model(tmp_path / "killed" / "model.safetensors").state_dict())


@pytest.mark.needs_data
def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = make_config("smoke", out_dir=str(tmp_path), lr=1e30, checkpoint_every=1, epochs=8)
    with pytest.raises(DivergedError, match="last good checkpoint is .*checkpoint.pt"):
        train(cfg)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.numerics
@pytest.mark.needs_data
def test_ddp_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "ddp_worker.py"), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(out / "rank0_weights.pt", weights_only=True)
    w1 = torch.load(out / "rank1_weights.pt", weights_only=True)
    for k in w0:  # DDP keeps every process's weights identical
        torch.testing.assert_close(w0[k], w1[k], atol=0, rtol=0, msg=k)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["writes"] and not r1["writes"]  # checkpoints are written by rank 0 only
    ddp_losses = [h["train_loss"] for h in r0["history"]]
    # The same global batch (2 x 16) in one process: the loss falls alike.
    single = train(make_config("smoke", out_dir=str(tmp_path / "single"), limit_train=512,
                               limit_val=64, epochs=6, batch_size=32, lr=0.05,
                               min_crop_area=1.0, flip=False))
    single_losses = [h["train_loss"] for h in single.history]
    # Both learn. Not compared with each other: the trajectories depend on the kernels' rounding
    # (the last 3 epochs' mean ranges over 0.3 between kernels for either run) and DDP's BN sees
    # 16 images instead of 32; the equal weights above show that the gradients are shared.
    for losses in (ddp_losses, single_losses):
        assert min(losses) < 0.9 * losses[0], (ddp_losses, single_losses)


@pytest.mark.needs_data
def test_finetune_frozen_body_changes_only_the_classifier(tmp_path):
    base = train(make_config("smoke", out_dir=str(tmp_path / "base"), limit_train=64, epochs=1))
    cfg = make_config("smoke", out_dir=str(tmp_path / "ft"), init_from=base.model_path,
                      freeze_body=True, limit_train=128, epochs=1, lr=0.05)
    tuned = train(cfg).model.state_dict()
    before = M.load_model(base.model_path).state_dict()
    for k, v in before.items():
        if k.startswith("classifier."):
            assert not torch.equal(v, tuned[k])
        elif v.is_floating_point():
            torch.testing.assert_close(v, tuned[k], msg=k)  # weights and BN statistics frozen


@pytest.mark.needs_data
def test_sweep_writes_csv_and_figures(tmp_path, capsys):
    from mobilenets.engine.results import read_sweep_rows
    from mobilenets.tasks.classification.sweep import run_sweep

    base = make_config("smoke", limit_train=64, limit_val=64, epochs=1)
    rows = run_sweep(base, (0.5, 0.25), (32,), tmp_path)
    assert [r["label"] for r in rows] == ["mobilenet_v1_0.5_32", "mobilenet_v1_0.25_32"]
    assert rows[0]["madds"] > rows[1]["madds"] and read_sweep_rows(tmp_path / "sweep.csv") == rows
    for name in ("figure4_accuracy_vs_madds.png", "figure5_accuracy_vs_params.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_sweep(base, (0.5, 0.25), (32,), tmp_path) == rows  # finished points are skipped
    more = run_sweep(base, (0.25,), (32,), tmp_path, seeds=(0, 1))  # seed 0 is done: one new run
    assert [(r["width_mult"], r["seed"]) for r in more] == [(0.5, 0), (0.25, 0), (0.25, 1)]
    assert (tmp_path / "a0.25_r32_s1" / "model.safetensors").is_file()


@pytest.mark.parametrize("preset", ["paper", "fashion-mnist", "fast", "best"])
@pytest.mark.parametrize("epochs", [0.5, 1, 3, 40])
def test_schedule_ends_low_for_any_length(preset, epochs):
    from mobilenets.engine.optim import lr_factor

    cfg = make_config(preset, epochs=epochs)
    spe = 468
    total = max(1, round(epochs * spe))
    f = [lr_factor(s, spe, total, cfg) for s in range(total)]
    assert max(f) == pytest.approx(1.0, abs=0.02) and f[-1] <= 0.011, (f[0], max(f), f[-1])
    peak = f.index(max(f))
    assert all(a >= b - 1e-12 for a, b in zip(f[peak:], f[peak + 1:]))  # decays after warm-up


def test_schedule_shapes():
    from mobilenets.engine.optim import lr_factor

    base = dict(warmup_epochs=0.0, epochs=1)
    cos = make_config("fast", lr_schedule="cosine", lr_final=0.1, **base)
    lin = make_config("fast", lr_schedule="linear", lr_final=None, **base)
    exp = make_config("paper", **base)
    assert lr_factor(50, 100, 100, cos) == pytest.approx(0.55)  # halfway between 1 and 0.1
    assert lr_factor(25, 100, 100, lin) == pytest.approx(0.75)
    assert lr_factor(50, 100, 100, exp) == pytest.approx(0.1)  # sqrt(0.01)
    fixed = make_config("paper", lr_final=None, **base)  # the published per-epoch rate
    assert lr_factor(200, 100, 100, fixed) == pytest.approx(0.98 ** 2)
    with pytest.raises(ValueError, match="lr_decay"):
        make_config("paper", lr_decay=0.5)  # a fixed rate and a fitted one: refused, not ignored


def test_fast_preset_is_the_papers_model_at_32():
    cfg = make_config("fast")
    assert (cfg.input_size, cfg.output_stride, cfg.model) == (32, 16, "mobilenet_v1_0.75_224")
    best = make_config("best")
    assert (best.input_size, best.epochs, best.random_erasing) == (64, 60, 0.5)
    assert make_config("fast").random_erasing == 0  # the main job's recipe is unchanged
    with pytest.raises(ValueError, match="output_stride"):
        make_config("fast", output_stride=4)


@pytest.mark.needs_data
def test_holdout_trains_without_the_validation_images(tmp_path):
    from mobilenets.tasks.classification.train import open_splits

    cfg = make_config("smoke", holdout=1000, limit_train=None, limit_val=None)
    train_set, val_set, _ = open_splits(cfg)
    assert (len(train_set), len(val_set)) == (59000, 1000)
    full = open_splits(make_config("smoke", limit_train=None, limit_val=None))[0]
    torch.testing.assert_close(val_set.images, full.images[-1000:])
    cfg = make_config("fast", holdout=64, limit_train=512, limit_val=None, epochs=1,
                      batch_size=32, width_mult=0.25, out_dir=str(tmp_path), progress=False)
    result = train(cfg)
    assert result.evaluation["num_samples"] == 64 and result.steps == 16
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs[-1] < 0.2 * 0.05  # the last step's lr: near the end of the cosine
