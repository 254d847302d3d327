"""``pick``: the most accurate MobileNet within a latency, size and compute budget, with latency
measured on this machine for every runtime and precision asked for (``bench.BACKENDS``: torch,
ONNX Runtime fp32/int8, ExecuTorch, LiteRT, OpenVINO fp32/bf16), all timed interleaved in one
run; and the accuracy-against-measured-latency frontier, one curve per runtime/precision.

No library draws this frontier, and it matters: on some CPUs int8 is slower than fp32, on
others 3x faster, and the runtimes differ by up to 2x on the same file.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch

from mobilenets.checks import check_int
from mobilenets.deploy.bench import (PRECISIONS, SPIN_PAUSE_S, calibration_images, check_backends,
                                     export_backends, load_backend, model_from_spec,
                                     time_interleaved)
from mobilenets.deploy.machine import restores_threads, usable_cores
from mobilenets.deploy.peers import PEERS

#: Calibration images of pick's int8 exports (latency only: ``export`` calibrates on 512).
PICK_CALIBRATION = 16


def candidates(accuracy_csv: str | None = None, arch: str | None = None) -> list[dict]:
    """The models ``pick`` chooses among, with their accuracy and its source.

    With ``accuracy_csv`` (a ``mobilenets sweep`` CSV): its grid points (only those of ``arch``
    when given), with the top-1 measured on the user's data and the trained model files when they
    still exist. Otherwise the registered variants of ``arch`` (default ``"v1"``) with ImageNet
    top-1: the paper's figure where it prints one, else TF-Slim's released checkpoint's. V1: the 16
    alpha x resolution variants (paper Tables 6-9, ``research/slim/nets/mobilenet_v1.md``). V2: the
    22 registered variants (MobileNetV2's Table 4 for 1.0 and 1.4 at 224; the others from
    ``research/slim/nets/mobilenet/README.md``, see ``registry._RELEASED_TOP1_V2``). ShuffleNet:
    the registered variants with a published top-1 (ShuffleNet's Tables 1, 2 and 5).
    """
    from mobilenets.models.registry import MODELS, arch_name, list_models, variant_name

    if accuracy_csv:
        from mobilenets.engine.results import read_sweep_rows

        if not Path(accuracy_csv).is_file():
            raise FileNotFoundError(f"--accuracy file not found: {accuracy_csv}")
        rows = read_sweep_rows(accuracy_csv)
        if arch:
            rows = [r for r in rows if r["arch"] == arch_name(arch)]
        if not rows:
            raise ValueError(f"--accuracy {accuracy_csv} holds no sweep rows"
                             + (f" of --arch {arch}" if arch else ""))
        out = []
        for r in rows:
            label = variant_name(f"{r['arch']}_1.0_224", r["width_mult"], r["resolution"])
            spec = {"label": label, "arch": r["arch"], "width_mult": r["width_mult"],
                    "resolution": r["resolution"],
                    "top1": r["top1"], "accuracy_source": f"sweep ({Path(accuracy_csv).name})"}
            if r.get("model_path") and Path(r["model_path"]).is_file():
                spec["model_file"] = r["model_path"]
            else:
                spec["arch_kwargs"] = {"width_mult": r["width_mult"], "num_classes": 10}
            out.append(spec)
        return out
    out = []
    arch = arch_name(arch or "v1")
    for name in list_models(f"{arch}_*"):
        spec = MODELS[name]
        a = spec.config.width_mult
        if "width_mult" not in spec.name_fields:  # V1's ablation baselines: not a grid point
            continue
        top1, source = (spec.paper["top1"], "paper") if spec.paper else \
            (spec.released_top1, "TF-Slim release")
        if top1 is None:  # ShuffleNet's unpublished grid points: nothing to choose them by
            continue
        out.append({"label": name, "name": name, "arch": arch,
                    "width_mult": a, "resolution": spec.resolution, "top1": top1,
                    "accuracy_source": source})
    return out


@restores_threads
def pick(latency_ms: float | None = None, max_params: float | None = None,
         max_madds: float | None = None, backend="onnx", accuracy_csv: str | None = None,
         threads: int = 2, rounds: int = 5, iters: int = 5, plot: str | None = None,
         calibration_data: str = "fashion-mnist", arch: str | None = None,
         progress: Callable[[str], None] | None = None, export_workers: int | None = None,
         ort_spinning: bool = False) -> tuple[list[dict], dict]:
    """Choose the most accurate MobileNet within a latency, size and compute budget, measuring the
    latency of every candidate on every runtime asked for, on this machine: the paper's promise,
    made measurable.

    Args:
        latency_ms: Largest median batch-1 latency allowed, in ms (> 0). Default: no limit.
        max_params: Largest parameter count (conv + FC weights, the paper's count). Default none.
        max_madds: Largest Mult-Adds per image. Default none.
        backend: Where latency is measured: a name from ``BACKENDS`` (not a peer), a list of
            them or a comma-separated string (``"onnx,int8,litert,litert-int8"``; ``"all"``:
            every backend installed). Every candidate is timed on each. Default ``"onnx"``.
        accuracy_csv: A ``mobilenets sweep`` CSV to take candidates and accuracy from; default the
            registered ImageNet variants of ``arch`` (see ``candidates``).
        threads: Intra-op threads. Default 2.
        rounds: Interleaved timing rounds over all candidates. Default 5.
        iters: Calls per candidate per round. Default 5.
        plot: Write the accuracy-against-measured-latency frontier to this PNG, one curve per
            backend. Default none.
        calibration_data: Calibration data of the int8 backends. Default Fashion-MNIST.
        arch: ``"v1"``, ``"v2"`` or ``"shufflenet_v1"``: choose among that architecture's
            variants (or sweep rows). Default: V1's registered variants, or every sweep row.
        progress: Called with a line of text as the work advances.
        export_workers: Processes that write the candidates' files at once (exports are
            single-threaded). Default: the cores this process may use.
        ort_spinning: Let ONNX Runtime's idle threads spin between calls. Default False: many
            sessions take turns on the same cores, and an idle session's spinning threads slow
            the timed one (by up to 3x for mid-sized models).

    Returns:
        (rows, choice): every (candidate, backend) with ``backend``, ``precision``,
        ``latency_ms``, ``cpu_ms``, ``params``, ``madds``, ``fits``, and the chosen row (the most
        accurate that fits; the faster on a tie). A row's ``top1`` is the candidate's fp32
        accuracy (``accuracy_source``): int8 and bf16 rows carry it unchanged, so measure their
        drop with ``mobilenets export --evaluate``.

    Raises:
        ValueError: if no budget is given, a budget is not > 0, a backend is unknown or a peer,
            or no candidate fits (the message names the fastest).
    """
    from mobilenets.cost.profiler import profile_model
    from mobilenets.models.registry import ARCHS

    budgets = {"latency_ms": latency_ms, "max_params": max_params, "max_madds": max_madds}
    if all(v is None for v in budgets.values()):
        raise ValueError("give at least one budget: --latency-ms, --max-params or --max-madds")
    for k, v in budgets.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"--{k.replace('_', '-')} must be a number > 0, got {v!r}")
    if export_workers is not None:
        check_int("--export-workers", export_workers)
    backends = check_backends(backend)
    for b in backends:
        if b in PEERS:
            raise ValueError(f"--backend {b!r} is a peer; pick measures our own backends")
    say = progress or (lambda s: None)
    torch.set_num_threads(threads)
    models = candidates(accuracy_csv, arch)
    rows, jobs, inputs = [], [], {}
    with tempfile.TemporaryDirectory(prefix="mobilenets-pick-") as tmp:
        for i, cand in enumerate(models):
            if "model_file" in cand or "name" in cand:
                model = model_from_spec(cand)
            else:
                model = ARCHS[cand["arch"]](**cand["arch_kwargs"]).eval()
            model.config.resolution = cand["resolution"]
            shape = (model.config.in_channels, cand["resolution"], cand["resolution"])
            prof = profile_model(model, shape)
            cand.pop("arch_kwargs", None)
            calibration = None
            if any(PRECISIONS.get(b) == "int8" for b in backends):
                # Latency only (int8 rows carry the fp32 top-1): the scales do not change the
                # kernels' speed, and 16 images calibrate 1.6x faster than 64.
                calibration = calibration_images(calibration_data, shape, PICK_CALIBRATION)
            for b in backends:
                workdir = Path(tmp) / f"{i}-{b}"
                workdir.mkdir()
                jobs.append((b, model, shape, workdir, calibration))
                rows.append({**cand, "backend": b, "precision": PRECISIONS.get(b, "fp32"),
                             "params": prof.layer_params, "madds": prof.total_madds,
                             "key": f"{cand['label']}@{b}"})
        workers = export_workers or usable_cores()
        say(f"exporting {len(jobs)} candidates x backends in {workers} process(es)")
        files = export_backends(jobs, workers, done=lambda i, f: say(
            f"exported {rows[i]['key']}") if f else None)
        prepared = []
        for job, row, f in zip(jobs, rows, files):
            say(f"loading {row['key']}")
            p = load_backend(job[0], job[1], job[2], f, ort_spinning)
            p.name = row["key"]
            prepared.append(p)
            inputs[p.name] = torch.randn(1, *job[2])
        say(f"timing {len(prepared)} candidates x backends, {rounds} rounds x {iters} calls")
        cpu = {}
        samples = time_interleaved(prepared, inputs, rounds, iters, cpu=cpu,
                                   pause=SPIN_PAUSE_S if ort_spinning else 0.0)
    for row in rows:
        key = row.pop("key")
        row["latency_ms"] = round(statistics.median(samples[key]) * 1e3, 3)
        row["cpu_ms"] = round(statistics.median(cpu[key]) * 1e3, 3)
        row["fits"] = ((latency_ms is None or row["latency_ms"] <= latency_ms)
                       and (max_params is None or row["params"] <= max_params)
                       and (max_madds is None or row["madds"] <= max_madds))
    if plot:
        from mobilenets.engine.plots import plot_frontier

        plot_frontier(rows, plot, "latency_ms", f"Measured latency (ms), batch 1, {threads} "
                      f"thread(s)", budget=latency_ms, group_key="backend",
                      title="Accuracy vs latency on this machine, per runtime and precision")
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        fastest = min(rows, key=lambda r: r["latency_ms"])
        raise ValueError(f"no candidate fits the budget; the fastest is {fastest['label']} on "
                         f"{fastest['backend']} at {fastest['latency_ms']:.2f} ms, "
                         f"{fastest['params'] / 1e6:.2f}M params, "
                         f"{fastest['madds'] / 1e6:.0f}M Mult-Adds")
    choice = max(fitting, key=lambda r: (r["top1"], -r["latency_ms"]))
    for row in rows:
        row["chosen"] = row is choice
    return rows, choice
