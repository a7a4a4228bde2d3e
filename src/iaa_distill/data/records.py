"""The common record every dataset reader produces: one image, its split, categories and label."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
# A file of this name beside a ratings CSV marks its labels as synthetic (made by a formula, not by people);
# models trained on them say so wherever they are used.
SYNTHETIC_MARKER = "SYNTHETIC_LABELS.txt"


def ids_hash(ids: Iterable[str]) -> str:
    """The one hash of an image-id list (16 hex digits): dataset fingerprints, cache manifests and run folders."""
    h = hashlib.sha256()
    for image_id in ids:
        h.update(image_id.encode() + b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Label:
    """An aesthetic label: vote counts over K ordered levels and/or a scalar mean on `scale`.

    Levels are equally spaced from scale[0] to scale[1]; for AVA K=10 and scale=(1, 10).
    """

    scale: tuple[float, float]
    votes: tuple[float, ...] | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        if self.votes is None and self.score is None:
            raise ValueError("a label needs votes or a score")

    @property
    def num_levels(self) -> int | None:
        return None if self.votes is None else len(self.votes)

    @property
    def mean(self) -> float:
        """Mean score on the label's scale (from the votes when they exist)."""
        if self.votes is not None:
            v = np.asarray(self.votes, dtype=np.float64)
            return float((v * level_values(len(v), self.scale)).sum() / v.sum())
        return float(self.score)

    def distribution(self) -> np.ndarray | None:
        """Normalised vote histogram, or None for a scalar-only label."""
        if self.votes is None:
            return None
        v = np.asarray(self.votes, dtype=np.float64)
        return v / v.sum()


def level_values(num_levels: int, scale: tuple[float, float]) -> np.ndarray:
    """Score value of each of K equally spaced levels on `scale` (AVA: 1, 2, ..., 10)."""
    return np.linspace(scale[0], scale[1], num_levels)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset. `split` is '' for unlabelled folders; `label` is None there."""

    image_id: str
    path: Path
    dataset: str
    split: str = ""
    categories: tuple[str, ...] = ()
    label: Label | None = None


@dataclass
class Dataset:
    """All records of one dataset with the label layout they share."""

    name: str
    root: Path
    records: list[ImageRecord]
    num_levels: int | None = None
    scale: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    synthetic_labels: bool = False  # labels made by a formula (the demo's), not human ratings
    dropped: dict[str, str] = field(default_factory=dict)  # image id -> why it is left out (missing, undecodable)
    listed_fingerprint: str = ""  # `fingerprint()` of the records as listed, kept when images are dropped
    val_carved: tuple[float, int] | None = None  # (val_fraction, seed) of `splits.carve_val`; None: a val list

    def split(self, name: str) -> list[ImageRecord]:
        """Records of one split ('train', 'val', 'test'; 'all' for every record)."""
        if name == "all":
            return list(self.records)
        return [r for r in self.records if r.split == name]

    def without(self, reasons: Mapping[str, str]) -> "Dataset":
        """The dataset without the images in `reasons` (id -> why), which `dropped` then lists.

        The fingerprint stays the listed dataset's: caches made for it still open."""
        gone = {r.image_id: reasons[r.image_id] for r in self.records if r.image_id in reasons}
        if not gone:
            return self
        return replace(self, records=[r for r in self.records if r.image_id not in gone],
                       dropped={**self.dropped, **gone}, listed_fingerprint=self.fingerprint())

    def fingerprint(self) -> str:
        """A stable hash of the image ids as listed (not labels, not the folder): detects a cache made for other
        images. A dataset with dropped images keeps the fingerprint of its listed records."""
        return self.listed_fingerprint or ids_hash(r.image_id for r in self.records)
