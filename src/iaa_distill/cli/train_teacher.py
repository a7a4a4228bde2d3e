"""Stage 1: choose the teacher head by cross-validation on the training split (the paper's BatchNorm + 3-layer MLP
at a few sizes and dropouts, or a linear head by reduced-rank ridge), train it on a feature cache made by
`iaa features`, then write
the distillation targets (aesthetic feature + prediction) of every image with features, and metrics.json, into --out.
Trains from cached features only: seconds to minutes, even for AVA. An interrupted run resumes from --out."""
from __future__ import annotations

import argparse


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 1024,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.teacher_config import TeacherTrainConfig
    from .options import add_options
    from .types import add_split_options

    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or csv:labels.csv")
    parser.add_argument("--features", required=True, metavar="CACHE", help="feature cache folder written by `iaa features`")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: head, targets, metrics.json")
    parser.add_argument("--hidden", type=_hidden, default=TeacherTrainConfig.hidden, metavar="N,N",
                        help="hidden layer sizes; the last is the aesthetic feature size (default: 1024,256)")
    add_split_options(parser, seed=False)  # --seed is the training seed, which also carves val
    add_options(parser, TeacherTrainConfig, exclude=("hidden",))


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..training.head_selection import describe_choice
    from ..training.teacher import TeacherTrainConfig, train_teacher_head
    from .options import config_from_args

    config = config_from_args(TeacherTrainConfig, args)
    dataset = open_dataset(args.dataset, val_fraction=args.val_fraction, seed=config.seed)
    metrics = train_teacher_head(dataset, args.features, args.out, config)
    parts = []
    for split in ("val", "test"):
        result = metrics.get(split)
        if result and result["srcc"] is not None:
            parts.append(f"{split} SRCC {result['srcc']:.4f} PLCC {result['plcc']:.4f} ({result['count']} images)")
    print(f"teacher head {describe_choice(metrics['head'])}: {'; '.join(parts) or 'no correlations'}")
    print(f"head, distillation targets of {metrics['targets']} images and metrics.json written to {args.out}")
    return 0
