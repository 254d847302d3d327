"""The synthetic scene generator: shapes, masks, boxes, COCO files, determinism, CLI."""
import json

import numpy as np
import pytest
from PIL import Image

from mobilenets.cli import main
from mobilenets.tasks.synthetic.data import (CLASSES, SceneConfig, make_scene, mask_to_rle,
                                             write_dataset)


def test_make_scene_consistent_boxes_masks_labels():
    cfg = SceneConfig(image_size=64, min_objects=2, max_objects=5, max_overlap=0.2)
    seen = set()
    for i in range(30):
        image, boxes, labels, masks = make_scene(np.random.default_rng(i), cfg)
        n = len(labels)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert boxes.shape == (n, 4) and masks.shape == (n, 64, 64) and masks.dtype == bool
        assert 1 <= n <= 5 and labels.min() >= 1 and labels.max() <= len(CLASSES)
        seen.update(labels.tolist())
        union = np.zeros((64, 64), int)
        for box, mask in zip(boxes, masks):
            ys, xs = np.nonzero(mask)  # the box is tight around the visible pixels
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            union += mask
        assert union.max() == 1  # visible masks never overlap: later objects occlude
    assert len(seen) >= 5


def test_scene_config_rejects_bad_values():
    for kwargs, name in [({"image_size": 8}, "image_size"), ({"min_objects": 3, "max_objects": 2},
                         "max_objects"), ({"min_size": 0.6, "max_size": 0.5}, "max_size"),
                         ({"backgrounds": ("sky",)}, "backgrounds"), ({"noise_std": -1}, "noise_std")]:
        with pytest.raises(ValueError, match=name):
            SceneConfig(**kwargs)


def test_rle_round_trips_through_pycocotools():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for m in [rng.random((7, 5)) > 0.5, np.ones((4, 3), bool), np.zeros((3, 3), bool)]:
        rle = mask_to_rle(m)
        decoded = coco_mask.decode(coco_mask.frPyObjects(rle, *m.shape))
        assert np.array_equal(decoded.astype(bool), m)


def test_write_dataset_coco_layout_and_determinism(tmp_path):
    cfg = SceneConfig(image_size=48, seed=3)
    ann = write_dataset(tmp_path / "a", 4, cfg)
    write_dataset(tmp_path / "b", 4, cfg)
    coco = json.loads(ann.read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(CLASSES) + 1))
    assert len(coco["images"]) == 4 and coco["annotations"]
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and 0 <= x and x + w <= 48 and y + h <= 48 and a["area"] > 0
        sem = np.array(Image.open(tmp_path / "a" / "masks" / f"{a['image_id'] - 1:06d}.png"))
        assert (sem == a["category_id"]).sum() >= a["area"]  # its pixels carry its class id
    for sub in ("images/000002.png", "masks/000003.png", "annotations.json"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()
    other = write_dataset(tmp_path / "c", 4, SceneConfig(image_size=48, seed=4))
    assert other.read_bytes() != ann.read_bytes()


def test_synth_cli(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--num-images", "2", "--image-size", "32",
                 "--seed", "1"]) == 0
    assert (tmp_path / "s" / "annotations.json").is_file()
    assert Image.open(tmp_path / "s" / "images" / "000001.png").size == (32, 32)
    assert main(["synth", str(tmp_path / "t"), "--num-images", "0"]) == 2
    assert "num_images" in capsys.readouterr().err
