"""Face attributes and embeddings (Tables 12, 14):
``attributes|embeddings make-data|train|distill|eval``."""
from __future__ import annotations

import json

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, add_run_arguments,
                                   config_from_args, note_preset_defaults, write_rows)


def cmd_faces(args) -> None:
    """``mobilenets attributes|embeddings make-data|train|distill|eval`` (Tables 12 and 14)."""
    from mobilenets.tasks.faces import evaluate as faces_eval
    from mobilenets.tasks.faces import make_data as faces_data
    from mobilenets.tasks.faces import train as faces

    task, action = args.command, args.action
    if action == "make-data":
        if task == "attributes":
            meta = faces_data.make_attribute_data(args.out, args.labeled, args.unlabeled,
                                                  args.test, args.seed)
            print(f"wrote {args.out}: {meta['labeled']:,} labeled, {meta['unlabeled']:,} "
                  f"unlabeled and {meta['test']:,} test images, {len(meta['attributes'])} "
                  "attributes")
        else:
            meta = faces_data.make_embedding_data(args.out, args.identities, args.photos,
                                                  args.unlabeled, args.test_identities,
                                                  args.test_photos, args.negatives, args.seed,
                                                  max_source_cosine=args.max_source_cosine)
            print(f"wrote {args.out}: {meta['identities']:,} identities x {meta['photos']} "
                  f"photos, {meta['unlabeled']:,} unlabeled photos, {meta['positive_pairs']:,} "
                  f"positive and {meta['negative_pairs']:,} negative test pairs")
        return
    if action == "eval":
        rows = (faces_eval.attribute_report(args.model_files, args.data) if task == "attributes"
                else faces_eval.embedding_report(args.model_files, args.data, args.far))
        if args.format == "table":  # Table 12/14's columns; csv and json keep everything
            rows = [{k: v for k, v in r.items() if not k.startswith("ap_") and k != "file"}
                    for r in rows]
        write_rows(rows, args.format, args.output, args.wide)
        return
    cfg = config_from_args(args)
    run = {("attributes", "train"): faces.train_attributes,
           ("embeddings", "train"): faces.train_embeddings}.get((task, action))
    far = {"far": args.far} if task == "embeddings" else {}
    if run:
        result = run(cfg, args.data, resume=args.resume, **far)
    elif task == "attributes":
        result = faces.distill_attributes(cfg, args.data, args.teacher, resume=args.resume)
    else:
        result = faces.distill_embeddings(cfg, args.data, args.teacher, resume=args.resume, **far)
    print(json.dumps({**result.summary, "model_path": result.model_path}, indent=2))


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.tasks.faces.train import recipes

    presets = recipes()
    for task, title in (("attributes", "face attributes (Table 12) on Fashion-MNIST attributes"),
                        ("embeddings", "face embeddings (Table 14) on Fashion-MNIST identities")):
        s = add_parser(sub, task, help=f"{title}: make-data, train (teacher), distill, eval")
        actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
        a = add_parser(actions, "make-data", help="write PNG images and CSVs derived from "
                       "Fashion-MNIST")
        a.add_argument("--out", required=True, help="folder to write")
        a.add_argument("--seed", type=int, default=0, help="seeds every draw")
        a.add_argument("--unlabeled", type=int, default=50_000 if task == "attributes" else 20_000,
                       help="unlabeled training images (for distillation)")
        if task == "attributes":
            a.add_argument("--labeled", type=int, default=10_000, help="labeled training images")
            a.add_argument("--test", type=int, default=10_000, help="test images")
        else:
            a.add_argument("--identities", type=int, default=1000, help="training identities")
            a.add_argument("--photos", type=int, default=10, help="photos per training identity")
            a.add_argument("--test-identities", type=int, default=600, help="test identities")
            a.add_argument("--test-photos", type=int, default=6, help="photos per test identity")
            a.add_argument("--negatives", type=int, default=50_000,
                           help="different-identity test pairs (>= 10,000 for a FAR of 1e-4)")
            a.add_argument("--max-source-cosine", type=float, default=0.9,
                           help="largest raw-pixel cosine between two identities' source images "
                           "(no near-twin identities; 1 disables)")
        a.set_defaults(func=cmd_faces)
        for action in ("train", "distill"):
            a = add_parser(actions, action, help="train the 1.0 teacher on the labels" if
                           action == "train" else "distil a teacher into a student on "
                           "labeled and unlabeled images")
            recipe = f"{task}-{'teacher' if action == 'train' else 'student'}"
            add_run_arguments(a, presets, recipe, choose_preset=False)
            a.add_argument("--data", required=True, help="a folder written by make-data")
            if action == "distill":
                a.add_argument("--teacher", required=True, help="the teacher's model.safetensors")
                a.add_argument("--hard-weight", type=float,
                               help="weight of the label loss (default 0: teacher only, as the "
                               "paper)")
            a.add_argument("--model", help="registered name (sets alpha)")
            a.add_argument("--width-mult", type=float, help="alpha, overrides the model's")
            a.add_argument("--resolution", type=int, help="input size, >= 32")
            if task == "embeddings":
                a.add_argument("--far", type=float, default=1e-4,
                               help="false accept rate of the evaluation")
            note_preset_defaults(a)
            a.set_defaults(func=cmd_faces)
        a = add_parser(actions, "eval", help="Table 12 (mean AP)" if task == "attributes" else
                       "Table 14 (true accept rate at a false accept rate)")
        a.add_argument("model_files", nargs="+", help="model.safetensors files of train/distill")
        a.add_argument("--data", required=True, help="a folder written by make-data")
        if task == "embeddings":
            a.add_argument("--far", type=float, default=1e-4, help="false accept rate")
        add_output_arguments(a, FORMATS)
        a.set_defaults(func=cmd_faces)
