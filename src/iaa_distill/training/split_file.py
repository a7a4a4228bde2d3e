"""`split.json`: the ids of the train and val images a model was trained and selected on, saved in its run
folder and next to the saved model, so that evaluation of `--split val` reuses them. Light: no torch."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..artifacts import atomic_write_text

SPLIT_FILE = "split.json"


def save_split(directory: Path, train_ids: Sequence[str], val_ids: Sequence[str]) -> None:
    """Write `split.json` (the ids of the train and val images) into `directory`."""
    atomic_write_text(directory / SPLIT_FILE, json.dumps({"train": list(train_ids), "val": list(val_ids)}) + "\n")


def load_split(directory: str | Path) -> dict[str, list[str]] | None:
    """The train/val ids saved with a run or a model, or None when the folder has none."""
    path = Path(directory).expanduser() / SPLIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
