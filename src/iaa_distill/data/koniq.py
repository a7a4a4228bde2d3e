"""KonIQ-10k (Hosu et al. 2020): `koniq10k_scores_and_distributions.csv` with vote counts c1..c5 on 1..5.

There is no official split: test = a seeded `test_fraction` (default 20 %) of all images, train = the
rest (val is carved from the found train images by `open_dataset`; the common protocol is ~70/10/20:
`val_fraction=0.125`). Rows with zero votes are skipped with a note.
Images are in `1024x768/`; image ids are the file names.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .parsing import assign_splits, csv_rows, deduplicate, relative_id, seeded_subset, vote_counts
from .records import Dataset, ImageRecord, Label

SCALE = (1.0, 5.0)
LABEL_FILE = "koniq10k_scores_and_distributions.csv"
VOTE_COLUMNS = ("c1", "c2", "c3", "c4", "c5")


def read_koniq(path: Path, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Read a KonIQ-10k folder (the one holding the scores CSV) with a seeded split."""
    root = Path(path)
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise DatasetError(f"{root}: no {LABEL_FILE} here (expected the KonIQ-10k folder)")
    header, rows = csv_rows(label_file)
    missing = [c for c in ("image_name", *VOTE_COLUMNS) if c not in header]
    if missing:
        raise DatasetError(f"{label_file}: missing columns {', '.join(missing)}")
    images = root / "1024x768"
    notes: list[str] = []
    entries, zero = [], []
    for line, row in rows:
        where = f"{label_file}:{line}"
        image_id = relative_id(row["image_name"], where)
        votes = vote_counts([row[c] for c in VOTE_COLUMNS], where)
        if votes is None:
            zero.append(image_id)
            continue
        entries.append((where, ImageRecord(image_id, images / image_id, "koniq", "train", (), Label(SCALE, votes=votes))))
    if zero:
        notes.append(f"{len(zero)} rows with zero votes skipped (no label), e.g. {', '.join(zero[:3])}")
    records = deduplicate(entries, notes)
    records = assign_splits(records, {"test": seeded_subset([r.image_id for r in records], test_fraction, seed)})
    return Dataset(name="koniq", root=root, records=records, num_levels=5, scale=SCALE, notes=notes)
