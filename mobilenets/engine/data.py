"""Data: Fashion-MNIST from its IDX files (the built-in default), ImageFolder directories (the
general format), and the paper's light augmentation applied to whole batches.

Datasets yield ``(uint8 image tensor (C, S, S), label)`` at a stored size S; ``BatchTransform``
then crops, flips, resizes and normalises a whole batch at once with one ``grid_sample`` call.
That keeps augmentation cheap on a 2-core machine and makes it a pure function of a seeded
generator, so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mobilenets.checks import check_choice, check_range
from mobilenets.fileio import display_text
from mobilenets.readers import check_regular_file

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if its header or length is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path} is truncated: header says {dims}, found {data.size} bytes")
    return data.reshape(dims)


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W), with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.class_names = images, labels.long(), list(class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Many items at once, without a DataLoader."""
        return self.images[indices], self.labels[indices]


def load_fashion_mnist(split: str = "train", root: str | os.PathLike = FASHION_MNIST_ROOT
                       ) -> TensorImageDataset:
    """Fashion-MNIST from its four IDX files, as installed by Debian's ``dataset-fashion-mnist``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000; also accepted as ``"val"``).
        root: Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Returns:
        A ``TensorImageDataset`` of 1x28x28 grayscale images.
    """
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train' or 'test' for Fashion-MNIST, got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder not found: {root} (apt-get install "
                                "dataset-fashion-mnist, or pass an ImageFolder directory)")

    def find(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {root}")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST files in {root} disagree: images {images.shape}, "
                         f"labels {labels.shape}")
    return TensorImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),
                              torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES)


