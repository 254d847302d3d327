"""Figures every task draws: a run's training curves, and accuracy against any measured cost
(latency, size...) with its Pareto frontier; and the drawing steps that every figure of the
package shares (``tasks.classification.figures`` draws the paper's Figures 4 and 5 with them).

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through ``pyplot``: nothing needs a display, no global backend is switched under a notebook that
imports this module, and no figure outlives its call. Every writer is atomic: the image goes to a
temporary file beside the target, which is then renamed over it.

A row is a dict describing one trained model. The keys read here:

- ``width_mult``: the width multiplier alpha, e.g. 0.75;
- ``resolution``: the input side in pixels, e.g. 160;
- ``top1``: top-1 accuracy in percent (or any quality key a figure is given);
- ``label`` (optional): the model's name (e.g. ``mobilenet_v1_0.5_160``), named in the legend of
  the best model within a budget; points are annotated ``"{width_mult}-{resolution}"``, e.g.
  ``"0.5-160"`` (the label only where a row has no ``width_mult`` and ``resolution``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from mobilenets.fileio import atomic_path

#: Resolution of the written images, dots per inch (a 6.4 x 4.8 inch figure is 960 x 720 pixels).
DPI = 150


def pareto_frontier(rows: Sequence[Mapping], x_key: str, y_key: str = "top1") -> list[Mapping]:
    """The rows not beaten by a row at most as costly: the best ``y_key`` for every ``x_key``.

    A row is on the frontier when every row with a smaller or equal ``x_key`` has a strictly lower
    ``y_key`` (of equal rows, the first one is kept). Lower x is taken as better (latency, size,
    Mult-Adds), higher y as better (accuracy).

    Args:
        rows: Dicts holding numeric ``x_key`` and ``y_key`` values.
        x_key: The cost key, e.g. ``"latency_ms"``.
        y_key: The quality key. Default ``"top1"``.

    Returns:
        The frontier rows themselves (not copies), in increasing ``x_key`` (and ``y_key``) order.

    Raises:
        ValueError: for empty ``rows``, naming a missing key, or naming a non-numeric value.
    """
    rows = check_rows(rows, (x_key, y_key))
    order = sorted(range(len(rows)), key=lambda i: (_num(rows, i, x_key), -_num(rows, i, y_key), i))
    frontier, best = [], -math.inf
    for i in order:
        if _num(rows, i, y_key) > best:
            frontier.append(rows[i])
            best = _num(rows, i, y_key)
    return frontier


def plot_frontier(rows: Sequence[Mapping], path: str | os.PathLike, x_key: str, x_label: str,
                  budget: float | None = None, *, y_key: str = "top1",
                  y_label: str = "Top-1 accuracy (%)", title: str | None = None,
                  log_x: bool = False, group_key: str | None = None) -> list[Mapping]:
    """Accuracy against any measured cost (latency, size...), with its Pareto frontier.

    Every row is a grey point; the frontier (``pareto_frontier``) is highlighted and joined by a
    step line, which reads as "the best accuracy available at this cost or less". With a
    ``budget``, a dashed vertical line marks it and a star marks the frontier's best row within
    it, if any.

    Args:
        rows: Dicts with numeric ``x_key`` and ``y_key``; optional ``label`` and
            ``width_mult`` + ``resolution`` (see the module docstring for the annotations).
        path: The image file to write; its suffix picks the format. Parent folders are created.
        x_key: The cost key, e.g. ``"latency_ms"``. Lower is better.
        x_label: The x axis label, e.g. ``"Latency (ms)"``.
        budget: Optional cost limit, in ``x_key`` units, drawn as a vertical line. Default None.
        y_key: The quality key (higher is better). Default ``"top1"``.
        y_label: The y axis label. Default ``"Top-1 accuracy (%)"``.
        title: The axes title. Default None: ``"Accuracy vs {x_label}"``.
        log_x: Log-scale the x axis (then every x and the budget must be > 0). Default False.
        group_key: Draw one frontier per value of this key, each in its own colour (e.g.
            ``"backend"``: one curve per runtime and precision). Default None: one frontier.

    Returns:
        The frontier rows (the input dicts), in increasing ``x_key`` order; with ``group_key``,
        the frontier of all rows together (what the budget's star is chosen from).

    Raises:
        ValueError: for empty ``rows``, naming a missing key or a bad value, naming ``budget``
            if it is not a finite number (> 0 with ``log_x``), or naming ``path`` for a suffix
            matplotlib cannot write.
    """
    path = check_figure_path(path)
    rows = check_rows(rows, (x_key, y_key), positive=(x_key,) if log_x else ())
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
                or not math.isfinite(budget) or (log_x and budget <= 0):
            raise ValueError(f"budget must be a finite number{' > 0 with log_x' if log_x else ''}"
                             f" or None, got {budget!r}")
    frontier = pareto_frontier(rows, x_key, y_key)
    xs = [_num(rows, i, x_key) for i in range(len(rows))]
    ys = [_num(rows, i, y_key) for i in range(len(rows))]
    fig, ax = new_axes()
    ax.scatter(xs, ys, s=25, color="0.6", zorder=2, label="models")
    if group_key is None:
        for row, x, y in zip(rows, xs, ys):
            annotate_point(ax, row, x, y)
        curves = [("Pareto frontier", frontier, "tab:red")]
    else:
        groups = list(dict.fromkeys(str(r.get(group_key)) for r in rows))
        colours = colormaps["tab10"]
        curves = [(g, pareto_frontier([r for r in rows if str(r.get(group_key)) == g], x_key,
                                      y_key), colours(i % 10)) for i, g in enumerate(groups)]
    for name, front, colour in curves:
        fx = [float(r[x_key]) for r in front]
        fy = [float(r[y_key]) for r in front]
        # Carry the last step to the costliest model so the line spans every point.
        ax.step(fx + [max(xs)], fy + [fy[-1]], where="post", color=colour, linewidth=1.5,
                zorder=3, label=name)
        ax.scatter(fx, fy, s=40, color=colour, zorder=4)
    if budget is not None:
        ax.axvline(budget, color="tab:blue", linestyle="--", linewidth=1, zorder=1,
                   label=f"budget: {budget:g}")
        within = [r for r in frontier if float(r[x_key]) <= budget]
        if within:
            best = within[-1]  # the frontier rises with x: its last row within budget is best
            ax.scatter([float(best[x_key])], [float(best[y_key])], s=220, marker="*",
                       color="gold", edgecolors="black", zorder=5,
                       label=f"best within budget: "
                             f"{best.get('label') or _label(best) or float(best[y_key])}")
    finish_axes(ax, x_label, y_label, title or f"Accuracy vs {x_label}", log_x=log_x)
    save_figure(fig, path)
    return frontier


#: Epoch-record keys that are bookkeeping, not curves.
_NOT_CURVES = frozenset({"epoch", "step", "lr", "seconds", "eval_seconds"})


def plot_training_curves(history: Sequence[Mapping], path: str | os.PathLike,
                         title: str | None = None) -> Path:
    """A run's curves against epochs: every loss on the left (training and validation), every
    other metric (top-1, top-5, mAP, mIoU, ...) on the right; written at the end of every run.

    Args:
        history: The run's epoch records (``metrics.jsonl``, ``fit``'s ``history``): dicts with
            ``epoch`` and numbers; keys containing ``loss`` are losses, ``step``, ``lr``,
            ``seconds`` and ``eval_seconds`` are left out, non-numbers are ignored.
        path: The image file to write (PNG, ...); its suffix picks the format.
        title: The figure's title. Default ``"Training curves"``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: for an empty ``history``, a record without ``epoch``, or naming ``path`` for
            a suffix matplotlib cannot write.
    """
    path = check_figure_path(path)
    history = list(history)
    if not history:
        raise ValueError("history is empty: no epoch to plot")
    if any("epoch" not in r for r in history):
        raise ValueError("every history record needs an 'epoch'")
    keys = list(dict.fromkeys(k for r in history for k, v in r.items()
                              if k not in _NOT_CURVES and _is_num(v) and math.isfinite(v)))
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if "loss" not in k]
    panels = [(losses, "Loss"), (others, "Metric")] if others else [(losses, "Loss")]
    fig = Figure(figsize=(6.4 * len(panels) * 0.8, 4.2))
    FigureCanvasAgg(fig)
    for n, (names, y_label) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), n)
        for k in names:
            pts = [(float(r["epoch"]), float(r[k])) for r in history if _is_num(r.get(k))]
            ax.plot(*zip(*pts), marker="o", markersize=3, label=k)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.25
        ax.set_xlabel("Epoch")
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
        if names:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    return save_figure(fig, path)


# -- the steps of every figure (public: tasks.classification.figures draws with them too) ---------

def check_rows(rows, keys: Sequence[str], positive: Sequence[str] = ()) -> list[Mapping]:
    """``rows`` as a list, after checking each holds every key with a finite number (> 0 for the
    ``positive`` keys, which a log axis shows).

    Raises:
        ValueError: for empty ``rows``, naming a row that is not a dict, a missing key or a bad
            value.
    """
    if isinstance(rows, Mapping) or isinstance(rows, (str, bytes)):
        raise ValueError(f"rows must be a sequence of dicts, got {type(rows).__name__}")
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        for key in keys:
            if key not in row:
                raise ValueError(f"rows[{i}] is missing key {key!r} (needs {', '.join(keys)})")
            v = row[key]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) \
                    or not math.isfinite(v):
                raise ValueError(f"rows[{i}][{key!r}] must be a finite number, got {v!r}")
            if key in positive and v <= 0:
                raise ValueError(f"rows[{i}][{key!r}] must be > 0 for a log scale, got {v!r}")
    return rows


def _num(rows: list[Mapping], i: int, key: str) -> float:
    return float(rows[i][key])


def check_figure_path(path) -> Path:
    """``path`` as a ``Path``, checked before any drawing: its suffix picks the image format.

    Raises:
        ValueError: naming ``path`` if matplotlib cannot write its suffix.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower()
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"path must end in an image suffix matplotlib writes "
                         f"({', '.join(sorted(supported))}), got {str(path)!r}")
    return path


