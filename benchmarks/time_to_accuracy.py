"""Time-to-accuracy on Fashion-MNIST: wall time of training to reach 90%, 92% and 93% test top-1.

Three entrants, one after another in one process, on the same threads:

    fast    ``mobilenets train --preset fast`` (the paper's 0.75 MobileNet at 32x32, output stride
            16, with fast-training practice: docs/results/fast_recipe.md)
    paper   ``--preset paper`` at the same 32x32 input: section 3.2's RMSprop, exponential decay
            (fitted to the run), Inception crops, batch 96; evaluation on the whole image
    timm    timm's ``mobilenetv1_100`` (weights=None) with a standard SGD one-cycle recipe: Nesterov
            momentum 0.9, peak lr 0.1 after a linear warm-up over 30% of the steps, cosine down to
            0, weight decay 5e-4, batch 128, random 2-pixel translations and flips, 32x32 input
            (the 28x28 image on a zero border). It trains through the same loop
            (``engine.loop.fit``) and data pipeline as ours; one-cycle's momentum cycling is left
            out (that loop has none).

Every entrant gets the same cap of wall time (``--minutes``). Its schedule must know its length
in advance, so a short probe first measures its images/s and its epoch count is set to what fits
the cap (at least 1). The 10,000 test images are evaluated after every epoch (reporting only:
nothing is selected on them); evaluation time is not counted. A threshold an entrant never reaches
within its cap is reported as not reached, with its best top-1.

Results: ``benchmarks/results/time_to_accuracy.{json,md}`` with the CPU model, ISA flags, threads
and load average. Run it on an otherwise idle machine (two threads).

Example:
    .venv/bin/python benchmarks/time_to_accuracy.py --minutes 5
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilenets.deploy.machine import machine_info, machine_line, note_load_after
from mobilenets.engine.data import BatchTransform, limit_dataset, load_fashion_mnist
from mobilenets.engine.loop import fit
from mobilenets.fileio import write_json, write_text
from mobilenets.tables import render_table
from mobilenets.tasks.classification.train import (build_model, evaluate, make_config,
                                                   train_augment)

THRESHOLDS = (90.0, 92.0, 93.0)
TRAIN_IMAGES = 60_000


def entrant_config(name: str, epochs: float, out_dir: str):
    """The ``TrainConfig`` of an entrant (see the module docstring)."""
    common = dict(epochs=epochs, out_dir=out_dir, progress=False, checkpoint_every=10**9)
    if name == "fast":
        return make_config("fast", **common)
    if name == "paper":
        return make_config("paper", resolution=32, eval_crop=1.0, **common)
    if name == "timm":
        return make_config("fast", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                           weight_decay=5e-4, lr_schedule="cosine", lr_final=0.0,
                           warmup_epochs=0.3 * epochs, label_smoothing=0.0, flip_test=False,
                           output_stride=32, **common)
    raise ValueError(f"--entrants: unknown entrant {name!r} (fast, paper, timm)")


def entrant_model(name: str, cfg):
    if name == "timm":
        import timm

        return timm.create_model("mobilenetv1_100", pretrained=False, num_classes=10)
    return build_model(cfg, 10)


def probe(name: str, seconds: float) -> float:
    """Images/s of the entrant's training step (augmentation included) over ``seconds``."""
    cfg = entrant_config(name, 1, "unused")
    model = entrant_model(name, cfg).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    augment = train_augment(cfg)
    data = load_fashion_mnist("train")
    images, labels = data.images[:cfg.batch_size], data.labels[:cfg.batch_size]
    g = torch.Generator().manual_seed(0)
    done, start, n = 0, None, 0
    while start is None or time.perf_counter() - start < seconds:
        x, y = augment((images, labels), g)
        loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done == 2:  # after warm-up
            start = time.perf_counter()
        elif done > 2:
            n += len(y)
    return n / (time.perf_counter() - start)


