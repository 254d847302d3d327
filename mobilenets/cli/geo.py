"""PlaNet geolocation (Table 11): ``geo make-data|cells|train|eval``."""
from __future__ import annotations

import json
from pathlib import Path

from mobilenets.cli.common import (FORMATS, add_output_arguments, add_parser, add_run_arguments,
                                   config_from_args, note_preset_defaults, write_output, write_rows)
from mobilenets.cli.train import add_classifier_arguments


def cmd_geo(args) -> None:
    from mobilenets.engine.distributed import init_distributed
    from mobilenets.models.registry import load_model
    from mobilenets.tasks.geo import cells as geocells
    from mobilenets.tasks.geo import data as geodata
    from mobilenets.tasks.geo import evaluate as geoeval
    from mobilenets.tasks.geo.train import train_geolocator

    if args.geo_command == "make-data":
        try:
            spreads = tuple(float(v) for v in args.spreads_km.split(","))
        except ValueError:
            raise ValueError(f"--spreads-km takes comma-separated km, got {args.spreads_km!r}") from None
        cfg = geodata.GeoDataConfig(train_images=args.train_images, val_images=args.val_images,
                                test_images=args.test_images,
                                regions_per_class=args.regions_per_class, spreads_km=spreads,
                                outlier_rate=args.outlier_rate, seed=args.seed)
        record = geodata.make_geo_data(args.out_dir, cfg, overwrite=args.overwrite)
        print(f"wrote {args.out_dir}: {record['images']} images, CSVs train.csv, val.csv, test.csv")
        return
    cell_cfg = geocells.GeocellConfig(max_photos=args.max_photos, min_photos=args.min_photos,
                                 max_level=args.max_level) if args.geo_command != "eval" else None
    if args.geo_command == "cells":
        photos = geodata.read_geo_csv(args.csv, check_images=False)
        cells = geocells.build_geocells(*geodata.photo_coordinates(photos), cell_cfg)
        cells.save(args.output)
        kept = sum(c.count for c in cells.cells)
        print(f"{len(cells)} cells (levels {min(c.level for c in cells.cells)}-"
              f"{max(c.level for c in cells.cells)}) hold {kept} of {len(photos)} photos; "
              f"wrote {args.output}")
        return
    if args.geo_command == "train":
        result = train_geolocator(config_from_args(args), args.train_csv, args.val_csv,
                                  args.cells, cell_cfg, resume=args.resume)
        if init_distributed().main:
            print(f"{len(result.extra['cells'])} cells; cell top-1 on val "
                  f"{result.metrics['top1']:.2f}%; {result.steps} steps in "
                  f"{result.session_seconds:.0f} s; model: {result.model_path}")
        return
    # eval: Table 11 for each model, the class prior and (optionally) a prior given a CSV column
    photos = geodata.read_geo_csv(args.csv)
    columns = []
    for model_file in args.model_files:
        model = load_model(model_file, kind="classifier")
        train_cfg = model.metadata.get("train_config", {})
        cells = geocells.Geocells.load(args.cells or Path(model_file).parent / "cells.json")
        columns += geoeval.evaluate_model(model, photos, cells, args.modes.split(","), args.centers,
                                      args.refine_km, train_cfg.get("eval_crop", 0.875),
                                      name=model_file)
    if args.prior or args.prior_given:
        if not (args.cells or args.model_files):
            raise ValueError("--prior needs --cells (or a model file beside its cells.json)")
        cells = geocells.Geocells.load(args.cells or Path(args.model_files[0]).parent / "cells.json")
        given = (args.prior_given[1], args.csv, args.prior_given[0]) if args.prior_given else None
        columns = geoeval.baseline_columns(photos, cells, given, args.centers) + columns
    if not columns:
        raise ValueError("nothing to evaluate: give model files and/or --prior")
    if args.format == "json":
        write_output(json.dumps(columns, indent=2), args.output)
    else:
        write_rows(geoeval.table11_rows(columns, args.paper), args.format, args.output, args.wide)


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    from mobilenets.tasks.geo.train import GEO_PRESETS

    s = add_parser(sub, "geo", help="PlaNet geolocation (Table 11): geocells, training, "
                   "distance report")
    gsub = s.add_subparsers(dest="geo_command", required=True, metavar="STEP")
    g = add_parser(gsub, "make-data", help="a geotagged data set derived from Fashion-MNIST")
    g.add_argument("out_dir", help="folder to create: images/, train.csv, val.csv, test.csv")
    g.add_argument("--train-images", type=int, default=20000, help="training photos")
    g.add_argument("--val-images", type=int, default=2000, help="validation photos")
    g.add_argument("--test-images", type=int, default=5000, help="test photos")
    g.add_argument("--regions-per-class", type=int, default=3, help="home cities per garment")
    g.add_argument("--spreads-km", default="1,15,60", help="region scales in km, cycled")
    g.add_argument("--outlier-rate", type=float, default=0.05, help="share placed anywhere")
    g.add_argument("--seed", type=int, default=0, help="seeds every draw")
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    g.set_defaults(func=cmd_geo)
    for name, text in (("cells", "adaptive equal-area geocells from a CSV's locations"),
                       ("train", "train a MobileNet to classify photos into geocells")):
        g = add_parser(gsub, name, help=text)
        g.add_argument("--max-photos", type=int, default=1000,
                       help="split cells holding more training photos")
        g.add_argument("--min-photos", type=int, default=20, help="drop cells holding fewer")
        g.add_argument("--max-level", type=int, default=20, help="deepest quadtree level")
        g.set_defaults(func=cmd_geo)
        if name == "cells":
            g.add_argument("csv", help="image,latitude,longitude CSV of the training photos")
            g.add_argument("--output", required=True, help="cells JSON to write")
        else:
            add_run_arguments(g, GEO_PRESETS, "fashion-mnist")
            add_classifier_arguments(g)
            g.add_argument("--train-csv", required=True, help="image,latitude,longitude CSV")
            g.add_argument("--val-csv", required=True, help="validation photos (cell top-1)")
            g.add_argument("--cells", help="cells JSON (default: built from --train-csv)")
            note_preset_defaults(g)
    g = add_parser(gsub, "eval", help="share of photos within 1, 25, 200, 750, 2500 km")
    g.add_argument("model_files", nargs="*", help="models written by `geo train`")
    g.add_argument("--csv", required=True, help="test photos: image,latitude,longitude CSV")
    g.add_argument("--cells", help="cells JSON (default: cells.json beside each model)")
    g.add_argument("--modes", default="argmax,weighted",
                   help="argmax (the cell's centre) and/or weighted (refined), comma-separated")
    g.add_argument("--centers", choices=("photo_mean", "geometric"), default="photo_mean",
                   help="a cell's centre: its training photos' mean or its geometric centre")
    g.add_argument("--refine-km", type=float, default=500.0, help="neighbourhood of 'weighted'")
    g.add_argument("--prior", action="store_true", help="add the class-prior baseline")
    g.add_argument("--prior-given", nargs=2, metavar=("COLUMN", "TRAIN_CSV"),
                   help="add a baseline that knows COLUMN (e.g. garment): the most populous "
                   "cell of TRAIN_CSV's photos with the same value (default: none)")
    g.add_argument("--paper", action="store_true", help="add the paper's Table 11 columns")
    add_output_arguments(g, FORMATS)
    g.set_defaults(func=cmd_geo)
