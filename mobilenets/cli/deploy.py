"""Shipping models: ``export`` (verified files), ``bench`` (latency per backend), ``pick`` (the
best variant within a budget)."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, check_input_fits,
                                   eval_split, inference_extra, progress, table_width, write_output,
                                   write_rows)
from mobilenets.fileio import write_json
from mobilenets.models.registry import ARCH_ALIASES, ARCHS
from mobilenets.tables import render_table, wrap_text


def model_for_export(source: str, resolution: int | None):
    """(model, extra metadata) from our .safetensors file or a registered name (fresh weights)."""
    from mobilenets.models.registry import MODELS, TIMM_NAMES, create_model, load_model

    if source in MODELS or source in TIMM_NAMES:
        model, extra = create_model(source).eval(), {}
    elif Path(source).suffix in (".safetensors", ".st"):
        model = load_model(source, kind="classifier")
        extra = inference_extra(model)
    else:
        raise ValueError(f"model {source!r} is neither a registered name nor a .safetensors file "
                         "(use `mobilenets convert` for Keras or timm weights first)")
    if resolution:
        model.config.resolution = resolution
    check_input_fits(model, model.config.input_size, 2)  # the checks run 2 images
    return model, extra


#: ``export``'s defaults for the int8 formats' options.
DEFAULT_FLOAT_LAYERS = 2
DEFAULT_CALIBRATION_IMAGES = 512


#: ``export``'s flags that only some formats take: the export option each sets (a format takes
#: the flag when its backend takes the option), or "calibration" (the int8 formats).
FORMAT_FLAGS = (("--nhwc", "nhwc"), ("--float-layers", "float_layers"),
                ("--int8-classifier", "float_classifier"), ("--per-tensor", "per_channel"),
                ("--calibration-images", "calibration"), ("--no-fold-bn", "fold_bn"))


def cmd_export(args) -> None:
    import torch

    from mobilenets.deploy.backends import BACKENDS, export_formats
    from mobilenets.deploy.onnx_export import calibration_batches
    from mobilenets.models.modelfile import save_model
    from mobilenets.models.registry import load_model

    backend = BACKENDS.get(args.format)  # None: safetensors, our own file
    given = {"--nhwc": args.nhwc, "--float-layers": args.float_layers is not None,
             "--int8-classifier": args.int8_classifier, "--per-tensor": args.per_tensor,
             "--calibration-images": args.calibration_images is not None,
             "--no-fold-bn": args.no_fold_bn}
    # Options of other formats are refused, not ignored, before any work.
    for flag, option in FORMAT_FLAGS:
        formats = [f for f in export_formats() if option in BACKENDS[f].options
                   or option == "calibration" and BACKENDS[f].precision == "int8"]
        if given[flag] and args.format not in formats:
            raise ValueError(f"{flag} is for --format {', '.join(formats[:-1])}"
                             f"{' or ' if len(formats) > 1 else ''}{formats[-1]}, not "
                             f"--format {args.format}")
    if args.float_layers is None:
        args.float_layers = DEFAULT_FLOAT_LAYERS
    model, extra = model_for_export(args.model, args.resolution)
    out = Path(args.output)
    if backend is None:
        save_model(model, out, extra=extra)
        x = torch.randn(2, model.config.in_channels, *(2 * [model.config.input_size]))
        with torch.no_grad():
            diff = float((load_model(out)(x) - model(x)).abs().max())
        if diff > 0:
            raise ValueError(f"{out} reloads with different outputs (max |diff| {diff:.3g})")
        print(f"{out} (safetensors): reloaded outputs identical")
        return
    calibration = None
    if backend.precision == "int8":
        calib_set, tf = eval_split(model.config, extra, args.data, "train", None)
        calibration = calibration_batches(calib_set, tf, args.calibration_images
                                          or DEFAULT_CALIBRATION_IMAGES)
    if args.float_layers == "auto":
        args.float_layers = _auto_float_layers(model, args, calibration)
    options = {"tolerance": args.tolerance, "min_top1_agreement": args.min_agreement,
               "fold_bn": not args.no_fold_bn, "per_channel": not args.per_tensor,
               "float_layers": args.float_layers, "float_classifier": not args.int8_classifier,
               "nhwc": args.nhwc, "allow_portable": args.allow_portable, "extra": extra}
    report = backend.export(model, out, calibration, **backend.accepted(options))
    print("\n".join(wrap_text(report.summary())))
    if args.evaluate:
        _evaluate_export(model, extra, out, args)


def float_layers_arg(text: str):
    """``--float-layers``: an integer >= 0, or ``auto`` (measure on this machine)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 or auto, got {text!r}")
    return value