class ImageFolderDataset(Dataset):
    """``root/split/<class>/<image>`` directories, as torchvision's ImageFolder.

    Each image is decoded as RGB, its shorter side resized to ``size`` and center-cropped to a
    ``size`` x ``size`` uint8 tensor; ``BatchTransform`` does the augmentation.

    Args:
        root: The dataset folder.
        split: Subfolder, e.g. ``"train"`` or ``"val"``.
        size: Stored square size S (use ``stored_size(resolution)``).
        skip_bad_files: If True, files that are not regular files (FIFOs, sockets) or cannot be
            decoded are left out and listed in ``self.skipped``: each is decoded once here
            (JPEGs at reduced scale), so one that passes Pillow's ``verify()`` but fails to
            decode is caught too. If False (default), a special file or an invalid header raises
            ``ValueError`` naming it here, and a file that fails to decode later names it then.
        class_names: Expected classes (e.g. the train split's, for a val split); default: the
            sorted subfolder names (a name that is not UTF-8 as ``fileio.display_text`` shows
            it, e.g. ``caf\\xe9``).

    Raises:
        FileNotFoundError: if ``root/split`` is missing.
        ValueError: if a class folder holds no image, or (without ``skip_bad_files``) an image
            cannot be read.
    """

    def __init__(self, root: str | os.PathLike, split: str, size: int, skip_bad_files: bool = False,
                 class_names: Sequence[str] | None = None):
        from PIL import Image

        folder = Path(root) / split
        if not folder.is_dir():
            raise FileNotFoundError(f"split {split!r} not found: {folder} does not exist")
        # A class is named by its folder's name; one that is not UTF-8 by its display_text
        # (undecodable bytes as \xNN), which reports, JSON and model files can hold.
        folders: dict[str, str] = {}
        for d in sorted(folder.iterdir()):
            if d.is_dir():
                shown = display_text(d.name)
                if shown in folders:
                    raise ValueError(f"class folders {display_text(str(d))} and "
                                     f"{folder / folders[shown]} have the same name once shown "
                                     "as text; rename one")
                folders[shown] = d.name
        found = sorted(folders)
        if not found:
            raise ValueError(f"{folder} has no class subfolders")
        self.class_names = ([display_text(n) for n in class_names] if class_names is not None
                            else found)
        unknown = sorted(set(found) - set(self.class_names))
        if unknown:
            raise ValueError(f"{folder} has classes not in the training split: {unknown[:5]}")
        self.size, self.samples, self.skipped = size, [], []
        for label, name in enumerate(self.class_names):
            sub = folder / folders.get(name, name)
            files = sorted(p for p in sub.rglob("*")
                           if p.suffix.lower() in IMAGE_EXTENSIONS) if sub.is_dir() else []
            if not files and name in found:
                raise ValueError(f"class folder {display_text(str(sub))} holds no image "
                                 f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
            for p in files:
                try:
                    if skip_bad_files:
                        open_rgb(p, draft=size)
                    else:
                        with Image.open(check_regular_file(p, "image")) as im:
                            im.verify()
                except Exception as e:  # PIL raises many types for a bad file
                    if not skip_bad_files:
                        said = str(e) if str(p) in str(e) else f"cannot read image {p}: {e}"
                        raise ValueError(f"{said} (skip such files with --skip-bad-files)"
                                         ) from None
                    self.skipped.append(str(p))
                    continue
                self.samples.append((p, label))
        if not self.samples:
            raise ValueError(f"no readable image under {folder}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return load_image(path, self.size), label


def open_rgb(path: str | os.PathLike, draft: int | None = None):
    """Decode an image file as an 8-bit RGB ``PIL.Image``: the one image decoder of the package.

    Each mode is converted by its real range: 16-bit integer images (``I;16``, and ``I`` with
    values in 0..65535) by 65535 -> 255, float images (``F``) with values in [0, 1] by 1 -> 255;
    the 8-bit modes (grey, palette, RGBA, CMYK, ...) by Pillow.

    Args:
        path: The file.
        draft: Let JPEG files decode at a reduced scale no smaller than this side (faster; for
            checking that a file decodes). Default: full size.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is not a regular file (a folder or a FIFO, which would
            block forever), cannot be decoded, is a decompression bomb (more pixels than
            ``PIL.Image.MAX_IMAGE_PIXELS`` allows), or holds values outside its mode's range
            (a float image outside [0, 1], negative or NaN values).
    """
    from PIL import Image

    path = check_regular_file(path, "image")
    try:
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                return _wide_to_rgb(im, path)
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ValueError(f"image {path} is too large to decode safely (a decompression bomb?): "
                         f"{e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # PIL's errors for a bad file
        raise ValueError(f"cannot read image {path}: {e}") from None


def _wide_to_rgb(im, path):
    """A 16/32-bit integer or float grey image as 8-bit RGB, by its range (see ``open_rgb``)."""
    from PIL import Image

    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        scale, limit = 255.0, 1.0
    else:  # I;16*: 16 bits; I: a 16-bit PNG as older Pillows open it, else refused below
        scale, limit = 255.0 / 65535, 65535.0
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > limit):
        found = f"[{np.nanmin(arr):g}, {np.nanmax(arr):g}]" if np.isfinite(arr).any() else "NaN"
        raise ValueError(f"image {path} is a {im.mode} image with values in {found}, outside "
                         f"[0, {limit:g}]: save it as an 8-bit image (or floats in [0, 1])")
    grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Decode an image as RGB (``open_rgb``), resize its shorter side to ``size`` and
    center-crop it square.

    Returns:
        uint8 tensor (3, size, size).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it cannot be decoded (see ``open_rgb``).
    """
    from PIL import Image

    im = open_rgb(path)
    scale = size / min(im.size)
    w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
    im = im.resize((w, h), Image.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def stored_size(resolution: int, eval_crop: float = 0.875) -> int:
    """The size ImageFolder images are stored at so that a center crop of ``eval_crop`` gives
    ``resolution`` (e.g. 256 for 224 at 0.875, the usual ImageNet evaluation)."""
    return int(math.ceil(resolution / eval_crop))


#: ``BatchTransform``'s training augmentations.
AUGMENTATIONS = ("inception", "translate")


@dataclass
class BatchTransform:
    """The paper's light augmentation (section 3.2), a translate-and-flip one, or the evaluation
    view, applied to a whole uint8 batch with one ``grid_sample`` call.

    Training with ``augmentation="inception"`` (the paper's): an Inception-style random crop per
    image whose area is at least ``min_crop_area`` of the image (the paper limits small crops) and
    aspect ratio in [3/4, 4/3], resized to ``resolution``. With ``"translate"`` (fast-training
    practice, e.g. airbench's flip-and-translate on CIFAR-10): the evaluation view shifted by a
    whole number of output pixels in [-translate, translate] on each axis, the uncovered border
    filled with zeros. Both flip horizontally with probability 1/2 if ``flip``. With
    ``random_erasing`` > 0 (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020), each
    training image, with that probability, has one rectangle replaced by uniform noise over the
    pixel range: area 2-40% of the input, aspect ratio in [0.3, 1/0.3] (their settings).

    Evaluation: a centred view spanning ``eval_crop`` of each image side, resized to
    ``resolution``: < 1 is a center crop (ImageNet's 0.875), > 1 shows the whole image on a
    zero border (e.g. 32/28 puts Fashion-MNIST's 28x28 images unresampled on a 32x32 input, as
    the padding of a 28-pixel image). Pixels are scaled to [-1, 1] (TF-Slim's Inception
    preprocessing) and a grayscale channel is repeated to ``out_channels`` (3 by default).

    Args:
        resolution: Output size, >= 32.
        train: Augment (True) or evaluate (False).
        min_crop_area: Smallest crop area fraction (``"inception"``), in (0, 1]. Default 0.25.
        flip: Random horizontal flips when training. Default True.
        eval_crop: Side of the evaluation view as a fraction of the image side, in (0, 2].
            Default 0.875.
        out_channels: Channels fed to the model; a 1-channel batch is repeated to this. Default 3.
        augmentation: ``"inception"`` or ``"translate"``. Default ``"inception"``.
        translate: Largest shift in output pixels (``"translate"``), >= 0. Default 2.
        random_erasing: Probability that a training image gets a noise rectangle, in [0, 1].
            Default 0 (none).
    """

    resolution: int
    train: bool
    min_crop_area: float = 0.25
    flip: bool = True
    eval_crop: float = 0.875
    out_channels: int = 3
    augmentation: str = "inception"
    translate: int = 2
    random_erasing: float = 0.0

    def __post_init__(self):
        for name in ("resolution", "min_crop_area", "eval_crop"):
            check_range(name, getattr(self, name))
        check_choice("augmentation", self.augmentation, AUGMENTATIONS)
        if not isinstance(self.translate, int) or self.translate < 0:
            raise ValueError(f"translate must be an integer >= 0, got {self.translate!r}")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing must be in [0, 1], got {self.random_erasing!r}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, out_channels, resolution, resolution)."""
        b = images.shape[0]
        x = images.float()
        g = dict(generator=generator)
        w = h = torch.full((b,), float(self.eval_crop))
        cx = cy = torch.zeros(b)
        sign = torch.ones(b)
        if self.train and self.augmentation == "inception":
            area = torch.empty(b).uniform_(self.min_crop_area, 1.0, **g)
            log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), **g)
            # Crop width and height as fractions of the image side; clamp keeps the area rule
            # approximately when an extreme ratio would overflow the image.
            w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
            h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
            cx = (torch.rand(b, **g) * 2 - 1) * (1 - w)
            cy = (torch.rand(b, **g) * 2 - 1) * (1 - h)
        elif self.train and self.translate:
            # One output pixel spans 2 * eval_crop / resolution of the image's [-1, 1] range.
            step = 2 * self.eval_crop / self.resolution
            t = self.translate
            cx = torch.randint(-t, t + 1, (b,), **g).float() * step
            cy = torch.randint(-t, t + 1, (b,), **g).float() * step
        if self.train and self.flip:
            sign = torch.where(torch.rand(b, **g) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        size = (b, x.shape[1], self.resolution, self.resolution)
        grid = F.affine_grid(theta, size, align_corners=False)
        # Views that can leave the image (translations, eval_crop > 1) see a zero (black) border,
        # Fashion-MNIST's background; crops inside the image repeat its edge.
        leaves = self.eval_crop > 1 or (self.train and self.augmentation == "translate")
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros" if leaves else "border",
                          align_corners=False)
        x = x / 127.5 - 1.0
        if self.train and self.random_erasing:
            x = erase_rectangles(x, self.random_erasing, generator)
        if x.shape[1] == 1 and self.out_channels != 1:
            x = x.expand(-1, self.out_channels, -1, -1)
        return x.contiguous()


def erase_rectangles(x: torch.Tensor, p: float, generator: torch.Generator | None = None,
                     area: tuple[float, float] = (0.02, 0.4), ratio: float = 0.3) -> torch.Tensor:
    """Random erasing on a float batch in [-1, 1] (Zhong et al. 2020): each image, with
    probability ``p``, gets one rectangle of uniform noise whose area is a uniform fraction in
    ``area`` of the image and whose height/width ratio is log-uniform in [ratio, 1/ratio] (sides
    clamped to the image), placed uniformly inside it. Returns a new tensor."""
    b, _, h, w = x.shape
    g = dict(generator=generator)
    size = torch.empty(b).uniform_(*area, **g) * h * w
    log_ratio = torch.empty(b).uniform_(math.log(ratio), -math.log(ratio), **g)
    eh = (size * log_ratio.exp()).sqrt().round().clamp(1, h)
    ew = (size / log_ratio.exp()).sqrt().round().clamp(1, w)
    top = (torch.rand(b, **g) * (h - eh + 1)).floor()
    left = (torch.rand(b, **g) * (w - ew + 1)).floor()
    on = torch.rand(b, **g) < p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1))
              & on.view(b, 1, 1))
    noise = torch.empty(x.shape).uniform_(-1.0, 1.0, **g)
    return torch.where(inside.unsqueeze(1), noise, x)


