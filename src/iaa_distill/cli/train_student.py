"""Stage 2: train one end-to-end student (default tf_efficientnet_lite0 from its bundled ImageNet weights)
on the ground truth plus feature and output distillation from the teacher head's targets
(`--targets`, written by `iaa train-teacher`), or the label-only baseline (`--baseline`, the identical
run without distillation). Images are decoded once into a pre-resized cache (`--image-cache`) shared by
every run. Rerunning the same command resumes an interrupted run from OUT/checkpoints/last.ckpt.
Several GPUs: `--devices 4` (Lightning launches the processes) or
`torchrun --nproc-per-node 4 -m iaa_distill train-student ... --devices 4` (also across nodes with --num-nodes)."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.student_config import StudentTrainConfig
    from .options import add_options
    from .types import add_split_options

    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or csv:labels.csv")
    parser.add_argument("--out", required=True, help="run folder (model/, metrics.json, checkpoints/, logs/)")
    parser.add_argument("--targets", help="teacher head folder holding the distillation targets")
    parser.add_argument("--baseline", action="store_true", help="label-only baseline: alpha = beta = 0, warm-started on "
                        "the labels alone (its warm start, the frozen-feature linear probe, is kept as OUT/probe); "
                        "--targets is optional there and only checked")
    parser.add_argument("--unlabeled", action="append", default=[], metavar="DATASET",
                        help="unlabelled images to distil on as well (repeatable), e.g. folder:~/Photos; the teacher's "
                        "targets must cover them (`iaa fit` with `unlabeled:` in the recipe does every stage)")
    parser.add_argument("--image-cache", help="root folder of the pre-resized image caches "
                        "(default: $IAA_CACHE_DIR/images or ~/.cache/iaa_distill/images)")
    groups = {name: parser.add_argument_group(name) for name in ("model", "optimisation", "loss", "hardware")}
    add_options(parser, StudentTrainConfig, exclude=("pretrained",), groups=groups)
    add_split_options(groups["optimisation"], seed=False)  # --seed is the training seed, which also carves val


def run(args: argparse.Namespace) -> int:
    from ..data.registry import open_dataset
    from ..data.unlabeled import with_unlabeled
    from ..training.student import train_student
    from ..training.student_config import StudentTrainConfig
    from .options import config_from_args

    config = config_from_args(StudentTrainConfig, args)
    dataset = with_unlabeled(open_dataset(args.dataset, val_fraction=args.val_fraction, seed=config.seed),
                             args.unlabeled, seed=config.seed)
    metrics = train_student(dataset, args.out, config, targets_dir=args.targets, baseline=args.baseline,
                            image_cache_dir=args.image_cache)
    if metrics:
        summary = {k: metrics[k] for k in ("best_val_srcc", "best_val_plcc", "best_epoch", "epochs_completed")}
        summary["recipe"] = metrics["recipe"]["chosen"]
        print(json.dumps({"out": args.out, "baseline": args.baseline, **summary}, indent=2))
    return 0
