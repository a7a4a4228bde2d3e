"""Add unlabelled images to a labelled dataset, for distillation beyond the labels.

Each unlabelled dataset spec (e.g. `folder:~/Photos`) is read like any dataset; its images join
the labelled dataset as records of their own split, `unlabeled`, with ids prefixed by
`unlabeled/<n>/` (n = the spec's position) so they cannot collide with labelled ids or with each
other. The feature cache and the teacher's targets then cover them like any other image, while
the teacher head (labelled train images only), the evaluation (test split) and the label-only
baseline never see them. Any labels the spec carries are dropped; images whose file is already
part of the labelled dataset are skipped with a note (they would leak val/test images into training).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..errors import DatasetError
from .records import Dataset, ImageRecord

UNLABELED_SPLIT = "unlabeled"


def unlabeled_id(position: int, image_id: str) -> str:
    """The id an image of the `position`-th unlabelled spec takes in the combined dataset."""
    return f"{UNLABELED_SPLIT}/{position}/{image_id}"


def with_unlabeled(dataset: Dataset, specs: Sequence[str], *, seed: int = 0) -> Dataset:
    """`dataset` plus the images of every spec in `specs` as unlabelled records (`dataset` itself if none)."""
    from .registry import open_dataset

    if not specs:
        return dataset
    labelled_files = {r.path.resolve() for r in dataset.records}
    added: list[ImageRecord] = []
    notes = list(dataset.notes)
    for position, spec in enumerate(specs):
        extra = open_dataset(spec, seed=seed)
        fresh = [r for r in extra.records if r.path.resolve() not in labelled_files]
        if len(fresh) < len(extra.records):
            notes.append(f"unlabelled {spec}: {len(extra.records) - len(fresh)} image(s) already in the labelled "
                         "dataset skipped")
        if not fresh:
            raise DatasetError(f"unlabelled dataset {spec!r}: no images besides the labelled ones; "
                               "point it at a folder of other photos")
        added += [ImageRecord(image_id=unlabeled_id(position, r.image_id), path=r.path, dataset=r.dataset,
                              split=UNLABELED_SPLIT, categories=r.categories) for r in fresh]
        notes += [f"unlabelled {spec}: {note}" for note in extra.notes]
    return replace(dataset, records=[*dataset.records, *added], notes=notes, listed_fingerprint="")