def _auto_float_layers(model, args, calibration) -> int:
    """``--float-layers auto``: time 0, 1 and 2 fp32 blocks on this machine; print the figures."""
    from mobilenets.deploy.tune import choose_float_layers

    choice, rows = choose_float_layers(model, args.format, calibration,
                                       float_classifier=not args.int8_classifier,
                                       progress=progress)
    print("\n".join(wrap_text(
        f"--float-layers auto on {rows[0]['cpu']} ({rows[0]['isa']}): "
        + "; ".join(f"{r['float_layers']}: {r['cpu_ms']:.2f} ms CPU/call, top-1 agreement "
                    f"{r['top1_agreement']:.1%}" for r in rows) + f" -> {choice}")))
    return choice


def _evaluate_export(model, extra: dict, path: Path, args) -> None:
    """Top-1 of the torch model and of the export on the same split, the difference, and the
    share of images whose top-1 agrees."""
    import torch

    from mobilenets.deploy.runtimes import load_runner
    from mobilenets.tasks.classification.train import evaluate

    ds, tf = eval_split(model.config, extra, args.data, "val", args.limit)
    names = extra.get("class_names") or ds.class_names
    runner = load_runner(path)
    preds = {"torch": [], "export": []}  # the same images through both: their top-1 agreement
    hooks = [model.register_forward_hook(lambda m, i, y: preds["torch"].append(y.argmax(1))),
             runner.register_forward_hook(lambda m, i, y: preds["export"].append(y.argmax(1)))]
    ref = evaluate(model, ds, tf, class_names=names, progress=True)
    got = evaluate(runner, ds, tf, class_names=names, progress=True)
    for hook in hooks:
        hook.remove()
    agree = float((torch.cat(preds["torch"]) == torch.cat(preds["export"])).float().mean())
    row = {"model": args.model, "export": str(path), "format": args.format,
           "images": ref["num_samples"], "torch_top1": ref["top1"], "export_top1": got["top1"],
           "drop": round(ref["top1"] - got["top1"], 2), "top1_agreement": round(100 * agree, 2)}
    print("\n".join(wrap_text(
        f"top-1 on {row['images']} images: torch fp32 {row['torch_top1']:.2f}%, {args.format} "
        f"export {row['export_top1']:.2f}%, drop {row['drop']:+.2f} points, same top-1 on "
        f"{row['top1_agreement']:.2f}% of images")))
    if args.report:
        write_json(args.report, row)


def model_specs(args) -> list[dict]:
    """``bench``'s models: ``--model`` names and ``--model-file`` files (default: 1.0-224)."""
    from mobilenets.models.registry import get_spec

    specs = [{"name": get_spec(n).name} for n in (args.model or [])]
    for f in args.model_file or []:
        if not Path(f).is_file():
            raise FileNotFoundError(f"--model-file not found: {f}")
        specs.append({"model_file": f})
    for s in specs:
        if args.resolution:
            s["resolution"] = args.resolution
    return specs or [{"name": "mobilenet_v1_1.0_224"}]


#: ``bench``'s default table (``--wide``, csv and json: every field of ``BenchRow``).
BENCH_COLUMNS = ("variant", "backend", "latency_ms", "cpu_ms", "latency_p90_ms", "throughput",
                 "peak_rss_mb", "vs_peer", "floor_ms")
BENCH_HEADERS = {"variant": "model", "latency_p90_ms": "p90_ms", "throughput": "img/s",
                 "peak_rss_mb": "rss_mb"}


def cmd_bench(args) -> None:
    from mobilenets.deploy.bench import bench, honesty_warnings
    from mobilenets.deploy.machine import machine_line

    rows, machine = bench(model_specs(args), args.backends, batch=args.batch, threads=args.threads,
                          rounds=args.rounds, memory=not args.no_memory,
                          calibration_data=args.calibration_data, progress=progress,
                          ort_spinning=args.ort_spinning == "on")
    # The machine on stderr too, unless the table on stdout already shows it.
    shown = args.format == "table" and not args.output
    for line in [*([] if shown else [machine_line(machine)]), *honesty_warnings(rows, machine)]:
        progress(line)
    dicts = [asdict(r) for r in rows]
    if args.format == "json":
        write_output(json.dumps({"machine": machine, "rows": dicts}, indent=2), args.output)
        return
    text = render_table(dicts, args.format, width=table_width(args), columns=BENCH_COLUMNS,
                        headers=BENCH_HEADERS)
    if args.format == "table":
        peers = sorted({r.peer for r in rows if r.peer})
        text = "\n".join([*wrap_text(machine_line(machine), table_width(args)), text] + (
            [f"vs_peer: latency / the eager peer's ({', '.join(peers)}), same process, "
             "interleaved"] if peers else []))
    write_output(text, args.output)


