"""Semantic segmentation: ``segment train|eval|predict|cost``."""
from __future__ import annotations

import argparse
import json

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, add_run_arguments,
                                   config_from_args, note_preset_defaults, table_width,
                                   write_output)
from mobilenets.tables import render_table


def cmd_segment(args) -> None:
    """``mobilenets segment train|eval|predict|cost``: DeepLabv3 on a MobileNet."""
    from mobilenets.models.registry import load_model
    from mobilenets.tasks.segmentation.data import SegmentationDataset
    from mobilenets.tasks.segmentation.evaluate import (evaluate_segmenter, format_seg_report,
                                                        model_info, predict_files, table7_rows)
    from mobilenets.tasks.segmentation.train import train_segmenter

    if args.segment_command == "train":
        result = train_segmenter(config_from_args(args), args.resume)
        if result.evaluation is not None:
            print(format_seg_report(result.evaluation))
        print(f"{result.steps} steps ({result.epochs:.2f} epochs) in "
              f"{result.train_seconds:.0f} s, {result.images_per_second:.1f} images/s; "
              f"model: {result.model_path}")
    elif args.segment_command in ("eval", "predict"):
        overrides = {"output_stride": args.output_stride} if args.output_stride else {}
        model = load_model(args.model_file, kind="segmenter", **overrides)
        names = model.metadata.get("class_names")
        if args.segment_command == "eval":
            res = args.resolution or model.config.resolution
            ds = SegmentationDataset(args.data, res, model.num_classes, args.limit)
            result = evaluate_segmenter(model, ds, args.batch_size, args.mf,
                                        names or ds.class_names)
            model.config.resolution = int(ds.images.shape[-1])
            result["model"] = model_info(args.model_file, model, args.mf)
            write_output(json.dumps(result, indent=2) if args.format == "json"
                         else format_seg_report(result), args.output)
        else:
            rows = predict_files(model, args.images, args.out_dir, args.alpha, args.mf, names)
            write_output(json.dumps(rows, indent=2) if args.format == "json" else "\n".join(
                f"{r['overlay']}  " + ", ".join(f"{k} {v:.1f}%" for k, v in r["classes"].items())
                for r in rows), args.output)
    else:
        rows = table7_rows(args.resolution, args.num_classes, args.eval or ())
        text = render_table(rows, args.format, width=table_width(args), columns=TABLE7_COLUMNS,
                            headers={"output_stride": "OS"})
        if args.format == "table" and not args.wide:  # the data column, said once
            text = f"{rows[0]['data']}\n{text}"
        write_output(text, args.output)


#: ``segment cost``'s default table: Table 7's columns, ours beside the paper's.
TABLE7_COLUMNS = ("backbone", "head", "output_stride", "madds_b", "mf_madds_b", "params_m", "miou",
                  "paper_madds_b", "paper_params_m", "paper_miou")


def parse_rates(text: str) -> tuple[int, ...]:
    """``--aspp-rates 6,12,18`` -> (6, 12, 18)."""
    try:
        return tuple(int(r) for r in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes integers like 6,12,18, got {text!r}") from None


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.tasks.segmentation.model import HEADS
    from mobilenets.tasks.segmentation.train import SEG_PRESETS

    s = add_parser(sub, "segment", help="semantic segmentation: DeepLabv3 (ASPP or lite head) on "
                   "MobileNet, mIoU, cost vs the V2 paper's Table 7")
    seg_sub = s.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    t = add_parser(seg_sub, "train", help="train end to end on a folder of images/ and masks/")
    add_run_arguments(t, SEG_PRESETS, "synthetic")
    t.add_argument("--data", help="training folder with images/ and masks/ (mobilenets synth)")
    t.add_argument("--val-data", help="held-out folder, evaluated each epoch and at the end")
    t.add_argument("--backbone", choices=("v1", "v2"), help="MobileNet V1 or V2")
    t.add_argument("--width-mult", type=float, help="alpha of the backbone")
    t.add_argument("--head", choices=HEADS, help="DeepLabv3's ASPP or the V2 paper's lite head")
    t.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                   help="input size over the head's map size")
    t.add_argument("--aspp-rates", type=parse_rates, help="comma-separated, e.g. 6,12,18 (default: by "
                   "stride)")
    t.add_argument("--init", dest="init_from",
                   help="our classifier .safetensors to start the backbone from (default: fresh)")
    t.add_argument("--resolution", type=int, help="resize images to this square size")
    t.add_argument("--limit-train", type=int, help="use only the first N training images")
    t.add_argument("--limit-val", type=int, help="use only the first N validation images")
    note_preset_defaults(t)
    t.set_defaults(func=cmd_segment)
    e = add_parser(seg_sub, "eval", help="pixel accuracy, per-class IoU and mIoU")
    e.add_argument("model_file", help="model.safetensors of a segment train run")
    e.add_argument("--data", required=True, help="folder with images/ and masks/")
    e.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                   help="evaluate at another stride (same weights; default: as trained)")
    e.add_argument("--mf", action="store_true", help="multi-scale + flipped inputs (Table 7 MF)")
    e.add_argument("--resolution", type=int, help="input size (default: the training resolution)")
    e.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    e.add_argument("--limit", type=int, help="evaluate only the first N images (default: all)")
    add_output_arguments(e, ("table", "json"), wide=False)
    pr = add_parser(seg_sub, "predict", help="colour overlays (PNG) of the predicted classes")
    pr.add_argument("model_file", help="model.safetensors of a segment train run")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--out-dir", required=True, help="writes NAME_overlay.png here")
    pr.add_argument("--alpha", type=float, default=0.5, help="colour weight")
    pr.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                    help="another stride (default: as trained)")
    pr.add_argument("--mf", action="store_true", help="multi-scale + flipped inputs")
    add_output_arguments(pr, ("table", "json"), wide=False)
    c = add_parser(seg_sub, "cost", help="Mult-Adds and params beside the V2 paper's Table 7")
    c.add_argument("--resolution", type=int, default=512, help="input side (VOC's)")
    c.add_argument("--num-classes", type=int, default=21, help="classes (PASCAL VOC's 21)")
    c.add_argument("--eval", action="append", metavar="JSON",
                   help="an eval.json of our runs to add as a row (repeatable; default: none)")
    add_output_arguments(c, FORMATS)
    s.set_defaults(func=cmd_segment)
