"""The split a run uses, decided once, here: readers give the official splits; `carve_val` takes a seeded
share of the *found* labelled train images as val when a dataset has no val list (inside `open_dataset`);
`split.json` (the ids of the train and val images a model was trained and selected on, saved in its run
folder and next to the saved model) is written and read here, so that evaluation of `--split val` reuses it.
Light: no torch."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..artifacts import atomic_write_text
from .parsing import assign_splits, seeded_subset
from .records import Dataset, ImageRecord

DEFAULT_VAL_FRACTION = 0.05  # share of the found train images carved out as val when a dataset has no val list
SPLIT_FILE = "split.json"


def carve_val(dataset: Dataset, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> Dataset:
    """`dataset` with a seeded `val_fraction` of its found labelled train images moved to val, unless it
    already has labelled val images (an official val list is kept as it is); `val_fraction` 0 carves none (and
    notes nothing: every train image trains)."""
    labelled = [r for r in dataset.records if r.label is not None]
    if not val_fraction or not labelled or any(r.split == "val" for r in labelled):
        return dataset
    exists = existing_files(labelled)
    found = [r.image_id for r in labelled if r.split == "train" and exists(r.path)]
    val = seeded_subset(found, val_fraction, seed)
    note = f"val = {len(val)} of the {len(found)} found train images (seeded: val_fraction {val_fraction:g}, seed {seed})"
    return replace(dataset, records=assign_splits(dataset.records, {"val": val}), notes=[*dataset.notes, note])


def existing_files(records: Sequence[ImageRecord]) -> Callable[[Path], bool]:
    """A fast `exists(path)`: one directory listing per folder instead of one stat per file."""
    listings: dict[str, set[str]] = {}
    for folder in {os.path.dirname(str(r.path)) for r in records}:
        try:
            with os.scandir(folder or ".") as entries:
                listings[folder] = {e.name for e in entries if e.is_file()}
        except OSError:
            listings[folder] = set()

    def exists(path: Path) -> bool:
        folder, name = os.path.split(str(path))
        return name in listings.get(folder, ())

    return exists


def save_split(directory: Path, train_ids: Sequence[str], val_ids: Sequence[str]) -> None:
    """Write `split.json` (the ids of the train and val images) into `directory`."""
    atomic_write_text(directory / SPLIT_FILE, json.dumps({"train": list(train_ids), "val": list(val_ids)}) + "\n")


def load_split(directory: str | Path) -> dict[str, list[str]] | None:
    """The train/val ids saved with a run or a model, or None when the folder has none."""
    path = Path(directory).expanduser() / SPLIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
