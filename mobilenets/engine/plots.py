"""The paper's Figures 4 and 5 (accuracy against Mult-Adds and against parameters), an
accuracy-against-anything plot with its Pareto frontier, and the log-linear fit behind Figure 4.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through ``pyplot``: nothing needs a display, no global backend is switched under a notebook that
imports this module, and no figure outlives its call. Every writer is atomic: the image goes to a
temporary file beside the target, which is then renamed over it.

A row is a dict describing one trained model. The keys read here:

- ``width_mult``: the width multiplier alpha, e.g. 0.75;
- ``resolution``: the input side in pixels, e.g. 160;
- ``madds``: Mult-Adds per image, an absolute count (plotted in millions);
- ``params``: parameters, an absolute count (plotted in millions);
- ``top1``: top-1 accuracy in percent;
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


def loglinear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares fit of ``y = a + b * log10(x)``, Figure 4's "log linear dependence".

    Args:
        xs: Positive, finite x values (at least two distinct ones).
        ys: Finite y values, one per x.

    Returns:
        ``(a, b, r2)``: intercept, slope per decade of x, and the coefficient of determination
        (1.0 for a perfect fit, including a constant ``ys``).

    Raises:
        ValueError: naming ``xs`` or ``ys`` for a length mismatch, a non-finite value, a
            non-positive x, or fewer than two distinct x.

    Example:
        >>> loglinear_fit([10, 100, 1000], [50, 60, 70])
        (40.0, 10.0, 1.0)
    """
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"xs and ys must be 1-D and of equal length, got shapes {x.shape} and "
                         f"{y.shape}")
    if not np.isfinite(x).all() or (x <= 0).any():
        raise ValueError("xs must all be positive and finite (log10 is taken)")
    if not np.isfinite(y).all():
        raise ValueError("ys must all be finite")
    if np.unique(x).size < 2:
        raise ValueError(f"xs must hold at least two distinct values to fit a line, got "
                         f"{np.unique(x).tolist()}")
    lx = np.log10(x)
    dx = lx - lx.mean()
    b = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    a = float(y.mean() - b * lx.mean())
    ss_res = float(((y - (a + b * lx)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    # A constant y is fitted exactly by b = 0; call that a perfect fit rather than 0 / 0.
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return a, b, r2


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
    rows = _check_rows(rows, (x_key, y_key))
    order = sorted(range(len(rows)), key=lambda i: (_num(rows, i, x_key), -_num(rows, i, y_key), i))
    frontier, best = [], -math.inf
    for i in order:
        if _num(rows, i, y_key) > best:
            frontier.append(rows[i])
            best = _num(rows, i, y_key)
    return frontier


def mean_over_seeds(rows: Sequence[Mapping], keys: Sequence[str] = ("width_mult", "resolution"),
                    value: str = "top1") -> list[dict]:
    """Rows that differ only in their seed merged into one: ``value`` averaged, with its sample
    standard deviation (``{value}_std``, 0 for one seed) and the count (``seeds``).

    Args:
        rows: Dicts with ``keys`` and ``value``; other keys are kept from the first row of each
            group.
        keys: What identifies a grid point. Default ``("width_mult", "resolution")``.
        value: The number averaged. Default ``"top1"``.

    Returns:
        One dict per distinct ``keys``, in first-seen order.

    Example:
        >>> mean_over_seeds([{"width_mult": 1, "resolution": 32, "top1": 90},
        ...                  {"width_mult": 1, "resolution": 32, "top1": 92}])[0]["top1"]
        91.0
    """
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] if isinstance(r[k], str) else float(r[k]) for k in keys),
                          []).append(r)
    out = []
    for members in groups.values():
        vals = np.array([float(m[value]) for m in members])
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append({**members[0], value: float(vals.mean()), f"{value}_std": std,
                    "seeds": len(vals)})
    return out


