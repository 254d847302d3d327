"""Segmentation: DeepLabv3 (ASPP and lite heads) on MobileNet, its metrics, data, training with
resume, the CLI and the cost beside the MobileNetV2 paper's Table 7."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_resumed_exactly, run_cli_captured
from PIL import Image

import mobilenets as M
from mobilenets.cli import main
from mobilenets.models.modelfile import save_model
from mobilenets.models.registry import load_model
from mobilenets.tasks.segmentation.data import (IGNORE_INDEX, SegAugment, SegmentationDataset,
                                                normalize)
from mobilenets.tasks.segmentation.evaluate import (PAPER_TABLE7, SegmentationMetrics,
                                                    iou_from_confusion, palette, write_overlay)
from mobilenets.tasks.segmentation.model import ASPP_RATES, create_segmenter
from mobilenets.tasks.segmentation.train import make_seg_config, train_segmenter
from mobilenets.tasks.synthetic.data import CLASSES, SceneConfig, write_dataset


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two tiny synthetic data sets (the generator's layout), 32x32 pixels."""
    root = tmp_path_factory.mktemp("scenes")
    cfg = SceneConfig(image_size=32, max_objects=2, min_size=0.3, max_size=0.7, seed=1)
    write_dataset(root / "train", 16, cfg)
    write_dataset(root / "val", 4, SceneConfig(image_size=32, max_objects=2, min_size=0.3,
                                               max_size=0.7, seed=2))
    return root


def test_miou_on_a_hand_made_example():
    # 2x3 labels, one pixel ignored (its prediction, 2, counts nowhere). Class 0: tp 1, fn 1
    # -> IoU 1/2. Class 1: tp 2, fp 1, fn 1 -> 2/4. Class 2: fp 1 only -> 0. Class 3 is in
    # neither: no IoU, left out of the mean. mIoU = (50 + 50 + 0) / 3; pixel accuracy 3/5.
    target = torch.tensor([[[0, 0, 1], [1, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 2]]])
    m = SegmentationMetrics(4)
    m.update(pred, target)
    r = m.result()
    assert [p["iou"] for p in r["per_class"]][:3] == pytest.approx([50.0, 50.0, 0.0], abs=1e-9)
    assert r["per_class"][3]["iou"] is None
    assert r["miou"] == pytest.approx(100 / 3)
    assert iou_from_confusion(torch.tensor(r["confusion_matrix"]))["miou"] == r["miou"]
    assert r["pixel_accuracy"] == pytest.approx(60.0)
    assert r["pixels"] == 5
    assert r["confusion_matrix"][0] == [1, 1, 0, 0]
    # Logits give the same counts as their argmax.
    logits = F.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    m2 = SegmentationMetrics(4)
    m2.update(logits, target)
    assert m2.result()["confusion_matrix"] == r["confusion_matrix"]
    with pytest.raises(ValueError, match="targets"):
        m.update(pred, target[:, :1])
    with pytest.raises(ValueError, match="targets"):
        m.update(pred, torch.full_like(target, 7))


@pytest.mark.parametrize("backbone,head,output_stride", [("v2", "lite", 16), ("v2", "aspp", 8),
                                                         ("v1", "aspp", 16)])
def test_output_shapes_and_stride(backbone, head, output_stride):
    model = create_segmenter(backbone, 0.25, 5, head, output_stride).eval()
    seen = {}
    model.head.register_forward_hook(lambda m, i, o: seen.update(map=i[0].shape, out=o.shape))
    x = torch.randn(2, 3, 64, 96)
    assert model(x).shape == (2, 5, 64, 96)
    assert seen["map"][-2:] == (64 // output_stride, 96 // output_stride)
    assert model.predict(x).shape == (2, 64, 96)
    assert model.predict(x, multi_scale_flip=True, scales=(0.75, 1.0)).shape == (2, 64, 96)
    branches = 1 + (3 if head == "aspp" else 0)
    assert len(model.head.branches) == branches
    if head == "aspp":
        assert [b.conv.dilation[0] for b in model.head.branches[1:]] == \
            list(ASPP_RATES[output_stride])
    # Every convolution but the classifier is a ConvBNAct.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    blocks = [m.conv for m in model.modules() if isinstance(m, M.ConvBNAct)]
    assert len(convs) == len(blocks) + 1 and model.head.classifier.bias is not None


def test_parameters_match_table7():
    # MobileNetV2 paper, Table 7 (21 classes): 2.11M lite, 4.52M ASPP (MNet V2*), 11.15M V1 ASPP.
    for backbone, head, params in (("v2", "lite", 2.11), ("v2", "aspp", 4.52),
                                   ("v1", "aspp", 11.15)):
        model = create_segmenter(backbone, 1.0, 21, head, 16)
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params, abs=0.01)
    # MNet V2*: the head reads the 320-channel map, not the 1280-channel last convolution.
    assert create_segmenter("v2").head.branches[0].conv.in_channels == 320


