"""Crash-safe storage shared by the feature cache, the image cache and the score output.

- `Journal`: an append-only JSON-lines file. Each `append` writes whole lines, then flushes and
  fsyncs, so a line on disk is a commit. A kill during an append leaves a torn last line: readers
  ignore it (`read_journal`) and the next writer cuts it off before appending.
- `RowStore`: a preallocated `.npy` array (`create_array`: zero-filled, sparse on disk) whose rows
  are written in place, plus a journal. `write` puts rows, `commit` syncs them and only then appends
  the journal line that says they are done; rows not named by a journal line are simply written again.
- `IdIndex`: image id -> row of a store, with errors that name the missing id.
- `Manifest`: a typed manifest (dataclass) written atomically as JSON, with `fingerprint()` (a hash
  of the fields that decide the content) and `differences(other)` (readable lines for a refusal).
- `reuse_decision`: the one "skip when up to date" decision of every output (`iaa fit`'s stages, training run
  folders, row caches): an earlier result made from the same inputs and settings is reused when complete and
  resumed when not; one made differently is started afresh or refused.
- `RowCache`: the one row layout of the feature cache, the image cache and the warm start's pooled features
  (see below), with `create_rows`, `RowWriter`, `read_progress`, `pending_batches` and `finish_rows` to build it.

A row cache is a folder:
- `ids.json`: image ids in row order (the index image id -> row);
- the array (`features.npy`, `images.npy`, `pooled.npy`): preallocated (sparse), memory-mapped; rows never
  written, or whose image failed to decode, stay zero;
- `manifest.json`: what the rows are made from (a `Manifest`), written after the two files above, so its
  presence marks a usable cache; once every row is done it also records `complete` and `failed` (id -> error);
- `progress/rank<R>.log`: one journal line per finished batch of rank R (`rows`, `failed` {row: error}),
  appended only after the batch's rows were synced. Killed at any moment and rerun, a build continues from the
  logged batches (fixed groups of rows, strided over the ranks) and ends with the same bytes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from .artifacts import atomic_write_text, read_json
from .errors import IAAError
from .settings import differences as settings_differences
from .settings import short_hash


class Journal:
    """An append-only JSON-lines file; every `append` is flushed and fsynced before it returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab+")
        self._file.seek(0)
        content = self._file.read()
        if content and not content.endswith(b"\n"):  # a torn line from a kill: cut it before appending
            self._file.truncate(content.rfind(b"\n") + 1)
        self._file.seek(0, os.SEEK_END)

    def append(self, *entries: dict[str, Any]) -> None:
        """Commit `entries`, one line each."""
        self._file.write(b"".join(json.dumps(entry).encode() + b"\n" for entry in entries))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The committed entries of a journal (none when it does not exist); torn or unreadable lines skipped."""
    try:
        lines = Path(path).read_bytes().split(b"\n")[:-1]  # the part after the last newline is torn or empty
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def create_array(path: Path, shape: tuple[int, ...], dtype: np.dtype | str) -> None:
    """A zero-filled `.npy` file of `shape` (sparse on disk: only the header is written), fsynced."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)) * dtype.itemsize)
        f.flush()
        os.fsync(f.fileno())


class RowStore:
    """Writes rows of an existing `.npy` array in place; `commit` syncs them, then journals `entry`."""

    def __init__(self, array_path: Path, journal_path: Path):
        array = np.load(array_path, mmap_mode="r")
        self.dtype = array.dtype
        self._offset = int(array.offset)
        self._row_bytes = int(np.prod(array.shape[1:])) * array.dtype.itemsize
        del array
        self._data = os.open(array_path, os.O_WRONLY)
        self.journal = Journal(journal_path)

    def write(self, rows: Iterable[int], values: np.ndarray) -> None:
        """rows[i] <- values[i] (converted to the array's dtype); not durable until `commit`."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        for row, value in zip(rows, values):
            os.pwrite(self._data, value.tobytes(), self._offset + int(row) * self._row_bytes)

    def commit(self, entry: dict[str, Any]) -> None:
        """Make the written rows durable, then record `entry` in the journal."""
        os.fdatasync(self._data)
        self.journal.append(entry)

    def close(self) -> None:
        os.close(self._data)
        self.journal.close()

    def __enter__(self) -> "RowStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IdIndex:
    """Image id -> row of a store; `where` names the store in errors."""

    def __init__(self, ids: Sequence[str], where: str, hint: str = "build it again for these images"):
        self.ids = list(ids)
        self.where = where
        self.hint = hint
        self._rows: dict[str, int] = {}
        for row, image_id in enumerate(self.ids):
            if image_id in self._rows:
                raise IAAError(f"{where}: image id '{image_id}' appears more than once")
            self._rows[image_id] = row

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._rows

    def rows_for(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of `ids` in their order (int64); IAAError naming the first id that is not in the store."""
        ids = list(ids)
        missing = [image_id for image_id in ids if image_id not in self._rows]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise IAAError(f"{self.where}: image '{missing[0]}' is not in it{more}; {self.hint}")
        return np.fromiter((self._rows[image_id] for image_id in ids), dtype=np.int64, count=len(ids))


