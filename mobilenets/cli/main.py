"""The ``mobilenets`` command line: one subcommand per task, each a thin layer over the library."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobilenets.deploy.bench import BACKENDS, PEERS

FORMATS = ("table", "csv", "json")


def parse_resolution(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"224x160"`` -> (224, 160) as (H, W). Each side an integer >= 32.

    Raises:
        ValueError: naming ``--resolution`` for anything else.
    """
    parts = str(text).lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or any(s < 32 for s in sides):
        raise ValueError(f"--resolution must be an integer >= 32, or HxW with both >= 32, "
                         f"got {text!r}")
    return (sides[0], sides[-1])


def _write(text: str, output: str | None) -> None:
    if output:
        from mobilenets.fileio import atomic_path

        with atomic_path(output) as tmp:
            Path(tmp).write_text(text + "\n")
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text)


def cmd_models(args) -> None:
    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import MODELS, create_model, list_models

    rows = []
    for name in list_models(args.pattern):
        spec = MODELS[name]
        prof = profile_model(create_model(name), (3, spec.resolution, spec.resolution))
        paper = spec.paper or {}
        rows.append({"name": name, "width_mult": spec.kwargs.get("width_mult", 1.0),
                     "resolution": spec.resolution, "madds_m": round(prof.total_madds / 1e6, 1),
                     "params_m": round(prof.total_params / 1e6, 2),
                     "paper_top1": paper.get("top1"), "paper_table": paper.get("table")})
    if not rows:
        raise ValueError(f"--pattern {args.pattern!r} matches no registered model")
    _write(_render(rows, args.format), args.output)