def check_data_source(data: str, what: str = "--data") -> str:
    """``"fashion-mnist"`` (also spelt ``fashion_mnist``), or ``data`` if it is an existing folder.

    Raises:
        FileNotFoundError: naming ``what`` (the flag) for anything else.
    """
    if data in ("fashion-mnist", "fashion_mnist"):
        return "fashion-mnist"
    if not Path(data).is_dir():
        raise FileNotFoundError(f"{what} {data!r} is neither 'fashion-mnist' nor an existing "
                                "folder")
    return data


def open_dataset(data: str, split: str, resolution: int, eval_crop: float = 0.875,
                 skip_bad_files: bool = False, class_names: Sequence[str] | None = None) -> Dataset:
    """Open the built-in Fashion-MNIST (``data="fashion-mnist"``) or an ImageFolder directory.

    Args:
        data: ``"fashion-mnist"``, or a folder with ``train/`` and ``val/`` class subfolders.
        split: ``"train"`` or ``"val"`` (Fashion-MNIST's ``"val"`` is its 10,000 test images).
        resolution: The model's input size; sets the stored size of ImageFolder images.
        eval_crop: Evaluation center-crop fraction (sets the stored size). Default 0.875.
        skip_bad_files: Leave out unreadable images, counting them (ImageFolder only).
        class_names: The training split's classes, to check a val split against.
    """
    if check_data_source(data) == "fashion-mnist":
        return load_fashion_mnist(split)
    return ImageFolderDataset(data, split, stored_size(resolution, eval_crop), skip_bad_files,
                              class_names)


