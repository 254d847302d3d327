"""Every Mult-Adds and parameters column of the paper's Tables 2-10 and 12-14, as computed by the
profiler, beside the number the paper prints; and the MobileNetV2 tables of the seeds' slides:
Table 4 (Mult-Adds, parameters) as tables ``"V2-4"``, Table 6 (SSDLite) as ``"V2-6"`` and Table 3
(the activation memory at each spatial resolution, traced by ``mobilenets.cost.memory``) as ``"V2-3"``,
with their ShuffleNet rows and column; and the ShuffleNet paper's own complexity figures (its
Tables 1, 2 and 5, as ``"SN-1"``, ``"SN-2"``, ``"SN-5"``).
Table 13's and Table 6's detectors are ``mobilenets.tasks.detection.model``'s, costed by ``profile_detector``'s
rules (the box head over all 300 proposals; no NMS).

Nothing here is typed in but the papers' own numbers: MobileNets are built from the registry, the
comparison models of Tables 8-10 from torchvision's definitions, and all of them are profiled.
Parameters are compared as the paper counts them: convolution and fully connected layers (weights
and biases), no BatchNorm. Where the paper disagrees with itself or with the models it names, the
row carries a note; docs/paper-discrepancies.md gives the evidence for each (D1, D2, ...).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable

from torch import nn

from mobilenets.cost.formulas import table3
from mobilenets.cost.memory import KB, MemoryTrace, inference_ops, trace_memory
from mobilenets.cost.profiler import Profile, profile_model
from mobilenets.models.mobilenet_v1 import V1_SHALLOW_BLOCKS, MobileNetV1
from mobilenets.models.mobilenet_v2 import MobileNetV2
from mobilenets.models.shufflenet import ShuffleNetV1
from mobilenets.tables import TABLE_WIDTH, render_table, wrap_text

#: A comparison entry is a match when within this relative difference (or equal once rounded to
#: the digits the paper prints).
TOLERANCE_PCT = 1.0


@dataclass(frozen=True)
class PaperRow:
    """One model row of a paper table.

    Attributes:
        table: The table's number, as a string ("4", "10").
        model: The row's label as the paper prints it.
        build: Key into ``BUILDERS``: what we profile for it.
        madds_m: The paper's million Mult-Adds (None where the table has no such column).
        params_m: The paper's million parameters.
        madds_note: Why our Mult-Adds differ, when they do by more than the tolerance.
        params_note: Likewise for parameters.
        madds_unit: ``"M"`` (million) or ``"B"`` (billion): how the table prints Mult-Adds
            (``madds_m`` is then in that unit). Default "M".
    """

    table: str
    model: str
    build: str
    madds_m: float | None
    params_m: float | None
    madds_note: str = ""
    params_note: str = ""
    madds_unit: str = "M"


def _v1(width_mult=1.0, resolution=224, num_classes=1000, **kw) -> tuple[nn.Module, tuple]:
    return MobileNetV1(width_mult, num_classes, **kw), (3, resolution, resolution)


def _v2(width_mult=1.0, resolution=224) -> tuple[nn.Module, tuple]:
    return MobileNetV2(width_mult), (3, resolution, resolution)


def _sn(width_mult: float, groups: int) -> tuple[nn.Module, tuple]:
    return ShuffleNetV1(width_mult, groups), (3, 224, 224)


def _det(detector: str, arch: str, resolution: int, num_classes: int) -> tuple[nn.Module, tuple]:
    from mobilenets.tasks.detection.model import build_detector, for_costing

    model = build_detector(detector, arch, 1.0, num_classes=num_classes, resolution=resolution)
    return for_costing(model), (3, resolution, resolution)


def _tv(name: str, resolution: int, **kw) -> tuple[nn.Module, tuple]:
    import torchvision.models as tvm

    return getattr(tvm, name)(weights=None, **kw), (3, resolution, resolution)


# Class counts: ImageNet 1000; Stanford Dogs 120 (Table 10); face attributes: the paper does not
# say how many, 40 as CelebA (Table 12: the FC layer is <2% of the cost at any count near it);
# FaceNet embeddings are 128-d (Table 14).
BUILDERS: dict[str, Callable[[], tuple[nn.Module, tuple]]] = {
    **{f"v1_{a}_{r}": (lambda a=a, r=r: _v1(a, r)) for a in (1.0, 0.75, 0.5, 0.25)
       for r in (224, 192, 160, 128)},
    "v1_conv": lambda: _v1(block="full"),
    "v1_shallow": lambda: _v1(blocks=V1_SHALLOW_BLOCKS),
    **{f"dogs_{a}_{r}": (lambda a=a, r=r: _v1(a, r, 120)) for a in (1.0, 0.75) for r in (224, 192)},
    **{f"attr_{a}_{r}": (lambda a=a, r=r: _v1(a, r, 40)) for a in (1.0, 0.5, 0.25)
       for r in (224, 128)},
    **{f"face_{a}_{r}": (lambda a=a, r=r: _v1(a, r, 128)) for a in (1.0, 0.75)
       for r in (160, 128)},
    "v2_1.0_224": lambda: _v2(1.0),
    "v2_1.4_224": lambda: _v2(1.4),
    **{f"sn_g{g}_{s}": (lambda s=s, g=g: _sn(s, g)) for g in (1, 2, 3, 4, 8)
       for s in (0.25, 0.5, 1.0, 1.5, 2.0)},
    "googlenet": lambda: _tv("googlenet", 224, aux_logits=False, init_weights=False),
    "vgg16": lambda: _tv("vgg16", 224),
    "alexnet": lambda: _tv("alexnet", 224),
    "squeezenet": lambda: _tv("squeezenet1_0", 224),
    "inception_v3_dogs": lambda: _tv("inception_v3", 299, aux_logits=False, init_weights=False,
                                     num_classes=120),
    # Table 13 (SSD 300, Faster R-CNN 300 and 600) with COCO's 90 category ids (the TF Object
    # Detection API's num_classes: 90); the slides' Table 6 (SSDLite at 320x320, MobileNetV2 paper
    # section 6.2) with COCO's 80 categories: the class count each table's figures fit (D17).
    "ssd_v1_300": lambda: _det("ssd", "v1", 300, 90),
    "frcnn_v1_300": lambda: _det("faster_rcnn", "v1", 300, 90),
    "frcnn_v1_600": lambda: _det("faster_rcnn", "v1", 600, 90),
    "ssdlite_v1_320": lambda: _det("ssdlite", "v1", 320, 80),
    "ssdlite_v2_320": lambda: _det("ssdlite", "v2", 320, 80),
}

_SN1 = ("D24: Table 1's complexities are the body without the FC layer (142.5, 140.0, 136.5, "
        "133.3, 136.8M); with the 1000-way FC g=4 is 1.0% over")
_SN2 = ("D25: the ShuffleNet paper prints one nominal complexity per scale for every g; Table 1 "
        "gives 133-143M at 1x")
_SN2_STEM = "; at 0.25x g=8 the stem is 16 channels (12 rounded to a multiple of 8)"

_T14_PARAMS = ("D8: Table 14's parameter counts do not follow from alpha and resolution (1.0-128 "
               "has more than 1.0-160); the paper does not describe the embedding head")

ROWS: list[PaperRow] = [
    PaperRow("4", "Conv MobileNet", "v1_conv", 4866, 29.3),
    PaperRow("4", "MobileNet", "v1_1.0_224", 569, 4.2),
    PaperRow("5", "0.75 MobileNet", "v1_0.75_224", 325, 2.6),
    PaperRow("5", "Shallow MobileNet", "v1_shallow", 307, 2.9),
    PaperRow("6", "1.0 MobileNet-224", "v1_1.0_224", 569, 4.2),
    PaperRow("6", "0.75 MobileNet-224", "v1_0.75_224", 325, 2.6),
    PaperRow("6", "0.5 MobileNet-224", "v1_0.5_224", 149, 1.3),
    PaperRow("6", "0.25 MobileNet-224", "v1_0.25_224", 41, 0.5),
    PaperRow("7", "1.0 MobileNet-224", "v1_1.0_224", 569, 4.2),
    PaperRow("7", "1.0 MobileNet-192", "v1_1.0_192", 418, 4.2),
    PaperRow("7", "1.0 MobileNet-160", "v1_1.0_160", 290, 4.2),
    PaperRow("7", "1.0 MobileNet-128", "v1_1.0_128", 186, 4.2),
    PaperRow("8", "1.0 MobileNet-224", "v1_1.0_224", 569, 4.2),
    PaperRow("8", "GoogleNet", "googlenet", 1550, 6.8,
             "D4: torchvision's GoogLeNet has 3x3 where the original has 5x5 convolutions "
             "(1583M with them restored)",
             "D4: torchvision's GoogLeNet has 3x3 where the original has 5x5 convolutions "
             "(6.99M with them restored)"),
    PaperRow("8", "VGG 16", "vgg16", 15300, 138,
             "D5: 15300 matches VGG16's conv layers alone (15.35G); the FC layers add 0.12G"),
    PaperRow("9", "0.50 MobileNet-160", "v1_0.5_160", 76, 1.32),
    PaperRow("9", "SqueezeNet", "squeezenet", 1700, 1.25,
             "D6: SqueezeNet 1.0 costs 0.82G Mult-Adds; 1700 is about twice that (FLOPs, not "
             "Mult-Adds)"),
    PaperRow("9", "AlexNet", "alexnet", 720, 60, "",
             "D7: torchvision's AlexNet is the one-GPU variant (61.1M); the original has 60M"),
    PaperRow("10", "Inception V3", "inception_v3_dogs", 5000, 23.2,
             "D9: the paper quotes [18]'s rounded 'about 5 billion'",
             "D9: [18]'s Inception V3 variant is not torchvision's; 23.2M is between its "
             "1000-class (23.8M) and 120-class (22.0M) counts"),
    PaperRow("10", "1.0 MobileNet-224", "dogs_1.0_224", 569, 3.3),
    PaperRow("10", "0.75 MobileNet-224", "dogs_0.75_224", 325, 1.9),
    PaperRow("10", "1.0 MobileNet-192", "dogs_1.0_192", 418, 3.3),
    PaperRow("10", "0.75 MobileNet-192", "dogs_0.75_192", 239, 1.9),
    PaperRow("12", "1.0 MobileNet-224", "attr_1.0_224", 568, 3.2),
    PaperRow("12", "0.5 MobileNet-224", "attr_0.5_224", 149, 0.8),
    PaperRow("12", "0.25 MobileNet-224", "attr_0.25_224", 45, 0.2,
             "D10: Table 6 gives the same body 41M; Table 12's 0.25 rows are higher"),
    PaperRow("12", "1.0 MobileNet-128", "attr_1.0_128", 185, 3.2),
    PaperRow("12", "0.5 MobileNet-128", "attr_0.5_128", 48, 0.8,
             "D10: the body alone is 48.6M; the paper truncates, or its head differs"),
    PaperRow("12", "0.25 MobileNet-128", "attr_0.25_128", 15, 0.2,
             "D10: Table 12's 0.25 rows are higher than the body costs (13.3M at 128)"),
    PaperRow("14", "1.0 MobileNet-160", "face_1.0_160", 286, 4.9,
             "D8: 1.0 MobileNet-160 is 290M everywhere else in the paper (Table 7)", _T14_PARAMS),
    PaperRow("14", "1.0 MobileNet-128", "face_1.0_128", 185, 5.5, "", _T14_PARAMS),
    PaperRow("14", "0.75 MobileNet-128", "face_0.75_128", 166, 3.4,
             "D8: 166M is 0.75 MobileNet-160; the row's resolution label is a typo", _T14_PARAMS),
    PaperRow("14", "0.75 MobileNet-128", "face_0.75_128", 108, 3.8,
             "D8: 108M and 3.8M fit this body plus a ~2,500-output layer (+1.9M each); no single "
             "head fits every row", _T14_PARAMS),
    # Table 13: COCO detectors with a MobileNet (alpha 1) base; Mult-Adds in billions.
    PaperRow("13", "SSD 300 MobileNet", "ssd_v1_300", 1.2, 6.8, madds_unit="B"),
    PaperRow("13", "Faster-RCNN 300 MobileNet", "frcnn_v1_300", 25.2, 6.1, madds_unit="B"),
    PaperRow("13", "Faster-RCNN 600 MobileNet", "frcnn_v1_600", 30.5, 6.1, madds_unit="B"),
    # The slides' Table 6 (MobileNetV2 paper): SSDLite on V1 and V2; Mult-Adds in billions.
    PaperRow("V2-6", "MNet V1 + SSDLite", "ssdlite_v1_320", 1.3, 5.1, madds_unit="B"),
    PaperRow("V2-6", "MNet V2 + SSDLite", "ssdlite_v2_320", 0.8, 4.3, madds_unit="B"),
    # MobileNetV2's Table 4 (the slides).
    PaperRow("V2-4", "MobileNetV1", "v1_1.0_224", 575, 4.2,
             "D13: the V1 paper prints 569M for the same network (Tables 4, 6-8)"),
    PaperRow("V2-4", "MobileNetV2", "v2_1.0_224", 300, 3.4, "",
             "D11: 3,470,760 conv + FC parameters (torchvision's 3,504,872 with BN): 3.4 is "
             "truncated, or leaves out the FC biases and more"),
    PaperRow("V2-4", "MobileNetV2 (1.4)", "v2_1.4_224", 585, 6.9, "",
             "D11: MobileNetV2 1.4 has 6.06M conv + FC parameters (torchvision, Keras and the "
             "TensorFlow checkpoint agree within 1%); 6.9M fits no width multiplier near 1.4"),
    # The slides' Table 4 ShuffleNet rows (g = 3, as the ShuffleNet paper's Table 5 names them).
    PaperRow("V2-4", "ShuffleNet (1.5)", "sn_g3_1.5", 292, 3.4),
    PaperRow("V2-4", "ShuffleNet (x2)", "sn_g3_2.0", 524, 5.4),
    # The ShuffleNet paper (Zhang et al., arXiv 1707.01083v2; not among the seeds, its figures as
    # published): Table 1's "Complexity" row, 1x for each g ...
    *(PaperRow("SN-1", f"ShuffleNet 1x (g={g})", f"sn_g{g}_1.0", madds, None,
               _SN1 if g == 4 else "") for g, madds in ((1, 143), (2, 140), (3, 137), (4, 133),
                                                       (8, 137))),
    # ... Table 2's one complexity per scale, whatever g ...
    *(PaperRow("SN-2", f"ShuffleNet {s:g}x (g={g})", f"sn_g{g}_{s}", madds, None,
               _SN2 + (_SN2_STEM if (s, g) == (0.25, 8) else ""))
      for s, madds in ((1.0, 140), (0.5, 38), (0.25, 13)) for g in (1, 2, 3, 4, 8)),
    # ... and Table 5's ShuffleNet rows (its MobileNet rows are the V1 paper's Table 6). Its
    # "ShuffleNet 0.5x (shallow, g=3)", 40M, is not built: the paper does not give its layers.
    PaperRow("SN-5", "ShuffleNet 2x (g=3)", "sn_g3_2.0", 524, None),
    PaperRow("SN-5", "ShuffleNet 1.5x (g=3)", "sn_g3_1.5", 292, None),
    PaperRow("SN-5", "ShuffleNet 1x (g=8)", "sn_g8_1.0", 140, None, _SN2),
    PaperRow("SN-5", "ShuffleNet 0.5x (g=4)", "sn_g4_0.5", 38, None),
]

#: Table 2 (resource per layer type of 1.0 MobileNet-224), in percent.
TABLE2 = [
    # type, Mult-Adds %, parameters %
    ("Conv 1x1", 94.86, 74.59),
    ("Conv DW 3x3", 3.06, 1.06),
    ("Conv 3x3", 1.19, 0.02),
    ("Fully Connected", 0.18, 24.33),
]
_TABLE2_NOTES = {("Conv 3x3", "Mult-Adds %"): "D2: 1.19 is a digit swap of 1.91; the printed "
                 "column sums to 99.29%, with 1.91 to 100.01%"}

#: Table 3 (one 14x14x512 layer as the shrinking methods apply), in millions.
TABLE3 = [("Convolution", 462, 2.36), ("Depthwise Separable Conv", 52.3, 0.27),
          ("alpha = 0.75", 29.6, 0.15), ("rho = 0.714", 15.1, 0.15)]


#: MobileNetV2's Table 3 (the slides): at each spatial resolution, the most channels and the
#: memory (KB of 16-bit activations) "that needs to be materialized". Its 112x112 row reads "1/O(1)"
#: for both (the first-layer trick of section 5) and is not compared; "max" is over these rows.
TABLE3_V2 = [
    # resolution, MobileNetV1 (channels, KB), MobileNetV2 (channels, KB)
    (56, (128, 800), (32, 200)),
    (28, (256, 400), (64, 100)),
    (14, (512, 200), (160, 62)),
    (7, (1024, 199), (320, 32)),
    (1, (1024, 2), (1280, 2)),
]
#: The same table's third column, "ShuffleNet (2x, g=3)" (its 112x112 row is "1/O(1)" too).
TABLE3_V2_SHUFFLENET = [
    # resolution, (channels, KB)
    (56, (48, 300)),
    (28, (400, 600)),  # printed "400/600K"
    (14, (800, 310)),
    (7, (1600, 156)),
    (1, (1600, 3)),
]
TABLE3_V2_MAX = {"MobileNetV1": 800, "MobileNetV2": 200, "ShuffleNet 2x g=3": 600,
                 "ShuffleNet 2x g=2": 600}
#: The columns compared: (label, build, [(resolution, (channels, KB))]). The ShuffleNet column is
#: labelled g = 3 but prints g = 2's widths (D23), so both networks are traced against it.
TABLE3_V2_COLUMNS = (("MobileNetV1", "v1_1.0_224", [(r[0], r[1]) for r in TABLE3_V2]),
                     ("MobileNetV2", "v2_1.0_224", [(r[0], r[2]) for r in TABLE3_V2]),
                     ("ShuffleNet 2x g=3", "sn_g3_2.0", TABLE3_V2_SHUFFLENET),
                     ("ShuffleNet 2x g=2", "sn_g2_2.0", TABLE3_V2_SHUFFLENET))

_D12 = ("D12: the slide's MobileNetV2 column is Table 2's output c of the rows whose input has "
        "this size, times H x W x 2 bytes; the tensors materialized here are smaller")
_D23 = ("D23: the slide's ShuffleNet column has g = 2's widths (400, 800, 1600 at 2x); g = 3's "
        "are 480, 960, 1920")
#: The note of a figure of each column that differs, unless ``_TABLE3_V2_NOTES`` has its own.
_TABLE3_V2_DEFAULT_NOTES = {"MobileNetV2": _D12, "ShuffleNet 2x g=3": _D23}
_TABLE3_V2_MAX_NOTES = {
    "MobileNetV2": "D12: 56x56x24 is MobileNetV2's largest tensor below 112x112; 200 KB is 56x56x32",
    "ShuffleNet 2x g=3": _D23 + "; its largest tensor below 112x112 is 28x28x480, 752.6 KB",
    "ShuffleNet 2x g=2": "D23: 28x28x400 x 2 bytes is 627.2 KB, printed 600K",
}
_TABLE3_V2_NOTES = {
    ("MobileNetV1", 7, "Memory (KB)"): "D12: 199 KB is two 7x7x1024 tensors (a layer's input and "
                                       "output); the other rows count one",
    ("MobileNetV2", 7, "Channels"): "D12: the 7x7x1280 output of the last 1x1 convolution is "
                                    "materialized at 7x7; the slide lists 1280 at 1x1 only",
    ("MobileNetV2", 7, "Memory (KB)"): "D12: the 7x7x1280 output of the last 1x1 convolution "
                                       "(125 KB); the slide's 32 KB is 7x7x320",
    ("MobileNetV2", 1, "Memory (KB)"): "D12: 1280 x 2 bytes = 2.56 KB; the slide truncates to 2",
    ("ShuffleNet 2x g=2", 28, "Memory (KB)"): "D23: 28x28x400 x 2 bytes = 627.2 KB, printed 600K",
    ("ShuffleNet 2x g=2", 14, "Memory (KB)"): "D23: 14x14x800 x 2 bytes = 313.6 KB, printed 310",
}


@lru_cache(maxsize=None)
def table3_v2_trace(build: str) -> MemoryTrace:
    """The activation-memory trace behind MobileNetV2's Table 3: one 224x224 image, 16-bit
    activations, conv + BN + activation, bottleneck blocks and ShuffleNet units as single
    operations."""
    model, size = BUILDERS[build]()
    return trace_memory(model, size, dtype_bytes=2, fuse=inference_ops(), name=build)


@dataclass
class Comparison:
    """One computed-vs-printed figure."""

    table: str
    model: str
    quantity: str
    computed: float
    paper: float
    diff_pct: float
    status: str  # "match", "explained" or "MISMATCH"
    note: str = ""


def _decimals(value: float) -> int:
    text = repr(float(value)).rstrip("0").rstrip(".")
    return len(text.split(".")[1]) if "." in text else 0


def compare(table: str, model: str, quantity: str, computed: float, paper: float,
            note: str = "") -> Comparison:
    """A ``Comparison``: a match if within ``TOLERANCE_PCT`` or equal at the paper's printed
    precision; else explained when ``note`` says why, else a MISMATCH."""
    diff = 100.0 * (computed - paper) / paper
    rounded_equal = round(computed, _decimals(paper)) == paper
    status = "match" if abs(diff) <= TOLERANCE_PCT or rounded_equal else (
        "explained" if note else "MISMATCH")
    return Comparison(table, model, quantity, computed, paper, diff, status,
                      note if status != "match" else "")


def _table3_v2_comparisons() -> list[Comparison]:
    """Table 3 of the slides: the largest materialized tensor at each resolution, as it defines."""
    out = []
    for model, build, cells in TABLE3_V2_COLUMNS:
        by_res = {r["resolution"]: r for r in table3_v2_trace(build).by_resolution()}
        for res, (channels, kb) in cells:
            got = by_res[(res, res)]
            label = f"{model} {res}x{res}"
            for qty, computed, paper in (("Channels", got["largest_tensor_channels"], channels),
                                         ("Memory (KB)", got["largest_tensor_bytes"] / KB, kb)):
                note = _TABLE3_V2_NOTES.get((model, res, qty), _TABLE3_V2_DEFAULT_NOTES.get(model))
                out.append(compare("V2-3", label, qty, computed, paper, note or ""))
        largest = max(by_res[(res, res)]["largest_tensor_bytes"] for res, _ in cells) / KB
        out.append(compare("V2-3", f"{model} max", "Memory (KB)", largest,
                           TABLE3_V2_MAX[model], _TABLE3_V2_MAX_NOTES.get(model, "")))
    return out


@lru_cache(maxsize=None)
def _profile(build: str) -> Profile:
    model, size = BUILDERS[build]()
    return profile_model(model, size, name=build)


def paper_comparisons(tables: set[str] | None = None) -> list[Comparison]:
    """Compute every comparison, optionally only for some tables (e.g. ``{"2", "6", "V2-3"}``)."""
    out: list[Comparison] = []
    want = lambda t: tables is None or t in tables  # noqa: E731
    if want("2"):
        prof = _profile("v1_1.0_224")
        by_kind = {t["kind"]: t for t in prof.by_type(weights_only=True)}
        for kind, madds_pct, params_pct in TABLE2:
            for qty, key, paper in (("Mult-Adds %", "madds_pct", madds_pct),
                                    ("Params %", "params_pct", params_pct)):
                note = _TABLE2_NOTES.get((kind, qty), "")
                c = compare("2", kind, qty, by_kind[kind][key], paper, note)
                # Percentages are printed to 0.01 points; compare at that precision.
                if abs(c.computed - paper) < 0.005 + 1e-9:
                    c.status, c.note = "match", ""
                out.append(c)
    if want("3"):
        for (label, madds, params), (_, p_madds, p_params) in zip(table3(), TABLE3):
            out.append(compare("3", label, "Mult-Adds (M)", madds, p_madds))
            out.append(compare("3", label, "Params (M)", params, p_params))
    if want("V2-3"):
        out += _table3_v2_comparisons()
    for row in ROWS:
        if not want(row.table):
            continue
        prof = _profile(row.build)
        if row.madds_m is not None:
            unit = {"M": 1e6, "B": 1e9}[row.madds_unit]
            out.append(compare(row.table, row.model, f"Mult-Adds ({row.madds_unit})",
                               prof.total_madds / unit, row.madds_m, row.madds_note))
        if row.params_m is not None:
            out.append(compare(row.table, row.model, "Params (M)", prof.layer_params / 1e6,
                               row.params_m, row.params_note))
    return out


def format_comparisons(rows: list[Comparison], fmt: str = "table",
                       width: int | None = TABLE_WIDTH) -> str:
    """Render comparisons as ``"table"`` (text: one table per paper table, then the counts; lines
    at most ``width`` wide, None: unlimited), ``"csv"`` or ``"json"`` (every field)."""
    if fmt != "table":
        return render_table([asdict(r) for r in rows], fmt)
    lines = []
    for table in dict.fromkeys(r.table for r in rows):
        body = [{"Model": r.model, "Quantity": r.quantity, "Computed": f"{r.computed:.2f}",
                 "Paper": f"{r.paper:g}", "Diff": f"{r.diff_pct:.1f}%", "Status": r.status,
                 "Note": r.note} for r in rows if r.table == table]
        lines += ["", f"Table {table}",
                  *("  " + line for line in render_table(
                      body, right=("Computed", "Paper", "Diff"),
                      width=width and width - 2).splitlines())]
    counts = {s: sum(r.status == s for r in rows) for s in ("match", "explained", "MISMATCH")}
    note = (f"match: within {TOLERANCE_PCT:g}% or at the paper's printed precision; explained: the "
            "reason is given in docs/paper-discrepancies.md.")
    lines += ["", *wrap_text(note, width),
              f"{len(rows)} figures: {counts['match']} match, {counts['explained']} explained, "
              f"{counts['MISMATCH']} unexplained."]
    return "\n".join(lines).lstrip("\n")
