"""Evaluate a trained model on a labelled dataset split as the IAA literature reports it: SRCC, PLCC
(raw and after the 4-parameter logistic fit), KRCC, binary accuracy, EMD, per-category SRCC/PLCC.
A student scores the images; a stage-1 teacher head is evaluated on a feature cache (--features).
Writes OUT/metrics.json, per_image.csv, report.md, report.html (self-contained) and PNG plots."""
from __future__ import annotations

import argparse
import sys

from .types import add_split_options, count, non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", help="model folder: a student or a teacher head")
    parser.add_argument("positional_model", nargs="?", metavar="MODEL",
                        help="deprecated spelling of --model (iaa eval MODEL DATASET)")
    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or csv:labels.csv")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="dataset split to evaluate (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder for metrics, per-image CSV, reports and plots")
    parser.add_argument("--features", metavar="CACHE", help="feature cache folder (teacher heads; ignored for students)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default: %(default)s)")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="image decoding workers (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    parser.add_argument("--min-category-images", type=positive_int, default=30,
                        help="categories with fewer images are flagged, not reported (default: %(default)s)")
    parser.add_argument("--threshold", type=float,
                        help="binary accuracy threshold (default: 5 on the 1..10 scale, else the scale midpoint)")
    add_split_options(parser)  # as used in training; only for models saved without the split.json of their run
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.registry import open_dataset
    from ..errors import IAAError
    from ..evaluation import evaluate_model
    from ..evaluation.report import PLOTS, fmt, headline_rows

    if (args.model is None) == (args.positional_model is None):
        raise IAAError("name the model once: iaa eval --model DIR DATASET")
    model = args.model or args.positional_model
    dataset = open_dataset(args.dataset, val_fraction=args.val_fraction, seed=args.seed)
    document = evaluate_model(
        model, dataset, split=args.split, out=args.out, features=args.features, batch_size=args.batch_size,
        num_workers=args.workers, device=args.device, min_category_images=args.min_category_images,
        threshold=args.threshold, progress=not args.no_progress and sys.stderr.isatty())
    rows = headline_rows(document["overall"])
    width = max(len(label) for label, _ in rows)
    print(f"{document['model']} on {document['dataset']} ({document['split']}): {count(document['n'], 'image')}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    shown = [c for c in document["per_category"] if not c["too_few"]]
    if shown:
        print(f"  per category ({len(shown)} with >= {document['min_category_images']} images): SRCC "
              + ", ".join(f"{c['category']} {fmt(c['srcc'], 3)}" for c in shown[:8])
              + (" ..." if len(shown) > 8 else ""))
    for note in document.get("notes", []):
        print(f"  note: {note}")
    if document["excluded"]:
        first = next(iter(document["excluded"].items()))
        print(f"  excluded {len(document['excluded'])} image(s) that could not be scored, e.g. {first[0]}: {first[1]}")
    out = Path(args.out)
    print(f"wrote {out / 'metrics.json'}, {out / 'per_image.csv'}, {out / 'report.md'}, {out / 'report.html'}, "
          + ", ".join(str(out / name) for name in PLOTS.values()))
    return 0