def epoch_batches(num_samples: int, batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1, shuffle: bool = True, drop_last: bool = True
                  ) -> list[torch.Tensor]:
    """This process's batches of sample indices for one epoch: a permutation that depends only
    on (seed, epoch), split across processes like ``DistributedSampler`` (padded by wrapping so
    every process gets the same number of batches).

    Args:
        num_samples: Dataset size.
        batch_size: Per-process batch size, >= 1.
        epoch: Epoch number (reshuffles each epoch).
        seed: Run seed.
        rank: This process's rank. Default 0.
        world_size: Number of processes. Default 1.
        shuffle: Permute (training) or keep order (evaluation). Default True.
        drop_last: Drop a last incomplete batch. Default True.
    """
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_samples, generator=g)
    else:
        order = torch.arange(num_samples)
    per_rank = math.ceil(num_samples / world_size)
    if per_rank * world_size > num_samples:  # pad by wrapping, as DistributedSampler
        order = torch.cat([order, order[: per_rank * world_size - num_samples]])
    mine = order[rank::world_size]
    n = len(mine) // batch_size * batch_size if drop_last else len(mine)
    return [mine[i: i + batch_size] for i in range(0, n, batch_size)]


def iterate_batches(dataset: Dataset, batches: Sequence[torch.Tensor], num_workers: int = 0,
                    collate=None) -> Iterator:
    """Yield one collated batch for each index batch.

    A dataset with a ``batch(indices)`` method (the in-memory ones: ``TensorImageDataset``,
    segmentation's) serves each batch straight from memory; any other goes through a
    ``DataLoader`` with ``num_workers`` reading items and ``collate`` (default: torch's) joining
    them. The loader gets its own generator, so opening it draws nothing from the global RNG that
    dropout uses (a resumed run's dropout stream stays the same).
    """
    if hasattr(dataset, "batch"):
        for idx in batches:
            yield dataset.batch(idx)
        return
    loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches],
                        num_workers=num_workers, persistent_workers=False, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    yield from loader