def test_backbone_initialised_from_our_checkpoint(tmp_path):
    clf = M.MobileNetV2(width_mult=0.25, num_classes=10)
    save_model(clf, tmp_path / "clf.safetensors")
    model = create_segmenter(num_classes=3, output_stride=8,
                                 init_from=str(tmp_path / "clf.safetensors"))
    own = clf.state_dict()
    body = model.backbone.state_dict()
    assert len(body) == len([k for k in own if k.startswith("features.")
                             and not k.startswith(f"features.{len(clf.features) - 1}.")])
    for k, v in body.items():
        assert torch.equal(v, own[f"features.{k}"]), k
    assert model.config.backbone.output_stride == 8
    with pytest.raises(FileNotFoundError):
        create_segmenter(init_from=str(tmp_path / "missing.safetensors"))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="head"):
        create_segmenter(head="deeplab")
    with pytest.raises(ValueError, match="output_stride"):
        create_segmenter(output_stride=4)
    with pytest.raises(ValueError, match="--arch|v1"):
        create_segmenter(backbone="v3")
    with pytest.raises(ValueError, match="lr"):
        make_seg_config("smoke", lr=0)
    with pytest.raises(ValueError, match="unknown SegConfig"):
        make_seg_config("smoke", learning_rate=0.1)


def test_dataset_reads_the_generator_layout_and_rejects_bad_masks(scenes, tmp_path):
    ds = SegmentationDataset(scenes / "train")
    assert ds.images.shape == (16, 3, 32, 32) and ds.masks.shape == (16, 32, 32)
    assert ds.class_names == ["background", *CLASSES]
    assert int(ds.masks.max()) <= len(CLASSES) and int(ds.masks.max()) > 0
    assert SegmentationDataset(scenes / "train", resolution=48, limit=3).images.shape == \
        (3, 3, 48, 48)
    # Hand-written masks without annotations.json: classes from the largest id.
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:4] = 3
    mask[-1] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    assert SegmentationDataset(tmp_path).class_names == ["background", "1", "2", "3"]
    with pytest.raises(ValueError, match="a.png holds class id 3"):
        SegmentationDataset(tmp_path, num_classes=2)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    with pytest.raises(FileNotFoundError, match="b.png"):
        SegmentationDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="images/"):
        SegmentationDataset(tmp_path / "nowhere")


def test_augmentation_moves_images_and_masks_together():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    masks = torch.randint(0, 4, (2, 32, 32), dtype=torch.uint8)
    # Scale 1 with a flip: an exact mirror of both.
    x, y = SegAugment(1.0, 1.0, True)(images, masks, torch.Generator().manual_seed(0))
    for i in range(2):
        flipped = torch.equal(y[i], masks[i].long().flip(-1))
        assert flipped or torch.equal(y[i], masks[i].long())
        ref = normalize(images[i]).flip(-1) if flipped else normalize(images[i])
        assert torch.allclose(x[i], ref, atol=1e-5, rtol=0)
    # Zooming out pads: outside pixels are ignored in the mask and 0 in the image.
    x, y = SegAugment(0.5, 0.5, False)(images, masks, torch.Generator().manual_seed(0))
    assert (y == IGNORE_INDEX).float().mean() == pytest.approx(0.75, abs=0.05)
    assert set(y.unique().tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}


@pytest.mark.numerics
def test_loss_falls_in_a_few_steps():
    torch.manual_seed(0)
    model = create_segmenter("v2", 0.25, 3, "lite", 16, dropout=0.0)
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, :, 16:] = 1
    y[:2, :8] = 2
    x = F.one_hot(y, 3).permute(0, 3, 1, 2).float() * 2 - 1  # the labels, as colours
    # Adam at a small rate: SGD at 0.1 with momentum swung with the thread count (unstable).
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(3), abs=0.1)  # small initial logits
    # The best of 20 steps, not the last of 12 (0.33-0.64 x the first by seed and kernel): the best
    # is 0.16-0.30 x over 5 seeds and AVX2, ATen default, oneDNN off, 1 and 2 threads.
    assert min(losses) < 0.75 * losses[0], losses


