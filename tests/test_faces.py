"""Face attributes (Table 12) and face embeddings (Table 14): metrics against hand computations,
the Fashion-MNIST-derived data sets and their loaders' errors, the embedding head, and tiny
teacher -> student runs end to end through the command line."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import run_cli, write_idx

from mobilenets.tasks.faces.data import load_attribute_csv, load_identity_csv, load_pairs_csv
from mobilenets.tasks.faces.make_data import (ATTRIBUTES, PIXEL_ATTRIBUTES, distinct_sources,
                                              make_attribute_data, make_embedding_data,
                                              pixel_cosine_features)
from mobilenets.tasks.faces.metrics import (average_precision, average_precision_per_column,
                                         mean_average_precision, tar_at_far)
from mobilenets.tasks.faces.model import EmbeddingNet, build_backbone
from mobilenets.tasks.faces.train import faces_config

# --------------------------------------------------------------------------- average precision

def test_average_precision_hand_examples():
    # Ranked: 0.8 (pos) P=1 R=.5; 0.4 (neg); 0.35 (pos) P=2/3 R=1 -> .5*1 + .5*2/3
    assert average_precision(torch.tensor([0.1, 0.4, 0.35, 0.8]),
                             torch.tensor([0, 0, 1, 1])) == pytest.approx(5 / 6)
    # Tied scores are one threshold: at 0.5 P=1/2 R=1/2, at 0.2 P=2/3 R=1.
    assert average_precision(torch.tensor([0.5, 0.5, 0.2]),
                             torch.tensor([1, 0, 1])) == pytest.approx(0.25 + 0.5 * 2 / 3)
    # ... whatever the order of the tied samples.
    assert average_precision(torch.tensor([0.5, 0.5, 0.2]),
                             torch.tensor([0, 1, 1])) == pytest.approx(0.25 + 0.5 * 2 / 3)
    assert average_precision(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 1, 0])) == 1.0
    assert math.isnan(average_precision(torch.tensor([0.3, 0.1]), torch.tensor([0, 0])))


def test_mean_ap_over_columns_skips_undefined_columns():
    scores = torch.tensor([[0.1, 0.9, 0.2], [0.4, 0.8, 0.1], [0.35, 0.1, 0.3], [0.8, 0.2, 0.4]])
    labels = torch.tensor([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]])
    ap = average_precision_per_column(scores, labels)
    assert ap[:2].tolist() == pytest.approx([5 / 6, 1.0]) and math.isnan(ap[2])
    assert mean_average_precision(scores, labels) == pytest.approx((5 / 6 + 1) / 2)


@pytest.mark.parametrize("scores, labels, message", [
    (torch.tensor([0.1, 0.2]), torch.tensor([0, 2]), "only 0 and 1"),
    (torch.tensor([0.1, 0.2]), torch.tensor([0, 1, 1]), "shape"),
    (torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]), "finite"),
    ([0.1, 0.2], torch.tensor([0, 1]), "scores must be a torch.Tensor"),
])
def test_average_precision_errors(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        average_precision(scores, labels)


# --------------------------------------------------------------------------- TAR at FAR

def test_tar_at_far_threshold_and_ties():
    neg = torch.linspace(0, 1, 10_000)  # FAR 1e-4 allows 1 of 10,000: threshold = 2nd highest
    r = tar_at_far(torch.tensor([0.5, 1.0, 2.0]), neg)
    assert r["threshold"] == pytest.approx(float(neg[-2])) and r["far"] == pytest.approx(1e-4)
    assert r["tar"] == pytest.approx(2 / 3) and r["num_negative"] == 10_000
    # Two negatives tied at the top: accepting them would make FAR 2e-4, so both are rejected,
    # and a positive tied with them is rejected too.
    tied = torch.cat([torch.zeros(9_998), torch.ones(2)])
    r = tar_at_far(torch.tensor([1.0, 1.5]), tied)
    assert r["far"] == 0 and r["threshold"] == 1.0 and r["tar"] == 0.5
    # 50,000 negatives allow 5 false accepts.
    r = tar_at_far(torch.tensor([0.99994]), torch.linspace(0, 1, 50_000))
    assert r["far"] == pytest.approx(1e-4) and r["tar"] == 1.0


def test_tar_at_far_errors():
    with pytest.raises(ValueError, match="needs at least 10,000 negative pairs"):
        tar_at_far(torch.ones(3), torch.zeros(9_999))
    with pytest.raises(ValueError, match="far must be"):
        tar_at_far(torch.ones(3), torch.zeros(100), far=0)
    with pytest.raises(ValueError, match="positive_scores is empty"):
        tar_at_far(torch.ones(0), torch.zeros(10_000))
    with pytest.raises(ValueError, match="negative_scores must be a 1-D"):
        tar_at_far(torch.ones(3), torch.zeros(10_000, 1))


# --------------------------------------------------------------------------- data sets

@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """A small stand-in for Fashion-MNIST: blobs of random size, brightness and position."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 400), ("t10k", 120)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i in range(n):
            h, w = rng.integers(6, 24, size=2)
            top, left = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
            images[i, top:top + h, left:left + w] = rng.integers(40, 255, size=(h, w))
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@pytest.fixture(scope="module")
def attr_dir(fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("attributes")
    make_attribute_data(out, labeled=200, unlabeled=100, test=80, root=fmnist)
    return out


@pytest.fixture(scope="module")
def id_dir(fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("identities")
    make_embedding_data(out, identities=40, photos=4, unlabeled=60, test_identities=40,
                              test_photos=3, negatives=2_000, root=fmnist)
    return out


def test_attribute_data_files_and_labels(attr_dir):
    meta = json.loads((attr_dir / "attributes.json").read_text())
    assert meta["attributes"] == list(ATTRIBUTES) and len(meta["attributes"]) == 11
    with open(attr_dir / "train.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", *ATTRIBUTES] and len(rows) == 201
    assert (attr_dir / rows[1][0]).is_file()
    with open(attr_dir / "unlabeled.csv") as f:
        assert next(csv.reader(f)) == ["image"]
    ds = load_attribute_csv(attr_dir / "train.csv", 32)
    assert ds.images.shape == (200, 1, 32, 32) and ds.labels.shape == (200, 11)
    # Class attributes follow the class (stand-in label = index % 10): index 9 is an ankle boot.
    index = int(rows[1][0].split("/")[-1][:5])
    cls = index % 10
    assert ds.labels[0, 1] == float(cls in (5, 7, 9)) and ds.labels[0, 4] == float(cls in (1, 9))
    # Pixel attributes split the labeled images at their medians: about half positive.
    assert all(0.3 < meta["positive_rates"]["train.csv"][n] <= 0.5 for n in PIXEL_ATTRIBUTES)
    pool = load_attribute_csv(attr_dir / "unlabeled.csv", 32,
                                    attribute_names=ds.attribute_names)
    assert len(pool) == 100 and torch.isnan(pool.labels).all()


def test_attribute_csv_errors(attr_dir, tmp_path):
    def write(text):
        p = tmp_path / "a.csv"
        p.write_text(text)
        return p

    image = "images/test/00000.png"
    good = f"image,dark,wide\n{attr_dir / image},1,0\n"
    assert load_attribute_csv(write(good), 32).labels.tolist() == [[1.0, 0.0]]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_attribute_csv(write("image,dark\nmissing.png,1\n"), 32)
    with pytest.raises(ValueError, match="line 2: attribute 'wide' must be 0 or 1, got '0.5'"):
        load_attribute_csv(write(f"image,dark,wide\n{image},1,0.5\n"), 32, attr_dir)
    with pytest.raises(ValueError, match="line 3: 2 fields, but the header has 3"):
        load_attribute_csv(write(f"image,dark,wide\n{image},1,0\n{image},1\n"), 32, attr_dir)
    with pytest.raises(ValueError, match="first column must be 'image'"):
        load_attribute_csv(write("file,dark\nx.png,1\n"), 32)
    with pytest.raises(ValueError, match="pass attribute_names"):
        load_attribute_csv(write(f"image\n{image}\n"), 32, attr_dir)
    with pytest.raises(ValueError, match="differ from the expected"):
        load_attribute_csv(write(good), 32, attribute_names=["wide", "dark"])
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        load_attribute_csv(tmp_path / "none.csv", 32)


def test_identity_data_pairs_and_errors(id_dir, tmp_path):
    meta = json.loads((id_dir / "identities.json").read_text())
    assert meta["positive_pairs"] == 40 * 3 and meta["negative_pairs"] == 2_000
    # Half are drawn within a class, at most half of the 10 x C(4, 2) x 3 x 3 = 540 possible.
    assert meta["hard_negative_pairs"] >= 270
    train = load_identity_csv(id_dir / "train.csv", 32)
    assert len(train) == 160 and len(train.class_names) == 40
    assert train.labels[:4].unique().numel() == 1  # an identity's photos are consecutive
    test = load_identity_csv(id_dir / "test.csv", 32)
    a, b, same = load_pairs_csv(id_dir / "pairs.csv", test.paths)
    assert int(same.sum()) == 120 and len(a) == 2_120
    assert (test.labels[a] == test.labels[b]).tolist() == same.tolist()  # same <=> same identity
    assert len({(int(x), int(y)) for x, y in zip(a, b)}) == len(a)  # no repeated pair
    pool = load_identity_csv(id_dir / "unlabeled.csv", 32)
    assert len(pool) == 60 and (pool.labels == -1).all()
    bad = tmp_path / "pairs.csv"
    bad.write_text(f"image_a,image_b,same\n{test.paths[0]},{test.paths[1]},2\n")
    with pytest.raises(ValueError, match="same must be 0 or 1"):
        load_pairs_csv(bad, test.paths)
    bad.write_text(f"image_a,image_b,same\n{test.paths[0]},other.png,1\n")
    with pytest.raises(ValueError, match="line 2: image 'other.png' is not in"):
        load_pairs_csv(bad, test.paths)
    with pytest.raises(ValueError, match=r"line 2: identity 'train\d+' is not among the 1 known"):
        load_identity_csv(id_dir / "train.csv", 32, identities=["x"])


def test_identity_sources_respect_max_source_cosine(fmnist, tmp_path):
    from mobilenets.engine.data import load_fashion_mnist

    meta = make_embedding_data(tmp_path, identities=20, photos=1, unlabeled=30,
                                     test_identities=20, test_photos=2, negatives=50, root=fmnist,
                                     max_source_cosine=0.6)
    sources, names = [], {}
    for split, csv_name in (("train", "train.csv"), ("test", "test.csv"),
                            ("train", "unlabeled.csv")):
        with open(tmp_path / csv_name) as f:  # images/<split>/{id|src}<index>_<photo>.png
            idx = sorted({int(r[0].rsplit("_", 1)[0][-5:]) for r in list(csv.reader(f))[1:]})
        names[csv_name] = idx
        if csv_name != "unlabeled.csv":
            sources.append(load_fashion_mnist(split, fmnist).images[idx])
    assert not set(names["train.csv"]) & set(names["unlabeled.csv"])  # no identity in the pool
    x = torch.cat(sources).double().flatten(1)
    x = x - x.mean(1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True)
    sims = x @ x.T - 3 * torch.eye(len(x), dtype=torch.float64)
    assert len(x) == 40 and float(sims.max()) <= 0.6 + 1e-6  # training and test identities
    assert meta["max_source_cosine"] == 0.6
    assert meta["max_source_cosine_measured"] == pytest.approx(float(sims.max()), abs=1e-3)
    # The threshold bites: without it, the first 40 sources of the shuffle hold closer pairs.
    first = pixel_cosine_features(load_fashion_mnist("train", fmnist).images[:40])
    assert float((first @ first.T - 3 * torch.eye(40)).max()) > 0.6
    # distinct_sources on hand-made images: a twin (a brighter copy) is skipped, order is kept.
    a, c = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    images = torch.stack([a, 2 * a + 1, c])
    picked, bank = distinct_sources(images, torch.tensor([2, 0, 1]), 2, 0.95)
    assert picked.tolist() == [2, 0] and bank.shape == (2, 16)
    with pytest.raises(ValueError, match="only 0 of the 2 candidates"):  # both near `chosen`
        distinct_sources(images, torch.tensor([1, 2]), 1, 0.95, chosen=bank)
    with pytest.raises(ValueError, match="only 2 of the 3 candidates"):
        distinct_sources(images, torch.arange(3), 3, 0.95)
    with pytest.raises(ValueError, match="max_cosine must be in"):
        distinct_sources(images, torch.arange(3), 1, 1.5)


def test_make_data_rejects_bad_counts(fmnist, tmp_path):
    with pytest.raises(ValueError, match="labeled must be an integer >= 2"):
        make_attribute_data(tmp_path, labeled=1, root=fmnist)
    with pytest.raises(ValueError, match="exceeds the 400 training images"):
        make_attribute_data(tmp_path, labeled=300, unlabeled=200, root=fmnist)
    with pytest.raises(ValueError, match="more than half of the"):
        make_embedding_data(tmp_path, identities=2, photos=1, unlabeled=0,
                                  test_identities=3, test_photos=2, negatives=7, root=fmnist)
    with pytest.raises(ValueError, match="test_photos must be an integer >= 2"):
        make_embedding_data(tmp_path, test_photos=1, root=fmnist)


# --------------------------------------------------------------------------- models

def test_embedding_net_unit_norm_and_round_trip(tmp_path):
    from mobilenets.models.modelfile import save_model
    from mobilenets.models.registry import load_model

    cfg = faces_config("embeddings-student", model="mobilenet_v1_0.25_224")
    net = EmbeddingNet(build_backbone(cfg), 16).eval()
    x = torch.randn(3, 3, 32, 32)
    emb = net(x)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=1), torch.ones(3))
    save_model(net, tmp_path / "e.safetensors")
    again = load_model(tmp_path / "e.safetensors", kind="embedding")
    assert torch.equal(again(x), emb) and again.config.resolution == 32
    with pytest.raises(ValueError, match="include_top=False"):
        EmbeddingNet(build_backbone(cfg, include_top=True), 16)
    with pytest.raises(ValueError, match="holds a embedding model"):
        load_model(tmp_path / "e.safetensors", kind="classifier")


