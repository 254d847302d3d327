"""Data: IDX files, ImageFolder errors, batched augmentation, sharding."""
import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import write_idx
from PIL import Image

from mobilenets.engine.data import (BatchTransform, ImageFolderDataset, epoch_batches,
                                    erase_rectangles, load_fashion_mnist, read_idx)


def test_idx_round_trip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "ok.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    raw = gzip.decompress((tmp_path / "ok.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="short is truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


def test_fashion_mnist_from_a_folder(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    ds = load_fashion_mnist("train", tmp_path)
    assert len(ds) == 5 and ds.images.shape == (5, 1, 28, 28) and ds.class_names[9] == "Ankle boot"
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist("test", tmp_path)


@pytest.mark.needs_data
def test_real_fashion_mnist():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def make_folder(root, classes=("cat", "dog"), n=3):
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 30), (i * 40, 100, 200)).save(root / split / c / f"{i}.png")


def test_image_folder(tmp_path):
    make_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path, "train", 36)
    img, label = ds[4]
    assert ds.class_names == ["cat", "dog"] and len(ds) == 6 and label == 1
    assert img.shape == (3, 36, 36) and img.dtype == torch.uint8


def test_image_folder_errors(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="split 'test' not found"):
        ImageFolderDataset(tmp_path, "test", 32)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no image"):
        ImageFolderDataset(tmp_path, "train", 32)
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        ImageFolderDataset(tmp_path, "train", 32)
    ds = ImageFolderDataset(tmp_path, "train", 32, skip_bad_files=True)
    assert len(ds) == 6 and len(ds.skipped) == 1 and ds.skipped[0].endswith("broken.jpg")


@pytest.mark.numerics
def test_eval_transform_is_a_plain_resize():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    out = BatchTransform(56, train=False, eval_crop=1.0)(x)
    ref = F.interpolate(x.float(), size=56, mode="bilinear", align_corners=False) / 127.5 - 1
    assert out.shape == (2, 3, 56, 56)  # grayscale repeated to 3 channels
    torch.testing.assert_close(out[:, :1], ref, atol=1e-4, rtol=0)


def test_train_transform_is_seeded_and_random():
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    t = BatchTransform(32, train=True, min_crop_area=0.3)
    a = t(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, t(x, torch.Generator().manual_seed(1)))
    assert not torch.allclose(a, t(x, torch.Generator().manual_seed(2)))
    assert a.min() >= -1 and a.max() <= 1
    with pytest.raises(ValueError, match="min_crop_area"):
        BatchTransform(32, True, min_crop_area=0)
    with pytest.raises(ValueError, match="resolution"):
        BatchTransform(16, True)


def test_random_erasing_replaces_one_rectangle_per_chosen_image():
    # Same seed with and without erasing: the shifts and flips are drawn first, so the views
    # agree everywhere but in one filled axis-aligned rectangle of 2-40% of the input.
    x = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8)
    kw = dict(eval_crop=32 / 28, augmentation="translate", translate=2)
    plain = BatchTransform(32, True, **kw)(x, torch.Generator().manual_seed(1))
    erased = BatchTransform(32, True, random_erasing=0.5, **kw)(x, torch.Generator().manual_seed(1))
    assert erased.shape == plain.shape and erased.min() >= -1 and erased.max() <= 1
    changed = (erased != plain).any(1)  # (B, H, W)
    hit = changed.flatten(1).any(1)
    assert 60 < hit.sum() < 140  # about half of 200 images
    for i in hit.nonzero().flatten().tolist():
        rows, cols = changed[i].any(1).nonzero(), changed[i].any(0).nonzero()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 0.01 * 32 * 32 <= h * w <= 0.45 * 32 * 32, (i, h, w)
        box = erased[i, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.equal(box[0], box[1])  # grayscale noise stays gray on 3 channels
        assert box.std() > 0.3  # noise, not a constant fill
    evaluation = BatchTransform(32, False, random_erasing=1.0, **kw)
    assert torch.equal(evaluation(x), BatchTransform(32, False, **kw)(x))  # never at test time
    assert torch.equal(erase_rectangles(plain, 0.0), plain)
    with pytest.raises(ValueError, match="random_erasing"):
        BatchTransform(32, True, random_erasing=1.5)


def test_epoch_batches_shard_and_reshuffle():
    b0 = torch.cat(epoch_batches(100, 10, epoch=0, seed=0, rank=0, world_size=2))
    b1 = torch.cat(epoch_batches(100, 10, epoch=0, seed=0, rank=1, world_size=2))
    assert len(b0) == len(b1) == 50 and set(b0.tolist()).isdisjoint(b1.tolist())
    assert sorted(torch.cat([b0, b1]).tolist()) == list(range(100))
    again = torch.cat(epoch_batches(100, 10, epoch=0, seed=0, rank=0, world_size=2))
    assert torch.equal(b0, again)
    assert not torch.equal(b0, torch.cat(epoch_batches(100, 10, 1, 0, 0, 2)))
    assert len(epoch_batches(7, 2, 0, 0, world_size=2)) == 2  # 4 per rank after padding, 2 batches


def test_translate_view_pads_and_shifts_whole_pixels():
    # eval_crop 32/28 puts a 28x28 image unresampled in the middle of a 32x32 zero border; the
    # training view is that one shifted by whole pixels (and maybe flipped), never resampled.
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    ev = BatchTransform(32, False, eval_crop=32 / 28)(x)[:, :1]
    torch.testing.assert_close(ev[:, :, 2:30, 2:30], x.float() / 127.5 - 1, atol=1e-4, rtol=0)
    assert (ev[:, :, :2] == -1).all() and (ev[:, :, :, 30:] == -1).all()
    t = BatchTransform(32, True, eval_crop=32 / 28, augmentation="translate", translate=2)
    out = t(x, torch.Generator().manual_seed(0))[:, :1]
    padded = F.pad(x.float() / 127.5 - 1, (4, 4, 4, 4), value=-1.0)
    for i in range(len(x)):  # each output is one of the 25 shifts, possibly mirrored
        hits = [(dy, dx) for dy in range(5) for dx in range(5) for im in (padded[i],
                padded[i].flip(-1)) if torch.allclose(out[i], im[:, dy:dy + 32, dx:dx + 32],
                                                       atol=1e-4)]
        assert hits, i
    with pytest.raises(ValueError, match="augmentation"):
        BatchTransform(32, True, augmentation="mixup")
    with pytest.raises(ValueError, match="eval_crop"):
        BatchTransform(32, False, eval_crop=2.5)
