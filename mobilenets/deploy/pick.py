"""``pick``: the most accurate MobileNet within a latency, size and compute budget, with latency
measured on this machine for every runtime and precision asked for (``backends.BACKENDS``:
torch, ONNX Runtime fp32/int8, ExecuTorch, LiteRT, OpenVINO fp32/int8/bf16), all timed
interleaved in one run; and the accuracy-against-measured-latency frontier, one curve per
runtime/precision.

No library draws this frontier, and it matters: whether int8 beats fp32, and which runtime is
fastest on the same file, depends on the CPU (``docs/deployment.md`` has the measurements).

Two ways to time less: ``pick_predicted`` times a few candidates per backend here and predicts
the rest with the per-layer latency model (``cost.latency``), then confirms its choice by timing
it, its frontier neighbours and the more accurate candidates predicted just over the budget;
``pick_device`` times nothing and chooses by the latency a
device file (``mobilenets latency fit``) predicts for a phone this machine never sees.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch

from mobilenets.checks import Range, check_int, check_range
from mobilenets.deploy.backends import BACKENDS, check_backends
from mobilenets.deploy.bench import (SPIN_PAUSE_S, calibration_images, export_backends,
                                     load_backend, model_from_spec, time_interleaved)
from mobilenets.deploy.machine import restores_threads, usable_cores

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


def check_budgets(latency_ms=None, max_params=None, max_madds=None) -> None:
    """``ValueError`` unless at least one budget is given and each given one is a number > 0."""
    budgets = {"latency_ms": latency_ms, "max_params": max_params, "max_madds": max_madds}
    if all(v is None for v in budgets.values()):
        raise ValueError("give at least one budget: --latency-ms, --max-params or --max-madds")
    for k, v in budgets.items():
        if v is not None:
            check_range(f"--{k.replace('_', '-')}", v, k)


def check_pick_backends(backend) -> list[str]:
    """``backends.check_backends`` of ``backend``, refusing the peers (pick measures ours)."""
    backends = check_backends(backend)
    for b in backends:
        if BACKENDS[b].peer_of:
            raise ValueError(f"--backend {b!r} is a peer; pick measures our own backends")
    return backends


def candidate_model(cand: dict, meta: bool = False) -> torch.nn.Module:
    """The model of a ``candidates`` entry, with ``config.resolution`` set; on the meta
    device (shapes only: enough to profile) with ``meta``."""
    import contextlib

    from mobilenets.models.registry import ARCHS, meta_device

    meta = meta and "model_file" not in cand  # a file's weights load for real
    with meta_device() if meta else contextlib.nullcontext():
        if "model_file" in cand or "name" in cand:
            model = model_from_spec(cand)
        else:
            model = ARCHS[cand["arch"]](**cand["arch_kwargs"]).eval()
    model.config.resolution = cand["resolution"]
    return model


def candidate_rows(models: list[dict], backends: list[str]) -> list[dict]:
    """One row per (candidate, backend): the candidate's fields, ``backend``, ``precision``,
    ``params``, ``madds`` and its ``profile`` (``profile_model``, at its resolution); ``finish``
    drops the profile and the candidate's build arguments."""
    from mobilenets.cost.profiler import profile_model

    rows = []
    for cand in models:
        model = candidate_model(cand, meta=True)
        res = cand["resolution"]
        prof = profile_model(model, (model.config.in_channels, res, res),
                             name=cand["label"])
        for b in backends:
            rows.append({**cand, "backend": b,
                         "precision": BACKENDS[b].precision, "params": prof.layer_params,
                         "madds": prof.total_madds, "profile": prof})
    return rows


