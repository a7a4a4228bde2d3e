"""AADB (Kong et al. 2016): `imgListFiles_label/imgList{Train,Validation,TestNew}Regression_score.txt`.

Each line is `image_name score` with the overall aesthetic score in 0..1; the official
train/val/test split is kept (AADB has a validation list).
Images are in `datasetImages_originalSize/`; image ids are the file names.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .parsing import deduplicate, number, relative_id, text_lines
from .records import Dataset, ImageRecord, Label

SCALE = (0.0, 1.0)
LIST_FILES = {"train": "Train", "val": "Validation", "test": "TestNew"}


def read_aadb(path: Path) -> Dataset:
    """Read an AADB folder (the one holding imgListFiles_label/) with its official split."""
    root = Path(path)
    lists = root / "imgListFiles_label"
    if not lists.is_dir():
        raise DatasetError(f"{root}: no imgListFiles_label/ folder here (expected the AADB folder)")
    images = root / "datasetImages_originalSize"
    rows = []
    for split, part in LIST_FILES.items():
        list_file = lists / f"imgList{part}Regression_score.txt"
        for line_number, line in text_lines(list_file):
            where = f"{list_file}:{line_number}"
            name, _, score = line.rpartition(" ")
            if not name.strip():
                raise DatasetError(f"{where}: expected 'image_name score', got {line!r}")
            image_id = relative_id(name, where)
            label = Label(SCALE, score=number(score, where))
            rows.append((where, ImageRecord(image_id, images / image_id, "aadb", split, (), label)))
    notes: list[str] = []
    records = deduplicate(rows, notes)
    return Dataset(name="aadb", root=root, records=records, num_levels=None, scale=SCALE, notes=notes)
