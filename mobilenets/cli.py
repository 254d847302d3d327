"""The ``mobilenets`` command line: one subcommand per task, each a thin layer over the library."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
        from .checkpoint import atomic_path

        with atomic_path(output) as tmp:
            Path(tmp).write_text(text + "\n")
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text)


def cmd_models(args) -> None:
    from .profiler import profile_model
    from .registry import MODELS, create_model, list_models

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


def cmd_profile(args) -> None:
    from .mobilenet_v1 import MobileNetV1
    from .profiler import profile_model
    from .registry import create_model, get_spec

    if args.model:
        spec = get_spec(args.model)
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        model = create_model(args.model, **kwargs)
        h, w = parse_resolution(args.resolution) if args.resolution else (spec.resolution,) * 2
        name = args.model
    else:
        h, w = parse_resolution(args.resolution or "224")
        model = MobileNetV1(width_mult=args.width_mult, num_classes=args.num_classes or 1000)
        name = f"{args.width_mult:g} MobileNet-{h}" + (f"x{w}" if w != h else "")
    prof = profile_model(model, (3, h, w), name=name)
    text = {"table": prof.format_table, "csv": prof.to_csv, "json": prof.to_json}[args.format]()
    _write(text.rstrip("\n"), args.output)


def cmd_paper_tables(args) -> None:
    from .paper import format_comparisons, paper_comparisons

    tables = set(args.table) if args.table else None
    rows = paper_comparisons(tables)
    if not rows:
        raise ValueError(f"--table must be among 2-10, 12, 14; got {args.table}")
    _write(format_comparisons(rows, args.format), args.output)
    if args.strict and any(r.status == "MISMATCH" for r in rows):
        raise SystemExit(1)


def cmd_convert(args) -> None:
    from .convert import convert

    out = convert(args.src, args.dst, source=args.source, width_mult=args.width_mult)
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilenets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("models", help="list the registered variants with their cost")
    s.add_argument("--pattern", default="*", help="shell pattern on names (default: all)")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output", help="write to this file instead of stdout")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("profile", help="per-layer Mult-Adds and parameters (Tables 1 and 2)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--model", help="a registered name (see `mobilenets models`)")
    g.add_argument("--width-mult", type=float, default=1.0, help="alpha, > 0 (default 1.0)")
    s.add_argument("--resolution", help="input size: 224 or HxW, >= 32 (default: the model's)")
    s.add_argument("--num-classes", type=int, help="classifier outputs (default 1000)")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output", help="write to this file instead of stdout")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("paper-tables", help="the paper's cost columns, computed vs printed")
    s.add_argument("--table", action="append", help="only this table (repeatable): 2-10, 12, 14")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--output", help="write to this file instead of stdout")
    s.add_argument("--strict", action="store_true", help="exit 1 on any unexplained difference")
    s.set_defaults(func=cmd_paper_tables)

    s = sub.add_parser("convert", help="import Keras or timm MobileNet weights into our format")
    s.add_argument("src", help="a Keras (.h5, .weights.h5, .keras) or timm (.pth, .safetensors) file")
    s.add_argument("dst", help="output .safetensors file (written atomically)")
    s.add_argument("--source", choices=("auto", "timm", "keras"), default="auto")
    s.add_argument("--width-mult", type=float, help="alpha of the source (default: inferred)")
    s.set_defaults(func=cmd_convert)
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