@restores_threads
def measure_rows(rows: list[dict], threads: int = 2, rounds: int = 5, iters: int = 5,
                 calibration_data: str = "fashion-mnist",
                 progress: Callable[[str], None] | None = None,
                 export_workers: int | None = None, ort_spinning: bool = False) -> None:
    """Time every row (``candidate_rows``) on its backend on this machine, all interleaved:
    sets ``latency_ms`` (median wall), ``cpu_ms`` (median process CPU time per call) and
    ``source`` = ``"measured"``."""
    if not rows:
        return
    say = progress or (lambda s: None)
    torch.set_num_threads(threads)
    jobs, inputs, calibration = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="mobilenets-pick-") as tmp:
        models = {}
        for i, row in enumerate(rows):
            if row["label"] not in models:
                models[row["label"]] = candidate_model(row)
            model = models[row["label"]]
            shape = (model.config.in_channels, row["resolution"], row["resolution"])
            if BACKENDS[row["backend"]].precision == "int8" and shape not in calibration:
                # Latency only (int8 rows carry the fp32 top-1): the scales do not change the
                # kernels' speed, and calibration time grows with the images.
                calibration[shape] = calibration_images(calibration_data, shape,
                                                        PICK_CALIBRATION)
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            jobs.append((row["backend"], model, shape, workdir,
                         calibration.get(shape) if BACKENDS[row["backend"]].precision == "int8"
                         else None))
        keys = [f"{r['label']}@{r['backend']}" for r in rows]
        workers = export_workers or usable_cores()
        say(f"exporting {len(jobs)} candidates x backends in {workers} process(es)")
        files = export_backends(jobs, workers, done=lambda i, f: say(
            f"exported {keys[i]}") if f else None)
        prepared = []
        for job, key, f in zip(jobs, keys, files):
            say(f"loading {key}")
            p = load_backend(job[0], job[1], job[2], f, ort_spinning)
            p.name = key
            prepared.append(p)
            inputs[key] = torch.randn(1, *job[2])
        say(f"timing {len(prepared)} candidates x backends, {rounds} rounds x {iters} calls")
        cpu = {}
        samples = time_interleaved(prepared, inputs, rounds, iters, cpu=cpu,
                                   pause=SPIN_PAUSE_S if ort_spinning else 0.0)
    for row, key in zip(rows, keys):
        row["latency_ms"] = round(statistics.median(samples[key]) * 1e3, 3)
        row["cpu_ms"] = round(statistics.median(cpu[key]) * 1e3, 3)
        row["source"] = "measured"


def within_size(row: dict, max_params=None, max_madds=None) -> bool:
    """Whether ``row`` is within the size budgets (None: no budget)."""
    return ((max_params is None or row["params"] <= max_params)
            and (max_madds is None or row["madds"] <= max_madds))


def choose(rows: list[dict], latency_ms=None, max_params=None, max_madds=None) -> dict:
    """Mark every row's ``fits`` and ``chosen``; return the chosen row: the most accurate that
    fits (the faster on a tie).

    Raises:
        ValueError: if no row fits (the message names the fastest).
    """
    for row in rows:
        row["fits"] = ((latency_ms is None or row["latency_ms"] <= latency_ms)
                       and within_size(row, max_params, max_madds))
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        fastest = min(rows, key=lambda r: r["latency_ms"])
        raise ValueError(f"no candidate fits the budget; the fastest is {fastest['label']} on "
                         f"{fastest['backend']} at {fastest['latency_ms']:.2f} ms "
                         f"({fastest.get('source', 'measured')}), "
                         f"{fastest['params'] / 1e6:.2f}M params, "
                         f"{fastest['madds'] / 1e6:.0f}M Mult-Adds")
    choice = max(fitting, key=lambda r: (r["top1"], -r["latency_ms"]))
    for row in rows:
        row["chosen"] = row is choice
    return choice


