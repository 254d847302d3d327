"""Training and using classifiers: ``train``, ``finetune``, ``eval``, ``predict``, ``sweep``,
``compare``, ``distill``."""
from __future__ import annotations

import json
from pathlib import Path

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, add_run_arguments,
                                   check_input_fits, config_from_args, eval_split, inference_extra,
                                   note_preset_defaults, number_list, write_output, write_rows)
from mobilenets.fileio import write_text
from mobilenets.models.registry import ARCH_ALIASES
from mobilenets.tables import render_table


def cmd_train(args) -> None:
    from mobilenets.engine.distributed import init_distributed
    from mobilenets.engine.metrics import format_report
    from mobilenets.tasks.classification.train import check_init_model, train

    cfg = config_from_args(args)
    if cfg.init_from and args.model:
        check_init_model(args.model, cfg.init_from)
    result = train(cfg, resume=args.resume)
    if init_distributed().main:  # under torchrun, one report
        report = format_report(result.evaluation)
        write_text(Path(cfg.out_dir) / "eval_report.txt", report)  # the run's one evaluation
        print(report)
        print(f"{result.steps} steps ({result.epochs:.2f} epochs) in "
              f"{result.session_seconds:.0f} s, {result.images_per_second:.0f} images/s")
        print(f"wrote {result.model_path}\n  and beside it eval_report.txt (the report above), "
              "curves.png, metrics.jsonl")


def cmd_eval(args) -> None:
    from mobilenets.engine.metrics import format_report
    from mobilenets.tasks.classification.train import evaluate
    from mobilenets.models.registry import load_model

    model = load_model(args.model_file, kind="classifier")
    extra = inference_extra(model)
    check_input_fits(model, args.resolution or model.config.input_size,
                     args.batch_size)
    ds, transform = eval_split(model.config, extra, args.data, args.split, args.limit,
                               args.resolution, args.eval_crop, args.skip_bad_files)
    result = evaluate(model, ds, transform, args.batch_size,
                      class_names=extra["class_names"] or ds.class_names, progress=True)
    write_output(json.dumps(result, indent=2) if args.format == "json" else format_report(result),
                 args.output)


def cmd_predict(args) -> None:
    import torch

    from mobilenets.engine.data import BatchTransform, load_image, stored_size
    from mobilenets.models.registry import load_model

    model = load_model(args.model_file, kind="classifier")
    extra = inference_extra(model)
    res = args.resolution or model.config.input_size
    check_input_fits(model, res, args.batch_size)
    crop = extra["eval_crop"]
    transform = BatchTransform(res, False, eval_crop=crop, out_channels=model.in_channels)
    names = None
    rows = []
    # A batch at a time: memory stays flat however many images there are.
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start:start + args.batch_size]
        images = torch.stack([load_image(p, stored_size(res, crop)) for p in paths])
        x = transform(images)
        probs = model.predict(x[:, :1] if model.in_channels == 1 else x)
        names = names or extra["class_names"] or [str(i) for i in range(probs.shape[1])]
        k = min(args.top_k, probs.shape[1])
        top = probs.topk(k, dim=1)
        batch = [{"image": str(p), "top": [{"label": names[int(i)], "class": int(i),
                                            "probability": round(float(v), 6)}
                                           for v, i in zip(top.values[n], top.indices[n])]}
                 for n, p in enumerate(paths)]
        if args.output_dir:  # each image beside its top-k labels, as PNG
            from mobilenets.tasks.classification.figures import plot_prediction

            for r, image in zip(batch, images):
                png = Path(args.output_dir) / f"{Path(r['image']).stem}_top{k}.png"
                r["picture"] = str(plot_prediction(image, [t["label"] for t in r["top"]],
                                                   [t["probability"] for t in r["top"]], png,
                                                   title=Path(r["image"]).name))
        rows += batch
    if args.format == "json":
        write_output(json.dumps(rows, indent=2), args.output)
        return
    lines = []
    for r in rows:
        lines.append(r["image"] + (f" -> {r['picture']}" if "picture" in r else ""))
        lines += [f"  {t['probability']:7.2%}  {t['label']}" for t in r["top"]]
    write_output("\n".join(lines), args.output)


