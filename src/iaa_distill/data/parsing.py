"""Shared helpers of the dataset readers: tolerant text/CSV reading, numbers with file:line errors,
seeded splits and duplicate-id handling.

Text files may have a UTF-8 BOM, CRLF line endings, blank lines and trailing spaces.
Duplicate image ids: a repeated row with the same label and split is kept once; a repeated id with a
different label or split is dropped entirely (every copy). Both are summarised in `Dataset.notes`,
so an image never silently gets one of two labels.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .records import ImageRecord

EXAMPLES = 3


def read_text(path: Path) -> str:
    """Whole file as text (UTF-8, BOM removed); a clear error when missing or not text."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line."""
    for number, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if line:
            yield number, line


def csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header (lower-cased, stripped) and (line number, row dict) for every non-blank row."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header: list[str] | None = None
    for row in checked_rows(reader, path):
        if any(cell.strip() for cell in row):
            header = [cell.strip().lower() for cell in row]
            break
    if header is None:
        raise DatasetError(f"{path}: empty CSV file (expected a header row)")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for row in checked_rows(reader, path):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DatasetError(
                    f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}"
                )
            yield reader.line_num, {k: v.strip() for k, v in zip(header, row)}

    return header, rows()


def checked_rows(reader: Any, path: Path) -> Iterator[list[str]]:
    """The rows of a csv reader; malformed CSV (an unterminated quote, a field over the csv module's limit)
    becomes a DatasetError naming the file and line."""
    while True:
        start = reader.line_num + 1  # the line the next row begins on (a quoted field may span lines)
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"{path}:{start}: malformed CSV ({exc}); check the quotes on this line") from None


def number(text: str, where: str, what: str = "score") -> float:
    """A finite float, or a DatasetError naming `where` (file:line)."""
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {what} {text!r} is not a finite number")
    return value


def vote_counts(cells: list[str], where: str) -> tuple[float, ...] | None:
    """Non-negative vote counts; None when they are all zero (the caller decides what that means)."""
    votes = tuple(number(c, where, "vote count") for c in cells)
    if any(v < 0 for v in votes):
        raise DatasetError(f"{where}: negative vote count in {list(cells)}")
    return votes if sum(votes) > 0 else None


def seeded_subset(ids: list[str], fraction: float, seed: int) -> set[str]:
    """round(fraction * len(ids)) ids chosen with `seed`, independent of the order of `ids`."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"split fraction must be in [0, 1), got {fraction}")
    ordered = sorted(ids)
    count = int(round(fraction * len(ordered)))
    if count == 0:
        return set()
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:count]
    return {ordered[i] for i in chosen}


def assign_splits(records: list[ImageRecord], subsets: dict[str, set[str]]) -> list[ImageRecord]:
    """Records with `split` replaced for the ids in each subset (e.g. {'val': {...}})."""
    lookup = {image_id: split for split, ids in subsets.items() for image_id in ids}
    return [replace(r, split=lookup[r.image_id]) if r.image_id in lookup else r for r in records]


def deduplicate(records: list[tuple[str, ImageRecord]], notes: list[str]) -> list[ImageRecord]:
    """Drop repeated image ids (records given with their 'file:line'); summarise what happened in `notes`."""
    first: dict[str, tuple[str, ImageRecord]] = {}
    repeats: list[str] = []
    conflicts: dict[str, list[str]] = {}
    for where, record in records:
        seen = first.get(record.image_id)
        if seen is None:
            first[record.image_id] = (where, record)
        elif seen[1].label == record.label and seen[1].split == record.split:
            repeats.append(f"{record.image_id!r} at {where} (first at {seen[0]})")
        else:
            conflicts.setdefault(record.image_id, [seen[0]]).append(where)
    if repeats:
        notes.append(f"{len(repeats)} repeated rows with the same label kept once, e.g. " + "; ".join(repeats[:EXAMPLES]))
    if conflicts:
        examples = "; ".join(f"{k!r} at {', '.join(v)}" for k, v in list(conflicts.items())[:EXAMPLES])
        notes.append(f"{len(conflicts)} image ids with conflicting labels or splits dropped, e.g. {examples}")
    return [r for where, r in first.values() if r.image_id not in conflicts]


def relative_id(name: str, where: str) -> str:
    """A dataset-relative image path as a posix id; refuses empty, absolute and '..' paths."""
    name = name.strip().replace("\\", "/")
    if not name:
        raise DatasetError(f"{where}: missing image name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise DatasetError(f"{where}: image path {name!r} must be relative to the dataset folder")
    return "/".join(parts)
