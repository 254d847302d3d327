"""Judging timings against targets: per-round figures of an interleaved timing, the sign test on
paired rounds, and the latency targets of the phone runtimes (issue 16) judged on them.

A timing that runs every contender once per round (``bench.time_interleaved``) gives paired
samples: round r of ours and round r of the peer saw the same machine. "Ours is no slower" is
then judged on the pairs, not on two medians: on a shared CPU the medians of two near-equal
contenders land either way from one run to the next, while a contender that is slower in
significantly many rounds is slower.
"""
from __future__ import annotations

import math
import statistics

from mobilenets.deploy.backends import fp32_backend

#: The fp32 GEMM timed beside the models as the floor (``bench.ort_matmul``): n x n times n x n.
GEMM_N = 1024


def per_round(samples: list[float], iters: int) -> list[float]:
    """The median of each round's calls, in milliseconds.

    Args:
        samples: Seconds per call of one contender, as ``bench.time_interleaved`` returns them:
            ``iters`` consecutive calls per round, round after round.
        iters: Calls per round.

    Returns:
        One figure per round (ms, rounded to 4 decimals), in round order: the samples paired
        with another contender's round by round.

    Example:
        >>> per_round([0.001, 0.003, 0.002, 0.004, 0.006, 0.005], 3)
        [2.0, 5.0]
    """
    return [round(statistics.median(samples[i:i + iters]) * 1e3, 4)
            for i in range(0, len(samples), iters)]


def sign_test(ours: list[float], peer: list[float]) -> tuple[int, int, float]:
    """The one-sided sign test of "ours is slower" on paired rounds.

    Args:
        ours: Our time per round.
        peer: The peer's time in the same rounds (the same length; pairs past the shorter one
            are ignored).

    Returns:
        ``(k, n, p)``: the rounds in which ours was slower, the rounds compared (ties carry no
        evidence and are left out), and the chance of at least ``k`` slower rounds of ``n`` if
        neither is slower (binomial, one half). ``(0, 0, 1.0)`` when every pair ties.

    Example:
        >>> sign_test([2.0, 3.0, 1.0], [1.0, 1.0, 1.0])  # slower twice, one tie
        (2, 2, 0.25)
    """
    pairs = [(a, b) for a, b in zip(ours, peer) if a != b]
    k, n = sum(a > b for a, b in pairs), len(pairs)
    return k, n, sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n if n else 1.0


def latency_checks(rows: list[dict], madds: int, key: str, best_floor_ms: float
                   ) -> tuple[list[dict], float]:
    """The phone-runtime latency targets (issue 16) of one timing.

    For each of our fp32 runtimes: time over the fp32 floor <= 1.15, and no slower than the
    same runtime on timm's model (the same graph but for ReLU6): met when ours is not slower by
    the medians, or, with per-round figures, not slower in significantly many paired rounds
    (``sign_test``, p >= 0.05). For each int8 runtime: time <= 0.35x our time on its fp32
    runtime (``backends.fp32_backend``).

    Args:
        rows: One timing's rows, dicts with ``model`` ("ours", "timm", or "gemm" for the GEMM
            timed in the same rounds), ``backend``, ``precision`` and the figure ``key``; with
            ``round_<key>`` (``per_round``) the timm comparison is judged on paired rounds.
        madds: Our model's Mult-Adds.
        key: The figure judged: ``"cpu_ms"`` (process CPU time per call) or ``"wall_ms"``.
        best_floor_ms: The floor of a timing without a GEMM row (``2 * madds`` at the best
            GEMM rate measured before the rounds).

    Returns:
        ``(checks, floor_ms)``: a dict per target (``target``, ``value``, ``met``, and
        ``slower rounds`` where judged on rounds), and the floor judged against: ``madds``
        at the rate of the ``GEMM_N``-cube GEMM timed in the same rounds by the same statistic,
        else ``best_floor_ms``.

    Raises:
        KeyError: if an fp32 row of ours has no timm row on the same backend.
    """
    what = "CPU ms" if key == "cpu_ms" else "wall ms"
    by = {(r["model"], r["backend"]): r for r in rows}
    gemm = by.get(("gemm", "onnxruntime"))
    floor_ms = madds * gemm[key] / GEMM_N ** 3 if gemm else best_floor_ms
    checks = []
    for (model, b), r in by.items():
        if model != "ours":
            continue
        if r["precision"] == "fp32":
            checks.append({"target": f"{b}: fp32 {what} / floor <= 1.15",
                           "value": round(r[key] / floor_ms, 3), "met": r[key] <= 1.15 * floor_ms})
            # The two graphs differ only in ReLU against ReLU6 (timm), so "no slower" is judged
            # on the paired rounds: met unless ours was slower in significantly many (sign test).
            t = by[("timm", b)]
            check = {"target": f"{b}: ours / timm's model, {what} <= 1.0",
                     "value": round(r[key] / t[key], 3), "met": r[key] <= t[key]}
            rk = "round_" + key
            if rk in r and rk in t:
                k, n, p = sign_test(r[rk], t[rk])
                check["slower rounds"] = f"{k}/{n}, p={p:.2f}"
                check["met"] = check["met"] or p >= 0.05
            checks.append(check)
        elif r["precision"] == "int8":
            fp32 = fp32_backend(b)
            if ("ours", fp32) in by:
                ratio = r[key] / by[("ours", fp32)][key]
                checks.append({"target": f"{b}: int8 / our {fp32} fp32, {what} <= 0.35",
                               "value": round(ratio, 3), "met": ratio <= 0.35})
    return checks, floor_ms


def checks_over_repeats(judged: list[list[dict]]) -> list[dict]:
    """The targets of a timing repeated several times, one row per target.

    Args:
        judged: The checks of each repeat (``latency_checks``), the same targets in the same
            order in each.

    Returns:
        Dicts with ``target``, ``values`` (each repeat's value, space-separated), their
        ``median`` and ``met`` ("K of N": the repeats that met it). This machine's speed, and
        the ratio of a model's time to the GEMM's, drift within an hour, so one timing can land
        either side of a target at its edge.

    Example:
        >>> checks_over_repeats([[{"target": "t", "value": 1.1, "met": True}],
        ...                      [{"target": "t", "value": 1.2, "met": False}]])
        [{'target': 't', 'values': '1.1 1.2', 'median': 1.15, 'met': '1 of 2'}]
    """
    rows = []
    for i, c in enumerate(judged[0]):
        values = [checks[i]["value"] for checks in judged]
        met = sum(checks[i]["met"] for checks in judged)
        rows.append({"target": c["target"], "values": " ".join(f"{v:g}" for v in values),
                     "median": round(statistics.median(values), 3),
                     "met": f"{met} of {len(judged)}"})
    return rows