def cmd_pick(args) -> None:
    from mobilenets.deploy.machine import machine_info, machine_line
    from mobilenets.deploy.pick import pick, pick_device, pick_predicted

    budgets = dict(latency_ms=args.latency_ms, max_params=args.max_params,
                   max_madds=args.max_madds, accuracy_csv=args.accuracy, arch=args.arch,
                   plot=args.plot)
    timing = dict(backend=args.backend, threads=args.threads, rounds=args.rounds,
                  progress=progress, export_workers=args.export_workers,
                  ort_spinning=args.ort_spinning == "on")
    if args.device:
        from mobilenets.cost.latency import read_device

        given = [f for f, v in (("--predict", args.predict), ("--backend", args.backend),
                                ("--rounds", args.rounds), ("--threads", args.threads),
                                ("--export-workers", args.export_workers)) if v is not None]
        if given:
            raise ValueError(f"{given[0]} times models on this machine; --device "
                             f"{args.device} predicts them, nothing timed: give one or the other")
        device = read_device(args.device)
        progress(f"device: {device.name} ({device.backend or device.precision}; "
                 f"{device.residual_summary()})")
        rows, choice = pick_device(device, **budgets)
    else:
        timing.update(backend=args.backend or "onnx", threads=args.threads or 2,
                      rounds=args.rounds or 5)
        progress(machine_line(machine_info(timing["threads"])))
        if args.predict is not None:
            rows, choice = pick_predicted(args.predict, **budgets, **timing)
        else:
            rows, choice = pick(**budgets, **timing)
    keys = ("label", "backend", "precision", "top1", "accuracy_source", "latency_ms", "source",
            "cpu_ms", "params", "madds", "fits", "chosen")
    table = [{k: r.get(k, "measured" if k == "source" else None) for k in keys}
             for r in sorted(rows, key=lambda r: r["latency_ms"])]
    if args.format == "json":
        write_output(json.dumps({"choice": {k: v for k, v in choice.items()},
                                 "candidates": table}, indent=2), args.output)
        return
    if args.format == "table":  # millions, and a mark for the fitting and the chosen rows
        table = [{"model": r["label"], "backend": r["backend"], "top1": r["top1"],
                  "source": r["accuracy_source"], "latency_ms": r["latency_ms"],
                  "latency": r["source"], "cpu_ms": r["cpu_ms"],
                  "params_m": round(r["params"] / 1e6, 2),
                  "madds_m": round(r["madds"] / 1e6, 1),
                  "fits": "chosen" if r["chosen"] else "yes" if r["fits"] else "no"}
                 for r in table]
    write_rows(table, args.format, args.output, args.wide)
    print(f"pick: {choice['label']} on {choice['backend']} (top-1 {choice['top1']}%, "
          f"{choice['accuracy_source']}; {choice['latency_ms']:.2f} ms "
          f"{choice.get('source', 'measured')}, {choice['params'] / 1e6:.2f}M params, "
          f"{choice['madds'] / 1e6:.0f}M Mult-Adds)"
          + (f"; frontier: {args.plot}" if args.plot else ""))


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.deploy.backends import BACKENDS, export_formats

    # The tool-chains beyond ONNX Runtime, each an extra: "executorch*, litert*, ...".
    extras = list(dict.fromkeys(BACKENDS[f].extra for f in export_formats()
                                if BACKENDS[f].extra not in (None, "export")))
    s = add_parser(sub, "export", help="ONNX, ExecuTorch, LiteRT, OpenVINO (fp32, int8, bf16) or "
                   "safetensors, verified against torch")
    s.add_argument("model", help="our .safetensors file, or a registered name (fresh weights)")
    s.add_argument("--format", choices=(*export_formats(), "safetensors"), default="onnx",
                   help="what to write: int8 is ONNX int8; " + ", ".join(f"{x}*" for x in extras)
                   + " need pip install " + ", ".join(f"'mobilenets[{x}]'" for x in extras))
    s.add_argument("--output", required=True, help="file to write (atomically, after the check)")
    s.add_argument("--resolution", type=int, help="input size (default: the model's)")
    s.add_argument("--tolerance", type=float, default=1e-4,
                   help="fp32: max |export - torch| of the logits, relative to max(1, |logits|)")
    s.add_argument("--no-fold-bn", action="store_true", help="onnx: keep BatchNorm layers")
    s.add_argument("--data", help="calibration/evaluation data (default: the model's training "
                   "data)")
    s.add_argument("--calibration-images", type=int,
                   help=f"int8: training images for calibration (default: "
                   f"{DEFAULT_CALIBRATION_IMAGES})")
    s.add_argument("--per-tensor", action="store_true",
                   help="int8 (ONNX): weights per tensor, not channel")
    s.add_argument("--float-layers", type=float_layers_arg,
                   help="int8: keep the first N conv blocks in fp32 (0: all int8), or auto: "
                   "time 0, 1 and 2 on this machine and keep the fastest as accurate as the best "
                   f"(default: {DEFAULT_FLOAT_LAYERS})")
    s.add_argument("--int8-classifier", action="store_true",
                   help="int8: quantize the classifier too (default: fp32, logits not rounded)")
    s.add_argument("--nhwc", action="store_true", help="litert: the file takes NHWC images")
    s.add_argument("--allow-portable", action="store_true", help="executorch/litert: write the "
                   "file even if ops fall off the XNNPACK delegate (default: an error)")
    s.add_argument("--min-agreement", type=float, default=0.9,
                   help="int8/bf16: least share of check images whose top-1 matches fp32's")
    s.add_argument("--evaluate", action="store_true",
                   help="also report top-1 of torch and the export on the validation split")
    s.add_argument("--limit", type=int, help="evaluate on the first N images only (default: all)")
    s.add_argument("--report", help="write the evaluation as JSON here (default: none)")
    s.set_defaults(func=cmd_export)

    s = add_parser(sub, "bench", help="latency, throughput and memory (measured and analytic) "
                   "per backend vs timm, torchvision and ORT")
    s.add_argument("--model", action="append", help="registered name (repeatable; default "
                   "mobilenet_v1_1.0_224)")
    s.add_argument("--model-file", action="append",
                   help="our .safetensors (repeatable; default: none)")
    s.add_argument("--resolution", type=int, help="input size (default: each model's)")
    s.add_argument("--backends", help=f"comma-separated, from: all (every one installed), "
                   f"{', '.join(BACKENDS)} (default: "
                   + ", ".join(b.name for b in BACKENDS.values() if b.default and not b.peer_of)
                   + " and the model's peers: " + ", ".join(
                       f"{b.name} for {b.peer_of}" for b in BACKENDS.values() if b.peer_of) + ")")
    s.add_argument("--batch", type=int, default=32, help="batch of the throughput measurement")
    s.add_argument("--threads", type=int, default=2, help="threads of every backend")
    s.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    s.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurement")
    s.add_argument("--calibration-data", default="fashion-mnist", help="int8 calibration images")
    s.add_argument("--ort-spinning", choices=("on", "off"), default="off",
                   help="ONNX Runtime's idle threads spin between calls: on is its fastest "
                   "setting on an idle machine with several threads, off keeps a busy one fair")
    add_output_arguments(s, FORMATS)
    s.set_defaults(func=cmd_bench)

    s = add_parser(sub, "pick", help="the most accurate variant within a latency/size budget")
    s.add_argument("--latency-ms", type=float, help="median batch-1 latency budget (default: none)")
    s.add_argument("--max-params", type=float,
                   help="parameter budget, conv + FC weights (default: none)")
    s.add_argument("--max-madds", type=float, help="Mult-Adds budget per image (default: none)")
    s.add_argument("--backend", help="where to measure: one backend or several, comma-separated "
                   "(e.g. onnx,int8,litert,litert-int8), or all (every one installed); each "
                   "candidate is timed on each, interleaved (default: onnx); from: " + ", ".join(
                       b.name for b in BACKENDS.values() if not b.peer_of))
    s.add_argument("--device", metavar="DEVICE.json", help="choose by the latency predicted "
                   "for a device fitted by `mobilenets latency fit` or `measure`: nothing is "
                   "timed (default: time on this machine)")
    s.add_argument("--predict", type=int, metavar="K", help="time K candidates per backend "
                   "here, predict the rest with a latency model fitted on them, then time the "
                   "chosen one and its frontier neighbours to confirm (default: time all)")
    s.add_argument("--accuracy", help="a sweep.csv: choose among its models, by its accuracy "
                   "(default: the registered variants, by the paper's ImageNet top-1)")
    s.add_argument("--arch", choices=sorted({*ARCH_ALIASES, *ARCHS}),
                   help="choose among MobileNet v1's, v2's or ShuffleNet's registered variants "
                   "(with --accuracy: that architecture's rows; default v1)")
    s.add_argument("--threads", type=int, help="threads of the backend (default: 2)")
    s.add_argument("--rounds", type=int, help="interleaved timing rounds (default: 5)")
    s.add_argument("--plot", help="write the accuracy vs latency frontier, measured and "
                   "predicted points apart (PNG; default: none)")
    s.add_argument("--export-workers", type=int, help="processes writing the candidates' files "
                   "at once (default: the usable cores)")
    s.add_argument("--ort-spinning", choices=("on", "off"), default="off",
                   help="ONNX Runtime's idle threads spin between calls: on is its fastest "
                   "setting on an idle machine with several threads, off keeps a busy one fair")
    add_output_arguments(s, FORMATS)
    s.set_defaults(func=cmd_pick)
