"""The alpha x rho grid of the paper (Figures 4 and 5): train and evaluate each model, one CSV
(``engine.results``' sweep CSV), two plots. A sweep is resumable: finished grid points are read
back from the CSV and skipped. And ``compare_runs``: a table of finished classification runs."""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import replace
from pathlib import Path

from mobilenets.cost.profiler import profile_model
from mobilenets.engine.results import read_sweep_rows, write_sweep_rows
from mobilenets.models.registry import ARCHS, config_name, get_spec, variant_name
from mobilenets.readers import read_json
from mobilenets.tasks.classification.figures import (mean_over_seeds, plot_accuracy_vs_madds,
                                                     plot_accuracy_vs_params)
from mobilenets.tasks.classification.train import TrainConfig, train


def run_sweep(base: TrainConfig, width_mults=(1.0, 0.75, 0.5, 0.25),
              resolutions=(64, 56, 48, 40), out_dir: str | os.PathLike = "runs/sweep",
              seeds=(0,)) -> list[dict]:
    """Train and evaluate every (alpha, resolution) with the same recipe, as the paper does.

    Args:
        base: The recipe for every point (``width_mult``, ``resolution`` and ``out_dir`` are set
            per point). The paper uses the same hyper-parameters for every model. Its ``model``
            sets the architecture: a ``mobilenet_v2_*`` name sweeps MobileNetV2 (run folders
            ``v2_a{alpha}_r{res}``). Rows are labelled with ``registry.variant_name``, e.g.
            ``mobilenet_v2_0.5_48``.
        width_mults: Alphas, each > 0. Default the paper's (1.0, 0.75, 0.5, 0.25).
        resolutions: Input sizes, each >= 32. Default (64, 56, 48, 40): the paper's ratios
            224:192:160:128 scaled to Fashion-MNIST sizes that fit a small CPU.
        out_dir: Where ``sweep.csv``, ``figure4_accuracy_vs_madds.png``,
            ``figure5_accuracy_vs_params.png`` and one run folder per point and seed go.
        seeds: Train every point once per seed (folders ``..._s{seed}`` for seeds other than 0);
            the figures show each point's mean and standard deviation. Default ``(0,)``.

    Returns:
        The CSV rows (one per point and seed), with Mult-Adds and parameters profiled at 10
        classes.
    """
    for name, values in (("width_mults", width_mults), ("resolutions", resolutions),
                         ("seeds", seeds)):
        if not values:
            raise ValueError(f"{name} must not be empty")
        if len(set(values)) < len(values):
            raise ValueError(f"{name} must not repeat a value, got {list(values)}")
    out = Path(out_dir)
    csv_path = out / "sweep.csv"
    arch = get_spec(base.model).arch
    tag = "" if arch == "mobilenet_v1" else arch.rsplit("_", 1)[-1]  # "v2"; V1 keeps old names
    prefix = f"{tag}_" if tag else ""
    # Every point's recipe is checked before the first is trained: a bad alpha or seed fails now,
    # not hours later.
    points = [(a, r, s, replace(base, width_mult=float(a), resolution=r, seed=s, out_dir=str(
        out / f"{prefix}a{a:g}_r{r}{f'_s{s}' if s else ''}")).validate())
        for a in width_mults for r in resolutions for s in seeds]
    rows = read_sweep_rows(csv_path)
    done = {(r["arch"], r["width_mult"], r["resolution"], r["seed"]) for r in rows}
    for alpha, res, seed, cfg in points:
        if (arch, float(alpha), int(res), int(seed)) in done:
            continue
        result = train(cfg, resume=True)
        prof = profile_model(ARCHS[arch](width_mult=alpha, num_classes=len(
            result.evaluation["per_class"]), output_stride=base.output_stride), (3, res, res))
        rows.append({"label": variant_name(base.model, alpha, res), "arch": arch,
                     "width_mult": float(alpha),
                     "resolution": int(res), "seed": int(seed), "madds": prof.total_madds,
                     "params": prof.total_params, "top1": result.metrics["top1"],
                     "top5": result.metrics["top5"], "epochs": result.epochs,
                     "train_seconds": round(result.session_seconds, 1),
                     "model_path": result.model_path})
        write_sweep_rows(csv_path, rows)
    fit = plot_accuracy_vs_madds(rows, out / "figure4_accuracy_vs_madds.png",
                                 title="Accuracy vs Mult-Adds (Figure 4)")
    plot_accuracy_vs_params(rows, out / "figure5_accuracy_vs_params.png",
                            title="Accuracy vs parameters (Figure 5)")
    if len(seeds) > 1:
        for r in mean_over_seeds(rows):
            print(f"{r['label']}: top-1 {r['top1']:.2f} +- {r['top1_std']:.2f} "
                  f"({r['seeds']} seeds)")
    print(f"log-linear fit{' (on the means)' if len(seeds) > 1 else ''}: top1 = {fit[0]:.2f} + "
          f"{fit[1]:.2f} * log10(Mult-Adds in M), R^2 = {fit[2]:.3f}")
    return rows


