"""Folder: any directory tree of images, unlabelled, for scoring.

Every file with an image extension (case-insensitive, see `imaging.IMAGE_EXTENSIONS`) below the
folder becomes a record whose id is its path relative to the folder; hidden files and folders
(names starting with '.') are skipped; unreadable subfolders are skipped with a note. Records have no split ('') and no label.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError
from ..imaging import IMAGE_EXTENSIONS
from .records import Dataset, ImageRecord


def read_folder(path: Path) -> Dataset:
    """List the images below `path` in sorted order (no labels, no split)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    records, unreadable = [], []
    for folder, subfolders, files in os.walk(root, onerror=unreadable.append):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        base = Path(folder)
        relative = base.relative_to(root).as_posix()
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            image_id = name if relative == "." else f"{relative}/{name}"
            records.append(ImageRecord(image_id=image_id, path=base / name, dataset="folder"))
    notes = [f"{exc.filename}: cannot list folder ({exc.strerror or exc}), skipped" for exc in unreadable]
    return Dataset(name=root.name or str(root), root=root, records=records, notes=notes)