def labeled_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded, class-balanced subset of the images whose labels are kept.

    From each class, ``round(fraction * class size)`` images are chosen by a permutation that
    depends only on ``seed`` and the class, so the same labels, fraction and seed always give
    the same subset (a labels-only baseline and a distilled student see the same labeled images).

    Args:
        labels: 1-D integer class ids of the whole training set.
        fraction: Share of each class to keep labeled, in (0, 1].
        seed: Selects the subset. Default 0.

    Returns:
        Sorted ``LongTensor`` of the labeled images' indices.

    Raises:
        ValueError: if ``fraction`` is outside (0, 1] or ``labels`` is not 1-D integer.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction!r}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be 1-D class ids, got {labels.dtype} {tuple(labels.shape)}")
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(c))
        keep = round(fraction * len(members))
        chosen.append(members[torch.randperm(len(members), generator=g)[:keep]])
    return torch.sort(torch.cat(chosen)).values


def dataset_labels(dataset) -> torch.Tensor:
    """The class id of every item of a ``TensorImageDataset`` or ``ImageFolderDataset``."""
    if hasattr(dataset, "labels"):
        return dataset.labels
    if hasattr(dataset, "samples"):
        return torch.tensor([label for _, label in dataset.samples], dtype=torch.long)
    raise ValueError(f"cannot read the labels of a {type(dataset).__name__}: label_fraction "
                     "needs a TensorImageDataset or an ImageFolderDataset")


def subset_dataset(dataset, indices: torch.Tensor) -> None:
    if hasattr(dataset, "images"):
        dataset.images, dataset.labels = dataset.images[indices], dataset.labels[indices]
    else:
        dataset.samples = [dataset.samples[i] for i in indices.tolist()]


def unlabel_dataset(dataset, labeled: torch.Tensor) -> None:
    """Set the label of every image outside ``labeled`` to -1 (unlabeled), in place."""
    mask = torch.ones(len(dataset), dtype=torch.bool)
    mask[labeled] = False
    if hasattr(dataset, "labels"):
        dataset.labels = torch.where(mask, torch.full_like(dataset.labels, -1), dataset.labels)
    else:
        dataset.samples = [(p, -1 if m else label) for (p, label), m in zip(dataset.samples, mask.tolist())]


def limit_dataset(dataset, n: int) -> None:
    if hasattr(dataset, "images"):
        dataset.images, dataset.labels = dataset.images[:n], dataset.labels[:n]
    else:
        dataset.samples = dataset.samples[:n]
