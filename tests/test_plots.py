"""Figures 4 and 5, the frontier plot and the log-linear fit: valid images, written atomically,
and the numbers behind them checked by hand."""
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from mobilenets.engine import plots
from mobilenets.engine.plots import pareto_frontier, plot_frontier
from mobilenets.tasks.classification import figures
from mobilenets.tasks.classification.figures import (loglinear_fit, plot_accuracy_vs_madds,
                                                     plot_accuracy_vs_params)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(alpha, res, madds_m, params_m, top1, **extra):
    return {"width_mult": alpha, "resolution": res, "madds": madds_m * 1e6,
            "params": params_m * 1e6, "top1": top1, **extra}


# The paper's printed ImageNet figures (Tables 6, 7 and 9).
PAPER_ROWS = [
    _row(1.0, 224, 569, 4.2, 70.6), _row(0.75, 224, 325, 2.6, 68.4), _row(0.5, 224, 149, 1.3, 63.7),
    _row(0.25, 224, 41, 0.5, 50.6), _row(1.0, 192, 418, 4.2, 69.1), _row(1.0, 160, 290, 4.2, 67.2),
    _row(1.0, 128, 186, 4.2, 64.4), _row(0.5, 160, 76, 1.32, 60.2, label="0.5 MobileNet-160"),
]


def numpy_fit(rows) -> tuple[float, float, float]:
    """NumPy's least-squares line through (log10 Mult-Adds in millions, top-1), with its R²: the
    fit Figure 4 should report, computed without the code under test."""
    lx = np.log10([r["madds"] / 1e6 for r in rows])
    ys = np.array([r["top1"] for r in rows])
    b, a = np.polyfit(lx, ys, 1)
    return a, b, np.corrcoef(lx, ys)[0, 1] ** 2


@pytest.fixture(autouse=True)
def _low_dpi(monkeypatch):
    monkeypatch.setattr(plots, "DPI", 60)  # the same drawing, fewer pixels: faster tests


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # axes, points and text, not an empty canvas
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_loglinear_fit_recovers_an_exact_line():
    xs = [30e6, 75e6, 2e8, 5.7e8, 1.1e9]
    ys = [-12.5 + 8.25 * math.log10(x) for x in xs]
    a, b, r2 = loglinear_fit(xs, ys)
    assert a == pytest.approx(-12.5) and b == pytest.approx(8.25) and r2 == pytest.approx(1.0)
    assert loglinear_fit([10, 100], [5.0, 5.0]) == (5.0, 0.0, 1.0)  # constant y: b = 0, perfect


def test_loglinear_fit_matches_numpy_on_noisy_data():
    xs = np.array([41, 76, 149, 186, 290, 325, 418, 569], dtype=float)
    ys = np.array([50.6, 60.2, 63.7, 64.4, 67.2, 68.4, 69.1, 70.6])
    a, b, r2 = loglinear_fit(xs, ys)
    b_np, a_np = np.polyfit(np.log10(xs), ys, 1)
    assert (a, b) == pytest.approx((a_np, b_np))
    assert r2 == pytest.approx(np.corrcoef(np.log10(xs), ys)[0, 1] ** 2)  # R² of a 1-D fit
    assert 0.9 < r2 < 1.0


@pytest.mark.parametrize("xs, ys, pattern", [
    ([1, 10], [1, 2, 3], r"^xs and ys must be 1-D and of equal length"),
    ([0, 10], [1, 2], r"^xs must all be positive"),
    ([10, 10, 10], [1, 2, 3], r"^xs must hold at least two distinct values"),
    ([1, 10], [1, float("nan")], r"^ys must all be finite"),
])
def test_loglinear_fit_errors(xs, ys, pattern):
    with pytest.raises(ValueError, match=pattern):
        loglinear_fit(xs, ys)


def test_figure_4_writes_a_png_and_returns_the_fit(tmp_path):
    path = tmp_path / "new" / "dirs" / "fig4.png"  # parents are created
    a, b, r2 = plot_accuracy_vs_madds(PAPER_ROWS, path, title="Figure 4")
    _assert_png(path)
    # The fit is over Mult-Adds in millions, as on the axis.
    assert (a, b, r2) == pytest.approx(numpy_fit(PAPER_ROWS))
    assert 0.9 < r2 < 1.0


def test_figure_4_with_a_single_model_has_no_fit(tmp_path):
    fit = plot_accuracy_vs_madds(PAPER_ROWS[:1], tmp_path / "one.png")
    assert all(math.isnan(v) for v in fit)
    _assert_png(tmp_path / "one.png")


def test_figure_5_writes_a_png(tmp_path):
    path = tmp_path / "fig5.png"
    assert plot_accuracy_vs_params(PAPER_ROWS, str(path)) == path
    _assert_png(path)


def test_the_suffix_picks_the_format(tmp_path):
    plot_accuracy_vs_params(PAPER_ROWS, tmp_path / "fig5.svg")
    assert (tmp_path / "fig5.svg").read_bytes().lstrip().startswith(b"<?xml")


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "fig4.png"
    path.write_bytes(b"previous")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"half an image")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_accuracy_vs_madds(PAPER_ROWS, path)
    assert path.read_bytes() == b"previous"  # the target is untouched...
    assert [p.name for p in tmp_path.iterdir()] == ["fig4.png"]  # ...and the temporary file gone


