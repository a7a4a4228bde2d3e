"""Stage 1: train the teacher head (BatchNorm + 3-layer MLP) on a feature cache made by `iaa features`, then write
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
    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or csv:labels.csv")
    parser.add_argument("--features", required=True, metavar="CACHE", help="feature cache folder written by `iaa features`")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: head, targets, metrics.json")
    unset = argparse.SUPPRESS  # options left out take TeacherTrainConfig's defaults
    parser.add_argument("--epochs", type=int, default=unset, help="maximum epochs (default: 30)")
    parser.add_argument("--batch-size", type=int, default=unset, help="default: 128")
    parser.add_argument("--lr", type=float, default=unset, help="AdamW learning rate, cosine-decayed (default: 1e-3)")
    parser.add_argument("--weight-decay", type=float, default=unset, help="default: 1e-4")
    parser.add_argument("--hidden", type=_hidden, default=unset, metavar="N,N",
                        help="hidden layer sizes; the last is the aesthetic feature size (default: 1024,256)")
    parser.add_argument("--dropout", type=float, default=unset, help="default: 0.25")
    parser.add_argument("--loss", choices=("emd", "mse", "l1"), default=unset,
                        help="emd on vote distributions (MSE for scalar labels), or mse/l1 on the mean score "
                             "(default: emd)")
    parser.add_argument("--rank-weight", type=float, default=unset, help="weight of a pairwise rank loss (default: 0)")
    parser.add_argument("--patience", type=int, default=unset,
                        help="early-stopping epochs without a better val SRCC (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the carved val split (default: 0)")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of train carved out as val when the dataset has no val split (default: %(default)s)")
    parser.add_argument("--device", default=unset, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default=unset, help="Lightning precision, e.g. bf16-mixed (default: 32-true)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..training.teacher import TeacherTrainConfig, train_teacher_head

    given = {k: v for k, v in vars(args).items() if k in TeacherTrainConfig.__dataclass_fields__}
    config = TeacherTrainConfig(**given, progress=not args.no_progress)
    dataset = open_dataset(args.dataset, val_fraction=args.val_fraction, seed=args.seed)
    metrics = train_teacher_head(dataset, args.features, args.out, config)
    parts = []
    for split in ("val", "test"):
        result = metrics.get(split)
        if result and result["srcc"] is not None:
            parts.append(f"{split} SRCC {result['srcc']:.4f} PLCC {result['plcc']:.4f} ({result['count']} images)")
    print(f"teacher head (best epoch {metrics['best_epoch']}): {'; '.join(parts) or 'no correlations'}")
    print(f"head, distillation targets of {metrics['targets']} images and metrics.json written to {args.out}")
    return 0
