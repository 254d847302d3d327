"""Machine-aware int8: how many leading layers stay fp32 (``float_layers``), chosen by measuring
on this machine rather than fixed.

Why it depends on the machine: the first layers have few channels at full resolution. On AVX2
CPUs without VNNI, ONNX Runtime's int8 kernels are *slower* than fp32 there
(``benchmarks/results/ort_layers.md``), so keeping them fp32 is faster as well as more accurate.
With AVX-512 VNNI every int8 layer is faster and the choice moves the whole model little
(``docs/deployment.md``, "Machine-aware int8"). ``choose_float_layers`` exports the candidates,
times them interleaved (process CPU time, so other people's load does not decide) and keeps the
fastest whose top-1 agreement with fp32 is within ``agreement_slack`` of the best candidate's.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilenets.deploy.backends import BACKENDS
from mobilenets.deploy.bench import Prepared, time_interleaved
from mobilenets.deploy.machine import cpu_info, restores_threads


def int8_formats() -> tuple[str, ...]:
    """The backends ``float_layers`` applies to: the int8 ones (ONNX Runtime's, the PT2E ones,
    OpenVINO's)."""
    return tuple(b.name for b in BACKENDS.values() if "float_layers" in b.options)


@restores_threads
def choose_float_layers(model: nn.Module, fmt: str, calibration: list[torch.Tensor], *,
                        candidates=(0, 1, 2), float_classifier: bool = True,
                        threads: int | None = None, rounds: int = 5, iters: int = 10,
                        agreement_slack: float = 0.005, check_inputs: torch.Tensor | None = None,
                        progress: Callable[[str], None] | None = None) -> tuple[int, list[dict]]:
    """The number of leading conv blocks to keep fp32 in ``fmt``'s int8 file, measured here.

    Args:
        model: The float model (its ``config.resolution`` is the input size).
        fmt: An int8 backend (``int8_formats``): ``"int8"`` (ONNX Runtime),
            ``"executorch-int8"``, ``"litert-int8"`` or ``"openvino-int8"``.
        calibration: Real preprocessed batches of the user's data.
        candidates: The ``float_layers`` values to try. Default 0, 1, 2.
        float_classifier: Keep the classifier fp32 in every candidate. Default True.
        threads: Threads of the timing. Default: torch's.
        rounds: Interleaved timing rounds. Default 5.
        iters: Calls per candidate per round. Default 10.
        agreement_slack: A candidate qualifies when its top-1 agreement with fp32 is at least the
            best candidate's minus this. Default 0.005 (half a point).
        check_inputs: Real images for the agreement. Default: the first calibration batch.
        progress: Called with a line of text as the work advances.

    Returns:
        (float_layers, rows): the choice and one row per candidate with ``float_layers``,
        ``cpu_ms`` and ``wall_ms`` (medians per batch-1 call), ``top1_agreement``, ``chosen``,
        and the machine's ``cpu`` and ``isa``.

    Raises:
        ValueError: for another ``fmt`` or no candidate.
    """
    if fmt not in int8_formats():
        raise ValueError(f"--float-layers auto is for int8 formats ({', '.join(int8_formats())}"
                         f"), not {fmt!r}")
    if not candidates:
        raise ValueError("give at least one float_layers candidate")
    if threads:
        torch.set_num_threads(threads)
    say = progress or (lambda s: None)
    res = model.config.input_size
    x = torch.randn(1, model.config.in_channels, res, res)
    check_inputs = calibration[0] if check_inputs is None else check_inputs
    rows, prepared, backend = [], [], BACKENDS[fmt]
    with tempfile.TemporaryDirectory(prefix="mobilenets-tune-") as tmp:
        for n in candidates:
            say(f"float_layers {n}: exporting {fmt}")
            path = Path(tmp) / f"f{n}{backend.suffix}"
            report = backend.export(model, path, calibration, min_top1_agreement=0.0,
                                    float_layers=n, float_classifier=float_classifier,
                                    check_inputs=check_inputs)
            prepared.append(Prepared(str(n), backend.load(path)))
            rows.append({"float_layers": n, "top1_agreement": report.top1_agreement})
        say(f"timing {len(prepared)} candidates, {rounds} rounds x {iters} calls")
        cpu: dict = {}
        wall = time_interleaved(prepared, x, rounds, iters, cpu=cpu)
    machine = cpu_info()
    for row in rows:
        row["cpu_ms"] = round(statistics.median(cpu[str(row["float_layers"])]) * 1e3, 3)
        row["wall_ms"] = round(statistics.median(wall[str(row["float_layers"])]) * 1e3, 3)
        row.update(cpu=machine["cpu"], isa="+".join(machine["isa"]))
    best = max(r["top1_agreement"] for r in rows)
    qualified = [r for r in rows if r["top1_agreement"] >= best - agreement_slack]
    choice = min(qualified, key=lambda r: (r["cpu_ms"], -r["float_layers"]))
    for row in rows:
        row["chosen"] = row is choice
    return choice["float_layers"], rows