def test_recipes_follow_the_paper_and_reject_unknown_fields():
    student = faces_config("attributes-student")
    assert student.loss == "sigmoid" and student.hard_weight == 0 and student.weight_decay == 0
    assert faces_config("embeddings-student").loss == "embedding"
    assert faces_config("embeddings-teacher").embedding_dim == 128
    with pytest.raises(ValueError, match="unknown DistillConfig fields"):
        faces_config("attributes-student", bogus=1)
    with pytest.raises(ValueError, match="recipe must be one of"):
        faces_config("faces")


# --------------------------------------------------------------------------- end to end (CLI)

TINY = ["--model", "mobilenet_v1_0.25_224", "--epochs", "1", "--batch-size", "32",
        "--set", "progress=false"]


def test_attributes_teacher_student_and_table(attr_dir, tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    code, out, _ = run_cli(capsys, "attributes", "train", "--data", attr_dir, "--out", teacher, *TINY)
    assert code == 0 and json.loads(out)["trained_on"] == "labels"
    code, out, err = run_cli(capsys, "attributes", "distill", "--data", attr_dir, "--teacher",
                             teacher / "model.safetensors", "--out", student, "--width-mult", "0.3",
                             *TINY)
    summary = json.loads(out)
    assert code == 0, err
    assert summary["labeled_images"] + summary["unlabeled_images"] == 300  # labeled + unlabeled
    assert summary["hard_weight"] == 0 and 0 <= summary["mean_ap"] <= 100
    assert json.loads((student / "summary.json").read_text())["mean_ap"] == summary["mean_ap"]
    per_attr = json.loads((student / "eval.json").read_text())["per_attribute"]
    assert list(per_attr) == list(ATTRIBUTES)
    code, out, _ = run_cli(capsys, "attributes", "eval", teacher / "model.safetensors",
                           student / "model.safetensors", "--data", attr_dir, "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["model"] for r in rows] == ["0.25 MobileNet-32", "0.3 MobileNet-32"]
    assert rows[1]["trained_on"] == "distilled" and rows[1]["mean_ap"] == pytest.approx(
        summary["mean_ap"], abs=0.01)
    assert rows[0]["params_m"] < rows[1]["params_m"] and "ap_dark" in rows[0]


def test_embeddings_teacher_student_and_table(id_dir, tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    code, out, err = run_cli(capsys, "embeddings", "train", "--data", id_dir, "--out", teacher, *TINY)
    # The tiny set has 2,000 negative pairs: too few for Table 14's FAR of 1e-4.
    assert code == 2 and "needs at least 10,000 negative pairs" in err
    code, out, err = run_cli(capsys, "embeddings", "train", "--data", id_dir, "--out", teacher,
                             *TINY, "--set", "embedding_dim=16", "--far", "0.01")
    t = json.loads(out)
    assert code == 0 and t["num_negative"] == 2_000 and 0 <= t["tar"] <= 100 and t["far"] <= 1.0
    # summary.json names each rate as `eval` does: tar_at_far_<rate>, the evaluated one included.
    saved = json.loads((teacher / "summary.json").read_text())
    assert saved["tar_at_far_0.01"] == t["tar"] and "tar_at_far_0.1" in saved
    assert not [k for k in saved if k.startswith("tar_") and not k.startswith("tar_at_far_")]
    code, out, err = run_cli(capsys, "embeddings", "distill", "--data", id_dir, "--teacher",
                             teacher / "model.safetensors", "--out", student, *TINY, "--far", "0.01")
    s = json.loads(out)
    assert code == 0 and s["distill_loss"] == "embedding" and 0 <= s["tar"] <= 100
    code, out, err = run_cli(capsys, "embeddings", "eval", teacher / "model.safetensors",
                             student / "model.safetensors", "--data", id_dir, "--far", "0.01")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "trained_on", "tar_at_far_0.01"]
    assert "identities" not in out and "distilled" in lines[3]
    assert float(lines[2].split()[3]) == pytest.approx(saved["tar_at_far_0.01"], abs=0.006)


@pytest.mark.parametrize("argv, message", [
    (["attributes", "train", "--data", "/nonexistent"], "/nonexistent/train.csv not found"),
    (["attributes", "distill", "--data", ".", "--teacher", "t.safetensors", "--set", "x=1"],
     "--set takes KEY=VALUE"),
    (["embeddings", "distill", "--data", ".", "--teacher", "t.safetensors", "--set",
      "temperature=abc"], "--set temperature='abc': expected float"),
    (["embeddings", "eval", "/nonexistent.safetensors", "--data", "."], "/nonexistent.safetensors"),
    (["attributes", "make-data", "--out", "/tmp/x", "--labeled", "0"], "labeled must be"),
    (["embeddings", "make-data", "--out", "/tmp/x", "--max-source-cosine", "1.5"],
     "max_source_cosine must be in (-1, 1]"),
])
def test_cli_errors_name_the_parameter(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err