class Reuse(Enum):
    """What an output's earlier result is worth to the work asked for now (`reuse_decision`)."""

    NONE = "none"  # no record of an earlier result: build it
    UP_TO_DATE = "up to date"  # made from the same inputs and settings, and complete: reuse it, skip the work
    RESUME = "resume"  # made the same way but unfinished: continue it
    CHANGED = "changed"  # made from other inputs or settings: start afresh


def reuse_decision(changes: Sequence[str] | None, complete: bool, refusal: str | None = None) -> Reuse:
    """The one "skip when up to date" decision of every output.

    changes: how the recorded inputs and settings of the earlier result differ from the wanted ones (readable
    lines; empty: the same; None: no record of one). complete: whether that result is finished.
    refusal: an earlier result made differently is refused with this IAAError (its `{changes}` filled in) instead
    of being reported CHANGED (for outputs that must not be discarded silently: a run folder, a feature cache).
    """
    if changes is None:
        return Reuse.NONE
    if changes:
        if refusal is not None:
            raise IAAError(refusal.replace("{changes}", "; ".join(changes)))
        return Reuse.CHANGED
    return Reuse.UP_TO_DATE if complete else Reuse.RESUME


M = TypeVar("M", bound="Manifest")


@dataclass
class Manifest:
    """Base of typed manifests: JSON on disk, `IDENTITY` names the fields that decide the content."""

    IDENTITY: ClassVar[tuple[str, ...]] = ()

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.IDENTITY}

    def fingerprint(self) -> str:
        """A short stable hash of the identity fields."""
        return short_hash(self.identity())

    def differences(self, other: "Manifest") -> list[str]:
        """Readable `field old -> new` lines where the identity of `other` differs from this one's."""
        return settings_differences(self.identity(), other.identity())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        """Read like the JSON file (`manifest["teachers"]`), for callers that treat it as a document."""
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls: type[M], data: dict[str, Any]) -> M:
        """Known fields of `data` (missing ones keep their defaults; unknown ones are ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def read(cls: type[M], path: Path, missing: str) -> M:
        """The manifest at `path`; IAAError `missing` when there is none, or naming a damaged file."""
        data = read_json(path, missing)
        if not isinstance(data, dict):
            raise IAAError(f"{path}: damaged manifest (not a JSON object); delete its folder to build it again")
        return cls.from_dict(data)

    @classmethod
    def read_existing(cls: type[M], path: Path) -> M | None:
        """The manifest at `path`, or None when there is none or it is damaged (an output to build afresh)."""
        try:
            return cls.read(path, "")
        except IAAError:
            return None


IDS_FILE = "ids.json"
MANIFEST_FILE = "manifest.json"
PROGRESS_DIR = "progress"


def read_progress(directory: Path, num_rows: int) -> tuple[np.ndarray, dict[int, str]]:
    """Rows logged as finished by any rank, and the failed rows with their errors (torn lines ignored)."""
    done = np.zeros(num_rows, dtype=bool)
    failed: dict[int, str] = {}
    for log in sorted((directory / PROGRESS_DIR).glob("rank*.log")):
        for entry in read_journal(log):
            try:
                rows = [int(r) for r in entry["rows"]]
                errors = {int(r): str(e) for r, e in entry.get("failed", {}).items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if rows and (min(rows) < 0 or max(rows) >= num_rows):
                continue
            done[rows] = True
            failed.update(errors)
    return done, failed


def pending_batches(rows: Sequence[int], done: np.ndarray, batch_size: int) -> list[list[int]]:
    """Fixed groups of `batch_size` rows with their finished rows removed; empty groups dropped."""
    groups = (rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
    return [pending for group in groups if (pending := [r for r in group if not done[r]])]


def create_rows(directory: Path, manifest: Manifest, ids: Sequence[str], array: str, shape: tuple[int, ...],
                dtype: np.dtype | str) -> None:
    """Write the index and the preallocated zero array, then the manifest (its presence marks the cache usable)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROGRESS_DIR).mkdir(exist_ok=True)
    for log in (directory / PROGRESS_DIR).glob("rank*.log"):  # left by a creation that never finished
        log.unlink()
    atomic_write_text(directory / IDS_FILE, json.dumps(list(ids)) + "\n")
    create_array(directory / array, shape, dtype)
    manifest.write(directory / MANIFEST_FILE)