@pytest.fixture(scope="module")
def seg_run(scenes, tmp_path_factory):
    """The smoke recipe trained for 2 epochs of 16 images: (its folder, train_segmenter's result)."""
    out = tmp_path_factory.mktemp("seg") / "full"
    cfg = make_seg_config("smoke", data=str(scenes / "train"), val_data=str(scenes / "val"),
                          out_dir=str(out), epochs=2, batch_size=8)
    return out, train_segmenter(cfg)


@pytest.fixture(scope="module")
def eval8(seg_run, scenes):
    """``segment eval`` of the run at output stride 8: the report's path."""
    out, _ = seg_run
    report = out.parent / "eval8.json"
    code, _, err = run_cli_captured("segment", "eval", out / "model.safetensors", "--data",
                                    scenes / "val", "--output-stride", "8", "--format", "json",
                                    "--output", report)
    assert code == 0, err
    return report


def test_train_writes_the_run(seg_run):
    out, full = seg_run
    assert full.steps == 4 and len(full.history) == 2
    assert 0 <= full.metrics["miou"] <= 100 and full.evaluation["pixels"] == 4 * 32 * 32
    assert [p["name"] for p in full.evaluation["per_class"]] == ["background", *CLASSES]
    saved = json.loads((out / "eval.json").read_text())
    assert saved["model"]["output_stride"] == 16 and saved["model"]["resolution"] == 32
    model = load_model(out / "model.safetensors", kind="segmenter")
    assert model.metadata["class_names"][0] == "background"


@pytest.mark.numerics
def test_resume_after_an_interruption_reaches_the_same_weights(seg_run, scenes, tmp_path,
                                                                monkeypatch, capsys):
    _, full = seg_run
    # Killed after the checkpoint at step 2, resumed: the same weights as the whole run.
    part = make_seg_config("smoke", data=str(scenes / "train"), val_data=None,
                               out_dir=str(tmp_path / "part"), epochs=2, batch_size=8)
    import mobilenets.engine.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(part)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = train_segmenter(part, resume=True)
    assert "resumed from" in capsys.readouterr().out
    assert_resumed_exactly(full.model.state_dict(), resumed.model.state_dict())


def test_segment_eval_at_another_output_stride(eval8):
    ev = json.loads(eval8.read_text())
    assert ev["model"]["output_stride"] == 8 and ev["pixels"] == 4 * 32 * 32
    ious = [p["iou"] for p in ev["per_class"] if p["iou"] is not None]  # classes present
    assert ev["miou"] == pytest.approx(np.mean(ious), abs=0.01)


def test_segment_predict_writes_an_overlay(seg_run, scenes, tmp_path):
    out, _ = seg_run
    image = sorted((scenes / "val" / "images").iterdir())[0]
    assert main(["segment", "predict", str(out / "model.safetensors"), str(image), "--out-dir",
                 str(tmp_path / "pred")]) == 0
    overlay = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}_overlay.png"))
    assert overlay.shape == (32, 32, 3)


def test_segment_cost_adds_the_evaluated_model_to_table7(eval8, tmp_path):
    ev = json.loads(eval8.read_text())
    assert main(["segment", "cost", "--resolution", "64", "--eval", str(eval8),
                 "--format", "json", "--output", str(tmp_path / "table7.json")]) == 0
    rows = json.loads((tmp_path / "table7.json").read_text())
    assert len(rows) == len(PAPER_TABLE7) + 1
    assert rows[-1]["output_stride"] == 8 and rows[-1]["miou"] == round(ev["miou"], 2)
    lite8 = next(r for r in rows if r["head"] == "lite" and r["output_stride"] == 8)
    assert lite8["mf_madds_b"] > 10 * lite8["madds_b"]  # 6 scales x 2 flips


def test_segment_commands_name_bad_input(seg_run, scenes, tmp_path, capsys):
    out, _ = seg_run
    assert main(["segment", "eval", str(out / "model.safetensors"), "--data",
                 str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["segment", "train", "--preset", "smoke", "--data", str(scenes / "train"),
                 "--set", "lr=-1"]) == 2
    assert "lr" in capsys.readouterr().err


def test_palette_and_overlay(tmp_path):
    pal = palette(4)
    assert pal.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # PASCAL VOC's
    image = np.full((4, 4, 3), 100, np.uint8)
    pred = np.zeros((4, 4), np.int64)
    pred[0, 0] = 1
    out = np.asarray(Image.open(write_overlay(image, pred, tmp_path / "o.png", 4, 0.5)))
    assert out[0, 0].tolist() == [114, 50, 50] and out[1, 1].tolist() == [100, 100, 100]
