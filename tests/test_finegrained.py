"""Fine-grained recognition (Table 10): the noisy-label derivation, the derived ImageFolder data
sets, and noisy pretraining followed by fine-tuning at tiny scale."""
import json

import numpy as np
import pytest

from mobilenets.cli import main
from mobilenets.cost.profiler import profile_model
from mobilenets.models.mobilenet_v1 import MobileNetV1
from mobilenets.tasks.finegrained.data import (CONFUSABLE, UPPER_BODY, FineGrainedDataConfig,
                                               corrupt_labels, folder_name, make_finegrained_data)

@pytest.mark.parametrize("rate, share", [(0.4, 0.75), (0.2, 0.0), (0.0, 1.0)])
def test_noise_rate_is_exact_per_class_and_biased_to_look_alikes(rate, share):
    labels = np.repeat(UPPER_BODY, 4000)
    noisy = corrupt_labels(labels, UPPER_BODY, rate, share, np.random.default_rng(0))
    assert np.isin(noisy, UPPER_BODY).all()
    for c in UPPER_BODY:
        assert (noisy[labels == c] != c).sum() == round(rate * 4000)  # exactly the rate
    wrong = noisy != labels
    if wrong.any():
        alike = np.mean([n in CONFUSABLE[t] for t, n in zip(labels[wrong], noisy[wrong])])
        # look-alike with probability share, else uniform over the 4 others (2 of them alike)
        assert alike == pytest.approx(share + (1 - share) * 2 / 4, abs=0.02)


def test_corrupt_labels_errors_and_classes_without_look_alikes():
    with pytest.raises(ValueError, match="classes"):
        corrupt_labels(np.array([0, 1]), (0, 2), 0.4, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise_rate"):
        corrupt_labels(np.array([0, 2]), (0, 2), 1.0, 0.5, np.random.default_rng(0))
    # Trouser (1) and Bag (8): no look-alike among them, so wrong labels are the other class
    labels = np.repeat([1, 8], 100)
    noisy = corrupt_labels(labels, (1, 8), 0.3, 1.0, np.random.default_rng(0))
    assert (noisy != labels).sum() == 60
    with pytest.raises(ValueError, match="classes"):
        FineGrainedDataConfig(classes=(3,)).validate()


@pytest.mark.needs_data
def test_derived_data_sets(tmp_path):
    cfg = FineGrainedDataConfig(classes=(0, 6), clean_per_class=5, noisy_per_class=20,
                                noise_rate=0.25, test_per_class=4, seed=3)
    record = make_finegrained_data(tmp_path / "fg", cfg)
    assert record["images"] == {"noisy_train": 40, "clean_train": 10, "test": 8}
    assert record["noise_rate"] == 0.25 and record["true_by_noisy"] == [[15, 5], [5, 15]]
    root = tmp_path / "fg"
    names = sorted(folder_name(n) for n in ("T-shirt/top", "Shirt"))
    for split, per in (("clean/train", 5), ("clean/val", 4), ("noisy/val", 4)):
        assert sorted(p.name for p in (root / split).iterdir()) == names
        assert all(len(list((root / split / n).iterdir())) == per for n in names)
    noisy_ids = {p.name for p in (root / "noisy/train").rglob("*.png")}
    clean_ids = {p.name for p in (root / "clean/train").rglob("*.png")}
    assert len(noisy_ids) == 40 and not noisy_ids & clean_ids  # disjoint image sets
    assert json.loads((root / "noise.json").read_text())["config"]["seed"] == 3
    with pytest.raises(ValueError, match="already exists"):
        make_finegrained_data(root, cfg)
    with pytest.raises(ValueError, match="has 6000 training images"):
        make_finegrained_data(tmp_path / "big", FineGrainedDataConfig(noisy_per_class=5950))


@pytest.mark.needs_data
def test_tiny_pretrain_then_finetune(tmp_path, capsys):
    data = tmp_path / "fg"
    assert main(["finegrained", "make-data", str(data), "--classes", "0,6", "--clean-per-class",
                 "16", "--noisy-per-class", "64", "--test-per-class", "16"]) == 0
    assert '"noise_rate": 0.4' in capsys.readouterr().out
    common = ["--preset", "smoke", "--limit-train", "1000", "--batch-size", "16"]
    assert main(["train", *common, "--data", str(data / "noisy"), "--out", str(tmp_path / "noisy")]) == 0
    assert main(["finetune", *common, "--data", str(data / "clean"), "--lr", "0.005",
                 "--init", str(tmp_path / "noisy" / "model.safetensors"),
                 "--out", str(tmp_path / "tuned")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "noisy"), str(tmp_path / "tuned"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["mobilenet_v1_0.25_32"] * 2  # at the input size it ran at
    # both costed as the 2-class 0.25 MobileNet at 32x32 they are
    cost = profile_model(MobileNetV1(0.25, num_classes=2), (3, 32, 32))
    assert rows[0]["params_m"] == rows[1]["params_m"] == round(cost.layer_params / 1e6, 3)
    assert rows[0]["madds_m"] == rows[1]["madds_m"] == round(cost.total_madds / 1e6, 2)
    assert main(["finegrained", "make-data", str(data), "--noise-rate", "1.5", "--overwrite"]) == 2
    assert "noise_rate must be in [0, 1)" in capsys.readouterr().err
