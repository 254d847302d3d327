"""Distillation: each loss against a hand computation, the teacher-output cache, unlabeled items,
training and resume with tiny models on synthetic images, labeled subsets, CLI errors."""
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_resumed_exactly
from torch import nn
from torch.utils.data import Dataset

import mobilenets as M
from mobilenets.cli import main
from mobilenets.engine.data import BatchTransform, TensorImageDataset, labeled_subset
from mobilenets.engine.runfolder import load_checkpoint
from mobilenets.tasks.classification.sweep import compare_runs
from mobilenets.tasks.classification.train import make_config, open_splits
from mobilenets.tasks.distillation.train import (distill, distillation_loss, embedding_loss,
                                                 make_distill_config, sigmoid_emulation_loss,
                                                 soft_target_loss, teacher_outputs)

# --------------------------------------------------------------------------- losses

@pytest.mark.numerics
def test_soft_target_loss_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.0
    p = torch.softmax(t / T, 1)
    q = torch.softmax(s / T, 1)
    hand = (p * (p.log() - q.log())).sum(1).mean() * T * T
    torch.testing.assert_close(soft_target_loss(s, t, T), hand)
    # T**2 scaling: the same KL divergence at T=1 is not scaled.
    torch.testing.assert_close(soft_target_loss(s, t, 1.0),
                               F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean"))
    assert soft_target_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_target_loss(s, t, 4.0, reduction="none").shape == (2,)
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        soft_target_loss(s, t[:, :2])


@pytest.mark.numerics
def test_sigmoid_emulation_loss_is_binary_cross_entropy():
    s = torch.tensor([[0.3, -2.0, 4.0, 0.0], [1.0, 1.0, -1.0, 2.0]])
    probs = torch.tensor([[0.9, 0.1, 1.0, 0.5], [0.0, 0.3, 0.2, 1.0]])
    torch.testing.assert_close(sigmoid_emulation_loss(s, probs),
                               F.binary_cross_entropy(torch.sigmoid(s), probs))
    with pytest.raises(ValueError, match="teacher_probs"):
        sigmoid_emulation_loss(s, probs * 3)


def test_embedding_loss_is_squared_distance():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert embedding_loss(a, b).item() == pytest.approx((4 + 25) / 2)
    assert embedding_loss(a, a).item() == 0


@pytest.mark.numerics
def test_unlabeled_items_contribute_only_the_teacher_term():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([2, -1, 0, -1])
    soft = soft_target_loss(s, t, 3.0, reduction="none")
    ce = F.cross_entropy(s, labels.clamp(min=0), reduction="none") * (labels >= 0)
    torch.testing.assert_close(distillation_loss("soft", s, t, labels, 3.0, 0.5),
                               (soft + 0.5 * ce).mean())
    all_unlabeled = torch.full((4,), -1)
    torch.testing.assert_close(distillation_loss("soft", s, t, all_unlabeled, 3.0, 0.5), soft.mean())
    # Multi-label: NaN marks an unknown attribute (a whole NaN row: an unlabeled image).
    probs = torch.rand(4, 5)
    targets = torch.tensor([[1.0, 0, 1, 0, 1]] * 4)
    targets[1] = float("nan")
    targets[2, :2] = float("nan")
    bce = F.binary_cross_entropy_with_logits(s, torch.nan_to_num(targets), reduction="none")
    known = ~targets.isnan()
    hard = (bce * known).sum(1) / known.sum(1).clamp(min=1)
    expect = (sigmoid_emulation_loss(s, probs, reduction="none") + 2.0 * hard).mean()
    torch.testing.assert_close(distillation_loss("sigmoid", s, probs, targets, hard_weight=2.0), expect)
    assert torch.isfinite(distillation_loss("sigmoid", s, probs, targets))


# --------------------------------------------------------------------------- teacher outputs

def _images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g)