def finish(rows: list[dict], choice: dict, plot: str | None, latency_ms, x_label: str,
           title: str) -> tuple[list[dict], dict]:
    """Drop the profiles, draw the frontier (predicted and measured points marked apart: a
    ``plot_frontier`` group per backend and source), return (rows, choice)."""
    for row in rows:
        row.pop("profile", None)
        row.pop("arch_kwargs", None)
    if plot:
        from mobilenets.engine.plots import plot_frontier

        sources = {r.get("source", "measured") for r in rows}
        for row in rows:
            row["curve"] = (f"{row['backend']} ({row.get('source', 'measured')})"
                            if len(sources) > 1 else row["backend"])
        plot_frontier(rows, plot, "latency_ms", x_label, budget=latency_ms, group_key="curve",
                      title=title)
        for row in rows:
            row.pop("curve")
    return rows, choice


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
        backend: Where latency is measured: a name from ``backends.BACKENDS`` (not a peer), a
            list of them or a comma-separated string (``"onnx,int8,litert,litert-int8"``; ``"all"``:
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
            the timed one.

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
    check_budgets(latency_ms, max_params, max_madds)
    if export_workers is not None:
        check_int("--export-workers", export_workers)
    backends = check_pick_backends(backend)
    rows = candidate_rows(candidates(accuracy_csv, arch), backends)
    measure_rows(rows, threads, rounds, iters, calibration_data, progress, export_workers,
                 ort_spinning)
    choice = choose(rows, latency_ms, max_params, max_madds)
    return finish(rows, choice, plot, latency_ms, f"Measured latency (ms), batch 1, {threads} "
                  "thread(s)", "Accuracy vs latency on this machine, per runtime and precision")


def pick_device(device, latency_ms: float | None = None, max_params: float | None = None,
                max_madds: float | None = None, accuracy_csv: str | None = None,
                arch: str | None = None, plot: str | None = None) -> tuple[list[dict], dict]:
    """``pick`` on a device it never sees: every candidate's latency predicted by ``device``'s
    fitted coefficients (``cost.latency.Device``, from ``mobilenets latency fit`` or
    ``measure``), nothing timed.

    Args:
        device: A ``Device``.
        latency_ms, max_params, max_madds, accuracy_csv, arch, plot: As ``pick``; the plot's
            latencies are the predicted ones.

    Returns:
        (rows, choice) as ``pick``'s, one row per candidate on ``device.backend`` (or
        ``device.name``), ``latency_ms`` predicted, ``source`` = ``"predicted"``, no ``cpu_ms``.

    Raises:
        ValueError: as ``pick``.
    """
    check_budgets(latency_ms, max_params, max_madds)
    label = device.backend or device.name
    rows = candidate_rows(candidates(accuracy_csv, arch), [label])
    for row in rows:
        row.update(precision=device.precision, source="predicted", cpu_ms=None,
                   latency_ms=round(device.predict_ms(row["profile"]), 3))
    choice = choose(rows, latency_ms, max_params, max_madds)
    return finish(rows, choice, plot, latency_ms, f"Predicted latency (ms) on {device.name}",
                  f"Accuracy vs predicted latency: {device.name}")


def frontier_neighbours(rows: list[dict], choice: dict, max_params=None,
                        max_madds=None) -> list[dict]:
    """The chosen row and its neighbours on the accuracy-against-latency frontier of the rows
    within the size budgets (``engine.plots.pareto_frontier``): the frontier points just faster
    and just slower than it, the ones a wrong prediction would have chosen instead."""
    from mobilenets.engine.plots import pareto_frontier

    sized = [r for r in rows if within_size(r, max_params, max_madds)]
    front = pareto_frontier(sized, "latency_ms")
    at = next((i for i, r in enumerate(front) if r is choice), None)
    if at is None:
        return [choice]
    return front[max(at - 1, 0):at + 2]


def near_misses(rows: list[dict], choice: dict, latency_ms: float | None, margin: float,
                max_params=None, max_madds=None) -> list[dict]:
    """The predicted rows a prediction slightly too slow would hide: for each candidate more
    accurate than ``choice`` and within the size budgets, its fastest predicted row, when that is
    predicted within ``margin`` (a fraction) over ``latency_ms`` and no measured row of the
    candidate fits. None without a latency budget."""
    if latency_ms is None:
        return []
    out = {}
    for r in rows:
        if (r["top1"] <= choice["top1"] or r["source"] != "predicted"
                or not within_size(r, max_params, max_madds)
                or r["latency_ms"] > latency_ms * (1 + margin)):
            continue
        if any(o["label"] == r["label"] and o["source"] == "measured"
               and o["latency_ms"] <= latency_ms for o in rows):
            continue
        if r["label"] not in out or r["latency_ms"] < out[r["label"]]["latency_ms"]:
            out[r["label"]] = r
    return list(out.values())


#: How many times ``pick_predicted`` re-chooses after timing a choice and its neighbours.
CONFIRM_ROUNDS = 3
#: How far over the latency budget a more accurate candidate's prediction may be and still be
#: timed (``near_misses``): the model's held-out errors and the spread between repeated timings
#: of one file are both of this order (``benchmarks/results/latency_model_evaluate.md``).
NEAR_MISS = 0.15


def pick_predicted(predict: int, latency_ms: float | None = None, max_params: float | None = None,
                   max_madds: float | None = None, backend="onnx",
                   accuracy_csv: str | None = None, threads: int = 2, rounds: int = 5,
                   iters: int = 5, plot: str | None = None,
                   calibration_data: str = "fashion-mnist", arch: str | None = None,
                   progress: Callable[[str], None] | None = None,
                   export_workers: int | None = None,
                   ort_spinning: bool = False) -> tuple[list[dict], dict]:
    """``pick`` timing only ``predict`` candidates per backend: those that span the candidates'
    width and resolution best (``deploy.device.spanning``) are timed here, a latency model
    (``cost.latency.fit_device``) is fitted per backend on them and predicts the rest; then the
    chosen one, its frontier neighbours (``frontier_neighbours``) and the more accurate
    candidates predicted just over the latency budget (``near_misses``, within ``NEAR_MISS``)
    are timed to confirm, and the choice is made again, until every row it rests on was
    measured (at most ``CONFIRM_ROUNDS`` times).

    Args:
        predict: Candidates timed per backend to fit on, >= 2.
        Others: As ``pick``.

    Returns:
        (rows, choice) as ``pick``'s; each row's ``source`` says whether its ``latency_ms`` was
        ``"measured"`` or ``"predicted"`` (predicted rows have no ``cpu_ms``).

    Raises:
        ValueError: as ``pick``, and for ``predict`` < 2 or more than the candidates.
    """
    from mobilenets.cost.latency import fit_device
    from mobilenets.deploy.device import backend_fit, spanning

    check_budgets(latency_ms, max_params, max_madds)
    backends = check_pick_backends(backend)
    models = candidates(accuracy_csv, arch)
    check_range("--predict", predict, Range(int, 2, len(models), what=f"an integer from 2 to "
                                                                     f"{len(models)} (the candidates)"))
    say = progress or (lambda s: None)
    rows = candidate_rows(models, backends)
    timing = dict(threads=threads, rounds=rounds, iters=iters, calibration_data=calibration_data,
                  progress=progress, export_workers=export_workers, ort_spinning=ort_spinning)
    chosen = {models[i]["label"] for i in spanning(
        [(m["width_mult"], m["resolution"]) for m in models], predict)}
    measure_rows([r for r in rows if r["label"] in chosen], **timing)
    for b in backends:
        timed = [r for r in rows if r["backend"] == b and r.get("source") == "measured"]
        device = fit_device([r["profile"] for r in timed], [r["latency_ms"] for r in timed],
                            names=[r["label"] for r in timed], **backend_fit(b),
                            name=f"this machine, {b}", backend=b, threads=threads)
        say(f"{b}: fitted on {', '.join(r['label'] for r in timed)}: "
            f"{device.residual_summary()}")
        for r in rows:
            if r["backend"] == b and r.get("source") != "measured":
                r.update(latency_ms=round(device.predict_ms(r["profile"]), 3), cpu_ms=None,
                         source="predicted")
    for _ in range(CONFIRM_ROUNDS):
        choice = choose(rows, latency_ms, max_params, max_madds)
        todo = [r for r in frontier_neighbours(rows, choice, max_params, max_madds)
                if r["source"] == "predicted"]
        todo += [r for r in near_misses(rows, choice, latency_ms, NEAR_MISS, max_params,
                                        max_madds) if not any(r is t for t in todo)]
        if not todo:
            break
        say(f"confirming: {', '.join(r['label'] + '@' + r['backend'] for r in todo)}")
        measure_rows(todo, **timing)
    choice = choose(rows, latency_ms, max_params, max_madds)
    return finish(rows, choice, plot, latency_ms, f"Latency (ms), batch 1, {threads} thread(s): "
                  f"{predict} per backend timed, the rest predicted",
                  "Accuracy vs latency on this machine: measured and predicted")