def resume_or_create_rows(directory: Path, manifest: M, ids: Sequence[str], array: str, shape: tuple[int, ...],
                          dtype: np.dtype | str) -> M:
    """The manifest of `directory`'s earlier build when it has the same content and its array (finished or
    interrupted: resume it); else `directory` started afresh (`create_rows`) and `manifest` itself."""
    existing = type(manifest).read_existing(directory / MANIFEST_FILE)
    changes = existing.differences(manifest) if existing is not None and (directory / array).is_file() else None
    if reuse_decision(changes, bool(getattr(existing, "complete", False))) in (Reuse.UP_TO_DATE, Reuse.RESUME):
        return existing
    create_rows(directory, manifest, ids, array, shape, dtype)
    return manifest


class RowWriter:
    """Writes finished batches of one rank: rows into the array (synced), then a line in its progress log."""

    def __init__(self, directory: Path, array: str, rank: int = 0):
        self._store = RowStore(directory / array, directory / PROGRESS_DIR / f"rank{rank}.log")

    def write(self, rows: Sequence[int], values: np.ndarray, failed: dict[int, str]) -> None:
        """rows[i] <- values[i]; `failed` rows are logged as done with their error, left zero."""
        self._store.write(rows, values)
        self._store.commit({"rows": [int(r) for r in rows] + [int(r) for r in failed],
                            "failed": {str(r): e for r, e in failed.items()}})

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finish_rows(directory: Path, manifest: M) -> M:
    """Record completion and the failed images in `manifest` (the cache's own, as read) and write it."""
    ids = json.loads((directory / IDS_FILE).read_text())
    done, failed = read_progress(directory, len(ids))
    manifest.complete = bool(done.all())
    manifest.failed = {ids[row]: error for row, error in sorted(failed.items())}
    manifest.write(directory / MANIFEST_FILE)
    return manifest


class RowCache:
    """A read-only view of a row cache folder (see the module doc): `rows_for(ids)` are rows of `array`.

    Subclasses name their `ARRAY` file, their manifest class and `HINT` (what to do about a missing image)."""

    ARRAY: ClassVar[str] = ""
    KIND: ClassVar[str] = "row cache"
    HINT: ClassVar[str] = "build it again for these images"

    def __init__(self, directory: Path, manifest: Manifest, ids: list[str], array: np.ndarray, done: np.ndarray,
                 failed: dict[str, str]):
        self.directory = directory
        self.manifest = manifest
        self.index = IdIndex(ids, f"{directory} ({self.KIND})", self.HINT)
        self.ids = self.index.ids
        self.array = array
        self.done = done
        self.failed = failed

    @classmethod
    def read_rows(cls, directory: Path, manifest: Manifest, width: tuple[int, ...]) -> "RowCache":
        """The cache at `directory` whose manifest is `manifest` and whose rows have shape `width`; IAAError
        for damaged or resized files."""
        try:
            ids = json.loads((directory / IDS_FILE).read_text())
            array = np.load(directory / cls.ARRAY, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise IAAError(f"{directory}: damaged {cls.KIND} ({exc}); {cls.HINT}") from None
        if array.shape != (len(ids), *width):
            raise IAAError(f"{directory}: damaged {cls.KIND} ({cls.ARRAY} has shape {array.shape}, expected "
                           f"{(len(ids), *width)}); {cls.HINT}")
        done, failed_rows = read_progress(directory, len(ids))
        failed = {ids[row]: error for row, error in sorted(failed_rows.items())}
        return cls(directory, manifest, ids, array, done, failed)

    @property
    def path(self) -> Path:
        """The array file (`rows_for` indexes it)."""
        return self.directory / self.ARRAY

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def valid_ids(self) -> list[str]:
        """Ids whose rows were written (done and decoded), in row order."""
        return [i for i, d in zip(self.ids, self.done) if d and i not in self.failed]

    def rows_for(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of `ids` in the array (int64); IAAError naming an id the cache lacks, failed or not written yet."""
        ids = list(ids)
        rows = self.index.rows_for(ids)
        for image_id, row in zip(ids, rows):
            if image_id in self.failed:
                raise IAAError(f"{self.directory}: image '{image_id}' has no row ({self.failed[image_id]})")
            if not self.done[row]:
                raise IAAError(f"{self.directory}: image '{image_id}' is not in the {self.KIND} yet; rerun the "
                               "command that builds it to finish the cache")
        return rows
