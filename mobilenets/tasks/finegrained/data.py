"""Fine-grained recognition with noisy pretraining (paper section 4.3, Table 10), on data derived
from Fashion-MNIST.

The paper pretrains on a large, noisy set of dog photos collected from the web, then fine-tunes on
the clean Stanford Dogs training set (about 100 images per breed) and reports top-1 on its test
set. ``make_finegrained_data`` derives the same situation from Fashion-MNIST:

- **classes**: by default the five confusable upper-body garments (T-shirt/top, Pullover, Dress,
  Coat, Shirt), the classes a 1.0 MobileNet confuses most (README, ``runs/main``);
- **clean set**: ``clean_per_class`` training images per class with their true labels (100, as
  Stanford Dogs' training set);
- **noisy set**: other training images of the same classes (disjoint from the clean set) whose
  labels are corrupted like web labels: exactly ``round(noise_rate * n)`` images of each class get
  a wrong label; of those, a share ``confusable_share`` take one of the class's two look-alikes
  (``CONFUSABLE``, measured) and the rest a uniformly drawn other class;
- **test set**: every Fashion-MNIST test image of the classes, with its true label.

They are written as ImageFolder trees (``noisy/`` and ``clean/``, each with ``train/`` and the
test set as ``val/``), so ``mobilenets train`` pretrains on ``noisy`` and ``mobilenets finetune``
fine-tunes on ``clean``; ``noise.json`` records the measured corruption.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mobilenets.checks import check_int
from mobilenets.engine.data import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, load_fashion_mnist
from mobilenets.fileio import atomic_path, save_png, staging_dir

#: The upper-body garments of Fashion-MNIST: T-shirt/top, Pullover, Dress, Coat, Shirt.
UPPER_BODY = (0, 2, 3, 4, 6)

#: Each Fashion-MNIST class's two most frequent wrong predictions by the trained 1.0 MobileNet of
#: the README (``runs/main/eval_report.txt``, confusion matrix of the 10,000 test images): the
#: labels a careless web annotator would most plausibly give instead.
CONFUSABLE: dict[int, tuple[int, int]] = {
    0: (6, 3), 1: (3, 0), 2: (6, 4), 3: (4, 6), 4: (2, 6),
    5: (7, 9), 6: (0, 4), 7: (9, 5), 8: (0, 5), 9: (7, 5),
}


@dataclass
class FineGrainedDataConfig:
    """How the fine-grained data sets are derived from Fashion-MNIST.

    Attributes:
        classes: Fashion-MNIST class ids to keep, at least 2, distinct. Default ``UPPER_BODY``.
        clean_per_class: Clean-labelled training images per class, >= 1. Default 100 (Stanford
            Dogs has 100 training images per breed).
        noisy_per_class: Noisy-labelled training images per class, >= 1; default None: every
            training image of the class not in the clean set (5,900).
        noise_rate: Share of the noisy set whose label is wrong, in [0, 1). Default 0.4.
        confusable_share: Of the wrong labels, the share drawn from the class's look-alikes
            (``CONFUSABLE``, when among ``classes``), in [0, 1]; the rest are uniform over the other
            classes. Default 0.75.
        test_per_class: Test images per class, >= 1; default None: all (1,000).
        seed: Seed of the selection and the corruption. Default 0.
    """

    classes: tuple[int, ...] = UPPER_BODY
    clean_per_class: int = 100  # Stanford Dogs: 12,000 training images for 120 breeds
    noisy_per_class: int | None = None
    noise_rate: float = 0.4
    confusable_share: float = 0.75
    test_per_class: int | None = None
    seed: int = 0

    def validate(self) -> "FineGrainedDataConfig":
        """Check the fields (``classes`` becomes a tuple of ints); returns self. Raises
        ``ValueError`` naming a bad field."""
        classes = tuple(int(c) for c in self.classes)
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c < 10 for c in classes):
            raise ValueError(f"classes must be at least 2 distinct Fashion-MNIST ids in 0-9, "
                             f"got {self.classes!r}")
        self.classes = classes
        for name in ("clean_per_class", "noisy_per_class", "test_per_class"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if not 0 <= self.noise_rate < 1:
            raise ValueError(f"noise_rate must be in [0, 1), got {self.noise_rate!r}")
        if not 0 <= self.confusable_share <= 1:
            raise ValueError(f"confusable_share must be in [0, 1], got {self.confusable_share!r}")
        return self


def folder_name(class_name: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt_top")."""
    return class_name.replace("/", "_").replace(os.sep, "_")


def corrupt_labels(labels: np.ndarray, classes: Sequence[int], noise_rate: float,
                   confusable_share: float, rng: np.random.Generator) -> np.ndarray:
    """Web-like label noise: per class, exactly ``round(noise_rate * n)`` labels become wrong.

    Args:
        labels: True class ids, each in ``classes`` (1-D integer array).
        classes: The label set (Fashion-MNIST ids).
        noise_rate: Share of each class's labels to corrupt, in [0, 1).
        confusable_share: Probability that a corrupted label is one of the class's look-alikes
            in ``CONFUSABLE`` that are in ``classes`` (if it has none, the label is uniform), in
            [0, 1]; otherwise it is uniform over the other classes.
        rng: The random generator.

    Returns:
        The noisy labels (a new array); every changed label differs from the true one.

    Raises:
        ValueError: if a label is not in ``classes`` or a rate is out of range.
    """
    labels = np.asarray(labels)
    classes = [int(c) for c in classes]
    if not np.isin(labels, classes).all():
        raise ValueError(f"labels must all be in classes {classes}")
    if not 0 <= noise_rate < 1 or not 0 <= confusable_share <= 1:
        raise ValueError(f"noise_rate must be in [0, 1) and confusable_share in [0, 1], got "
                         f"{noise_rate!r}, {confusable_share!r}")
    noisy = labels.copy()
    for c in classes:
        idx = np.flatnonzero(labels == c)
        flip = rng.permutation(idx)[: int(round(noise_rate * len(idx)))]
        others = [k for k in classes if k != c]
        alike = [k for k in CONFUSABLE.get(c, ()) if k in classes]
        use_alike = rng.random(len(flip)) < confusable_share if alike else np.zeros(len(flip), bool)
        noisy[flip] = np.where(use_alike, rng.choice(alike or others, len(flip)),
                               rng.choice(others, len(flip)))
    return noisy


