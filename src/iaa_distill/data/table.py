"""One split as arrays, row i = image i (`SplitTable`), built by one function (`split_table`) from the records,
the score space, the rows of the cache the images are read from and, for distillation, the teacher's targets.
The teacher head trains on such tables (rows of the feature cache), the student too (rows of the image cache)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import IAAError
from .records import ImageRecord

if TYPE_CHECKING:
    from ..score_space import ScoreSpace
    from ..targets import DistillationTargets


@dataclass
class SplitTable:
    """One split: ids, cache rows, label targets and (for distillation) the teacher's rows.

    With unlabelled images (distillation only) the labelled rows come first and `num_labelled` says where the
    unlabelled ones start (placeholder labels, NaN means); None when every row is labelled."""

    ids: list[str]
    rows: np.ndarray  # (N,) row of each image in the cache it is read from
    labels: np.ndarray  # (N, K) distribution or (N,) normalised score
    means: np.ndarray  # (N,) GT mean on the scale
    features: np.ndarray | None = None  # (N, F) teacher aesthetic feature
    predictions: np.ndarray | None = None  # (N, K) or (N,) teacher prediction
    num_labelled: int | None = None
    source: Path | None = None  # the array file `rows` index (an image cache's pixels), when the reader needs it

    @property
    def num_unlabeled(self) -> int:
        return 0 if self.num_labelled is None else len(self.rows) - self.num_labelled

    def __len__(self) -> int:
        return len(self.rows)


def split_table(records: Sequence[ImageRecord], space: ScoreSpace, rows_for: Callable[[list[str]], np.ndarray],
                targets: DistillationTargets | None = None, unlabelled: Sequence[ImageRecord] = (),
                source: Path | None = None) -> SplitTable:
    """The table of the labelled `records` followed by the `unlabelled` ones (which need `targets`).

    rows_for: image ids -> their rows in the cache the split is read from (`source`, if the reader needs the
    file). targets: the teacher's aesthetic feature and prediction of every image (distillation), checked finite."""
    ids = [r.image_id for r in records]
    labels, means = space.encode_all([r.label for r in records], ids)
    table = SplitTable(ids, rows_for(ids), labels, means, source=source)
    if targets is not None:
        table.features, table.predictions = teacher_rows(records, targets)
    if not unlabelled:
        return table
    extra = [r.image_id for r in unlabelled]
    features, predictions = teacher_rows(unlabelled, targets)
    n = len(extra)
    return SplitTable(
        ids + extra, np.concatenate([table.rows, rows_for(extra)]),
        np.concatenate([labels, np.zeros((n, *labels.shape[1:]), labels.dtype)]),
        np.concatenate([means, np.full(n, np.nan, means.dtype)]),
        np.concatenate([table.features, features]), np.concatenate([table.predictions, predictions]),
        num_labelled=len(ids), source=source)


def teacher_rows(records: Sequence[ImageRecord], targets: DistillationTargets) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's (aesthetic feature, prediction) rows of `records`, checked finite."""
    rows = targets.rows_for([r.image_id for r in records])
    features, predictions = targets.features[rows], targets.predictions[rows]
    finite = np.isfinite(features).all(1) & np.isfinite(predictions).all(axis=tuple(range(1, predictions.ndim)))
    if not finite.all():
        raise IAAError(f"{targets.source}: the distillation targets of {int((~finite).sum())} images are not "
                       f"finite (e.g. '{records[int(np.argmin(finite))].image_id}'); retrain the teacher head")
    return features, predictions
