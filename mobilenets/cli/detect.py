"""Object detection: ``synth`` (synthetic COCO scenes) and
``detect train|eval|predict|export|profile``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mobilenets.cli.common import (add_output_arguments, add_parser, add_run_arguments,
                                   config_from_args, note_preset_defaults, write_output)


def cmd_synth(args) -> None:
    from mobilenets.tasks.synthetic.data import SceneConfig, write_dataset

    cfg = SceneConfig(image_size=args.image_size, min_objects=args.min_objects,
                      max_objects=args.max_objects, min_size=args.min_size,
                      max_size=args.max_size, max_overlap=args.max_overlap,
                      noise_std=args.noise_std, seed=args.seed)
    path = write_dataset(args.out_dir, args.num_images, cfg)
    print(f"wrote {args.num_images} images and {path}", file=sys.stderr)


def cmd_detect(args) -> None:
    import torch

    from mobilenets.models.registry import load_model
    from mobilenets.tasks.detection.data import CocoDetection, evaluate_detector, read_rgb
    from mobilenets.tasks.detection.export import draw_detections, export_detector_onnx
    from mobilenets.tasks.detection.model import build_detector, profile_detector
    from mobilenets.tasks.detection.train import train_detector

    if args.action == "train":
        result = train_detector(config_from_args(args), resume=args.resume)
        print(json.dumps(result.last_epoch))
        return
    if args.action == "profile" and not args.model:
        model = build_detector(args.detector, args.arch, args.width_mult, args.num_classes,
                               args.resolution)
    else:
        model = load_model(args.model, kind="detector")
        class_names = model.metadata.get("class_names", [])
    if args.action == "eval":
        metrics = evaluate_detector(model, CocoDetection(args.data, args.images_dir),
                                    args.batch_size, args.limit)
        text = json.dumps(metrics, indent=2) if args.format == "json" else "\n".join(
            f"{k:<10} {v:.4f}" if isinstance(v, float) else f"{k:<10} {v}"
            for k, v in metrics.items())
        write_output(text, args.output)
    elif args.action == "predict":
        out_dir = Path(args.output_dir)
        for path in args.images:
            image = read_rgb(path)  # the detector resizes to its resolution itself
            with torch.no_grad():
                found = model([image.float() / 255])[0]
            png = draw_detections(image, found, class_names,
                                      out_dir / (Path(path).stem + "_detections.png"),
                                      args.score_thresh)
            keep = found["scores"] >= args.score_thresh
            print(f"{path}: {int(keep.sum())} objects -> {png}")
            for box, score, label in zip(found["boxes"][keep].tolist(),
                                         found["scores"][keep].tolist(),
                                         found["labels"][keep].tolist()):
                name = class_names[label - 1] if label <= len(class_names) else str(label)
                print(f"  {name:<12} {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    elif args.action == "export":
        images = None
        if args.data:
            ds = CocoDetection(args.data)
            res = model.config.resolution
            images = torch.stack([torch.nn.functional.interpolate(
                ds.load_image(i)[None].float() / 255, size=(res, res), mode="bilinear")[0]
                for i in range(min(4, len(ds)))])
        report = export_detector_onnx(model, args.output, class_names, args.tolerance, images)
        print(json.dumps(report))
    else:  # profile
        prof = profile_detector(model)
        print(prof.format_table() if args.format == "table" else prof.to_json())


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.engine.config import OPTIMIZERS
    from mobilenets.tasks.detection.model import DETECTORS
    from mobilenets.tasks.detection.train import DETECT_PRESETS

    s = add_parser(sub, "synth", help="synthetic shapes scenes in COCO format (detection and "
                   "segmentation data)")
    s.add_argument("out_dir", help="folder to write: images/, masks/, annotations.json")
    s.add_argument("--num-images", type=int, default=1000, help="scenes to draw")
    s.add_argument("--image-size", type=int, default=128, help="side of each square image")
    s.add_argument("--seed", type=int, default=0, help="use different seeds for train and val")
    s.add_argument("--min-objects", type=int, default=1, help="objects per scene, at least")
    s.add_argument("--max-objects", type=int, default=6, help="objects per scene, at most")
    s.add_argument("--min-size", type=float, default=0.1, help="object size / image side")
    s.add_argument("--max-size", type=float, default=0.5, help="object size / image side")
    s.add_argument("--max-overlap", type=float, default=0.3, help="largest IoU between two boxes")
    s.add_argument("--noise-std", type=float, default=8.0, help="pixel noise (grey levels)")
    s.set_defaults(func=cmd_synth)

    s = add_parser(sub, "detect", help="object detection: SSD, SSDLite, Faster R-CNN on "
                   "MobileNet (train, eval, predict, export, profile)")
    dsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = add_parser(dsub, "train", help="train on COCO-format data; COCO mAP after each epoch")
    t.add_argument("train_data", metavar="data",
                   help="training annotation file (COCO JSON; images/ beside it)")
    add_run_arguments(t, DETECT_PRESETS, "synthetic")
    t.add_argument("--val-data", help="validation annotation file (default: none)")
    t.add_argument("--train-images", help="folder of the training images (default: images/ "
                   "beside the annotation file, else its folder)")
    t.add_argument("--val-images", help="folder of the validation images (default: as for "
                   "training)")
    t.add_argument("--detector", choices=DETECTORS, help="the detector")
    t.add_argument("--arch", choices=("v1", "v2"), help="the backbone")
    t.add_argument("--width-mult", type=float, help="alpha of the backbone")
    t.add_argument("--resolution", type=int, help="input side, >= 64")
    t.add_argument("--backbone-weights", help="our classification .safetensors to start from "
                   "(default: fresh weights)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="the optimizer")
    t.add_argument("--lr-schedule", choices=("exponential", "cosine", "poly"),
                   help="decay after the warm-up")
    t.add_argument("--min-scale", type=float, help="SSD default-box scale of the first map")
    t.add_argument("--max-scale", type=float, help="SSD default-box scale of the last map")
    t.add_argument("--limit-val", type=int, help="evaluate on the first N validation images")
    note_preset_defaults(t)
    e = add_parser(dsub, "eval", help="COCO mAP (AP@[.5:.95], AP50, AP75, by size)")
    e.add_argument("model", help="a detector .safetensors (detect train's model.safetensors)")
    e.add_argument("data", help="COCO annotation file")
    e.add_argument("--images-dir", help="folder of its images (default: images/ beside it)")
    e.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    e.add_argument("--limit", type=int, help="evaluate only the first N images (default: all)")
    add_output_arguments(e, ("table", "json"), wide=False)
    pr = add_parser(dsub, "predict", help="draw boxes, labels and scores; write PNGs")
    pr.add_argument("model", help="a detector .safetensors")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--output-dir", default=".", help="where IMAGE_detections.png go")
    pr.add_argument("--score-thresh", type=float, default=0.3, help="draw detections above this")
    x = add_parser(dsub, "export", help="ONNX (SSD/SSDLite: boxes + scores; NMS outside), "
                   "checked with ONNX Runtime")
    x.add_argument("model", help="a detector .safetensors")
    x.add_argument("--output", required=True, help="the .onnx file")
    x.add_argument("--tolerance", type=float, default=1e-4, help="largest |ONNX - torch|")
    x.add_argument("--data", help="COCO annotation file: check on its first images (default: "
                   "noise images)")
    f = add_parser(dsub, "profile", help="Mult-Adds and parameters per layer (Table 13's rules)")
    f.add_argument("model", nargs="?", help="a detector .safetensors; or build one from the flags")
    f.add_argument("--detector", choices=DETECTORS, default="ssd", help="the detector")
    f.add_argument("--arch", choices=("v1", "v2"), default="v1", help="the backbone")
    f.add_argument("--width-mult", type=float, default=1.0, help="alpha")
    f.add_argument("--resolution", type=int, default=300, help="input side")
    f.add_argument("--num-classes", type=int, default=90, help="object classes (COCO's ids)")
    f.add_argument("--format", choices=("table", "json"), default="table", help="report format")
    s.set_defaults(func=cmd_detect)
