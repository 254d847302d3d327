"""Synthetic scenes for detection and segmentation: coloured shapes on varied backgrounds, in COCO format.

There is no COCO or PASCAL VOC on the project machines, so detection (``mobilenets detect``) and
segmentation (``mobilenets segment``) train and evaluate on scenes drawn here: 1 to N objects of
``len(CLASSES)`` shape classes, of varied sizes, positions, rotations and colours, overlapping up to
a bounded IoU (later objects occlude earlier ones), on flat, gradient or textured backgrounds with
pixel noise. Every scene is a pure function of ``(seed, index)``, so a data set is reproducible.

``write_dataset`` lays a data set out as::

    out_dir/images/000000.png ...     RGB uint8
    out_dir/masks/000000.png ...      semantic mask, uint8: 0 background, else the category id
    out_dir/annotations.json          COCO: images, annotations (bbox [x, y, w, h] of the visible
                                      pixels, area, iscrowd 0, segmentation as uncompressed RLE),
                                      categories with ids 1..K (K = len(CLASSES))

CLI: ``mobilenets synth OUT_DIR --num-images N --image-size S --seed K``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobilenets.fileio import atomic_path, save_png
from mobilenets.resources import check_fits

#: The object classes; category id = index + 1 (0 is the background in the semantic masks).
CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")

#: Background kinds ``make_scene`` can draw.
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "texture")

#: Least share of an object's pixels that must stay visible once later objects are drawn over it.
MIN_VISIBLE = 0.5
#: Memory ``make_scene`` takes per pixel of a scene at its peak, a lower bound: float64
#: coordinate grids, a candidate object's rotated coordinates and masks, the image.
SCENE_BYTES_PER_PIXEL = 100


@dataclass
class SceneConfig:
    """How scenes are drawn.

    Attributes:
        image_size: Side of the square image in pixels, >= 16. Default 128.
        min_objects: Least objects per image, >= 1. Default 1.
        max_objects: Most objects per image, >= ``min_objects``. Default 6. A scene can hold fewer
            when no free place is found for an object within a bounded number of tries.
        min_size: Least object size (its circumscribed diameter) as a fraction of the image side,
            in (0, 1]. Default 0.1.
        max_size: Most object size as a fraction of the image side, in [``min_size``, 1].
            Default 0.5.
        max_overlap: Largest IoU allowed between the boxes of two objects, in [0, 1]. Default 0.3.
            Each object also keeps at least half of its pixels visible.
        backgrounds: Background kinds to draw from, a subset of ``BACKGROUNDS``
            (flat colour, linear gradient, smooth random texture). Default all three.
        noise_std: Standard deviation of the Gaussian pixel noise added to the whole image, in
            grey levels (0-255), >= 0. Default 8.
        seed: Seed of ``write_dataset``: image ``i`` is drawn with
            ``numpy.random.default_rng([seed, i])``. Default 0.
    """

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 0.1
    max_size: float = 0.5
    max_overlap: float = 0.3
    backgrounds: tuple[str, ...] = BACKGROUNDS
    noise_std: float = 8.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.backgrounds = tuple(self.backgrounds)
        if int(self.image_size) < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got min_objects="
                             f"{self.min_objects}, max_objects={self.max_objects}")
        if not 0 < self.min_size <= self.max_size <= 1:
            raise ValueError(f"need 0 < min_size <= max_size <= 1, got min_size={self.min_size}, "
                             f"max_size={self.max_size}")
        if not 0 <= self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be in [0, 1], got {self.max_overlap}")
        unknown = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if not self.backgrounds or unknown:
            raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUNDS}, "
                             f"got {self.backgrounds}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The pixels of a unit shape, given coordinates ``u, v`` already centred, rotated and scaled so
    that the shape's circumscribed circle is the unit circle."""
    rho = np.hypot(u, v)
    if kind == "circle":
        return rho <= 1.0
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if kind == "triangle":
        return _triangle(u, v)
    if kind == "star":  # two opposed triangles: a hexagram
        return _triangle(u, v) | _triangle(u, -v)
    if kind == "ring":
        return (rho <= 1.0) & (rho >= 0.55)
    if kind == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    raise ValueError(f"unknown shape {kind!r}; expected one of {CLASSES}")


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An equilateral triangle inscribed in the unit circle, apex up (towards -v)."""
    s3 = np.sqrt(3.0)
    return (v <= 0.5) & (s3 * u - v <= 1.0) & (-s3 * u - v <= 1.0)


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A float (size, size, 3) background in 0..255."""
    if kind == "flat":
        return np.broadcast_to(rng.uniform(0, 255, 3), (size, size, 3)).copy()
    if kind == "gradient":
        a, b = rng.uniform(0, 255, (2, 3))
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = np.cos(theta) * xx + np.sin(theta) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        return a + (b - a) * t[..., None]
    # texture: a coarse random grid of colours, bilinearly upsampled (smooth blotches)
    cells = int(rng.integers(3, 9))
    grid = rng.uniform(0, 255, (cells, cells, 3))
    pos = np.linspace(0, cells - 1, size)
    i0 = np.floor(pos).astype(int).clip(0, cells - 2) if cells > 1 else np.zeros(size, int)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]  # (size, cells, 3)
    f = f[:, 0][None, :, None]
    return rows[:, i0] * (1 - f) + rows[:, i0 + 1] * f


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box (pixel edges: x1 = last column + 1) around a non-empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32)


