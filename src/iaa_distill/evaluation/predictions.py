"""Per-image evaluation data and its `per_image.csv` form (which `iaa compare` reads back).

Columns: id, true_mean, pred_mean, pred_std, pred_dist, true_dist, categories. Distributions are
space-separated floats (blank when the model or the labels have none); categories are '|'-separated.
Floats are written with repr(), so reading the file back gives exactly the same metrics.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import atomic_write_text
from ..data.parsing import checked_rows, read_text
from ..score_space import ScoreSpace
from ..errors import IAAError

COLUMNS = ("id", "true_mean", "pred_mean", "pred_std", "pred_dist", "true_dist", "categories")


@dataclass
class Predictions:
    """True and predicted scores of N images, aligned by row."""

    ids: list[str]
    true_mean: np.ndarray  # (N,) on `scale`
    pred_mean: np.ndarray  # (N,)
    true_dist: np.ndarray | None = None  # (N, K) vote distributions
    pred_dist: np.ndarray | None = None  # (N, K) predicted distributions
    categories: list[tuple[str, ...]] = field(default_factory=list)
    scale: tuple[float, float] | None = None
    num_levels: int | None = None
    model_name: str = ""
    dataset: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids = [str(i) for i in self.ids]
        self.true_mean = np.asarray(self.true_mean, dtype=np.float64)
        self.pred_mean = np.asarray(self.pred_mean, dtype=np.float64)
        if not self.categories:
            self.categories = [()] * n
        self.categories = [tuple(c) for c in self.categories]
        for name in ("true_dist", "pred_dist"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.ndim != 2 or len(value) != n:
                    raise ValueError(f"{name} must be (N, K) with N={n}, got {value.shape}")
                setattr(self, name, value)
        if len(self.true_mean) != n or len(self.pred_mean) != n or len(self.categories) != n:
            raise ValueError("ids, true_mean, pred_mean and categories must have the same length")
        if self.scale is not None:
            self.scale = (float(self.scale[0]), float(self.scale[1]))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pred_std(self) -> np.ndarray:
        """Standard deviation of each predicted distribution on the scale (NaN without distributions)."""
        if self.pred_dist is None or self.scale is None:
            return np.full(len(self), np.nan)
        return ScoreSpace(self.pred_dist.shape[1], self.scale).std(self.pred_dist, self.pred_mean)

    def subset(self, rows: Sequence[int] | np.ndarray) -> "Predictions":
        """The predictions of the given rows (same metadata)."""
        rows = np.asarray(rows, dtype=np.int64)
        return Predictions(
            [self.ids[i] for i in rows], self.true_mean[rows], self.pred_mean[rows],
            None if self.true_dist is None else self.true_dist[rows],
            None if self.pred_dist is None else self.pred_dist[rows],
            [self.categories[i] for i in rows], self.scale, self.num_levels,
            self.model_name, self.dataset, self.split,
        )

    def reordered(self, ids: Sequence[str]) -> "Predictions":
        """The same predictions in the row order of `ids` (every id must be present)."""
        position = {image_id: row for row, image_id in enumerate(self.ids)}
        return self.subset([position[i] for i in ids])

    def to_csv(self, path: str | Path) -> Path:
        """Write `per_image.csv` atomically."""
        path = Path(path)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        pred_std = self.pred_std
        for row, image_id in enumerate(self.ids):
            writer.writerow([
                image_id,
                repr(float(self.true_mean[row])),
                repr(float(self.pred_mean[row])),
                "" if math.isnan(pred_std[row]) else repr(float(pred_std[row])),
                _format_dist(self.pred_dist, row),
                _format_dist(self.true_dist, row),
                "|".join(self.categories[row]),
            ])
        atomic_write_text(path, buffer.getvalue())
        return path

    @classmethod
    def from_csv(
        cls, path: str | Path, scale: tuple[float, float] | None = None, num_levels: int | None = None,
        model_name: str = "", dataset: str = "", split: str = "",
    ) -> "Predictions":
        """Read `per_image.csv` back; a malformed row is an IAAError naming file and line."""
        path = Path(path)
        text = read_text(path)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise IAAError(f"{path}: not a per_image.csv (missing column(s) {', '.join(missing)})")
        ids, true_mean, pred_mean, pred_dist, true_dist, categories = [], [], [], [], [], []
        for row in checked_rows(reader, path):
            where = f"{path}:{reader.line_num}"
            try:
                true_mean.append(float(row["true_mean"]))
                pred_mean.append(float(row["pred_mean"]))
                pred_dist.append(_parse_dist(row["pred_dist"]))
                true_dist.append(_parse_dist(row["true_dist"]))
            except (ValueError, TypeError):
                raise IAAError(f"{where}: malformed number in row {row.get('id')!r}") from None
            ids.append(row["id"])
            categories.append(tuple(c for c in (row["categories"] or "").split("|") if c))
        return cls(ids, np.array(true_mean), np.array(pred_mean), _stack(true_dist, path, "true_dist"),
                   _stack(pred_dist, path, "pred_dist"), categories, scale, num_levels, model_name, dataset, split)


def _format_dist(dist: np.ndarray | None, row: int) -> str:
    return "" if dist is None else " ".join(repr(float(v)) for v in dist[row])


def _parse_dist(text: str | None) -> list[float] | None:
    text = (text or "").strip()
    return [float(v) for v in text.split()] if text else None


def _stack(rows: list[list[float] | None], path: Path, column: str) -> np.ndarray | None:
    """(N, K) when every row has a distribution of the same length, None when none has one."""
    present = [r is not None for r in rows]
    if not rows or not any(present):
        return None
    if not all(present) or len({len(r) for r in rows}) != 1:
        raise IAAError(f"{path}: column {column} must be filled with the same number of values in every row or none")
    return np.array(rows, dtype=np.float64)
