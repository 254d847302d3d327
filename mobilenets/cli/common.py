"""What every command group shares: output (``--format``, ``--output``), the one way a run's
config is built from its flags (``--preset``, task flags, ``--set KEY=VALUE``), help lines that
state their defaults, and reading a model file for inference."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from mobilenets.checks import COUNT, FINITE, RANGES, Range
from mobilenets.engine.config import config_from_preset, parse_assignments
from mobilenets.fileio import display_text, write_text
from mobilenets.models.config import ModelConfig
from mobilenets.tables import FORMATS, TABLE_WIDTH, render_table


class Parser(argparse.ArgumentParser):
    """argparse's parser with a usage error on one line (the flag, the rule, where to find the
    usage), not the usage block; exit status 2. Subcommand parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} "
                     "--help)\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Help lines that state their default: ``(default: X)`` is appended unless the help already
    says it; a flag that is off unless given says ``(default: off)``, a required option
    ``(required)``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if not action.option_strings or "default" in help_ or action.default is argparse.SUPPRESS:
            return help_
        if action.required:
            return f"{help_} (required)".strip()
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction)) \
                and action.default in (None, False):
            return f"{help_} (default: off)".strip()
        if action.default is None:
            return help_
        return f"{help_} (default: %(default)s)".strip()


def add_parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser with ``DefaultsFormatter``."""
    return sub.add_parser(name, formatter_class=DefaultsFormatter, **kwargs)


def add_output_arguments(parser: argparse.ArgumentParser, formats=FORMATS,
                         wide: bool = True) -> None:
    """``--format`` (``formats``, default the first), ``--wide`` (for commands that print a
    table; ``wide=False`` for text reports) and ``--output``."""
    parser.add_argument("--format", choices=formats, default=formats[0],
                        help=f"table: aligned text, at most {TABLE_WIDTH} characters wide; csv "
                        "and json: every field")
    if wide:
        parser.add_argument("--wide", action="store_true",
                            help="table: every column, one line per row, however wide")
    parser.add_argument("--output", help="write to this file, atomically (default: stdout)")


def table_width(args: argparse.Namespace) -> int | None:
    """The widest line a command's text output may have: ``TABLE_WIDTH``, or None with
    ``--wide``."""
    return None if getattr(args, "wide", False) else TABLE_WIDTH


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


# --------------------------------------------------------------------------- numeric flags

def _flag_type(rule: Range, name: str):
    """The argparse ``type`` of the flag whose ``dest`` is ``name``: its text parsed as
    ``rule.kind``, then held to ``rule`` (``checks.Range``); the error names the field and the
    range, as the library's check of the same value does."""
    def parse(text: str):
        try:
            value = rule.kind(text)
        except ValueError:
            value = None
        if not rule.holds(value):
            raise argparse.ArgumentTypeError(f"{name} must be {rule.what}, got {text!r}")
        return value
    parse.__name__ = rule.what
    return parse


def number_list(item: str):
    """The argparse ``type`` of a flag taking comma-separated values, each following the rule of
    the flag whose ``dest`` is ``item`` (``checks.RANGES``: ``--seeds`` takes seeds as ``--seed``
    does), each value once: ``"0,1"`` -> ``[0, 1]``; ``"0,0"`` or ``"-1"`` fail at parsing, naming
    the flag."""
    rule = _flag_type(RANGES[item], item)

    def parse(text: str) -> list:
        parts = [p.strip() for p in str(text).split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"takes comma-separated values, got {text!r}")
        values = [rule(p) for p in parts]
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"{text!r} repeats {', '.join(repeated)}: give "
                                             "each value once")
        return values
    parse.__name__ = f"comma-separated {rule.__name__}s"
    return parse