def plot_accuracy_vs_madds(rows: Sequence[Mapping], path: str | os.PathLike,
                           title: str | None = None) -> tuple[float, float, float]:
    """Figure 4: top-1 accuracy against Mult-Adds (millions, log scale), one point per model.

    Points are coloured by width multiplier and annotated "alpha-resolution"; a least-squares
    line ``top1 = a + b * log10(Mult-Adds in millions)`` is drawn, its R² in the legend. Rows of
    the same model trained with several seeds (same ``width_mult`` and ``resolution``) are shown
    as their mean with a ±1 standard deviation bar, the line is fitted to the means, and its 95%
    confidence band (Student's t, on the means) is shaded.

    Args:
        rows: Model rows with ``width_mult``, ``resolution``, ``madds`` (> 0, absolute) and
            ``top1``; optional ``label`` (see the module docstring) and ``seed``.
        path: The image file to write, e.g. ``"runs/fig4.png"``; its suffix picks the format
            (png, pdf, svg...). Parent folders are created.
        title: The axes title. Default None: ``"Accuracy vs Mult-Adds"``.

    Returns:
        The fit ``(a, b, r2)`` over Mult-Adds in millions (as on the axis), or three NaNs, and no
        line, when the rows hold fewer than two distinct Mult-Adds.

    Raises:
        ValueError: for empty ``rows``, naming a missing key or a bad value, or naming ``path``
            for a suffix matplotlib cannot write.
    """
    path = _check_path(path)
    rows = mean_over_seeds(_check_rows(rows, ("width_mult", "resolution", "madds", "top1"),
                                       positive=("madds",)))
    xs = [_num(rows, i, "madds") / 1e6 for i in range(len(rows))]
    ys = [_num(rows, i, "top1") for i in range(len(rows))]
    fig, ax = _new_axes()
    _scatter_groups(ax, rows, xs, ys, "width_mult", lambda v: f"α = {_alpha(v)}")
    if any(r["seeds"] > 1 for r in rows):
        ax.errorbar(xs, ys, yerr=[r["top1_std"] for r in rows], fmt="none", ecolor="0.3",
                    elinewidth=0.8, capsize=2, zorder=1)
    try:
        a, b, r2 = loglinear_fit(xs, ys)
    except ValueError:  # one distinct Mult-Adds value: no line to fit
        a = b = r2 = math.nan
    else:
        lx = np.linspace(math.log10(min(xs)), math.log10(max(xs)), 50)
        ax.plot(10 ** lx, a + b * lx, color="0.4", linestyle="--", linewidth=1, zorder=1,
                label=f"fit: {a:.1f} + {b:.1f}·log10(MAdds), R² = {r2:.3f}")
        band = loglinear_band(xs, ys, a, b, lx)
        if band is not None:
            ax.fill_between(10 ** lx, a + b * lx - band, a + b * lx + band, color="0.6",
                            alpha=0.25, zorder=0, label="95% confidence band of the fit")
    _finish(ax, "Mult-Adds (millions, log scale)", "Top-1 accuracy (%)",
            title or "Accuracy vs Mult-Adds", log_x=True)
    _save(fig, path)
    return a, b, r2


def loglinear_band(xs: Sequence[float], ys: Sequence[float], a: float, b: float, at_log10):
    """Half-width of the 95% confidence band of the fitted mean ``a + b * log10(x)`` at
    ``at_log10`` (log10 x values), or None with fewer than three points or distinct x."""
    from scipy.stats import t as student_t

    lx, y = np.log10(np.asarray(xs, dtype=np.float64)), np.asarray(ys, dtype=np.float64)
    n = len(lx)
    sxx = float(((lx - lx.mean()) ** 2).sum())
    if n < 3 or sxx == 0:
        return None
    s = math.sqrt(float(((y - (a + b * lx)) ** 2).sum()) / (n - 2))
    at = np.asarray(at_log10, dtype=np.float64)
    return student_t.ppf(0.975, n - 2) * s * np.sqrt(1 / n + (at - lx.mean()) ** 2 / sxx)


def plot_accuracy_vs_params(rows: Sequence[Mapping], path: str | os.PathLike,
                            title: str | None = None) -> Path:
    """Figure 5: top-1 accuracy against parameters (millions, log scale), one point per model.

    Points are coloured by input resolution ("The colors encode input resolutions") and
    annotated "alpha-resolution".

    Args:
        rows: Model rows with ``width_mult``, ``resolution``, ``params`` (> 0, absolute) and
            ``top1``; optional ``label`` (see the module docstring).
        path: The image file to write; its suffix picks the format. Parent folders are created.
        title: The axes title. Default None: ``"Accuracy vs parameters"``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: for empty ``rows``, naming a missing key or a bad value, or naming ``path``
            for a suffix matplotlib cannot write.
    """
    path = _check_path(path)
    rows = mean_over_seeds(_check_rows(rows, ("width_mult", "resolution", "params", "top1"),
                                       positive=("params",)))
    xs = [_num(rows, i, "params") / 1e6 for i in range(len(rows))]
    ys = [_num(rows, i, "top1") for i in range(len(rows))]
    fig, ax = _new_axes()
    _scatter_groups(ax, rows, xs, ys, "resolution", lambda v: f"{v:g} px")
    _finish(ax, "Parameters (millions, log scale)", "Top-1 accuracy (%)",
            title or "Accuracy vs parameters", log_x=True)
    return _save(fig, path)


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
    path = _check_path(path)
    rows = _check_rows(rows, (x_key, y_key), positive=(x_key,) if log_x else ())
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
                or not math.isfinite(budget) or (log_x and budget <= 0):
            raise ValueError(f"budget must be a finite number{' > 0 with log_x' if log_x else ''}"
                             f" or None, got {budget!r}")
    frontier = pareto_frontier(rows, x_key, y_key)
    xs = [_num(rows, i, x_key) for i in range(len(rows))]
    ys = [_num(rows, i, y_key) for i in range(len(rows))]
    fig, ax = _new_axes()
    ax.scatter(xs, ys, s=25, color="0.6", zorder=2, label="models")
    if group_key is None:
        for row, x, y in zip(rows, xs, ys):
            _annotate(ax, row, x, y)
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
    _finish(ax, x_label, y_label, title or f"Accuracy vs {x_label}", log_x=log_x)
    _save(fig, path)
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
    path = _check_path(path)
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
    return _save(fig, path)