def _write_split(root: Path, images: torch.Tensor, labels: np.ndarray, ids: np.ndarray) -> None:
    for c in np.unique(labels):
        (root / folder_name(FASHION_MNIST_CLASSES[c])).mkdir(parents=True, exist_ok=True)
    for img, lab, i in zip(images, labels, ids):
        save_png(img, root / folder_name(FASHION_MNIST_CLASSES[lab]) / f"{i:05d}.png",
                 atomic=False)  # inside a staging folder


def make_finegrained_data(out_dir: str | os.PathLike, cfg: FineGrainedDataConfig | None = None,
                          fashion_mnist_root: str | os.PathLike = FASHION_MNIST_ROOT,
                          overwrite: bool = False) -> dict:
    """Write the noisy pretraining set, the clean set and the test set as ImageFolder trees.

    Layout: ``OUT/noisy/{train,val}/<class>/<id>.png`` and ``OUT/clean/{train,val}/...`` (``val``
    is the test set in both, with true labels; ``<id>`` is the Fashion-MNIST index), and
    ``OUT/noise.json``: the config, image counts, the measured noise rate, the share of wrong
    labels that went to a look-alike, and the true-by-noisy label matrix. Written in a staging
    folder renamed at the end: the output is complete or absent.

    Args:
        out_dir: Folder to create; ``overwrite=True`` replaces an existing one (default: error).
        cfg: The derivation; default ``FineGrainedDataConfig()``.
        fashion_mnist_root: Folder of Fashion-MNIST's IDX files. Default Debian's.
        overwrite: See ``out_dir``.

    Returns:
        The ``noise.json`` record (also written to ``OUT/noise.json``).

    Raises:
        ValueError: for a bad config, too few images for the requested counts, or an existing
            ``out_dir`` without ``overwrite``.
        FileNotFoundError: if Fashion-MNIST is not found.
    """
    cfg = (cfg or FineGrainedDataConfig()).validate()
    train = load_fashion_mnist("train", fashion_mnist_root)
    test = load_fashion_mnist("test", fashion_mnist_root)
    rng = np.random.default_rng(cfg.seed)
    clean, noisy, tests = [], [], []
    for c in cfg.classes:
        idx = rng.permutation(np.flatnonzero(train.labels.numpy() == c))
        n_noisy = cfg.noisy_per_class or len(idx) - cfg.clean_per_class
        if cfg.clean_per_class + n_noisy > len(idx):
            raise ValueError(f"clean_per_class + noisy_per_class = {cfg.clean_per_class + n_noisy} "
                             f"but class {c} has {len(idx)} training images")
        clean.append(idx[: cfg.clean_per_class])
        noisy.append(idx[cfg.clean_per_class: cfg.clean_per_class + n_noisy])
        t = np.flatnonzero(test.labels.numpy() == c)
        if cfg.test_per_class and cfg.test_per_class > len(t):
            raise ValueError(f"test_per_class {cfg.test_per_class} but class {c} has {len(t)} test images")
        tests.append(t[: cfg.test_per_class])
    clean, noisy, tests = (np.sort(np.concatenate(a)) for a in (clean, noisy, tests))
    true_noisy = train.labels.numpy()[noisy]
    noisy_labels = corrupt_labels(true_noisy, cfg.classes, cfg.noise_rate, cfg.confusable_share, rng)
    wrong = noisy_labels != true_noisy
    alike = np.array([n in CONFUSABLE.get(t, ()) for t, n in zip(true_noisy[wrong], noisy_labels[wrong])])
    names = [FASHION_MNIST_CLASSES[c] for c in cfg.classes]
    matrix = [[int(((true_noisy == t) & (noisy_labels == n)).sum()) for n in cfg.classes]
              for t in cfg.classes]
    record = {"config": asdict(cfg), "classes": names,
              "images": {"noisy_train": len(noisy), "clean_train": len(clean), "test": len(tests)},
              "noise_rate": round(float(wrong.mean()), 6),
              "confusable_share_of_wrong": round(float(alike.mean()) if len(alike) else 0.0, 6),
              "true_by_noisy": matrix}
    with staging_dir(out_dir, overwrite) as tmp:
        test_labels = test.labels.numpy()[tests]
        for name in ("noisy", "clean"):
            _write_split(tmp / name / "val", test.images[tests], test_labels, tests)
        _write_split(tmp / "clean" / "train", train.images[clean], train.labels.numpy()[clean], clean)
        _write_split(tmp / "noisy" / "train", train.images[noisy], noisy_labels, noisy)
        with atomic_path(tmp / "noise.json") as f:
            f.write_text(json.dumps(record, indent=2) + "\n")
    return record