@pytest.mark.parametrize("rows, pattern", [
    ([], r"^rows is empty"),
    ([{k: v for k, v in PAPER_ROWS[0].items() if k != "madds"}],
     r"^rows\[0\] is missing key 'madds'"),
    ([PAPER_ROWS[0], {**PAPER_ROWS[1], "top1": None}], r"^rows\[1\]\['top1'\] must be a finite"),
    ([{**PAPER_ROWS[0], "madds": 0}], r"^rows\[0\]\['madds'\] must be > 0 for a log scale"),
    (PAPER_ROWS[0], r"^rows must be a sequence of dicts"),
])
def test_figure_4_rejects_bad_rows(tmp_path, rows, pattern):
    with pytest.raises(ValueError, match=pattern):
        plot_accuracy_vs_madds(rows, tmp_path / "fig4.png")
    assert not list(tmp_path.iterdir())


def test_figure_5_names_its_missing_key(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "params"} for r in PAPER_ROWS]
    with pytest.raises(ValueError, match=r"missing key 'params'"):
        plot_accuracy_vs_params(rows, tmp_path / "fig5.png")
    with pytest.raises(ValueError, match=r"^path must end in an image suffix"):
        plot_accuracy_vs_params(PAPER_ROWS, tmp_path / "fig5.txt")


# A hand-made frontier: lower latency is better, higher accuracy is better.
FRONT_ROWS = [
    {"label": "a", "latency_ms": 1.0, "top1": 50.0},
    {"label": "b", "latency_ms": 2.0, "top1": 45.0},  # beaten by a (cheaper and better)
    {"label": "c", "latency_ms": 2.0, "top1": 60.0},
    {"label": "d", "latency_ms": 3.0, "top1": 60.0},  # as good as c, but costlier
    {"label": "e", "latency_ms": 4.0, "top1": 70.0},
    {"label": "f", "latency_ms": 0.5, "top1": 40.0},
    {"label": "g", "latency_ms": 5.0, "top1": 65.0},  # beaten by e
    {"label": "h", "latency_ms": 1.0, "top1": 50.0},  # a tie with a: the first one is kept
]


def test_pareto_frontier_hand_example():
    front = pareto_frontier(FRONT_ROWS, "latency_ms")
    assert [r["label"] for r in front] == ["f", "a", "c", "e"]
    assert front[1] is FRONT_ROWS[0]  # the rows themselves


def test_plot_frontier_returns_the_frontier(tmp_path):
    path = tmp_path / "frontier.png"
    front = plot_frontier(FRONT_ROWS, path, "latency_ms", "Latency (ms)", budget=3.5)
    assert [r["label"] for r in front] == ["f", "a", "c", "e"]
    _assert_png(path)
    # A budget below every model: no star, and a log axis.
    plot_frontier(FRONT_ROWS, path, "latency_ms", "Latency (ms)", budget=0.1, log_x=True)
    _assert_png(path)


def test_plot_frontier_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^rows\[0\] is missing key 'latency_ms'"):
        plot_frontier([{"top1": 1.0}], tmp_path / "f.png", "latency_ms", "Latency (ms)")
    with pytest.raises(ValueError, match=r"^budget must be a finite number"):
        plot_frontier(FRONT_ROWS, tmp_path / "f.png", "latency_ms", "ms", budget=float("inf"))
    with pytest.raises(ValueError, match=r"^budget must be a finite number > 0 with log_x"):
        plot_frontier(FRONT_ROWS, tmp_path / "f.png", "latency_ms", "ms", budget=0, log_x=True)
    assert not list(tmp_path.iterdir())


def test_figure_4_with_seeds_fits_the_means_and_draws_a_band(tmp_path):
    # Each paper point twice, 1 point above and below: the means are the paper's numbers.
    rows = [{**r, "seed": s, "top1": r["top1"] + d} for r in PAPER_ROWS
            for s, d in ((0, -1.0), (1, 1.0))]
    merged = figures.mean_over_seeds(rows)
    assert len(merged) == len(PAPER_ROWS)
    assert [m["top1"] for m in merged] == pytest.approx([r["top1"] for r in PAPER_ROWS])
    assert {m["seeds"] for m in merged} == {2} and merged[0]["top1_std"] == pytest.approx(2 ** 0.5)
    fit = plot_accuracy_vs_madds(rows, tmp_path / "fig4.png")
    _assert_png(tmp_path / "fig4.png")
    assert fit == pytest.approx(numpy_fit(PAPER_ROWS))
    lx = np.log10([r["madds"] / 1e6 for r in PAPER_ROWS])
    band = figures.loglinear_band([r["madds"] / 1e6 for r in PAPER_ROWS],
                                [r["top1"] for r in PAPER_ROWS], fit[0], fit[1], lx)
    assert (band > 0).all() and band.argmin() == np.abs(lx - lx.mean()).argmin()  # narrowest mid