def make_scene(rng: np.random.Generator, cfg: SceneConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one scene.

    Args:
        rng: The random generator; the scene is a pure function of its state and ``cfg``.
        cfg: The scene parameters (``cfg.seed`` is not used here; see ``write_dataset``).

    Returns:
        ``(image, boxes, labels, masks)``: image uint8 (H, W, 3); boxes float32 (N, 4) xyxy in
        pixels, tight around each object's visible pixels; labels int64 (N,) in
        ``1..len(CLASSES)``; masks bool (N, H, W), the visible pixels of each object (later
        objects occlude earlier ones). N >= 1.
    """
    size = int(cfg.image_size)
    image = _background(rng, cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))], size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    wanted = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    full: list[np.ndarray] = []    # each placed object's full (unoccluded) mask
    visible: list[np.ndarray] = []
    labels: list[int] = []
    colours: list[np.ndarray] = []
    for _ in range(wanted * 20):  # bounded tries
        if len(full) == wanted:
            break
        label = int(rng.integers(len(CLASSES))) + 1
        radius = rng.uniform(cfg.min_size, cfg.max_size) * size / 2
        cx, cy = rng.uniform(radius * 0.7, size - radius * 0.7, 2)
        theta = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = (c * (xx - cx) + s * (yy - cy)) / radius
        v = (-s * (xx - cx) + c * (yy - cy)) / radius
        mask = _shape_mask(CLASSES[label - 1], u, v)
        if mask.sum() < 16:
            continue
        box = _mask_box(mask)
        if any(_box_iou(box, _mask_box(m)) > cfg.max_overlap for m in visible):
            continue
        now_visible = [m & ~mask for m in visible]
        if any(nv.sum() < MIN_VISIBLE * f.sum() for nv, f in zip(now_visible, full)):
            continue
        # a colour that stands out from the background under the object
        under = image[mask].mean(axis=0)
        for _ in range(20):
            colour = rng.uniform(0, 255, 3)
            if np.abs(colour - under).sum() >= 150:
                break
        full.append(mask)
        visible = now_visible + [mask]
        labels.append(label)
        colours.append(colour)
    for mask, colour in zip(full, colours):  # paint in order: later objects cover earlier ones
        shade = 1.0 + 0.15 * (rng.uniform(-1, 1) * (xx - xx.mean()) / size)  # mild shading
        image[mask] = colour * shade[mask][:, None]
    if cfg.noise_std > 0:
        image = image + rng.normal(0, cfg.noise_std, image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    masks = np.stack(visible) if visible else np.zeros((0, size, size), bool)
    boxes = np.stack([_mask_box(m) for m in visible]) if visible else np.zeros((0, 4), np.float32)
    return image, boxes.astype(np.float32), np.asarray(labels, dtype=np.int64), masks


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a bool (H, W) mask: ``{"counts": [...], "size": [H, W]}``.

    The counts alternate background and foreground run lengths in column-major order, starting
    with background (possibly 0), as ``pycocotools.mask.frPyObjects`` expects.
    """
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def semantic_mask(masks: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W): 0 background, else the category id of the visible object at each pixel."""
    out = np.zeros(size, dtype=np.uint8)
    for mask, label in zip(masks, labels):
        out[mask] = label
    return out


def write_dataset(out_dir, num_images: int, cfg: SceneConfig) -> Path:
    """Draw ``num_images`` scenes and write them as a COCO-format data set.

    Args:
        out_dir: Folder to write (created if missing): ``images/NNNNNN.png``, ``masks/NNNNNN.png``
            (semantic, 0 background, else category id) and ``annotations.json``.
        num_images: How many scenes, >= 1.
        cfg: The scene parameters; image ``i`` is drawn with
            ``numpy.random.default_rng([cfg.seed, i])``, so the same seed gives the same files.

    Returns:
        The path of ``annotations.json``. Every file is written atomically and the annotation
        file last, so its presence marks a complete data set.

    Raises:
        ValueError: if ``num_images`` < 1, or a scene of ``cfg.image_size`` cannot fit in the
            memory available (``resources.check_fits``; refused before drawing).
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    size = int(cfg.image_size)
    check_fits(SCENE_BYTES_PER_PIXEL * size ** 2, f"--image-size {size} (one scene of {size} x "
               f"{size} pixels)", "use a smaller --image-size")
    out = Path(out_dir)
    images, annotations = [], []
    for i in range(int(num_images)):
        image, boxes, labels, masks = make_scene(np.random.default_rng([int(cfg.seed), i]), cfg)
        name = f"{i:06d}.png"
        save_png(image, out / "images" / name)
        save_png(semantic_mask(masks, labels, image.shape[:2]), out / "masks" / name)
        images.append({"id": i + 1, "file_name": name, "height": int(image.shape[0]),
                       "width": int(image.shape[1])})
        for box, label, mask in zip(boxes, labels, masks):
            x1, y1, x2, y2 = (float(b) for b in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": float(mask.sum()), "iscrowd": 0,
                                "segmentation": mask_to_rle(mask)})
    config = asdict(cfg)
    config["backgrounds"] = list(cfg.backgrounds)
    coco = {"info": {"description": "mobilenets synthetic shapes", "scene_config": config},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n, "supercategory": "shape"}
                           for k, n in enumerate(CLASSES)]}
    path = out / "annotations.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(coco))
    return path