class _Tiny(nn.Module):
    """A small generic network (no ``config``): images -> ``out`` values."""

    def __init__(self, out=10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, out))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_teacher_cache_is_reused_and_invalidated(tmp_path):
    ds = TensorImageDataset(_images(), torch.zeros(24), ["a"])
    tf = BatchTransform(32, False, eval_crop=1.0)
    teacher, cache = _Tiny().eval(), tmp_path / "teacher.safetensors"
    first = teacher_outputs(teacher, ds, tf, batch_size=10, cache=cache)
    assert first.shape == (24, 10) and teacher.calls == 3 and cache.is_file()
    torch.testing.assert_close(first, teacher(tf(ds.images)).detach())
    again = teacher_outputs(teacher, ds, tf, batch_size=10, cache=cache)
    assert teacher.calls == 4 and torch.equal(again, first)  # 3 + the check above: cache reused
    with torch.no_grad():
        teacher.net[-1].bias += 1.0  # a changed teacher invalidates the cache
    changed = teacher_outputs(teacher, ds, tf, batch_size=10, cache=cache)
    assert teacher.calls == 7
    torch.testing.assert_close(changed, first + 1.0)
    other = TensorImageDataset(_images(seed=1), torch.zeros(24), ["a"])  # so do other images
    teacher_outputs(teacher, other, tf, batch_size=24, cache=cache)
    assert teacher.calls == 8
    assert torch.equal(teacher_outputs(None, other, tf, cache=cache),  # cache only, no teacher
                       teacher_outputs(teacher, other, tf, cache=cache))
    with pytest.raises(ValueError, match="teacher_cache"):
        teacher_outputs(None, ds, tf, cache=tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------- training

def _cfg(tmp_path, **kw):
    base = make_config("smoke", min_crop_area=1.0, flip=False, checkpoint_every=2)
    return make_distill_config(base, **{"out_dir": str(tmp_path), "batch_size": 16, "lr": 0.05,
                                        "epochs": 6, **kw})


@pytest.mark.numerics
def test_few_distill_steps_lower_the_loss_with_unlabeled_images(tmp_path):
    torch.manual_seed(0)
    teacher = _Tiny(10).eval()
    with torch.no_grad():
        teacher.net[-1].weight *= 20  # confident teacher
    images = _images(64)
    labels = teacher(BatchTransform(32, False, eval_crop=1.0)(images)).argmax(1)
    labels[::2] = -1  # half unlabeled
    ds = TensorImageDataset(images, labels, [str(i) for i in range(10)])
    val = TensorImageDataset(_images(16, seed=5), torch.arange(16) % 10, ds.class_names)
    run = distill(_cfg(tmp_path, eval_crop=1.0), _Tiny(10), teacher, ds, val)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 6 and history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert run.summary["labeled_images"] == 32 and run.summary["unlabeled_images"] == 32
    assert "top1" in run.metrics and "val_top1" in history[0]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["steps"] == 24 and saved["distill_loss"] == "soft" and "model" not in saved
    assert (tmp_path / "model.safetensors").is_file()  # plain safetensors for a config-less module


class _MultiLabel(Dataset):
    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


@pytest.mark.numerics
@pytest.mark.parametrize("loss, mode", [("sigmoid", "precomputed"), ("embedding", "online")])
def test_any_module_attribute_and_embedding_distillation(tmp_path, loss, mode):
    torch.manual_seed(0)
    targets = torch.randint(0, 2, (48, 5)).float()
    targets[::3] = float("nan")
    ds = _MultiLabel(_images(48), targets)
    run = distill(_cfg(tmp_path, loss=loss, teacher_mode=mode, epochs=4, num_workers=0),
                      _Tiny(5), _Tiny(5).eval(), ds, _MultiLabel(_images(16, 3), targets[:16]))
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_emulation_loss"] < history[0]["val_emulation_loss"]
    assert run.metrics["emulation_loss"] == pytest.approx(history[-1]["val_emulation_loss"],
                                                          rel=1e-4)


@pytest.mark.numerics
def test_resume_reaches_the_same_weights(tmp_path):
    labels = torch.arange(64) % 10
    labels[1::2] = -1
    ds = TensorImageDataset(_images(64), labels, [str(i) for i in range(10)])
    teacher = M.MobileNetV1(width_mult=0.25, num_classes=10).eval()

    def student():
        torch.manual_seed(1)
        return M.MobileNetV1(width_mult=0.25, num_classes=10, dropout=0.2)

    full = distill(_cfg(tmp_path / "full", epochs=2), student(), teacher, ds).model
    interrupted, calls = student(), [0]

    def stop_at_step_7(module, inputs):
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt

    hook = interrupted.register_forward_pre_hook(stop_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        distill(_cfg(tmp_path / "cut", epochs=2), interrupted, teacher, ds)
    hook.remove()
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 6
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    val = TensorImageDataset(_images(16, seed=4), torch.arange(16) % 10, ds.class_names)
    resumed = distill(_cfg(tmp_path / "cut", epochs=2), student(), teacher, ds, val, resume=True)
    assert resumed.steps == 8
    row = compare_runs([tmp_path / "cut"])[0]  # `mobilenets compare` reads distillation runs
    assert row["model"] == "mobilenet_v1_0.25_32" and row["top1"] == resumed.metrics["top1"]
    saved = M.load_model(tmp_path / "cut" / "model.safetensors").state_dict()
    assert_resumed_exactly(full.state_dict(), resumed.model.state_dict(), "in memory")
    assert_resumed_exactly(full.state_dict(), saved, "model.safetensors")


# --------------------------------------------------------------------------- labeled subsets

def test_labeled_subset_is_seeded_and_class_balanced():
    labels = torch.arange(1000) % 4
    a = labeled_subset(labels, 0.5, seed=3)
    assert torch.equal(a, labeled_subset(labels, 0.5, seed=3))
    assert not torch.equal(a, labeled_subset(labels, 0.5, seed=4))
    assert torch.bincount(labels[a]).tolist() == [125] * 4
    with pytest.raises(ValueError, match="label_fraction"):
        labeled_subset(labels, 0.0)


@pytest.mark.needs_data
def test_train_and_distill_hold_back_the_same_labels():
    cfg = make_config("smoke", limit_train=400, label_fraction=0.25, label_seed=2)
    kept, _, a = open_splits(cfg, drop_unlabeled=True)
    marked, _, b = open_splits(make_distill_config(cfg), drop_unlabeled=False)
    assert a["sha256"] == b["sha256"] and len(kept) == a["count"] == 100 and len(marked) == 400
    labeled = marked.labels >= 0
    assert torch.equal(marked.images[labeled], kept.images)
    assert torch.equal(marked.labels[labeled], kept.labels)


# --------------------------------------------------------------------------- CLI

@pytest.fixture
def teacher_file(tmp_path):
    model = M.create_model("mobilenet_v1_0.25_128", num_classes=5)
    return str(M.save_model(model, tmp_path / "teacher.safetensors"))


@pytest.mark.parametrize("extra, message", [
    (["--teacher", "/nonexistent/t.safetensors"], "/nonexistent/t.safetensors"),
    (["--temperature", "0"], "temperature"),
    (["--hard-weight", "-1"], "hard_weight"),
    (["--label-fraction", "1.5"], "label_fraction"),
    (["--data", "/nonexistent/images"], "/nonexistent/images"),
    (["--student", "mobilenet_v9"], "mobilenet_v9"),
])
def test_cli_errors_name_the_parameter(capsys, tmp_path, teacher_file, extra, message):
    argv = ["distill", "--preset", "smoke", "--out", str(tmp_path / "run"), "--teacher",
            teacher_file, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mobilenets distill: error:") and message in err, err


@pytest.mark.needs_data
def test_cli_teacher_classes_must_match_the_data(capsys, tmp_path, teacher_file):
    argv = ["distill", "--preset", "smoke", "--out", str(tmp_path), "--teacher", teacher_file]
    assert main(argv) == 2 and "has 5 classes but --data 'fashion-mnist' has 10" in capsys.readouterr().err