def run_entrant(name: str, epochs: int, out_dir: str, limit: int | None = None) -> dict:
    cfg = entrant_config(name, epochs, out_dir)
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    if limit:  # a quick check of the script, not a measurement
        limit_dataset(train_set, limit)
        limit_dataset(test_set, limit)
    eval_tf = BatchTransform(cfg.input_size, False, eval_crop=cfg.eval_crop)
    model = entrant_model(name, cfg)

    def epoch_eval(m):
        r = evaluate(m, test_set, eval_tf, channels_last=cfg.channels_last,
                     flip_test=cfg.flip_test)
        return {"test_top1": r["top1"]}

    loss_fn = (lambda net, x, y, idx: F.cross_entropy(net(x), y,
                                                      label_smoothing=cfg.label_smoothing))
    run = fit(cfg, model, train_set, loss_fn, epoch_eval, augment=train_augment(cfg))
    curve, evals = [], 0.0
    for rec in run.history:
        evals += rec.get("eval_seconds", 0.0)
        curve.append({"epoch": rec["epoch"], "train_seconds": round(rec["seconds"] - evals, 1),
                      "test_top1": rec["test_top1"]})
    reached = {}
    for t in THRESHOLDS:
        hit = next((c for c in curve if c["test_top1"] >= t), None)
        reached[f"{t:g}"] = hit["train_seconds"] if hit else None
    return {"entrant": name, "epochs": epochs, "curve": curve, "seconds_to": reached,
            "best_top1": max(c["test_top1"] for c in curve),
            "final_top1": curve[-1]["test_top1"],
            "images_per_second": round(run.images_per_second, 1)}


def markdown(result: dict) -> str:
    table = [{"entrant": r["entrant"], "epochs": r["epochs"],
              "images/s": f"{r['images_per_second']:.0f}",
              **{f"to {t:g}%": f"{r['seconds_to'][f'{t:g}']:.0f} s"
                 if r["seconds_to"][f"{t:g}"] is not None else "-" for t in THRESHOLDS},
              "final top-1": f"{r['final_top1']:.2f}", "best top-1": f"{r['best_top1']:.2f}"}
             for r in result["entrants"]]
    lines = [f"# Time to accuracy on Fashion-MNIST ({result['minutes']:g} min per entrant)", "",
             machine_line(result["machine"]), "",
             "Wall time of training (evaluation excluded) until the 10,000 test images first "
             "reach each top-1, evaluated after every epoch; `-`: not reached within the cap "
             "(best top-1 in the last column). Command: `" + result["command"] + "`.", "",
             render_table(table, "markdown"), "",
             "Per-epoch curves (train seconds, test top-1) are in the JSON file."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="wall-time cap per entrant")
    p.add_argument("--entrants", default="fast,paper,timm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe-seconds", type=float, default=15.0)
    p.add_argument("--limit", type=int, help="first N train and test images only (a quick "
                   "check of the script; its times mean nothing)")
    p.add_argument("--output", default="benchmarks/results/time_to_accuracy",
                   help="results path without suffix (.json and .md are written)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.entrants.split(",")
    for n in names:
        entrant_config(n, 1, "unused")  # an unknown name fails before any work
    machine = machine_info(args.threads, packages=("timm",))
    results = []
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        for n in names:
            rate = probe(n, args.probe_seconds)
            # Evaluation and the loop's overheads take some of the cap: aim at 90% of it.
            epochs = max(1, int(0.9 * args.minutes * 60 * rate / TRAIN_IMAGES))
            print(f"{n}: {rate:.0f} images/s in the probe -> {epochs} epochs", flush=True)
            r = run_entrant(n, epochs, str(Path(tmp) / n), args.limit)
            r["probe_images_per_second"] = round(rate, 1)
            print(json.dumps({k: r[k] for k in ("entrant", "seconds_to", "final_top1")}),
                  flush=True)
            results.append(r)
    note_load_after(machine)
    result = {"machine": machine, "minutes": args.minutes, "entrants": results,
              "command": "benchmarks/time_to_accuracy.py "
              + " ".join(sys.argv[1:] if argv is None else argv)}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