def harden_numeric_flags(parser: argparse.ArgumentParser) -> None:
    """Give every ``type=int`` and ``type=float`` flag of ``parser`` and its subcommands the
    range of ``checks.RANGES`` (by ``dest``: the record the library checks the same value with),
    else a count (int >= 1) or a finite float: ``inf``, ``nan``, a zero batch size or top-k fail
    at parsing, naming the flag and its field, e.g. ``argument --top-k: top_k must be an integer
    >= 1, got '0'`` (exit status 2)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                harden_numeric_flags(sub)
        elif action.type in (int, float):
            rule = RANGES.get(action.dest, COUNT if action.type is int else FINITE)
            action.type = _flag_type(rule, action.dest)


def write_output(text: str, output: str | None) -> None:
    """Print ``text``, or write it to ``output`` atomically (saying so on stderr)."""
    if output:
        write_text(output, text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(display_text(text))


def write_rows(rows: list[dict], fmt: str, output: str | None, wide: bool = False,
               columns=None, headers: dict | None = None) -> None:
    """``tables.render_table`` of ``rows`` in ``fmt``, printed or written to ``output``.

    Args:
        rows: The rows (dicts).
        fmt: ``--format``: table, csv or json.
        output: ``--output``: a file, or None for stdout.
        wide: ``--wide``: every column, however wide. Default False: the table fits
            ``TABLE_WIDTH`` (``columns`` only, long text wrapped, blocks of columns).
        columns: The columns of the default table. Default: all.
        headers: Table headings for some columns. Default: the keys.
    """
    write_output(render_table(rows, fmt, width=None if wide else TABLE_WIDTH, columns=columns,
                              headers=headers), output)


def progress(line: str) -> None:
    """A progress line on stderr (stdout keeps the result)."""
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- run configs

def add_run_arguments(parser: argparse.ArgumentParser, presets: dict, default_preset: str,
                      resume: bool = True, choose_preset: bool = True) -> None:
    """The flags of every training command: ``--preset``, ``--epochs``, ``--batch-size``,
    ``--lr``, ``--seed``, ``--out``, ``--set KEY=VALUE`` and ``--resume``.

    Each flag's ``dest`` is a field of the presets' config class; the task's own flags follow the
    same rule (``dest`` = field), and ``config_from_args`` reads them all. Call ``note_preset_
    defaults`` after adding the task's flags. With ``choose_preset=False`` the command always
    starts from ``default_preset`` (no ``--preset`` flag).
    """
    cls = type(presets[default_preset])
    if choose_preset:
        parser.add_argument("--preset", default=default_preset, choices=sorted(presets),
                            help="the recipe to start from")
    else:
        parser.set_defaults(preset=default_preset)
    parser.add_argument("--epochs", type=float, help="passes over the training images")
    parser.add_argument("--batch-size", type=int, help="images per step and process")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--seed", type=int, help="seeds the weights, the data order and every "
                        "augmentation")
    parser.add_argument("--out", "--out-dir", dest="out_dir",
                        help="run folder: config, checkpoint, metrics, model")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="assignments",
                        help=f"any other {cls.__name__} field (repeatable; default: none)")
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="continue from OUT/checkpoint.pt to the same weights as an "
                            "uninterrupted run")
    parser.set_defaults(presets=presets)


def note_preset_defaults(parser: argparse.ArgumentParser) -> None:
    """Say ``(default: from --preset)`` in the help of every flag that sets a config field."""
    presets = parser.get_default("presets")
    names = {f.name for f in fields(next(iter(presets.values())))}
    for action in parser._actions:
        if (action.dest in names and action.default is None and action.option_strings
                and "default" not in (action.help or "")):
            action.help = f"{action.help or ''} (default: from --preset)".strip()


def config_from_args(args: argparse.Namespace, **fixed):
    """The run config of a command: ``--preset``, then every flag whose ``dest`` is a config
    field (when given), then ``fixed``, then ``--set KEY=VALUE``; validated.

    Raises:
        ValueError: naming an unknown preset or field, or a bad value.
    """
    presets = args.presets
    cls = type(presets[args.preset])
    names = {f.name for f in fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    overrides.update(fixed)
    overrides.update(parse_assignments(cls, args.assignments))
    return config_from_preset(presets, args.preset, **overrides)


# --------------------------------------------------------------------------- model files

def inference_extra(model) -> dict:
    """What evaluating or exporting a trained classifier needs from its file (``model.metadata``):
    class names, the evaluation crop and the data it was trained on."""
    meta = getattr(model, "metadata", {}) or {}
    train_cfg = meta.get("train_config", {})
    return {"class_names": meta.get("class_names"), "eval_crop": train_cfg.get("eval_crop", 0.875),
            "data": train_cfg.get("data")}


def check_input_fits(model, resolution: int, batch_size: int) -> None:
    """Refuse an inference batch that cannot fit in memory before it is decoded
    (``cost.memory.check_memory``)."""
    from mobilenets.cost.memory import check_memory

    check_memory(model, (model.config.in_channels, resolution, resolution), batch_size)


def eval_split(model_cfg: ModelConfig, extra: dict, data: str | None, split: str, limit: int | None,
               resolution: int | None = None, crop: float | None = None,
               skip_bad_files: bool = False):
    """(dataset, eval transform) for a model, with the data and crop it was trained with unless
    ``data``, ``resolution`` or ``crop`` say otherwise."""
    from mobilenets.engine.data import BatchTransform, limit_dataset, open_dataset

    res = resolution or model_cfg.input_size
    crop = crop or extra.get("eval_crop", 0.875)
    ds = open_dataset(data or extra.get("data") or "fashion-mnist", split, res, crop,
                      skip_bad_files, extra.get("class_names"))
    if limit:
        limit_dataset(ds, limit)
    return ds, BatchTransform(res, False, eval_crop=crop,
                              out_channels=model_cfg.in_channels)
