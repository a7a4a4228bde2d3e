"""Evaluate a trained model on a labelled dataset split as the IAA literature reports it: SRCC, PLCC
(raw and after the 4-parameter logistic fit), KRCC, binary accuracy, EMD, per-category SRCC/PLCC.
A student scores the images; a stage-1 teacher head is evaluated on a feature cache (--features).
Writes OUT/metrics.json, per_image.csv, report.md, report.html (self-contained) and PNG plots."""
from __future__ import annotations

import argparse

from .types import add_split_options, count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluation.settings import EvaluationSettings
    from .options import add_options

    parser.add_argument("--model", metavar="DIR", help="model folder: a student or a teacher head")
    parser.add_argument("positional_model", nargs="?", metavar="MODEL",
                        help="deprecated spelling of --model (iaa eval MODEL DATASET)")
    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or csv:labels.csv")
    parser.add_argument("--out", required=True, help="output folder for metrics, per-image CSV, reports and plots")
    parser.add_argument("--features", metavar="CACHE", help="feature cache folder (teacher heads; ignored for students)")
    add_options(parser, EvaluationSettings)
    add_split_options(parser)  # as used in training; only for models saved without split.json or a split record


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.registry import open_dataset
    from ..errors import IAAError
    from ..evaluation import evaluate_model
    from ..evaluation.report import PLOTS, fmt, headline_rows
    from ..evaluation.settings import EvaluationSettings
    from .options import config_from_args

    if (args.model is None) == (args.positional_model is None):
        raise IAAError("name the model once: iaa eval --model DIR DATASET")
    model = args.model or args.positional_model
    dataset = open_dataset(args.dataset, val_fraction=args.val_fraction, seed=args.seed)
    document = evaluate_model(model, dataset, config_from_args(EvaluationSettings, args), out=args.out,
                              features=args.features)
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
