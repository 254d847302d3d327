"""The reference pages, generated from the code so they cannot drift from it: ``docs/cli.md``
(every command's ``--help``, from ``cli.build_parser()``) and ``docs/api.md`` (the public Python
functions and classes, from their signatures and docstrings).

Regenerate both after changing a command or a public docstring (a test fails until they match)::

    python -m mobilenets.cli.docs            # writes docs/cli.md and docs/api.md
    python -m mobilenets.cli.docs --check    # exit 1 if either is out of date
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from mobilenets.fileio import write_text
from mobilenets.tables import TABLE_WIDTH

#: The repository's docs folder (beside the package).
DOCS = Path(__file__).resolve().parents[2] / "docs"

#: The public API, by area: dotted names (``module.attribute``) in the order docs/api.md shows
#: them. A name missing here is not part of the documented API.
API: dict[str, tuple[str, ...]] = {
    "Models": (
        "mobilenets.create_model", "mobilenets.list_models", "mobilenets.get_spec",
        "mobilenets.models.registry.variant_name", "mobilenets.MobileNetV1",
        "mobilenets.MobileNetV2", "mobilenets.ConvBNAct", "mobilenets.DepthwiseSeparable",
        "mobilenets.InvertedResidual", "mobilenets.ShuffleNetV1", "mobilenets.ShuffleUnit",
        "mobilenets.ChannelShuffle", "mobilenets.scale_channels", "mobilenets.save_model",
        "mobilenets.load_model", "mobilenets.ModelConfig", "mobilenets.MobileNetV1Config",
        "mobilenets.MobileNetV2Config", "mobilenets.ShuffleNetV1Config",
        "mobilenets.models.registry.config_from_dict",
        "mobilenets.models.registry.build_from_config",
    ),
    "Cost and memory": (
        "mobilenets.cost.profiler.profile_model", "mobilenets.cost.memory.trace_memory",
        "mobilenets.cost.memory.inference_ops", "mobilenets.cost.formulas.separable_madds",
        "mobilenets.cost.formulas.separable_cost_ratio", "mobilenets.cost.formulas.table3",
        "mobilenets.paper.paper_comparisons",
    ),
    "Training": (
        "mobilenets.tasks.classification.train.TrainConfig",
        "mobilenets.tasks.classification.train.make_config",
        "mobilenets.tasks.classification.train.train",
        "mobilenets.tasks.classification.train.evaluate",
        "mobilenets.engine.loop.fit", "mobilenets.engine.loop.write_run_outputs",
        "mobilenets.engine.results.RunResult",
        "mobilenets.engine.data.open_dataset", "mobilenets.engine.data.BatchTransform",
        "mobilenets.engine.metrics.format_report",
        "mobilenets.tasks.classification.sweep.run_sweep",
        "mobilenets.tasks.classification.sweep.compare_runs",
        "mobilenets.tasks.distillation.train.distill",
        "mobilenets.tasks.distillation.train.run_distill",
    ),
    "Pictures": (
        "mobilenets.engine.plots.plot_training_curves",
        "mobilenets.tasks.classification.figures.plot_prediction",
        "mobilenets.tasks.classification.figures.plot_accuracy_vs_madds",
        "mobilenets.tasks.classification.figures.plot_accuracy_vs_params",
        "mobilenets.engine.plots.plot_frontier",
    ),
    "Deployment": (
        "mobilenets.deploy.backends.Backend", "mobilenets.deploy.backends.get_backend",
        "mobilenets.deploy.onnx_export.fold_batchnorm", "mobilenets.deploy.onnx_export.export_onnx",
        "mobilenets.deploy.onnx_export.quantize_int8", "mobilenets.deploy.onnx_export.OnnxModule",
        "mobilenets.deploy.mobile.export_mobile", "mobilenets.deploy.runtimes.load_runner",
        "mobilenets.deploy.quantize.float_module_names", "mobilenets.deploy.quantize.pt2e_quantize",
        "mobilenets.deploy.tune.choose_float_layers",
        "mobilenets.deploy.bench.bench", "mobilenets.deploy.bench.honesty_warnings",
        "mobilenets.deploy.compare.sign_test", "mobilenets.deploy.compare.latency_checks",
        "mobilenets.deploy.layer_times.kernel_times",
        "mobilenets.deploy.layer_times.operator_times",
        "mobilenets.deploy.layer_times.by_layer_type",
        "mobilenets.deploy.pick.pick", "mobilenets.deploy.pick.pick_device",
        "mobilenets.deploy.pick.pick_predicted", "mobilenets.deploy.export_cache.cache_dir",
        "mobilenets.deploy.convert.convert", "mobilenets.deploy.convert.load_timm_mobilenet_v1",
        "mobilenets.deploy.convert.load_torchvision_mobilenet_v2",
        "mobilenets.deploy.convert_keras.load_keras_mobilenet",
        "mobilenets.deploy.convert_keras.load_keras_mobilenet_v2",
    ),
    "Latency on a device": (
        "mobilenets.cost.latency.fit_device", "mobilenets.cost.latency.Device",
        "mobilenets.cost.latency.read_device", "mobilenets.cost.latency.variant_model",
        "mobilenets.cost.latency.variant_profile", "mobilenets.cost.latency.model_terms",
        "mobilenets.deploy.device.make_kit", "mobilenets.deploy.device.calibration_set",
        "mobilenets.deploy.device.read_measurements", "mobilenets.deploy.device.fit_measurements",
        "mobilenets.deploy.device.measure_device", "mobilenets.deploy.tool_output.parse_tool_output",
    ),
    "Section 4 applications": (
        "mobilenets.tasks.detection.model.build_detector",
        "mobilenets.tasks.detection.train.train_detector",
        "mobilenets.tasks.detection.data.evaluate_detector",
        "mobilenets.tasks.detection.export.export_detector_onnx",
        "mobilenets.tasks.segmentation.train.train_segmenter",
        "mobilenets.tasks.segmentation.evaluate.evaluate_segmenter",
        "mobilenets.tasks.faces.train.train_attributes", "mobilenets.tasks.faces.train.train_embeddings",
        "mobilenets.tasks.geo.cells.build_geocells", "mobilenets.tasks.geo.train.train_geolocator",
        "mobilenets.tasks.finegrained.data.make_finegrained_data",
        "mobilenets.tasks.synthetic.data.write_dataset",
    ),
    "Files": (
        "mobilenets.fileio.atomic_path", "mobilenets.fileio.save_png",
        "mobilenets.tables.render_table",
    ),
}

_SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Yields|Raises|Example|Examples|Note)"
                      r":\s*$")
_ENTRY = re.compile(r"^(\**[\w.]+(?: \([^)]*\))?):\s*(.*)$")


@contextmanager
def _help_width(columns: int):
    """argparse wraps help to $COLUMNS: fix it while the pages are made, so they do not depend on
    the terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _commands(parser: argparse.ArgumentParser, path: str = "mobilenets"):
    """(command path, one-line help, parser) for ``parser`` and every subcommand below it."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((f"{path} {name}", helps.get(name) or "", sub))
                out += _commands(sub, f"{path} {name}")
    return out


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def cli_markdown() -> str:
    """docs/cli.md: a table of contents, then every command's ``--help``."""
    from mobilenets.cli import build_parser

    with _help_width(TABLE_WIDTH):
        parser = build_parser()
        commands = _commands(parser)
        lines = ["# Command-line reference", "",
                 "Generated from the parser by `python -m mobilenets.cli.docs`; do not edit (a test "
                 "fails when this page and the code disagree). Every command prints tables at "
                 f"most {TABLE_WIDTH} characters wide; `--wide` prints every column, `--format "
                 "csv` or `json` every field. Bad input ends with one line naming the parameter "
                 "or file and exit status 2.", "",
                 "| command | what it does |", "|---|---|"]
        lines += [f"| [`{path}`](#{_anchor(path)}) | {text} |" for path, text, _ in commands]
        lines += ["", "## mobilenets", "", "```text", parser.format_help().rstrip(), "```"]
        for path, _, sub in commands:
            lines += ["", f"{'#' * min(2 + path.count(' ') - 1, 4)} {path}", "", "```text",
                      sub.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _resolve(dotted: str):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _inline(text: str) -> str:
    """reST inline code (````x````) as Markdown's (```x```)."""
    return re.sub(r"``(.+?)``", r"`\1`", text)


def docstring_markdown(doc: str) -> list[str]:
    """A Google-style docstring as Markdown: prose as paragraphs, ``Args``/``Attributes``/
    ``Raises`` as lists of entries, ``Returns`` as a paragraph, ``Example`` as a code block."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    section = None
    for line in lines:
        match = _SECTION.match(line)
        if match:
            section = match.group(1)
            out += ["", f"**{section}:**", ""]
            if section.startswith("Example"):
                out.append("```python")
            continue
        if section and line and not line.startswith(" "):  # prose after a section ends it
            if section.startswith("Example"):
                out.append("```")
            section = None
            out.append("")
        if section is None:
            out.append(_inline(line))
        elif section.startswith("Example"):
            out.append(line[4:] if line.startswith("    ") else line)
        elif section in ("Returns", "Yields", "Note"):
            out.append(_inline(line.strip()))
        else:  # Args, Attributes, Raises: "name: text" entries, continued by deeper lines
            body = line[4:] if line.startswith("    ") else line
            entry = _ENTRY.match(body) if not body.startswith(" ") else None
            if entry:
                out.append(f"- `{entry.group(1)}`: {_inline(entry.group(2))}".rstrip())
            elif line.strip():
                out.append(f"  {_inline(line.strip())}")
    if section and section.startswith("Example"):
        out.append("```")
    return out


class _Raw:
    """An annotation written as it is in the source (``from __future__ import annotations`` keeps
    them as strings, which ``inspect`` would print quoted)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _signature(kind: str, obj) -> str:
    """``def name(params) -> ret``, one parameter per line when longer than ``TABLE_WIDTH``."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{kind} {obj.__name__}(...)"

    def raw(a):
        return _Raw(a) if isinstance(a, str) else a
    params = [p.replace(annotation=raw(p.annotation)) for p in sig.parameters.values()]
    sig = sig.replace(parameters=params, return_annotation=raw(sig.return_annotation))
    text = f"{kind} {obj.__name__}{sig}"
    if len(text) <= TABLE_WIDTH:
        return text
    ret = "" if sig.return_annotation is inspect.Signature.empty else \
        f" -> {inspect.formatannotation(sig.return_annotation)}"
    parts, previous = [], None
    for p in sig.parameters.values():  # the markers bare "*" and "/" as inspect writes them
        if p.kind == p.KEYWORD_ONLY and previous not in (p.KEYWORD_ONLY, p.VAR_POSITIONAL):
            parts.append("*")
        parts.append(str(p))
        previous = p.kind
    return f"{kind} {obj.__name__}(\n" + "".join(f"    {x},\n" for x in parts) + f"){ret}"


def backends_table() -> list[str]:
    """The backends of ``deploy.backends.BACKENDS``, one row each (docs/api.md, under
    ``Backend``)."""
    from mobilenets.deploy.backends import BACKENDS

    lines = ["Every backend (`mobilenets.deploy.backends.BACKENDS`; `export --format` writes those "
             "with a file that are no peer, `--backends all` takes those in `all` that this "
             "machine supports):", "",
             "| backend | runtime | precision | extra | file | peer of | in `all` | what it is |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| `{b.name}` | {b.runtime} | {b.precision} | {b.extra or '-'} | {b.suffix or '-'} "
              f"| {b.peer_of or '-'} | {'yes' if b.in_all else 'no'} | {b.description} |"
              for b in BACKENDS.values()]
    return lines + [""]


#: Generated tables shown after an API entry: the registry each record type fills.
TABLES = {"mobilenets.deploy.backends.Backend": backends_table}


def api_entry(dotted: str) -> list[str]:
    """One object's section of docs/api.md."""
    obj = _resolve(dotted)
    kind = "class" if inspect.isclass(obj) else "def"
    dataclass = inspect.isclass(obj) and dataclasses.is_dataclass(obj)
    head = (f"@dataclass\nclass {obj.__name__}({', '.join(b.__name__ for b in obj.__bases__)})"
            if dataclass else _signature(kind, obj))
    out = [f"### `{dotted}`", "", "```python", head, "```", ""]
    out += docstring_markdown(obj.__doc__ or "(no docstring)")
    if dataclass:  # its fields, with the comment each has in the source (a paper value's source)
        notes = _field_comments(obj)
        out += ["", "| field | default | note |", "|---|---|---|"]
        for f in dataclasses.fields(obj):
            default = f.default if f.default is not dataclasses.MISSING else (
                "(factory)" if f.default_factory is not dataclasses.MISSING else "(required)")
            note = notes.get(f.name, "").replace("|", "\\|")
            out.append(f"| `{f.name}` | `{default!r}` | {_inline(note)} |")
    if dotted in TABLES:
        out += ["", *TABLES[dotted]()]
    return out + [""]


def _field_comments(cls) -> dict[str, str]:
    """``{field: its trailing comment}`` from the source of ``cls`` and its dataclass bases."""
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            match = re.match(r"^    (\w+): [^#]*#\s*(.*)$", line)
            if match:
                notes[match.group(1)] = match.group(2).strip()
    return notes


def api_markdown() -> str:
    """docs/api.md: the public API by area, each object's signature and docstring."""
    lines = ["# Python API", "",
             "Generated from the docstrings by `python -m mobilenets.cli.docs`; do not edit (a "
             "test fails when this page and the code disagree). `import mobilenets` gives the "
             "models and the model files; the rest lives in the layer it belongs to: "
             "`mobilenets.models` -> `cost` -> `engine` -> `deploy` -> `tasks` -> `paper` -> `cli`.",
             ""]
    for area, names in API.items():
        lines.append(f"- [{area}](#{_anchor(area)}): " + ", ".join(
            f"[`{n.rsplit('.', 1)[1]}`](#{_anchor(n)})" for n in names))
    for area, names in API.items():
        lines += ["", f"## {area}", ""]
        for name in names:
            lines += api_entry(name)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"


def pages() -> dict[Path, str]:
    """Every generated page and its text."""
    return {DOCS / "cli.md": cli_markdown(), DOCS / "api.md": api_markdown()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobilenets.cli.docs",
                                description="write (or --check) docs/cli.md and docs/api.md")
    p.add_argument("--check", action="store_true", help="exit 1 if a page is out of date")
    args = p.parse_args(argv)
    stale = []
    for path, text in pages().items():
        if path.is_file() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            write_text(path, text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m mobilenets.cli.docs",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