def compare_runs(run_dirs: list[str | os.PathLike], mean: bool = False) -> list[dict]:
    """One row per training run folder, for tables like the paper's Tables 4 and 5.

    Args:
        run_dirs: Folders written by ``mobilenets train`` (``config.json`` and ``eval.json``;
            ``summary.json`` adds the training time).
        mean: Merge the runs whose configurations differ only in ``seed`` (and output folder)
            into one row: top-1 and top-5 averaged, ``top1_std`` (sample standard deviation),
            ``seeds``, and the mean training seconds; ``run`` names the first. Default False.

    Returns:
        Rows with the run, model, alpha, resolution, seed, top-1, top-5, Mult-Adds and
        parameters (conv + FC weights, the paper's count) in millions, epochs and training
        seconds.

    Raises:
        FileNotFoundError: naming a folder without ``config.json`` or ``eval.json`` (unfinished).
    """
    from mobilenets.tasks.classification.train import TrainConfig, build_model

    rows = []
    for run in map(Path, run_dirs):
        for name in ("config.json", "eval.json"):
            if not (run / name).is_file():
                raise FileNotFoundError(f"{run / name} not found: is {run} a finished training run?")
        saved = read_json(run / "config.json", "run config")  # a DistillConfig has more fields
        result = read_json(run / "eval.json", "evaluation file")
        summary = (read_json(run / "summary.json", "run summary")
                   if (run / "summary.json").is_file() else {})
        try:
            cfg = TrainConfig(**{k: v for k, v in saved.items()
                                 if k in TrainConfig.__dataclass_fields__}).validate()
            model = build_model(cfg, len(result["per_class"]))
            result["top1"], result["top5"]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{run} does not hold a classification run written by `mobilenets "
                             f"train` ({type(e).__name__}: {e})") from None
        res = model.config.resolution
        prof = profile_model(model, (model.config.in_channels, res, res))
        # the model as built (a fine-tuned run's is its init file's), named at its resolution
        recipe = {k: v for k, v in saved.items() if k not in ("seed", "out_dir")}
        rows.append({"run": str(run), "model": config_name(model.config),
                     "width_mult": model.config.width_mult, "resolution": res,
                     "seed": cfg.seed, "recipe": json.dumps(recipe, sort_keys=True),
                     "top1": result["top1"], "top5": result["top5"],
                     "madds_m": round(prof.total_madds / 1e6, 2),
                     "params_m": round(prof.layer_params / 1e6, 3),
                     "epochs": summary.get("epochs", cfg.epochs),
                     "train_seconds": summary.get("train_seconds")})
    if mean:
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(r["recipe"], []).append(r)
        rows = []
        for members in groups.values():
            merged = mean_over_seeds(members, ("recipe",), "top1")[0]
            secs = [m["train_seconds"] for m in members if m["train_seconds"] is not None]
            merged.update(top1=round(merged["top1"], 2), top1_std=round(merged["top1_std"], 2),
                          top5=round(statistics.fmean(m["top5"] for m in members), 2),
                          train_seconds=round(statistics.fmean(secs), 1) if secs else None)
            del merged["seed"]
            rows.append(merged)
    for r in rows:
        del r["recipe"]
    return rows
