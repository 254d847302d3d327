"""The paper's Figures 4 and 5 for a sweep of trained classifiers (accuracy against Mult-Adds and
against parameters), the log-linear fit behind Figure 4, and ``mobilenets predict``'s picture of
an image beside its top-k labels.

Drawn with ``engine.plots``'s steps (Agg canvas, atomic writes). A row is a dict describing one
trained model, with the keys of ``engine.plots`` and:

- ``madds``: Mult-Adds per image, an absolute count (plotted in millions);
- ``params``: parameters, an absolute count (plotted in millions);
- ``seed`` (optional): rows that differ only in it are one model trained several times.
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

from mobilenets.engine.plots import (annotate_point, check_figure_path, check_rows, finish_axes,
                                     format_alpha, new_axes, save_figure)


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
    path, rows, xs, ys, fig, ax = _accuracy_figure(rows, path, "madds", "width_mult",
                                                   lambda v: f"α = {format_alpha(v)}")
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
    finish_axes(ax, "Mult-Adds (millions, log scale)", "Top-1 accuracy (%)",
                title or "Accuracy vs Mult-Adds", log_x=True)
    save_figure(fig, path)
    return a, b, r2


def _accuracy_figure(rows: Sequence[Mapping], path, x_key: str, group_key: str, legend):
    """Figures 4 and 5 up to their own marks: ``path`` checked, the rows checked (``x_key``
    positive) and averaged over seeds, their points (``x_key`` in millions, top-1) scattered in
    groups of ``group_key``. Returns ``(path, rows, xs, ys, fig, ax)``."""
    path = check_figure_path(path)
    rows = mean_over_seeds(check_rows(rows, ("width_mult", "resolution", x_key, "top1"),
                                      positive=(x_key,)))
    xs, ys = [float(r[x_key]) / 1e6 for r in rows], [float(r["top1"]) for r in rows]
    fig, ax = new_axes()
    _scatter_groups(ax, rows, xs, ys, group_key, legend)
    return path, rows, xs, ys, fig, ax


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
    path, rows, xs, ys, fig, ax = _accuracy_figure(rows, path, "params", "resolution",
                                                   lambda v: f"{v:g} px")
    finish_axes(ax, "Parameters (millions, log scale)", "Top-1 accuracy (%)",
                title or "Accuracy vs parameters", log_x=True)
    return save_figure(fig, path)


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
    path = check_figure_path(path)
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
    return save_figure(fig, path)


def _scatter_groups(ax, rows, xs, ys, key: str, legend) -> None:
    """One colour per distinct ``row[key]`` (largest first in the legend), each point labelled."""
    values = sorted({float(r[key]) for r in rows}, reverse=True)
    cmap = colormaps["tab10"] if len(values) <= 10 else colormaps["viridis"].resampled(len(values))
    for j, v in enumerate(values):
        idx = [i for i, r in enumerate(rows) if float(r[key]) == v]
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=30, color=cmap(j), zorder=2,
                   label=legend(v))
    for row, x, y in zip(rows, xs, ys):
        annotate_point(ax, row, x, y)
