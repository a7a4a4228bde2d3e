"""Generic CSV: how users bring their own ratings.

Columns (header required, case-insensitive): `image` (path relative to the CSV's folder) and either
`score` (any numeric scale) or vote counts `votes_1..votes_K` (K ordered levels); optional `split`
(train/val/test) and `category` (several separated by `;`, each becoming `category:<name>`).

Scale: `scale=LOW,HIGH` in the spec (`csv:/data/labels.csv?scale=1,10`) wins; otherwise votes
use levels 1..K and scores use (min, max) of the score column, so pass `scale` whenever the file
does not reach both ends of its scale. Without a `split` column: test = a seeded `test_fraction`
(default 20 %), train = the rest. Without 'val' rows, `open_dataset` carves val from the found train
images (`data.splits`, noted). Malformed rows raise `DatasetError` naming file:line.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import DatasetError
from .parsing import assign_splits, csv_rows, deduplicate, number, relative_id, seeded_subset, vote_counts
from .records import Dataset, ImageRecord, Label, SPLITS, SYNTHETIC_MARKER

VOTE_COLUMN = re.compile(r"votes_(\d+)$")


def read_csv(
    path: Path,
    *,
    seed: int = 0,
    scale: str | tuple[float, float] | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """Read a ratings CSV; images are resolved relative to the CSV's folder."""
    label_file = Path(path)
    root = label_file.parent
    header, rows = csv_rows(label_file)
    if "image" not in header:
        raise DatasetError(f"{label_file}: no 'image' column (found: {', '.join(header)})")
    vote_columns = _vote_columns(header, label_file)
    if not vote_columns and "score" not in header:
        raise DatasetError(f"{label_file}: needs a 'score' column or vote columns votes_1..votes_K")
    has_split = "split" in header

    entries, scores = [], []
    for line, row in rows:
        where = f"{label_file}:{line}"
        image_id = relative_id(row["image"], where)
        if vote_columns:
            votes = vote_counts([row[c] for c in vote_columns], where)
            if votes is None:
                raise DatasetError(f"{where}: all vote counts are zero")
            label: tuple | float = votes
        else:
            label = number(row["score"], where)
            scores.append(label)
        split = row["split"].lower() if has_split else "train"
        if split not in SPLITS:
            raise DatasetError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        categories = tuple(f"category:{c.strip()}" for c in row.get("category", "").split(";") if c.strip())
        entries.append((where, image_id, split, categories, label))
    if not entries:
        raise DatasetError(f"{label_file}: no rows below the header")

    low_high = _scale(scale, label_file, len(vote_columns), scores)
    notes: list[str] = []
    records = deduplicate(
        [
            (where, ImageRecord(image_id, root / image_id, "csv", split, categories,
                                Label(low_high, votes=label) if vote_columns else Label(low_high, score=label)))
            for where, image_id, split, categories, label in entries
        ],
        notes,
    )
    if not vote_columns and scale is None:
        notes.append(f"scale taken from the score column: {low_high[0]:g}..{low_high[1]:g} (override with ?scale=LOW,HIGH)")
    if not has_split:
        test = seeded_subset([r.image_id for r in records], test_fraction, seed)
        records = assign_splits(records, {"test": test})
        notes.append(f"no split column: seeded split with {len(test)} test images")
    return Dataset(
        name=label_file.stem, root=root, records=records,
        num_levels=len(vote_columns) or None, scale=low_high, notes=notes,
        synthetic_labels=(root / SYNTHETIC_MARKER).is_file(),
    )


def _vote_columns(header: list[str], label_file: Path) -> list[str]:
    """votes_1..votes_K in level order; gaps or a single level are errors."""
    levels = sorted(int(m.group(1)) for c in header if (m := VOTE_COLUMN.match(c)))
    if levels and levels != list(range(1, len(levels) + 1)):
        raise DatasetError(f"{label_file}: vote columns must be votes_1..votes_K without gaps, found levels {levels}")
    if len(levels) == 1:
        raise DatasetError(f"{label_file}: a single vote column (votes_1) is not a distribution; use 'score'")
    return [f"votes_{k}" for k in levels]


def _scale(scale, label_file: Path, num_levels: int, scores: list[float]) -> tuple[float, float]:
    if scale is not None:
        try:
            low, high = (float(v) for v in (scale.split(",") if isinstance(scale, str) else scale))
        except ValueError:
            raise DatasetError(f"scale must be LOW,HIGH (e.g. 1,10), got {scale!r}") from None
        if not low < high:
            raise DatasetError(f"scale must have LOW < HIGH, got {scale!r}")
        outside = [s for s in scores if not low <= s <= high]
        if outside:
            raise DatasetError(f"{label_file}: {len(outside)} scores lie outside the scale {low:g}..{high:g}, e.g. {outside[0]:g}")
        return (low, high)
    if num_levels:
        return (1.0, float(num_levels))
    low, high = min(scores), max(scores)
    if low == high:
        raise DatasetError(f"{label_file}: every score is {low:g}, cannot infer the scale; add ?scale=LOW,HIGH to the dataset spec")
    return (low, high)