def cmd_sweep(args) -> None:
    from dataclasses import replace

    from mobilenets.tasks.classification.sweep import run_sweep
    from mobilenets.models.registry import arch_name, get_spec

    cfg = config_from_args(args)
    if args.arch:  # the architecture swept; --width-mults and --resolutions set the rest
        arch = arch_name(args.arch)
        if args.model and get_spec(args.model).arch != arch:
            raise ValueError(f"--model {args.model} is not --arch {args.arch}")
        if get_spec(cfg.model).arch != arch:
            cfg = replace(cfg, model=f"{arch}_1.0_224").validate()
    rows = run_sweep(cfg, args.width_mults, args.resolutions, args.out_dir or "runs/sweep",
                     args.seeds)
    print(render_table([{"model": r["label"], "seed": r["seed"], "madds_m": round(r["madds"] / 1e6, 1),
                         "params_m": round(r["params"] / 1e6, 2), "top1": r["top1"],
                         "train_seconds": r["train_seconds"]} for r in rows]))


def cmd_compare(args) -> None:
    from mobilenets.tasks.classification.sweep import compare_runs

    write_rows(compare_runs(args.runs, args.mean), args.format, args.output, args.wide)


def cmd_distill(args) -> None:
    from mobilenets.tasks.distillation.train import run_distill

    if not Path(args.teacher).is_file():
        raise FileNotFoundError(f"--teacher {args.teacher}: file not found")
    run = run_distill(config_from_args(args), resume=args.resume)
    s = run.summary
    top1 = f"top-1 {s['top1']:.2f}%, " if "top1" in s else ""
    print(f"{top1}{s['steps']} steps ({s['epochs']:.2f} epochs) in {s['train_seconds']:.0f} s; "
          f"{s['labeled_images']} labeled + {s['unlabeled_images']} unlabeled images; "
          f"model: {run.model_path}")


