"""The split a run uses, decided once, here: readers give the official splits; `carve_val` takes a seeded
share of the *found* labelled train images as val when a dataset has no val list (inside `open_dataset`);
`split.json` (the ids of the train and val images a model was trained and selected on, saved in its run
folder and next to the saved model) is written and read here, so that evaluation of `--split val` reuses it.
A saved model's config.json also records how its val split was made (`split_record`), so that a model folder
copied without split.json is evaluated on the same split (`as_trained`), or refused on val when it had none.
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
SPLIT_RECORD = "split"  # the key of `split_record` in a saved model's config.json `extra`


def carve_val(dataset: Dataset, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> Dataset:
    """`dataset` with a seeded `val_fraction` of its found labelled train images moved to val, unless it
    already has labelled val images (an official val list is kept as it is); `val_fraction` 0 carves none (and
    notes nothing: every train image trains). `val_carved` records (val_fraction, seed) unless a val list is kept."""
    labelled = [r for r in dataset.records if r.label is not None]
    if not labelled or any(r.split == "val" for r in labelled):
        return dataset
    if not val_fraction:
        return replace(dataset, val_carved=(0.0, int(seed)))
    exists = existing_files(labelled)
    found = [r.image_id for r in labelled if r.split == "train" and exists(r.path)]
    val = seeded_subset(found, val_fraction, seed)
    note = f"val = {len(val)} of the {len(found)} found train images (seeded: val_fraction {val_fraction:g}, seed {seed})"
    return replace(dataset, records=assign_splits(dataset.records, {"val": val}), notes=[*dataset.notes, note],
                   val_carved=(float(val_fraction), int(seed)))


def split_record(dataset: Dataset, num_val: int) -> dict:
    """What a saved model's config.json records of its split (under `SPLIT_RECORD`): its number of val images
    and, when `carve_val` drew them, the val_fraction and seed that did (val_fraction 0: trained without val)."""
    record: dict = {"val_images": num_val}
    if dataset.val_carved is not None:
        record["val_fraction"], record["seed"] = dataset.val_carved
    return record


def as_trained(dataset: Dataset, record: dict) -> tuple[Dataset, str | None]:
    """`dataset` with the val split of the model that saved `record` (`split_record`; for a model folder without
    split.json): carved again with the model's val_fraction and seed where this dataset carved another, with a
    one-line note of what was assumed when that is not the dataset as given or the count differs."""
    trained = record["val_images"]
    if "val_fraction" not in record:  # the model's val images were a val list of the dataset's
        if dataset.val_carved is None:
            return dataset, None
        return dataset, (f"the model was selected on the dataset's own val list ({trained} images); this one has "
                         f"none: evaluated on the val split carved here ({_val_count(dataset)} images)")
    fraction, seed = float(record["val_fraction"]), int(record["seed"])
    how = f"val_fraction {fraction:g}, seed {seed}"
    carved = dataset
    if dataset.val_carved != (fraction, seed):
        base = dataset if dataset.val_carved is None else replace(
            dataset, records=[replace(r, split="train") if r.split == "val" else r for r in dataset.records])
        if _val_count(base):
            return dataset, (f"the model's {trained} val images were carved ({how}); this dataset has a val list "
                             f"of its own, evaluated as its val split ({_val_count(base)} images)")
        carved = carve_val(base, fraction, seed)
    count = _val_count(carved)
    if carved is dataset and count == trained:
        return dataset, None
    return carved, (f"no {SPLIT_FILE} with the model: val carved as in its training ({how}), {count} images"
                    + ("" if count == trained else f" ({trained} then)"))


def _val_count(dataset: Dataset) -> int:
    return sum(r.split == "val" and r.label is not None for r in dataset.records)


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
