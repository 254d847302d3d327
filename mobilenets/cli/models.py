"""Commands about models and their cost: ``models``, ``profile``, ``paper-tables``, ``convert``."""
from __future__ import annotations

import json

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, parse_resolution,
                                   table_width, write_output, write_rows)
from mobilenets.models.registry import ARCH_ALIASES


def cmd_models(args) -> None:
    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import MODELS, create_model, list_models

    rows = []
    for name in list_models(args.pattern):
        spec = MODELS[name]
        prof = profile_model(create_model(name), (3, spec.resolution, spec.resolution))
        paper = spec.paper or {}
        rows.append({"name": name, "width_mult": spec.config.width_mult,
                     "resolution": spec.resolution, "madds_m": round(prof.total_madds / 1e6, 1),
                     "params_m": round(prof.total_params / 1e6, 2),
                     "paper_top1": paper.get("top1"), "paper_table": paper.get("table")})
    if not rows:
        raise ValueError(f"--pattern {args.pattern!r} matches no registered model")
    write_rows(rows, args.format, args.output, args.wide)


#: ``mobilenets profile --arch``'s report label of each architecture.
PROFILE_LABELS = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2"}


def cmd_profile(args) -> None:
    from mobilenets.cost.memory import check_memory
    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import (arch_name, build_from_config, config_class,
                                            create_model, get_spec, meta_device)
    from mobilenets.resources import MemoryLimitError

    if args.model:
        if args.arch:
            raise ValueError("--arch goes with --width-mult; --model already names the "
                             "architecture")
        spec = get_spec(args.model)
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        build = lambda: create_model(args.model, **kwargs)  # noqa: E731
        h, w = parse_resolution(args.resolution) if args.resolution else (spec.resolution,) * 2
        name = args.model
    else:
        arch = arch_name(args.arch or "v1")
        label = PROFILE_LABELS.get(arch, arch)
        h, w = parse_resolution(args.resolution or "224")
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        build = lambda: build_from_config(  # noqa: E731
            config_class(arch)(width_mult=args.width_mult, **kwargs))
        name = f"{args.width_mult:g} {label}-{h}" + (f"x{w}" if w != h else "")
    try:
        model = build()
        check_memory(model, (3, h, w))
    except MemoryLimitError:
        with meta_device():  # too large to run: the cost is counted on the meta device
            model = build()
    prof = profile_model(model, (3, h, w), name=name)
    if not args.memory:
        text = {"table": lambda: prof.format_table(table_width(args)), "csv": prof.to_csv,
                "json": prof.to_json}[args.format]()
        write_output(text.rstrip("\n"), args.output)
        return
    from mobilenets.cost.memory import inference_ops, trace_memory

    fuse = inference_ops() if args.memory == "ops" else ()
    mem = trace_memory(model, (3, h, w), dtype_bytes=args.activation_bytes, fuse=fuse, name=name)
    if args.format == "json":
        text = json.dumps({**prof.to_dict(), "memory": mem.to_dict()}, indent=2)
    elif args.format == "csv":  # two CSV tables, separated by an empty line
        text = prof.to_csv() + "\n" + mem.to_csv()
    else:
        text = prof.format_table(table_width(args)) + "\n\n" + mem.format_table(table_width(args))
    write_output(text.rstrip("\n"), args.output)


def cmd_paper_tables(args) -> None:
    from mobilenets.paper import format_comparisons, paper_comparisons

    tables = set(args.table) if args.table else None
    rows = paper_comparisons(tables)
    if not rows:
        raise ValueError(f"--table must be among 2-10, 12-14, V2-3, V2-4, V2-6, SN-1, SN-2, "
                         f"SN-5; got {args.table}")
    write_output(format_comparisons(rows, args.format, table_width(args)), args.output)
    if args.strict and any(r.status == "MISMATCH" for r in rows):
        raise SystemExit(1)


def cmd_convert(args) -> None:
    from mobilenets.deploy.convert import convert

    out = convert(args.src, args.dst, source=args.source, width_mult=args.width_mult)
    print(f"wrote {out}")


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    s = add_parser(sub, "models", help="list the registered variants with their cost")
    s.add_argument("--pattern", default="*", help="shell pattern on names (default: all)")
    add_output_arguments(s, FORMATS)
    s.set_defaults(func=cmd_models)

    s = add_parser(sub, "profile", help="per-layer Mult-Adds and parameters (Tables 1 and 2), "
                       "optionally activation memory (MobileNetV2's Table 3)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--model", help="a registered name (see `mobilenets models`; default: "
                   "build one from --width-mult)")
    g.add_argument("--width-mult", type=float, default=1.0, help="alpha, > 0 (default 1.0)")
    s.add_argument("--arch", choices=sorted(ARCH_ALIASES),
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
    add_output_arguments(s, FORMATS)
    s.set_defaults(func=cmd_profile)

    s = add_parser(sub, "paper-tables", help="the paper's cost columns, computed vs printed")
    s.add_argument("--table", action="append",
                   help="only this table (repeatable): 2-10, 12-14; V2-3, V2-4, V2-6 "
                   "(MobileNetV2's, with ShuffleNet's rows); SN-1, SN-2, SN-5 (ShuffleNet's) "
                   "(default: all)")
    add_output_arguments(s, FORMATS)
    s.add_argument("--strict", action="store_true", help="exit 1 on any unexplained difference")
    s.set_defaults(func=cmd_paper_tables)

    s = add_parser(sub, "convert", help="import Keras, timm or torchvision MobileNet weights into "
                       "our format")
    s.add_argument("src", help="a Keras (.h5, .weights.h5, .keras; MobileNet or MobileNetV2), "
                   "timm MobileNet V1 or torchvision MobileNetV2 (.pth, .safetensors) file")
    s.add_argument("dst", help="output .safetensors file (written atomically)")
    s.add_argument("--source", choices=("auto", "timm", "torchvision", "keras"), default="auto",
                   help="the file's origin (auto: detected from its contents)")
    s.add_argument("--width-mult", type=float, help="alpha of the source (default: inferred)")
    s.set_defaults(func=cmd_convert)