def plot_prediction(image, labels: Sequence[str], probabilities: Sequence[float],
                    path: str | os.PathLike, title: str | None = None) -> Path:
    """An image beside its top-k labels as bars of probability (``mobilenets predict``'s picture).

    Args:
        image: uint8 pixels, (H, W) grey, (1 or 3, H, W) or (H, W, 3) RGB (tensor or array).
        labels: The k labels, most probable first.
        probabilities: Their probabilities, in [0, 1].
        path: The image file to write (PNG, ...); its suffix picks the format.
        title: Above the image, e.g. its file name. Default none.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: if ``labels`` and ``probabilities`` differ in length or are empty, or naming
            ``path`` for a suffix matplotlib cannot write.
    """
    path = _check_path(path)
    if not labels or len(labels) != len(probabilities):
        raise ValueError(f"labels and probabilities must be non-empty and of equal length, got "
                         f"{len(labels)} and {len(probabilities)}")
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    fig = Figure(figsize=(7.2, 3.2))
    FigureCanvasAgg(fig)
    ax_img, ax_bar = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax_img.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
    ax_img.set_axis_off()
    if title:
        ax_img.set_title(title, fontsize=9)
    ys = np.arange(len(labels))[::-1]
    probs = [100 * float(p) for p in probabilities]
    ax_bar.barh(ys, probs, color=["tab:blue"] + ["0.6"] * (len(probs) - 1))
    ax_bar.set_yticks(ys, [str(x) for x in labels])
    ax_bar.set_xlim(0, 100)
    ax_bar.set_xlabel("Probability (%)")
    for y, p in zip(ys, probs):
        inside = p > 80  # a long bar holds its own label
        ax_bar.annotate(f"{p:.1f}%", (min(p, 100), y), xytext=(-3 if inside else 3, 0),
                        textcoords="offset points", va="center", ha="right" if inside else "left",
                        color="white" if inside else "black", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# -- helpers ---------------------------------------------------------------------------------------

def _check_rows(rows, keys: Sequence[str], positive: Sequence[str] = ()) -> list[Mapping]:
    """``rows`` as a list, after checking each holds every key with a finite number."""
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


def _check_path(path) -> Path:
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
        return f"{v2}{_alpha(row['width_mult'])}-{_g(row['resolution'])}"
    return "" if row.get("label") is None else str(row["label"])


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _g(v) -> str:
    """160 -> "160", 160.0 -> "160"; anything not a number as str()."""
    return f"{v:g}" if _is_num(v) else str(v)


def _alpha(v) -> str:
    """A width multiplier as the paper writes it: 1 -> "1.0", 0.75 -> "0.75"."""
    return str(float(v)) if _is_num(v) else str(v)


def _annotate(ax, row: Mapping, x: float, y: float) -> None:
    text = _label(row)
    if text:
        ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)


def _new_axes():
    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: Agg, no display
    return fig, fig.add_subplot()


def _scatter_groups(ax, rows, xs, ys, key: str, legend) -> None:
    """One colour per distinct ``row[key]`` (largest first in the legend), each point labelled."""
    values = sorted({float(r[key]) for r in rows}, reverse=True)
    cmap = colormaps["tab10"] if len(values) <= 10 else colormaps["viridis"].resampled(len(values))
    for j, v in enumerate(values):
        idx = [i for i, r in enumerate(rows) if float(r[key]) == v]
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=30, color=cmap(j), zorder=2,
                   label=legend(v))
    for row, x, y in zip(rows, xs, ys):
        _annotate(ax, row, x, y)


class _PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers (0.6, 40, 200)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _finish(ax, x_label: str, y_label: str, title: str, log_x: bool) -> None:
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


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (``checkpoint.atomic_path``). The temporary name
    ends in ".tmp", so the format is passed explicitly, from the real suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=DPI)
    return path