def _label(row: Mapping) -> str:
    """A point's annotation: short, ``"{width_mult}-{resolution}"`` (``v2-`` before MobileNetV2's),
    where the row has both; else its ``label``."""
    if "width_mult" in row and "resolution" in row:
        v2 = "v2-" if row.get("arch") == "mobilenet_v2" else ""
        return f"{v2}{format_alpha(row['width_mult'])}-{_g(row['resolution'])}"
    return "" if row.get("label") is None else str(row["label"])


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _g(v) -> str:
    """160 -> "160", 160.0 -> "160"; anything not a number as str()."""
    return f"{v:g}" if _is_num(v) else str(v)


def format_alpha(v) -> str:
    """A width multiplier as the paper writes it: 1 -> "1.0", 0.75 -> "0.75"."""
    return str(float(v)) if _is_num(v) else str(v)


def annotate_point(ax, row: Mapping, x: float, y: float) -> None:
    """Write a row's short name (``"{width_mult}-{resolution}"``, else its ``label``) beside its
    point at ``(x, y)``."""
    text = _label(row)
    if text:
        ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)


def new_axes():
    """A 6.4 x 4.8 inch figure on the Agg canvas and its one axes: ``(fig, ax)``."""
    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: Agg, no display
    return fig, fig.add_subplot()


class _PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers (0.6, 40, 200)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def finish_axes(ax, x_label: str, y_label: str, title: str, log_x: bool) -> None:
    """Label, title, grid and legend an accuracy plot; with ``log_x`` a log x axis whose ticks
    read as plain numbers."""
    if log_x:
        ax.set_xscale("log")
        # Plain numbers (50, 100, 500) rather than 10^2 or 5x10^1: the data spans a decade or two,
        # so matplotlib labels some minor ticks too.
        ax.xaxis.set_major_formatter(_PlainLogFormatter())
        ax.xaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.margins(x=0.08)  # room for the annotation of the rightmost point
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.figure.tight_layout()


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (``fileio.atomic_path``). The temporary name
    ends in ".tmp", so the format is passed explicitly, from the real suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=DPI)
    return path