def add_classifier_arguments(parser) -> None:
    """The flags of every classifier training command (``train``, ``finetune``, ``sweep``,
    ``distill``, ``geo train``) beyond ``common.add_run_arguments``'s: the model and the data."""
    parser.add_argument("--model", help="registered name (sets alpha and resolution)")
    parser.add_argument("--width-mult", type=float, help="alpha, overrides the model's")
    parser.add_argument("--resolution", type=int, help="input size, >= 32")
    parser.add_argument("--data", help="'fashion-mnist' or an ImageFolder root with train/ and "
                        "val/")
    parser.add_argument("--ema", dest="ema_decay", type=float,
                        help="EMA decay of the weights, e.g. 0.9999")
    parser.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the model")
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also write TensorBoard logs")
    parser.add_argument("--skip-bad-files", action="store_true", default=None,
                        help="leave out unreadable images")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images")
    parser.add_argument("--limit-val", type=int, help="use only the first N validation images")
    parser.add_argument("--label-fraction", type=float, help="keep the labels of this seeded, "
                        "class-balanced share of the training images (label_seed picks it)")


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.tasks.classification.train import PRESETS
    from mobilenets.tasks.distillation.train import DISTILL_PRESETS

    s = add_parser(sub, "train", help="train with the paper's recipe (torchrun for several "
                   "processes)")
    add_run_arguments(s, PRESETS, "fashion-mnist")
    add_classifier_arguments(s)
    note_preset_defaults(s)
    s.set_defaults(func=cmd_train)

    s = add_parser(sub, "finetune", help="train from existing weights, e.g. with a new class "
                   "count")
    add_run_arguments(s, PRESETS, "fashion-mnist")
    add_classifier_arguments(s)
    s.add_argument("--init", dest="init_from", required=True,
                   help="our .safetensors (from train or convert)")
    s.add_argument("--freeze-body", action="store_true", default=None,
                   help="train only the classifier")
    note_preset_defaults(s)
    s.set_defaults(func=cmd_train)

    s = add_parser(sub, "eval", help="top-1, top-5, per-class accuracy, confusion matrix")
    s.add_argument("model_file", help="a .safetensors written by train, finetune or convert")
    s.add_argument("--data", help="images to evaluate (default: the data the model was "
                   "trained on)")
    s.add_argument("--split", default="val", help="train or val")
    s.add_argument("--resolution", type=int, help="input size (default: the model's)")
    s.add_argument("--eval-crop", type=float,
                   help="center-crop fraction (default: the one the model was trained with)")
    s.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    s.add_argument("--limit", type=int, help="evaluate only the first N images (default: all)")
    s.add_argument("--skip-bad-files", action="store_true", help="leave out unreadable images")
    add_output_arguments(s, ("table", "json"), wide=False)
    s.set_defaults(func=cmd_eval)

    s = add_parser(sub, "predict", help="top-k labels with probabilities for image files")
    s.add_argument("model_file", help="a classifier .safetensors")
    s.add_argument("images", nargs="+", help="image files")
    s.add_argument("--top-k", type=int, default=5, help="labels per image")
    s.add_argument("--batch-size", type=int, default=32,
                   help="images decoded and classified at a time (memory stays flat in N)")
    s.add_argument("--resolution", type=int, help="input size (default: the model's)")
    s.add_argument("--output-dir", help="also write IMAGE_topK.png here: each image beside its "
                   "top-k labels (default: none)")
    add_output_arguments(s, ("table", "json"), wide=False)
    s.set_defaults(func=cmd_predict)

    s = add_parser(sub, "sweep", help="the alpha x resolution grid: CSV + Figures 4 and 5")
    add_run_arguments(s, PRESETS, "fashion-mnist", resume=False)
    add_classifier_arguments(s)
    s.add_argument("--arch", choices=sorted(ARCH_ALIASES),
                   help="MobileNet v1 or v2 (default: --model's architecture)")
    s.add_argument("--width-mults", type=number_list("width_mult"), default="1.0,0.75,0.5,0.25",
                   help="alphas, comma-separated")
    s.add_argument("--resolutions", type=number_list("resolution"), default="64,56,48,40",
                   help="input sizes, comma-separated")
    s.add_argument("--seeds", type=number_list("seed"), default="0",
                   help="train each point once per seed (comma-separated); the figures show "
                   "means, standard deviations and the fit's 95%% band")
    note_preset_defaults(s)
    s.set_defaults(func=cmd_sweep)

    s = add_parser(sub, "compare", help="top-1, Mult-Adds and params of finished training runs")
    s.add_argument("runs", nargs="+", help="run folders written by train")
    s.add_argument("--mean", action="store_true", help="runs that differ only in their seed "
                   "become one row: top-1 mean and standard deviation, and the seed count")
    add_output_arguments(s, FORMATS)
    s.set_defaults(func=cmd_compare)

    s = add_parser(sub, "distill", help="train a student to emulate a teacher's outputs, on "
                   "labeled and unlabeled images (sections 4.5, 4.7)")
    add_run_arguments(s, DISTILL_PRESETS, "fashion-mnist")
    add_classifier_arguments(s)
    s.add_argument("--teacher", required=True, help="the teacher: our .safetensors file")
    s.add_argument("--student", dest="model", help="registered name of the student (as --model)")
    s.add_argument("--loss", choices=("soft", "sigmoid", "embedding"),
                   help="soft targets, per-attribute sigmoid, or embedding distance")
    s.add_argument("--temperature", type=float, help="soft-target temperature")
    s.add_argument("--hard-weight", type=float,
                   help="weight of the label loss on labeled images (0: teacher only)")
    s.add_argument("--teacher-cache", help="file keeping the teacher's outputs between runs")
    s.add_argument("--teacher-mode", choices=("precomputed", "online"),
                   help="teacher outputs computed once or on every augmented batch")
    s.add_argument("--teacher-resolution", type=int, help="teacher input size (default: its own)")
    note_preset_defaults(s)
    s.set_defaults(func=cmd_distill)
