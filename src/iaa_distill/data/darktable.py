"""darktable's library as a ratings dataset (`darktable:~/.config/darktable/library.db`).

The catalogue is opened read-only (an SQLite `mode=ro` URI; never written). When darktable holds it
locked, it is read as it is on disk (`immutable=1`, with a note: changes darktable has not written yet
are missed). Each photo is one row of `images` (the lowest `version`: duplicates are virtual copies of one
file) in its film roll's folder. The stars are `flags & 7`, a reject is flag 8 (or the old 6 stars) and is
the bottom of the scale, as in `xmp:`. darktable gives every imported photo an initial rating, by default
1 star, so stars equal to `initial_rating` (default 1; 0 when you changed darktable's preference to 0
stars) count as unrated: those are the photos you have not reviewed. Photos missing on disk are left out
(one note). Ids are paths relative to the folder that holds every film roll; the held-out test photos
are chosen as `xmp:` chooses them (`held_out`).
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

from ..errors import DatasetError
from .parsing import assign_splits
from .records import Dataset, ImageRecord
from .xmp_ratings import REJECT, SCALE, held_out, rated_record

STARS_MASK, REJECTED_FLAG, OLD_REJECT_STARS = 0x7, 0x8, 6
QUERY = ("SELECT f.folder, i.filename, i.flags FROM images i JOIN film_rolls f ON f.id = i.film_id "
         "WHERE i.version = (SELECT MIN(v.version) FROM images v WHERE v.film_id = i.film_id "
         "AND v.filename = i.filename) ORDER BY f.folder, i.filename")


def catalogue_rows(path: Path, query: str, notes: list[str]) -> list[tuple]:
    """The rows of `query` on the SQLite catalogue `path`, opened read-only; a catalogue its editor holds
    locked is read as it is on disk (noted). DatasetError naming the file when it is not such a catalogue."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such catalogue file")
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        try:
            with sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True, timeout=1.0) as db:
                rows = db.execute(query).fetchall()
            db.close()
            if "immutable" in flags:
                notes.append(f"{path}: locked by its editor, read as last saved to disk")
            return rows
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or "immutable" in flags:
                raise DatasetError(f"{path}: not a readable catalogue ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise DatasetError(f"{path}: not a readable catalogue ({exc})") from None
    raise AssertionError("unreachable")


def stars_from_flags(flags: int, initial_rating: int) -> int | None:
    """-1 (reject), 1..5 stars, or None (unrated: 0 stars or darktable's initial rating)."""
    stars = flags & STARS_MASK
    if flags & REJECTED_FLAG or stars == OLD_REJECT_STARS:
        return REJECT
    return None if stars == 0 or stars == initial_rating or stars > 5 else stars


def read_darktable_ratings(path: Path, *, seed: int = 0, test_fraction: float = 0.2,
                           initial_rating: int | str = 1) -> Dataset:
    """The photos of a darktable library with their stars and rejects."""
    try:
        initial = int(initial_rating)
    except ValueError:
        initial = -1
    if not 0 <= initial <= 5:
        raise DatasetError(f"darktable:{path}: initial_rating={initial_rating!r}; expected 0..5")
    path, notes = Path(path).expanduser(), []
    rows = catalogue_rows(path, QUERY, notes)
    present = [(Path(folder) / name, flags) for folder, name, flags in rows if (Path(folder) / name).is_file()]
    if len(present) < len(rows):
        notes.append(f"{len(rows) - len(present)} photo(s) of the library are missing on disk: left out")
    if not present:
        raise DatasetError(f"{path}: no photos of the library were found on disk")
    root = Path(os.path.commonpath([str(p.parent) for p, _ in present]))
    records = [replace(rated_record(ImageRecord(image_id=p.relative_to(root).as_posix(), path=p, dataset="darktable"),
                                    stars_from_flags(flags, initial)), dataset="darktable") for p, flags in present]
    rated = [r.image_id for r in records if r.label is not None]
    records = assign_splits(records, {"test": held_out(rated, test_fraction, seed)})
    notes.append(f"{len(rated)} rated photos in the library, {len(records) - len(rated)} unrated (unlabelled)"
                 + (f"; {initial} star(s), darktable's initial rating, counts as unrated (?initial_rating=0 counts "
                    "it)" if initial else ""))
    return Dataset(name=path.stem, root=root, records=records, scale=SCALE, notes=notes)
