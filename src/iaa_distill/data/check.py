"""`iaa data check`: is a dataset usable? Counts per split, label statistics, categories, missing and bad files.

Existence is checked with one `os.scandir` per image folder (a set lookup per record), so the
~255k AVA entries take about a second. With `decode=True` every found image is decoded with the
shared decoder (reduced-size JPEG decode to `min_side`, like feature extraction) in a process pool.

The splits are the ones a run uses (`open_dataset`: val carved from the found train images). A dataset
is usable when it has images on disk (decodable ones, with `decode`) and, when labelled, in each of its
'train', 'val' and 'test' splits. Missing or undecodable files alone do not make it unusable: runs drop
them (`iaa fit` lists them in OUT/dropped.json); they are reported as warnings.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import DecodeError
from ..imaging import DEFAULT_MAX_PIXELS, decode_image
from ..errors import DatasetError
from .records import SPLITS, Dataset, ImageRecord
from .splits import existing_files

EXAMPLES = 5
REQUIRED_SPLITS = ("train", "val", "test")
FIXES = {"val": ": carve one from more train images with a larger --val-fraction, or list val images"}


@dataclass
class SplitReport:
    """Counts and label statistics of one split ('all' for unlabelled folders)."""

    name: str
    listed: int
    found: int
    missing: int
    undecodable: int | None = None
    score_mean: float | None = None
    score_std: float | None = None
    votes_mean: float | None = None
    votes_min: float | None = None
    votes_max: float | None = None
    categories: dict[str, int] = field(default_factory=dict)
    missing_examples: list[str] = field(default_factory=list)
    undecodable_examples: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Images a run can use: found and, when decoded, decodable."""
        return self.found - (self.undecodable or 0)


@dataclass
class DataCheckReport:
    """Everything `iaa data check` prints; `usable` is False with `reasons` when a run cannot use it."""

    dataset: str
    root: str
    num_levels: int | None
    scale: tuple[float, float] | None
    decoded: bool
    splits: list[SplitReport]
    notes: list[str]
    usable: bool
    reasons: list[str]
    warnings: list[str]

    def to_dict(self) -> dict:
        return asdict(self)

    def refusal(self, spec: str) -> str:
        """The one-line error of an unusable dataset named `spec`."""
        return f"dataset {spec} is not usable: {'; '.join(self.reasons)}"


def require_usable(dataset: Dataset, spec: str, need_val: bool = True) -> None:
    """Refuse (DatasetError, one line) a dataset whose images or splits a run cannot use; no decoding.
    need_val: False for a run asked to carve no val split (`val_fraction` 0), whose stages choose without one."""
    report = check_dataset(dataset, need_val=need_val)
    if not report.usable:
        raise DatasetError(report.refusal(spec))


def check_dataset(
    dataset: Dataset,
    decode: bool = False,
    workers: int = min(8, os.cpu_count() or 1),
    min_side: int | None = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    need_val: bool = True,
) -> DataCheckReport:
    """Check that the images of `dataset` exist (and decode, with `decode`) and summarise its labels; an empty
    val split passes without `need_val`."""
    labelled = dataset.scale is not None
    groups = [(s, dataset.split(s)) for s in SPLITS] if labelled else [("all", dataset.records)]
    exists = existing_files(dataset.records)
    splits = []
    for name, records in groups:
        present = [exists(r.path) for r in records]
        found = [r for r, ok in zip(records, present) if ok]
        missing = [r for r, ok in zip(records, present) if not ok]
        report = SplitReport(name, len(records), len(found), len(missing), missing_examples=[str(r.path) for r in missing[:EXAMPLES]])
        if labelled:
            _label_stats(report, records)
        if decode:
            errors = _decode_all([str(r.path) for r in found], workers, min_side, max_pixels, progress, name)
            report.undecodable = len(errors)
            report.undecodable_examples = errors[:EXAMPLES]
        splits.append(report)

    reasons, warnings = [], []
    listed = sum(s.listed for s in splits)  # the unlabelled images of a labelled dataset are in no split here
    if not dataset.records:
        reasons.append("no images listed" if labelled else f"no image files under {dataset.root}")
    elif listed == 0:
        reasons.append(f"no labelled images: all {len(dataset.records):,} are unlabelled")
    elif sum(s.usable for s in splits) == 0:
        reasons.append(f"none of the {listed:,} listed images {'decode' if decode else 'exist'} (wrong image folder?)")
    elif labelled:
        for split in splits:
            if split.name in REQUIRED_SPLITS and split.usable == 0 and (need_val or split.name != "val"):
                reasons.append(f"split '{split.name}' has no usable images ({split.listed} listed)"
                               + FIXES.get(split.name, ""))
    for split in splits:
        if split.missing:
            warnings.append(f"{split.name}: {split.missing:,} of {split.listed:,} images missing (dropped by every "
                            "stage of a run; `iaa fit` lists them in OUT/dropped.json)")
        if split.undecodable:
            warnings.append(f"{split.name}: {split.undecodable:,} images cannot be decoded (dropped like missing ones)")
    return DataCheckReport(
        dataset=dataset.name, root=str(dataset.root), num_levels=dataset.num_levels, scale=dataset.scale,
        decoded=decode, splits=splits, notes=list(dataset.notes), usable=not reasons, reasons=reasons, warnings=warnings,
    )


def _label_stats(report: SplitReport, records: list[ImageRecord]) -> None:
    """Mean/std of the mean scores and, for vote labels, votes per image."""
    if not records:
        return
    with_votes = [r.label.votes for r in records if r.label.votes is not None]
    if len(with_votes) == len(records):
        votes = np.asarray(with_votes, dtype=np.float64)
        levels = np.linspace(*records[0].label.scale, votes.shape[1])
        totals = votes.sum(axis=1)
        means = votes @ levels / totals
        report.votes_mean, report.votes_min, report.votes_max = float(totals.mean()), float(totals.min()), float(totals.max())
    else:
        means = np.array([r.label.mean for r in records])
    report.score_mean, report.score_std = float(means.mean()), float(means.std())
    report.categories = dict(Counter(c for r in records for c in r.categories).most_common())


def _decode_one(task: tuple[str, int | None, int]) -> str:
    path, min_side, max_pixels = task
    try:
        decode_image(path, min_side=min_side, max_pixels=max_pixels)
        return ""
    except DecodeError as exc:
        return str(exc)


def _decode_all(paths: list[str], workers: int, min_side: int | None, max_pixels: int, progress: bool, name: str) -> list[str]:
    """The error message of every image that does not decode."""
    from tqdm import tqdm

    tasks = [(p, min_side, max_pixels) for p in paths]
    bar = dict(total=len(tasks), desc=f"decoding {name}", unit="img", file=sys.stderr, disable=not progress or None)
    if workers <= 1 or len(tasks) < 64:
        results = [_decode_one(t) for t in tqdm(tasks, **bar)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_decode_one, tasks, chunksize=32), **bar))
    return [r for r in results if r]
