"""A photo library for timing `iaa taste`: the demo generator's photos, a seeded sample of them rated by the
simulated photographer (`iaa_distill.demo.photographer`) through real XMP sidecars written by exiftool.

    python benchmarks/taste_library.py /tmp/taste3-library --photos 700 --rated 100
    /usr/bin/time -v iaa taste /tmp/taste3-library --out /tmp/taste3-out
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from iaa_distill.demo.photographer import SUBJECT, rate_with_exiftool
from iaa_distill.demo.synthetic import build_unlabeled_photos


def rated_library(folder: Path, photos: int, rated: int, seed: int = 0) -> dict[Path, int]:
    """`photos` JPEGs in `folder` (a new folder), `rated` of them rated (seeded sample); returns the ratings."""
    if folder.exists():
        raise SystemExit(f"{folder}: exists; give a new folder")
    build_unlabeled_photos(folder, math.ceil(photos / len(SUBJECT)), seed=seed)
    made = sorted(folder.glob("*.jpg"))
    for extra in made[photos:]:  # the generator makes a multiple of the demo's subjects
        extra.unlink()
    chosen = np.random.default_rng(seed).choice(photos, size=rated, replace=False)
    return rate_with_exiftool([made[i] for i in sorted(chosen)], seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="new folder for the library")
    parser.add_argument("--photos", type=int, default=700)
    parser.add_argument("--rated", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ratings = rated_library(args.folder, args.photos, args.rated, args.seed)
    stars = np.bincount(np.asarray(list(ratings.values())) + 1, minlength=7)
    print(f"{args.folder}: {args.photos} photos, {len(ratings)} rated (rejects {stars[0]}, "
          + ", ".join(f"{k}* {stars[k + 1]}" for k in range(1, 6)) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
