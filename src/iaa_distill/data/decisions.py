"""The gallery's exported decisions (`decisions:decisions.csv`) as a ratings dataset: closing the loop.

Rows are read by `culling.decisions.read_decisions` (columns path, score, flag, rating, burst, reason; paths
relative to the file's folder). By default only the photos rated or flagged *in the gallery* (reason "set in
the gallery") carry a label: every other row holds the cull's own stars, a model's echo, not the
photographer's taste (`ratings=all` counts them too). Stars 1-5 are the label, a reject the bottom of the
scale, as in `xmp:`; every other row is an unrated (unlabelled) photo. Ids are paths relative to the folder
that holds all the photos; the held-out test photos are chosen as `xmp:` chooses them (`held_out`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError, IAAError
from .parsing import assign_splits
from .records import Dataset, ImageRecord
from .xmp_ratings import SCALE, held_out, rated_record

EDITED = "set in the gallery"  # the reason the gallery's export gives a decision made by hand
RATINGS = ("gallery", "all")


def read_decisions_ratings(path: Path, *, seed: int = 0, test_fraction: float = 0.2,
                           ratings: str = "gallery") -> Dataset:
    """The photos of a decisions file with the ratings given in the gallery (or all, `ratings=all`)."""
    from ..culling.decisions import read_decisions
    from ..culling.rules import REJECT, REJECT_RATING

    if ratings not in RATINGS:
        raise DatasetError(f"decisions:{path}: ratings={ratings!r}; expected one of {', '.join(RATINGS)}")
    try:
        decisions = read_decisions(path)
    except IAAError as exc:
        raise DatasetError(str(exc)) from None
    if not decisions:
        raise DatasetError(f"{path}: no decisions in the file")
    root = Path(os.path.commonpath([os.path.dirname(d.path) for d in decisions]))
    records, notes = [], []
    for d in decisions:
        mine = ratings == "all" or d.reason.strip() == EDITED
        rating = (REJECT_RATING if d.flag == REJECT else d.rating) if mine else 0
        listed = ImageRecord(image_id=Path(d.path).relative_to(root).as_posix(), path=Path(d.path), dataset="decisions")
        records.append(rated_record(listed, rating or None))
    rated = [r.image_id for r in records if r.label is not None]
    records = assign_splits(records, {"test": held_out(rated, test_fraction, seed)})
    notes.append(f"{len(rated)} photos rated {'in the gallery' if ratings == 'gallery' else 'in the file'}, "
                 f"{len(records) - len(rated)} unrated (unlabelled)")
    return Dataset(name=Path(path).stem, root=root, records=records, scale=SCALE, notes=notes)