def _render(rows: list[dict], fmt: str) -> str:
    import csv
    import io
    import json

    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    keys = list(rows[0])
    cells = [[("" if r[k] is None else str(r[k])) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    fmt_row = lambda cs: "  ".join(c.ljust(w) for c, w in zip(cs, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt_row(keys), fmt_row(["-" * w for w in widths])] + [fmt_row(c) for c in cells])


#: ``mobilenets profile --arch``: the model class built from --width-mult, and its report label.
PROFILE_ARCHS = {"v1": ("mobilenet_v1", "MobileNet"), "v2": ("mobilenet_v2", "MobileNetV2")}


def cmd_profile(args) -> None:
    import json

    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import ARCHS, create_model, get_spec

    if args.model:
        if args.arch:
            raise ValueError("--arch goes with --width-mult; --model already names the "
                             "architecture")
        spec = get_spec(args.model)
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        model = create_model(args.model, **kwargs)
        h, w = parse_resolution(args.resolution) if args.resolution else (spec.resolution,) * 2
        name = args.model
    else:
        arch, label = PROFILE_ARCHS[args.arch or "v1"]
        h, w = parse_resolution(args.resolution or "224")
        model = ARCHS[arch](width_mult=args.width_mult, num_classes=args.num_classes or 1000)
        name = f"{args.width_mult:g} {label}-{h}" + (f"x{w}" if w != h else "")
    prof = profile_model(model, (3, h, w), name=name)
    if not args.memory:
        text = {"table": prof.format_table, "csv": prof.to_csv, "json": prof.to_json}[args.format]()
        _write(text.rstrip("\n"), args.output)
        return
    from mobilenets.cost.memory import inference_ops, trace_memory

    fuse = inference_ops() if args.memory == "ops" else ()
    mem = trace_memory(model, (3, h, w), dtype_bytes=args.activation_bytes, fuse=fuse, name=name)
    if args.format == "json":
        text = json.dumps({**prof.to_dict(), "memory": mem.to_dict()}, indent=2)
    elif args.format == "csv":  # two CSV tables, separated by an empty line
        text = prof.to_csv() + "\n" + mem.to_csv()
    else:
        text = prof.format_table() + "\n\n" + mem.format_table()
    _write(text.rstrip("\n"), args.output)


def cmd_paper_tables(args) -> None:
    from mobilenets.paper import format_comparisons, paper_comparisons

    tables = set(args.table) if args.table else None
    rows = paper_comparisons(tables)
    if not rows:
        raise ValueError(f"--table must be among 2-10, 12-14, V2-3, V2-4, V2-6; got "
                         f"{args.table}")
    _write(format_comparisons(rows, args.format), args.output)
    if args.strict and any(r.status == "MISMATCH" for r in rows):
        raise SystemExit(1)


def cmd_convert(args) -> None:
    from mobilenets.deploy.convert import convert

    out = convert(args.src, args.dst, source=args.source, width_mult=args.width_mult)
    print(f"wrote {out}")


def _train_config(args):
    """A TrainConfig from the preset, the common flags, then any ``--set key=value``."""
    from dataclasses import fields

    from mobilenets.engine.train import TrainConfig, make_config

    flags = {"model": args.model, "width_mult": args.width_mult, "resolution": args.resolution,
             "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "data": args.data, "out_dir": args.out, "ema_decay": args.ema,
             "limit_train": args.limit_train, "limit_val": args.limit_val,
             "skip_bad_files": args.skip_bad_files or None, "amp": args.amp or None,
             "compile": args.compile or None, "tensorboard": args.tensorboard or None,
             "seed": args.seed, "label_fraction": args.label_fraction}
    for attr in ("init", "freeze_body"):
        if hasattr(args, attr):
            flags["init_from" if attr == "init" else attr] = getattr(args, attr) or None
    overrides = {k: v for k, v in flags.items() if v is not None}
    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set takes KEY=VALUE with KEY a TrainConfig field, got {item!r}")
        overrides[key] = _parse_value(value, str(types[key]), key)
    return make_config(args.preset, **overrides)


def _parse_value(text: str, type_name: str, key: str):
    if text.lower() in ("none", "null") and "None" in type_name:
        return None
    try:
        if type_name.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
    except ValueError:
        raise ValueError(f"--set {key}={text!r}: expected {type_name}") from None
    return text


def _add_train_flags(s: argparse.ArgumentParser) -> None:
    from mobilenets.engine.train import PRESETS

    s.add_argument("--preset", default="fashion-mnist", choices=sorted(PRESETS),
                   help="recipe to start from (default fashion-mnist; 'paper' is section 3.2)")
    s.add_argument("--model", help="registered name (sets alpha and resolution)")
    s.add_argument("--width-mult", type=float, help="alpha, overrides the model's")
    s.add_argument("--resolution", type=int, help="input size, >= 32")
    s.add_argument("--epochs", type=float)
    s.add_argument("--batch-size", type=int, help="per process")
    s.add_argument("--lr", type=float, help="for one process; scaled by the number of processes")
    s.add_argument("--data", help="'fashion-mnist' or an ImageFolder root with train/ and val/")
    s.add_argument("--out", help="run folder (checkpoint, metrics, model)")
    s.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.9999")
    s.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    s.add_argument("--compile", action="store_true", help="torch.compile the model")
    s.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    s.add_argument("--skip-bad-files", action="store_true", help="leave out unreadable images")
    s.add_argument("--limit-train", type=int, help="use only the first N training images")
    s.add_argument("--limit-val", type=int, help="use only the first N validation images")
    s.add_argument("--seed", type=int)
    s.add_argument("--label-fraction", type=float, help="keep the labels of this seeded, "
                   "class-balanced share of the training images (label_seed picks it)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other TrainConfig field (repeatable)")


def cmd_train(args) -> None:
    from mobilenets.engine.metrics import format_report
    from mobilenets.engine.train import init_distributed, train

    cfg = _train_config(args)
    result = train(cfg, resume=args.resume)
    if init_distributed().main:  # under torchrun, one report
        print(format_report(result["val"]))
        print(f"{result['steps']} steps ({result['epochs']:.2f} epochs) in "
              f"{result['train_seconds']:.0f} s, {result['images_per_second']:.0f} images/s; "
              f"model: {result['model_path']}")


def _load_for_inference(path: str):
    from mobilenets.models.modelfile import load_state_dict_checked, read_model_file
    from mobilenets.models.registry import build_from_config

    config, state, extra = read_model_file(path)
    model = build_from_config(config)
    load_state_dict_checked(model, state, source=path)
    train_cfg = extra.get("train_config", {})
    return model.eval(), extra.get("class_names"), train_cfg


def _inference_extra(class_names, train_cfg: dict) -> dict:
    """What evaluating or exporting a trained model needs from its file: class names, the
    evaluation crop and the data it was trained on."""
    return {"class_names": class_names, "eval_crop": train_cfg.get("eval_crop", 0.875),
            "data": train_cfg.get("data")}


def cmd_eval(args) -> None:
    from mobilenets.engine.metrics import format_report
    from mobilenets.engine.train import evaluate

    model, class_names, train_cfg = _load_for_inference(args.model_file)
    extra = _inference_extra(class_names, train_cfg)
    ds, transform = _eval_split(model.config, extra, args.data, args.split, args.limit,
                                args.resolution, args.eval_crop, args.skip_bad_files)
    result = evaluate(model, ds, transform, args.batch_size,
                      class_names=class_names or ds.class_names, progress=True)
    import json

    _write(json.dumps(result, indent=2) if args.format == "json" else format_report(result),
           args.output)


def cmd_predict(args) -> None:
    import json

    import torch

    from mobilenets.engine.data import BatchTransform, load_image, stored_size

    model, class_names, train_cfg = _load_for_inference(args.model_file)
    res = args.resolution or model.config.get("resolution", 224)
    crop = train_cfg.get("eval_crop", 0.875)
    images = torch.stack([load_image(p, stored_size(res, crop)) for p in args.images])
    x = BatchTransform(res, False, eval_crop=crop, out_channels=model.in_channels)(images)
    if model.in_channels == 1:
        x = x[:, :1]
    probs = model.predict(x)
    k = min(args.top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    names = class_names or [str(i) for i in range(probs.shape[1])]
    rows = [{"image": str(p), "top": [{"label": names[int(i)], "class": int(i),
                                        "probability": round(float(v), 6)}
                                       for v, i in zip(top.values[n], top.indices[n])]}
            for n, p in enumerate(args.images)]
    if args.format == "json":
        _write(json.dumps(rows, indent=2), args.output)
        return
    lines = []
    for r in rows:
        lines.append(r["image"])
        lines += [f"  {t['probability']:7.2%}  {t['label']}" for t in r["top"]]
    _write("\n".join(lines), args.output)


def cmd_sweep(args) -> None:
    from dataclasses import replace

    from mobilenets.models.registry import arch_name, get_spec
    from mobilenets.engine.sweep import run_sweep

    cfg = _train_config(args)
    if args.arch:  # the architecture swept; --width-mults and --resolutions set the rest
        arch = arch_name(args.arch)
        if args.model and get_spec(args.model).arch != arch:
            raise ValueError(f"--model {args.model} is not --arch {args.arch}")
        if get_spec(cfg.model).arch != arch:
            cfg = replace(cfg, model=f"{arch}_1.0_224").validate()
    alphas = [float(a) for a in args.width_mults.split(",")]
    resolutions = [int(r) for r in args.resolutions.split(",")]
    rows = run_sweep(cfg, alphas, resolutions, args.out or "runs/sweep")
    print(_render([{k: r[k] for k in ("label", "arch", "madds", "params", "top1", "train_seconds")}
                   for r in rows], "table"))


def cmd_compare(args) -> None:
    from mobilenets.engine.sweep import compare_runs

    _write(_render(compare_runs(args.runs), args.format), args.output)


def _model_for_export(source: str, resolution: int | None):
    """(model, extra metadata) from our .safetensors file or a registered name (fresh weights)."""
    from mobilenets.models.registry import MODELS, create_model

    if source in MODELS:
        model, extra = create_model(source).eval(), {}
    elif Path(source).suffix in (".safetensors", ".st"):
        model, class_names, train_cfg = _load_for_inference(source)
        extra = _inference_extra(class_names, train_cfg)
    else:
        raise ValueError(f"model {source!r} is neither a registered name nor a .safetensors file "
                         "(use `mobilenets convert` for Keras or timm weights first)")
    if resolution:
        model.config["resolution"] = resolution
    return model, extra


def _eval_split(model_cfg: dict, extra: dict, data: str | None, split: str, limit: int | None,
                resolution: int | None = None, crop: float | None = None,
                skip_bad_files: bool = False):
    """(dataset, eval transform) for a model, with the data and crop it was trained with unless
    ``data``, ``resolution`` or ``crop`` say otherwise."""
    from mobilenets.engine.data import BatchTransform, open_dataset

    res = resolution or model_cfg.get("resolution", 224)
    crop = crop or extra.get("eval_crop", 0.875)
    ds = open_dataset(data or extra.get("data") or "fashion-mnist", split, res, crop,
                      skip_bad_files, extra.get("class_names"))
    if limit:
        from mobilenets.engine.train import _limit

        _limit(ds, limit)
    return ds, BatchTransform(res, False, eval_crop=crop, out_channels=model_cfg.get("in_channels", 3))


def cmd_export(args) -> None:
    from mobilenets.models.modelfile import load_model, save_model
    from mobilenets.deploy.onnx_export import calibration_batches, export_onnx, quantize_int8

    model, extra = _model_for_export(args.model, args.resolution)
    out = Path(args.output)
    if args.format == "onnx":
        report = export_onnx(model, out, tolerance=args.tolerance, fold_bn=not args.no_fold_bn,
                             extra=extra)
    elif args.format == "int8":
        calib_set, tf = _eval_split(model.config, extra, args.data, "train", None)
        batches = calibration_batches(calib_set, tf, args.calibration_images)
        report = quantize_int8(model, out, batches, per_channel=not args.per_tensor, extra=extra,
                               min_top1_agreement=args.min_agreement,
                               float_layers=args.float_layers)
    else:
        save_model(model, out, extra=extra)
        import torch

        x = torch.randn(2, model.config.get("in_channels", 3), *(2 * [model.config.get("resolution", 224)]))
        with torch.no_grad():
            diff = float((load_model(out)(x) - model(x)).abs().max())
        if diff > 0:
            raise ValueError(f"{out} reloads with different outputs (max |diff| {diff:.3g})")
        print(f"{out} (safetensors): reloaded outputs identical")
        return
    print(report.summary())
    if args.evaluate:
        _evaluate_export(model, extra, out, args)


def _evaluate_export(model, extra: dict, path: Path, args) -> None:
    """Top-1 of the torch model and of the export on the same split, and the difference."""
    import json

    from mobilenets.deploy.onnx_export import OnnxModule
    from mobilenets.engine.train import evaluate

    ds, tf = _eval_split(model.config, extra, args.data, "val", args.limit)
    names = extra.get("class_names") or ds.class_names
    ref = evaluate(model, ds, tf, class_names=names, progress=True)
    got = evaluate(OnnxModule(path), ds, tf, class_names=names, progress=True)
    row = {"model": args.model, "export": str(path), "format": args.format,
           "images": ref["num_samples"], "torch_top1": ref["top1"], "export_top1": got["top1"],
           "drop": round(ref["top1"] - got["top1"], 2)}
    print(f"top-1 on {row['images']} images: torch fp32 {row['torch_top1']:.2f}%, "
          f"{args.format} export {row['export_top1']:.2f}%, drop {row['drop']:+.2f} points")
    if args.report:
        from mobilenets.fileio import atomic_path

        with atomic_path(args.report) as tmp:
            tmp.write_text(json.dumps(row, indent=2) + "\n")


def _specs(args) -> list[dict]:
    specs = [{"name": n} for n in (args.model or [])]
    specs += [{"model_file": f} for f in (args.model_file or [])]
    from mobilenets.models.registry import get_spec

    for s in specs:
        if "name" in s:
            get_spec(s["name"])
        elif not Path(s["model_file"]).is_file():
            raise FileNotFoundError(f"--model-file not found: {s['model_file']}")
        if args.resolution:
            s["resolution"] = args.resolution
    return specs or [{"name": "mobilenet_v1_1.0_224"}]


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_bench(args) -> None:
    import json
    from dataclasses import asdict

    from mobilenets.deploy.bench import bench

    rows, machine = bench(_specs(args), args.backends, batch=args.batch, threads=args.threads,
                          rounds=args.rounds, memory=not args.no_memory,
                          calibration_data=args.calibration_data, progress=_progress)
    dicts = [asdict(r) for r in rows]
    if args.format == "json":
        _write(json.dumps({"machine": machine, "rows": dicts}, indent=2), args.output)
    else:
        _write(_render(dicts, args.format), args.output)


def cmd_pick(args) -> None:
    import json

    from mobilenets.deploy.bench import pick

    rows, choice = pick(args.latency_ms, args.max_params, args.max_madds, args.backend,
                        args.accuracy, args.threads, plot=args.plot, arch=args.arch,
                        progress=_progress)
    keys = ("label", "top1", "accuracy_source", "latency_ms", "params", "madds", "fits", "chosen")
    table = [{k: r[k] for k in keys} for r in sorted(rows, key=lambda r: r["latency_ms"])]
    if args.format == "json":
        _write(json.dumps({"choice": choice, "candidates": table}, indent=2), args.output)
        return
    _write(_render(table, args.format), args.output)
    print(f"pick: {choice['label']} (top-1 {choice['top1']}%, {choice['accuracy_source']}; "
          f"{choice['latency_ms']:.2f} ms on {args.backend}, {choice['params'] / 1e6:.2f}M params, "
          f"{choice['madds'] / 1e6:.0f}M Mult-Adds)" + (f"; frontier: {args.plot}" if args.plot else ""))


def cmd_synth(args) -> None:
    from mobilenets.tasks.synthetic.data import SceneConfig, write_dataset

    cfg = SceneConfig(image_size=args.image_size, min_objects=args.min_objects,
                      max_objects=args.max_objects, min_size=args.min_size,
                      max_size=args.max_size, max_overlap=args.max_overlap,
                      noise_std=args.noise_std, seed=args.seed)
    path = write_dataset(args.out_dir, args.num_images, cfg)
    print(f"wrote {args.num_images} images and {path}", file=sys.stderr)


def cmd_detect(args) -> None:
    import json

    import torch

    from mobilenets.tasks.detection import model as det
    from mobilenets.tasks.detection.data import CocoDetection, evaluate_detector, read_rgb

    if args.action == "train":
        names = ("detector", "arch", "width_mult", "resolution", "backbone_weights", "val_data",
                 "train_images", "val_images",
                 "epochs", "batch_size", "lr", "optimizer", "lr_schedule", "limit_val", "seed",
                 "out_dir", "min_scale", "max_scale")
        overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
        cfg = det.make_detect_config(args.preset, train_data=args.data, **overrides)
        result = det.train_detector(cfg, resume=args.resume)
        print(json.dumps(result["final"]))
        return
    if args.action == "profile" and not args.model:
        model = det.build_detector(args.detector, args.arch, args.width_mult, args.num_classes,
                                   args.resolution)
    else:
        model, class_names = det.load_detector(args.model)
    if args.action == "eval":
        metrics = evaluate_detector(model, CocoDetection(args.data, args.images_dir),
                                    args.batch_size, args.limit)
        text = json.dumps(metrics, indent=2) if args.format == "json" else "\n".join(
            f"{k:<10} {v:.4f}" if isinstance(v, float) else f"{k:<10} {v}"
            for k, v in metrics.items())
        _write(text, args.output)
    elif args.action == "predict":
        out_dir = Path(args.output_dir)
        for path in args.images:
            image = read_rgb(path)  # the detector resizes to its resolution itself
            with torch.no_grad():
                found = model([image.float() / 255])[0]
            png = det.draw_detections(image, found, class_names,
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
            res = model.config["resolution"]
            images = torch.stack([torch.nn.functional.interpolate(
                ds.load_image(i)[None].float() / 255, size=(res, res), mode="bilinear")[0]
                for i in range(min(4, len(ds)))])
        report = det.export_detector_onnx(model, args.output, class_names, args.tolerance, images)
        print(json.dumps(report))
    else:  # profile
        prof = det.profile_detector(model)
        print(prof.format_table() if args.format == "table" else prof.to_json())

def cmd_finegrained(args) -> None:
    import json

    from mobilenets.tasks.finegrained.data import FineGrainedDataConfig, make_finegrained_data

    try:
        classes = tuple(int(c) for c in args.classes.split(",")) if args.classes else None
    except ValueError:
        raise ValueError(f"--classes takes comma-separated class ids, got {args.classes!r}") from None
    cfg = FineGrainedDataConfig(clean_per_class=args.clean_per_class,
                                noisy_per_class=args.noisy_per_class, noise_rate=args.noise_rate,
                                confusable_share=args.confusable_share,
                                test_per_class=args.test_per_class, seed=args.seed,
                                **({"classes": classes} if classes else {}))
    record = make_finegrained_data(args.out_dir, cfg, overwrite=args.overwrite)
    print(json.dumps({k: record[k] for k in ("classes", "images", "noise_rate",
                                             "confusable_share_of_wrong")}))
    print(f"wrote {args.out_dir}/noisy (pretrain: mobilenets train --data) and "
          f"{args.out_dir}/clean (mobilenets finetune --data)")


def cmd_geo(args) -> None:
    import json

    from mobilenets.tasks.geo import cells as geo
    if args.geo_command == "make-data":
        try:
            spreads = tuple(float(v) for v in args.spreads_km.split(","))
        except ValueError:
            raise ValueError(f"--spreads-km takes comma-separated km, got {args.spreads_km!r}") from None
        cfg = geo.GeoDataConfig(train_images=args.train_images, val_images=args.val_images,
                                test_images=args.test_images,
                                regions_per_class=args.regions_per_class, spreads_km=spreads,
                                outlier_rate=args.outlier_rate, seed=args.seed)
        record = geo.make_geo_data(args.out_dir, cfg, overwrite=args.overwrite)
        print(f"wrote {args.out_dir}: {record['images']} images, CSVs train.csv, val.csv, test.csv")
        return
    cell_cfg = geo.GeocellConfig(max_photos=args.max_photos, min_photos=args.min_photos,
                                 max_level=args.max_level) if args.geo_command != "eval" else None
    if args.geo_command == "cells":
        photos = geo.read_geo_csv(args.csv, check_images=False)
        cells = geo.build_geocells(*geo.photo_coordinates(photos), cell_cfg)
        cells.save(args.output)
        kept = sum(c.count for c in cells.cells)
        print(f"{len(cells)} cells (levels {min(c.level for c in cells.cells)}-"
              f"{max(c.level for c in cells.cells)}) hold {kept} of {len(photos)} photos; "
              f"wrote {args.output}")
        return
    if args.geo_command == "train":
        from dataclasses import replace

        from mobilenets.engine.train import init_distributed, train

        out = Path(args.out or "runs/geo")
        cfg = replace(_train_config(args), data=str(out / "data"), out_dir=str(out)).validate()
        cells_path = out / "cells.json"
        if not (args.resume and cells_path.is_file()):
            if args.cells:
                cells = geo.Geocells.load(args.cells)
            else:
                cells = geo.build_geocells(*geo.photo_coordinates(geo.read_geo_csv(args.train_csv,
                                                                         check_images=False)), cell_cfg)
            cells.save(cells_path)
        cells = geo.Geocells.load(cells_path)
        if not (args.resume and (out / "data").is_dir()):  # photos linked into cell folders
            splits = {"train": geo.read_geo_csv(args.train_csv), "val": geo.read_geo_csv(args.val_csv)}
            print(json.dumps(geo.write_cell_imagefolder(out / "data", cells, splits, overwrite=True)))
        result = train(cfg, resume=args.resume)
        if init_distributed().main:
            print(f"{len(cells)} cells; cell top-1 on val {result['val']['top1']:.2f}%; "
                  f"{result['steps']} steps in {result['train_seconds']:.0f} s; "
                  f"model: {result['model_path']}")
        return
    # eval: Table 11 for each model, the class prior and (optionally) a prior given a CSV column
    photos = geo.read_geo_csv(args.csv)
    columns = []
    for model_file in args.model_files:
        model, _, train_cfg = _load_for_inference(model_file)
        cells = geo.Geocells.load(args.cells or Path(model_file).parent / "cells.json")
        columns += geo.evaluate_model(model, photos, cells, args.modes.split(","), args.centers,
                                      args.refine_km, train_cfg.get("eval_crop", 0.875),
                                      name=model_file)
    if args.prior or args.prior_given:
        if not (args.cells or args.model_files):
            raise ValueError("--prior needs --cells (or a model file beside its cells.json)")
        cells = geo.Geocells.load(args.cells or Path(args.model_files[0]).parent / "cells.json")
        given = (args.prior_given[1], args.csv, args.prior_given[0]) if args.prior_given else None
        columns = geo.baseline_columns(photos, cells, given, args.centers) + columns
    if not columns:
        raise ValueError("nothing to evaluate: give model files and/or --prior")
    if args.format == "json":
        _write(json.dumps(columns, indent=2), args.output)
    else:
        _write(_render(geo.table11_rows(columns, args.paper), args.format), args.output)

def cmd_segment(args) -> None:
    """``mobilenets segment train|eval|predict|cost``: DeepLabv3 on a MobileNet."""
    import json
    from dataclasses import fields

    from mobilenets.tasks.segmentation import model as seg
    if args.segment_command == "train":
        flags = {"backbone": args.backbone, "width_mult": args.width_mult, "head": args.head,
                 "output_stride": args.output_stride, "init_from": args.init, "data": args.data,
                 "val_data": args.val_data, "resolution": args.resolution, "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr, "out_dir": args.out,
                 "seed": args.seed, "limit_train": args.limit_train, "limit_val": args.limit_val}
        overrides = {k: v for k, v in flags.items() if v is not None}
        if args.aspp_rates:
            try:
                overrides["aspp_rates"] = tuple(int(r) for r in args.aspp_rates.split(","))
            except ValueError:
                raise ValueError(f"--aspp-rates takes integers like 6,12,18, got "
                                 f"{args.aspp_rates!r}") from None
        types = {f.name: str(f.type) for f in fields(seg.SegConfig)}
        for item in args.set or []:
            key, sep, value = item.partition("=")
            if not sep or key not in types or key == "aspp_rates":
                raise ValueError(f"--set takes KEY=VALUE with KEY a SegConfig field (aspp_rates: "
                                 f"--aspp-rates), got {item!r}")
            overrides[key] = _parse_value(value, types[key], key)
        result = seg.train_segmenter(seg.make_seg_config(args.preset, **overrides), args.resume)
        if result["val"] is not None:
            print(seg.format_seg_report(result["val"]))
        print(f"{result['steps']} steps ({result['epochs']:.2f} epochs) in "
              f"{result['train_seconds']:.0f} s, {result['images_per_second']:.1f} images/s; "
              f"model: {result['model_path']}")
    elif args.segment_command == "eval":
        model, extra = seg.load_segmenter(args.model_file, args.output_stride)
        res = args.resolution or model.config.get("resolution")
        ds = seg.SegmentationDataset(args.data, res, model.num_classes, args.limit)
        result = seg.evaluate_segmenter(model, ds, args.batch_size, args.mf,
                                        extra.get("class_names") or ds.class_names)
        model.config["resolution"] = int(ds.images.shape[-1])
        result["model"] = seg.model_info(args.model_file, model, args.mf)
        _write(json.dumps(result, indent=2) if args.format == "json"
               else seg.format_seg_report(result), args.output)
    elif args.segment_command == "predict":
        model, extra = seg.load_segmenter(args.model_file, args.output_stride)
        rows = seg.predict_files(model, args.images, args.out_dir, args.alpha, args.mf,
                                 extra.get("class_names"))
        _write(json.dumps(rows, indent=2) if args.format == "json" else "\n".join(
            f"{r['overlay']}  " + ", ".join(f"{k} {v:.1f}%" for k, v in r["classes"].items())
            for r in rows), args.output)
    else:
        rows = seg.table7_rows(args.resolution, args.num_classes, args.eval or ())
        _write(_render(rows, args.format), args.output)
def cmd_distill(args) -> None:
    from mobilenets.engine.distill import make_distill_config, run_distill

    base = _train_config(args)
    flags = {"loss": args.loss, "temperature": args.temperature, "hard_weight": args.hard_weight,
             "teacher": args.teacher, "teacher_cache": args.teacher_cache,
             "teacher_mode": args.teacher_mode, "teacher_resolution": args.teacher_resolution}
    if not Path(args.teacher).is_file():
        raise FileNotFoundError(f"--teacher {args.teacher}: file not found")
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.out is None:
        overrides["out_dir"] = "runs/distill"
    cfg = make_distill_config(base, **overrides)
    s = run_distill(cfg, resume=args.resume)
    top1 = f"top-1 {s['top1']:.2f}%, " if "top1" in s else ""
    print(f"{top1}{s['steps']} steps ({s['epochs']:.2f} epochs) in {s['train_seconds']:.0f} s; "
          f"{s['labeled_images']} labeled + {s['unlabeled_images']} unlabeled images; "
          f"model: {s['model_path']}")


def _faces_config(args, recipe: str):
    """A ``faces`` recipe with the command's flags, then any ``--set key=value``, applied."""
    from dataclasses import fields

    from mobilenets.tasks.faces.data import faces_config

    flags = {"model": args.model, "width_mult": args.width_mult, "resolution": args.resolution,
             "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "out_dir": args.out, "seed": args.seed, "data": args.data,
             "hard_weight": getattr(args, "hard_weight", None)}
    overrides = {k: v for k, v in flags.items() if v is not None}
    types = {f.name: str(f.type) for f in fields(type(faces_config(recipe)))}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set takes KEY=VALUE with KEY a field of the {recipe} recipe, "
                             f"got {item!r}")
        overrides[key] = _parse_value(value, types[key], key)
    return faces_config(recipe, **overrides)


def cmd_faces(args) -> None:
    """``mobilenets attributes|embeddings make-data|train|distill|eval`` (Tables 12 and 14)."""
    import json

    from mobilenets.tasks.faces import data as faces
    task, action = args.command, args.action
    if action == "make-data":
        if task == "attributes":
            meta = faces.make_attribute_data(args.out, args.labeled, args.unlabeled, args.test,
                                             args.seed)
            print(f"wrote {args.out}: {meta['labeled']:,} labeled, {meta['unlabeled']:,} "
                  f"unlabeled and {meta['test']:,} test images, {len(meta['attributes'])} "
                  "attributes")
        else:
            meta = faces.make_embedding_data(args.out, args.identities, args.photos,
                                             args.unlabeled, args.test_identities,
                                             args.test_photos, args.negatives, args.seed,
                                             max_source_cosine=args.max_source_cosine)
            print(f"wrote {args.out}: {meta['identities']:,} identities x {meta['photos']} "
                  f"photos, {meta['unlabeled']:,} unlabeled photos, {meta['positive_pairs']:,} "
                  f"positive and {meta['negative_pairs']:,} negative test pairs")
        return
    if action == "eval":
        rows = (faces.attribute_report(args.model_files, args.data) if task == "attributes"
                else faces.embedding_report(args.model_files, args.data, args.far))
        if args.format == "table":  # Table 12/14's columns; csv and json keep everything
            rows = [{k: v for k, v in r.items() if not k.startswith("ap_") and k != "file"}
                    for r in rows]
        _write(json.dumps(rows, indent=2) if args.format == "json" else _render(rows, args.format),
               args.output)
        return
    stage = "teacher" if action == "train" else "student"
    cfg = _faces_config(args, f"{task}-{stage}")
    run = {("attributes", "train"): faces.train_attributes,
           ("embeddings", "train"): faces.train_embeddings}.get((task, action))
    far = {"far": args.far} if task == "embeddings" else {}
    if run:
        summary = run(cfg, args.data, resume=args.resume, **far)
    elif task == "attributes":
        summary = faces.distill_attributes(cfg, args.data, args.teacher, resume=args.resume)
    else:
        summary = faces.distill_embeddings(cfg, args.data, args.teacher, resume=args.resume, **far)
    summary.pop("model", None)
    print(json.dumps(summary, indent=2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilenets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("models", help="list the registered variants with their cost")
    s.add_argument("--pattern", default="*", help="shell pattern on names (default: all)")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output", help="write to this file instead of stdout")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("profile", help="per-layer Mult-Adds and parameters (Tables 1 and 2), "
                       "optionally activation memory (MobileNetV2's Table 3)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--model", help="a registered name (see `mobilenets models`)")
    g.add_argument("--width-mult", type=float, default=1.0, help="alpha, > 0 (default 1.0)")
    s.add_argument("--arch", choices=sorted(PROFILE_ARCHS),
                   help="with --width-mult: MobileNet v1 (default) or v2")
    s.add_argument("--resolution", help="input size: 224 or HxW, >= 32 (default: the model's)")
    s.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    s.add_argument("--memory", nargs="?", const="ops", choices=("ops", "layers"),
                   help="add the activation memory of one image: live tensors per step, the "
                   "peak, the maxima per resolution. 'ops' (the default): conv+BN+activation and "
                   "MobileNetV2 bottlenecks as single operations, as Table 3; 'layers': every "
                   "leaf module, as eager PyTorch runs")
    s.add_argument("--activation-bytes", type=int, default=2,
                   help="bytes per activation for --memory (default 2: 16-bit, as Table 3)")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output", help="write to this file instead of stdout")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("paper-tables", help="the paper's cost columns, computed vs printed")
    s.add_argument("--table", action="append",
                   help="only this table (repeatable): 2-10, 12-14; V2-3, V2-4, V2-6 "
                   "(MobileNetV2's)")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output", help="write to this file instead of stdout")
    s.add_argument("--strict", action="store_true", help="exit 1 on any unexplained difference")
    s.set_defaults(func=cmd_paper_tables)

    s = sub.add_parser("convert", help="import Keras, timm or torchvision MobileNet weights into "
                       "our format")
    s.add_argument("src", help="a Keras (.h5, .weights.h5, .keras; MobileNet or MobileNetV2), "
                   "timm MobileNet V1 or torchvision MobileNetV2 (.pth, .safetensors) file")
    s.add_argument("dst", help="output .safetensors file (written atomically)")
    s.add_argument("--source", choices=("auto", "timm", "torchvision", "keras"), default="auto")
    s.add_argument("--width-mult", type=float, help="alpha of the source (default: inferred)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("train", help="train with the paper's recipe (torchrun for several processes)")
    _add_train_flags(s)
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("finetune", help="train from existing weights, e.g. with a new class count")
    _add_train_flags(s)
    s.add_argument("--init", required=True, help="our .safetensors (from train or convert)")
    s.add_argument("--freeze-body", action="store_true", help="train only the classifier")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="top-1, top-5, per-class accuracy, confusion matrix")
    s.add_argument("model_file", help="a .safetensors written by train, finetune or convert")
    s.add_argument("--data", help="default: the data the model was trained on")
    s.add_argument("--split", default="val")
    s.add_argument("--resolution", type=int)
    s.add_argument("--eval-crop", type=float)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--limit", type=int, help="evaluate only the first N images")
    s.add_argument("--skip-bad-files", action="store_true")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument("--output")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="top-k labels with probabilities for image files")
    s.add_argument("model_file")
    s.add_argument("images", nargs="+")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--resolution", type=int)
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument("--output")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("sweep", help="the alpha x resolution grid: CSV + Figures 4 and 5")
    _add_train_flags(s)
    s.add_argument("--arch", choices=sorted(PROFILE_ARCHS),
                   help="MobileNet v1 (default) or v2; or name a model of either with --model")
    s.add_argument("--width-mults", default="1.0,0.75,0.5,0.25")
    s.add_argument("--resolutions", default="64,56,48,40")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("compare", help="top-1, Mult-Adds and params of finished training runs")
    s.add_argument("runs", nargs="+", help="run folders written by train")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("export", help="ONNX (fp32 or int8) or safetensors, verified against torch")
    s.add_argument("model", help="our .safetensors file, or a registered name (fresh weights)")
    s.add_argument("--format", choices=("onnx", "int8", "safetensors"), default="onnx")
    s.add_argument("--output", required=True, help="file to write (atomically, after the check)")
    s.add_argument("--resolution", type=int, help="input size (default: the model's)")
    s.add_argument("--tolerance", type=float, default=1e-4,
                   help="max |ONNX - torch| of the logits, relative to max(1, |logits|)")
    s.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers")
    s.add_argument("--data", help="calibration/evaluation data (default: the model's training data)")
    s.add_argument("--calibration-images", type=int, default=512,
                   help="training images for int8 calibration (default 512)")
    s.add_argument("--per-tensor", action="store_true", help="int8 weights per tensor, not channel")
    s.add_argument("--float-layers", type=int, default=2,
                   help="int8: keep the first N convolutions in fp32 (default 2; 0: all int8)")
    s.add_argument("--min-agreement", type=float, default=0.9,
                   help="int8: least share of calibration images whose top-1 matches fp32's")
    s.add_argument("--evaluate", action="store_true",
                   help="also report top-1 of torch and the export on the validation split")
    s.add_argument("--limit", type=int, help="evaluate on the first N images only")
    s.add_argument("--report", help="write the evaluation as JSON here")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("bench", help="latency, throughput and memory (measured and analytic) per "
                       "backend vs timm, torchvision and ORT")
    s.add_argument("--model", action="append", help="registered name (repeatable; default "
                   "mobilenet_v1_1.0_224)")
    s.add_argument("--model-file", action="append", help="our .safetensors (repeatable)")
    s.add_argument("--resolution", type=int, help="input size (default: each model's)")
    s.add_argument("--backends", help=f"comma-separated, from: {', '.join(BACKENDS)} (default: "
                   "all but compile, with the model's peers: "
                   + ", ".join(f"{p} for {a}" for p, a in PEERS.items()) + ")")
    s.add_argument("--batch", type=int, default=32, help="batch of the throughput measurement")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    s.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurement")
    s.add_argument("--calibration-data", default="fashion-mnist", help="int8 calibration images")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("pick", help="the most accurate variant within a latency/size budget")
    s.add_argument("--latency-ms", type=float, help="median batch-1 latency budget")
    s.add_argument("--max-params", type=float, help="parameter budget (conv + FC weights)")
    s.add_argument("--max-madds", type=float, help="Mult-Adds budget per image")
    s.add_argument("--backend", default="onnx", help="where to measure (default onnx)")
    s.add_argument("--accuracy", help="a sweep.csv: choose among its models, by its accuracy")
    s.add_argument("--arch", choices=sorted(PROFILE_ARCHS),
                   help="choose among MobileNet v1's (default) or v2's registered variants (with "
                   "--accuracy: that architecture's rows)")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--plot", help="write the accuracy vs measured latency frontier (PNG)")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output")
    s.set_defaults(func=cmd_pick)
    s = sub.add_parser("synth", help="synthetic shapes scenes in COCO format (detection and "
                       "segmentation data)")
    s.add_argument("out_dir", help="folder to write: images/, masks/, annotations.json")
    s.add_argument("--num-images", type=int, default=1000)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0, help="use different seeds for train and val")
    s.add_argument("--min-objects", type=int, default=1)
    s.add_argument("--max-objects", type=int, default=6)
    s.add_argument("--min-size", type=float, default=0.1, help="object size / image side")
    s.add_argument("--max-size", type=float, default=0.5)
    s.add_argument("--max-overlap", type=float, default=0.3, help="largest IoU between two boxes")
    s.add_argument("--noise-std", type=float, default=8.0, help="pixel noise (grey levels)")
    s.set_defaults(func=cmd_synth)
    s = sub.add_parser("detect", help="object detection: SSD, SSDLite, Faster R-CNN on "
                       "MobileNet (train, eval, predict, export, profile)")
    dsub = s.add_subparsers(dest="action", required=True)
    t = dsub.add_parser("train", help="train on COCO-format data; COCO mAP after each epoch")
    t.add_argument("data", help="training annotation file (COCO JSON; images/ beside it)")
    t.add_argument("--val-data", help="validation annotation file")
    t.add_argument("--train-images", help="folder of the training images (default: images/ "
                   "beside the annotation file, else its folder)")
    t.add_argument("--val-images", help="folder of the validation images")
    t.add_argument("--preset", default="synthetic", help="paper | synthetic | smoke")
    t.add_argument("--detector", choices=("ssd", "ssdlite", "faster_rcnn"))
    t.add_argument("--arch", choices=("v1", "v2"))
    t.add_argument("--width-mult", type=float)
    t.add_argument("--resolution", type=int)
    t.add_argument("--backbone-weights", help="our classification .safetensors to start from")
    t.add_argument("--epochs", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=("rmsprop", "sgd", "adam"))
    t.add_argument("--lr-schedule", choices=("exponential", "cosine"))
    t.add_argument("--min-scale", type=float, help="SSD default-box scale of the first map")
    t.add_argument("--max-scale", type=float)
    t.add_argument("--limit-val", type=int, help="evaluate on the first N validation images")
    t.add_argument("--seed", type=int)
    t.add_argument("--out-dir")
    t.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    e = dsub.add_parser("eval", help="COCO mAP (AP@[.5:.95], AP50, AP75, by size)")
    e.add_argument("model", help="a detector .safetensors (detect train's model.safetensors)")
    e.add_argument("data", help="COCO annotation file")
    e.add_argument("--images-dir", help="folder of its images (default: images/ beside it)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--limit", type=int, help="evaluate only the first N images")
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.add_argument("--output")
    pr = dsub.add_parser("predict", help="draw boxes, labels and scores; write PNGs")
    pr.add_argument("model")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--output-dir", default=".", help="where IMAGE_detections.png go")
    pr.add_argument("--score-thresh", type=float, default=0.3)
    x = dsub.add_parser("export", help="ONNX (SSD/SSDLite: boxes + scores; NMS outside), "
                        "checked with ONNX Runtime")
    x.add_argument("model")
    x.add_argument("--output", required=True)
    x.add_argument("--tolerance", type=float, default=1e-4)
    x.add_argument("--data", help="COCO annotation file: check on its first images")
    f = dsub.add_parser("profile", help="Mult-Adds and parameters per layer (Table 13's rules)")
    f.add_argument("model", nargs="?", help="a detector .safetensors; or build one from the flags")
    f.add_argument("--detector", choices=("ssd", "ssdlite", "faster_rcnn"), default="ssd")
    f.add_argument("--arch", choices=("v1", "v2"), default="v1")
    f.add_argument("--width-mult", type=float, default=1.0)
    f.add_argument("--resolution", type=int, default=300)
    f.add_argument("--num-classes", type=int, default=90, help="default 90 (COCO's ids)")
    f.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("finegrained", help="fine-grained recognition data (Table 10): a noisy "
                       "pretraining set and a small clean set derived from Fashion-MNIST")
    fsub = s.add_subparsers(dest="finegrained_command", required=True, metavar="STEP")
    f = fsub.add_parser("make-data", help="write OUT/noisy and OUT/clean ImageFolder trees")
    f.add_argument("out_dir", help="folder to create")
    f.add_argument("--classes", help="comma-separated Fashion-MNIST ids (default 0,2,3,4,6: the "
                   "upper-body garments)")
    f.add_argument("--clean-per-class", type=int, default=100, help="clean images per class")
    f.add_argument("--noisy-per-class", type=int, help="noisy images per class (default: the rest)")
    f.add_argument("--noise-rate", type=float, default=0.4, help="share of wrong noisy labels")
    f.add_argument("--confusable-share", type=float, default=0.75,
                   help="share of wrong labels that name a look-alike class")
    f.add_argument("--test-per-class", type=int, help="test images per class (default all)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    f.set_defaults(func=cmd_finegrained)

    s = sub.add_parser("geo", help="PlaNet geolocation (Table 11): geocells, training, "
                       "distance report")
    gsub = s.add_subparsers(dest="geo_command", required=True, metavar="STEP")
    g = gsub.add_parser("make-data", help="a geotagged data set derived from Fashion-MNIST")
    g.add_argument("out_dir", help="folder to create: images/, train.csv, val.csv, test.csv")
    g.add_argument("--train-images", type=int, default=20000)
    g.add_argument("--val-images", type=int, default=2000)
    g.add_argument("--test-images", type=int, default=5000)
    g.add_argument("--regions-per-class", type=int, default=3, help="home cities per garment")
    g.add_argument("--spreads-km", default="1,15,60", help="region scales in km, cycled")
    g.add_argument("--outlier-rate", type=float, default=0.05, help="share placed anywhere")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    g.set_defaults(func=cmd_geo)
    for name, text in (("cells", "adaptive equal-area geocells from a CSV's locations"),
                       ("train", "train a MobileNet to classify photos into geocells")):
        g = gsub.add_parser(name, help=text)
        g.add_argument("--max-photos", type=int, default=1000,
                       help="split cells holding more training photos (default 1000)")
        g.add_argument("--min-photos", type=int, default=20,
                       help="drop cells holding fewer (default 20)")
        g.add_argument("--max-level", type=int, default=20, help="deepest quadtree level")
        g.set_defaults(func=cmd_geo)
        if name == "cells":
            g.add_argument("csv", help="image,latitude,longitude CSV of the training photos")
            g.add_argument("--output", required=True, help="cells JSON to write")
        else:
            _add_train_flags(g)
            g.add_argument("--train-csv", required=True, help="image,latitude,longitude CSV")
            g.add_argument("--val-csv", required=True, help="validation photos (cell top-1)")
            g.add_argument("--cells", help="cells JSON (default: built from --train-csv)")
            g.add_argument("--resume", action="store_true", help="continue a killed run")
    g = gsub.add_parser("eval", help="share of photos within 1, 25, 200, 750, 2500 km")
    g.add_argument("model_files", nargs="*", help="models written by `geo train`")
    g.add_argument("--csv", required=True, help="test photos: image,latitude,longitude CSV")
    g.add_argument("--cells", help="cells JSON (default: cells.json beside each model)")
    g.add_argument("--modes", default="argmax,weighted",
                   help="argmax (the cell's centre) and/or weighted (refined), comma-separated")
    g.add_argument("--centers", choices=("photo_mean", "geometric"), default="photo_mean")
    g.add_argument("--refine-km", type=float, default=500.0, help="neighbourhood of 'weighted'")
    g.add_argument("--prior", action="store_true", help="add the class-prior baseline")
    g.add_argument("--prior-given", nargs=2, metavar=("COLUMN", "TRAIN_CSV"),
                   help="add a baseline that knows COLUMN (e.g. garment): the most populous "
                   "cell of TRAIN_CSV's photos with the same value")
    g.add_argument("--paper", action="store_true", help="add the paper's Table 11 columns")
    g.add_argument("--format", choices=FORMATS, default="table")
    g.add_argument("--output")
    g.set_defaults(func=cmd_geo)
    s = sub.add_parser("segment", help="semantic segmentation: DeepLabv3 (ASPP or lite head) on "
                       "MobileNet, mIoU, cost vs the V2 paper's Table 7")
    seg_sub = s.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    t = seg_sub.add_parser("train", help="train end to end on a folder of images/ and masks/")
    t.add_argument("--preset", default="synthetic", choices=("paper", "smoke", "synthetic"),
                   help="recipe to start from (default synthetic; 'paper' is DeepLabv3's)")
    t.add_argument("--data", help="training folder with images/ and masks/ (mobilenets synth)")
    t.add_argument("--val-data", help="held-out folder, evaluated each epoch and at the end")
    t.add_argument("--backbone", choices=("v1", "v2"))
    t.add_argument("--width-mult", type=float, help="alpha of the backbone")
    t.add_argument("--head", choices=("aspp", "lite"))
    t.add_argument("--output-stride", type=int, choices=(8, 16, 32))
    t.add_argument("--aspp-rates", help="comma-separated, e.g. 6,12,18 (default: by stride)")
    t.add_argument("--init", help="our classifier .safetensors to start the backbone from")
    t.add_argument("--resolution", type=int, help="resize images to this square size")
    t.add_argument("--epochs", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--limit-train", type=int, help="use only the first N training images")
    t.add_argument("--limit-val", type=int, help="use only the first N validation images")
    t.add_argument("--out", help="run folder (checkpoint, metrics, model)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other SegConfig field (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    e = seg_sub.add_parser("eval", help="pixel accuracy, per-class IoU and mIoU")
    e.add_argument("model_file", help="model.safetensors of a segment train run")
    e.add_argument("--data", required=True, help="folder with images/ and masks/")
    e.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                   help="evaluate at another stride (same weights; default: as trained)")
    e.add_argument("--mf", action="store_true", help="multi-scale + flipped inputs (Table 7 MF)")
    e.add_argument("--resolution", type=int, help="default: the training resolution")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--limit", type=int, help="evaluate only the first N images")
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.add_argument("--output")
    pr = seg_sub.add_parser("predict", help="colour overlays (PNG) of the predicted classes")
    pr.add_argument("model_file")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--out-dir", required=True, help="writes NAME_overlay.png here")
    pr.add_argument("--alpha", type=float, default=0.5, help="colour weight (default 0.5)")
    pr.add_argument("--output-stride", type=int, choices=(8, 16, 32))
    pr.add_argument("--mf", action="store_true", help="multi-scale + flipped inputs")
    pr.add_argument("--format", choices=("table", "json"), default="table")
    pr.add_argument("--output")
    c = seg_sub.add_parser("cost", help="Mult-Adds and params beside the V2 paper's Table 7")
    c.add_argument("--resolution", type=int, default=512, help="input side (default 512, VOC's)")
    c.add_argument("--num-classes", type=int, default=21, help="default 21 (PASCAL VOC)")
    c.add_argument("--eval", action="append", metavar="JSON",
                   help="an eval.json of our runs to add as a row (repeatable)")
    c.add_argument("--format", choices=FORMATS, default="table")
    c.add_argument("--output")
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser("distill", help="train a student to emulate a teacher's outputs, on "
                       "labeled and unlabeled images (sections 4.5, 4.7)")
    _add_train_flags(s)
    s.add_argument("--teacher", required=True, help="the teacher: our .safetensors file")
    s.add_argument("--student", dest="model", help="registered name of the student (as --model)")
    s.add_argument("--loss", choices=("soft", "sigmoid", "embedding"),
                   help="soft targets (default), per-attribute sigmoid, or embedding distance")
    s.add_argument("--temperature", type=float, help="soft-target temperature (default 4)")
    s.add_argument("--hard-weight", type=float,
                   help="weight of the label loss on labeled images (default 1; 0: teacher only)")
    s.add_argument("--teacher-cache", help="file keeping the teacher's outputs between runs")
    s.add_argument("--teacher-mode", choices=("precomputed", "online"),
                   help="teacher outputs computed once (default) or on every augmented batch")
    s.add_argument("--teacher-resolution", type=int, help="teacher input size (default: its own)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    s.set_defaults(func=cmd_distill)
    for task, title in (("attributes", "face attributes (Table 12) on Fashion-MNIST attributes"),
                        ("embeddings", "face embeddings (Table 14) on Fashion-MNIST identities")):
        s = sub.add_parser(task, help=f"{title}: make-data, train (teacher), distill, eval")
        actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
        a = actions.add_parser("make-data", help="write PNG images and CSVs derived from "
                               "Fashion-MNIST")
        a.add_argument("--out", required=True, help="folder to write")
        a.add_argument("--seed", type=int, default=0)
        a.add_argument("--unlabeled", type=int, default=50_000 if task == "attributes" else 20_000,
                       help="unlabeled training images (for distillation)")
        if task == "attributes":
            a.add_argument("--labeled", type=int, default=10_000, help="labeled training images")
            a.add_argument("--test", type=int, default=10_000, help="test images")
        else:
            a.add_argument("--identities", type=int, default=1000, help="training identities")
            a.add_argument("--photos", type=int, default=10, help="photos per training identity")
            a.add_argument("--test-identities", type=int, default=600)
            a.add_argument("--test-photos", type=int, default=6)
            a.add_argument("--negatives", type=int, default=50_000,
                           help="different-identity test pairs (>= 10,000 for a FAR of 1e-4)")
            a.add_argument("--max-source-cosine", type=float, default=0.9,
                           help="largest raw-pixel cosine between two identities' source images "
                           "(no near-twin identities; 1 disables)")
        a.set_defaults(func=cmd_faces)
        for action in ("train", "distill"):
            a = actions.add_parser(action, help="train the 1.0 teacher on the labels" if
                                   action == "train" else "distil a teacher into a student on "
                                   "labeled and unlabeled images")
            a.add_argument("--data", required=True, help="a folder written by make-data")
            if action == "distill":
                a.add_argument("--teacher", required=True, help="the teacher's model.safetensors")
                a.add_argument("--hard-weight", type=float,
                               help="weight of the label loss (default 0: teacher only, as the "
                               "paper)")
            a.add_argument("--model", help="registered name (sets alpha)")
            a.add_argument("--width-mult", type=float, help="alpha, overrides the model's")
            a.add_argument("--resolution", type=int, help="input size, >= 32 (default 32)")
            a.add_argument("--epochs", type=float)
            a.add_argument("--batch-size", type=int)
            a.add_argument("--lr", type=float)
            a.add_argument("--out", help="run folder (checkpoint, metrics, model)")
            a.add_argument("--seed", type=int)
            a.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="any other field of the recipe (repeatable)")
            a.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
            if task == "embeddings":
                a.add_argument("--far", type=float, default=1e-4,
                               help="false accept rate of the evaluation (default 1e-4)")
            a.set_defaults(func=cmd_faces)
        a = actions.add_parser("eval", help="Table 12 (mean AP)" if task == "attributes" else
                               "Table 14 (true accept rate at a false accept rate)")
        a.add_argument("model_files", nargs="+", help="model.safetensors files of train/distill")
        a.add_argument("--data", required=True, help="a folder written by make-data")
        if task == "embeddings":
            a.add_argument("--far", type=float, default=1e-4,
                           help="false accept rate (default 1e-4)")
        a.add_argument("--format", choices=FORMATS, default="table",
                       help="table: Table 12/14's columns; csv, json: also per-attribute AP")
        a.add_argument("--output")
        a.set_defaults(func=cmd_faces)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends with a one-line error and exit status 2, not a stack trace."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"mobilenets {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
