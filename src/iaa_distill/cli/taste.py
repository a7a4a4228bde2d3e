"""Learn your taste: a personal model from the star ratings and rejects you already gave your photos.

PHOTOS is a folder: ratings are read from XMP sidecars (photo.xmp, photo.ext.xmp) and embedded XMP;
stars 1-5 are your scores, rejects the bottom, unrated photos free unlabelled data for the distillation.
A dataset spec works too (decisions:GALLERY-EXPORT.csv, csv:labels.csv). Trains through the stages of
`iaa fit` (recipe in OUT/recipe.yaml), reports agreement with your held-out ratings and prints the model's path.
Rerunning with more ratings reuses the features."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..taste.personal import MIN_RATINGS

    parser.add_argument("photos", metavar="PHOTOS", help="folder of rated photos (or a dataset spec FORMAT:PATH)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (model in OUT/student/model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of training")
    parser.add_argument("--min-ratings", type=int, default=MIN_RATINGS, metavar="N",
                        help=f"refuse below N rated photos (default {MIN_RATINGS})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="sets",
                        help="override one recipe setting, e.g. --set student.epochs=8 (repeatable)")
    parser.add_argument("--compare", action="store_true",
                        help="also train the label-only baseline and its frozen-feature probe and report their "
                             "agreement (a comparison, not needed for your model; about a third more time)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from ..taste.personal import fit_taste, summary_lines, taste_recipe

    recipe = taste_recipe(args.photos, args.out.expanduser(), args.seed, args.sets, args.compare)
    result = fit_taste(recipe, progress=not args.no_progress, log=print, min_ratings=args.min_ratings)
    print("\n" + "\n".join(summary_lines(result)))
    return 0

