"""Fine-grained recognition data (Table 10): ``finegrained make-data``."""
from __future__ import annotations

import json

from mobilenets.cli.common import add_parser


def cmd_finegrained(args) -> None:
    from mobilenets.tasks.finegrained.data import FineGrainedDataConfig, make_finegrained_data

    try:
        classes = tuple(int(c) for c in args.classes.split(",")) if args.classes else None
    except ValueError:
        raise ValueError(f"--classes takes comma-separated class ids, got {args.classes!r}") from None
    cfg = FineGrainedDataConfig(clean_per_class=args.clean_per_class,
                                noisy_per_class=args.noisy_per_class, noise_rate=args.noise_rate,
                                confusable_share=args.confusable_share,
                                test_per_class=args.test_per_class, seed=args.seed,
                                **({"classes": classes} if classes else {}))
    record = make_finegrained_data(args.out_dir, cfg, overwrite=args.overwrite)
    print(json.dumps({k: record[k] for k in ("classes", "images", "noise_rate",
                                             "confusable_share_of_wrong")}))
    print(f"wrote {args.out_dir}/noisy (pretrain: mobilenets train --data) and "
          f"{args.out_dir}/clean (mobilenets finetune --data)")


def add_arguments(sub) -> None:
    """Add this module's commands to the ``mobilenets`` subparsers ``sub``."""
    s = add_parser(sub, "finegrained", help="fine-grained recognition data (Table 10): a noisy "
                       "pretraining set and a small clean set derived from Fashion-MNIST")
    fsub = s.add_subparsers(dest="finegrained_command", required=True, metavar="STEP")
    f = add_parser(fsub, "make-data", help="write OUT/noisy and OUT/clean ImageFolder trees")
    f.add_argument("out_dir", help="folder to create")
    f.add_argument("--classes", help="comma-separated Fashion-MNIST ids (default 0,2,3,4,6: the "
                   "upper-body garments)")
    f.add_argument("--clean-per-class", type=int, default=100, help="clean images per class")
    f.add_argument("--noisy-per-class", type=int, help="noisy images per class (default: the rest)")
    f.add_argument("--noise-rate", type=float, default=0.4, help="share of wrong noisy labels")
    f.add_argument("--confusable-share", type=float, default=0.75,
                   help="share of wrong labels that name a look-alike class")
    f.add_argument("--test-per-class", type=int, help="test images per class (default all)")
    f.add_argument("--seed", type=int, default=0, help="seeds every draw")
    f.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    f.set_defaults(func=cmd_finegrained)
