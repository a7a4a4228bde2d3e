"""The on-disk feature cache: float16 rows in a memory-mapped array, written crash-safely, resumable.

A cache is a folder:
- `ids.json`: image ids in row order (the index image id -> row);
- `features.npy`: an (N, D) float16 array, preallocated (sparse) and memory-mapped; rows never
  extracted, or whose image failed to decode, stay zero;
- `manifest.json`: teachers (weights hashes, preprocessing, per-level dims), dataset fingerprint,
  package version; written atomically after the two files above, so its presence marks a usable cache;
- `progress/rank<R>.log`: one JSON line per finished batch (`rows`, `failed` {row: error}), appended
  and fsynced only after that batch's rows were written and synced. A torn last line (a kill during
  the append) is ignored, so those rows are simply extracted again.
Killed at any moment and rerun, extraction continues from the logged batches and ends with the same
bytes as an uninterrupted run.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_write_text, read_json
from ..data.records import Dataset
from ..errors import IAAError

MANIFEST_NAME = "manifest.json"
FEATURES_NAME = "features.npy"
IDS_NAME = "ids.json"
PROGRESS_DIR = "progress"
FORMAT = "iaa-distill feature cache"
FORMAT_VERSION = 1


def read_progress(directory: Path, num_rows: int) -> tuple[np.ndarray, dict[int, str]]:
    """Rows logged as finished by any rank, and the failed rows with their errors (torn lines ignored)."""
    done = np.zeros(num_rows, dtype=bool)
    failed: dict[int, str] = {}
    for log in sorted((directory / PROGRESS_DIR).glob("rank*.log")):
        lines = log.read_bytes().split(b"\n")
        for line in lines[:-1]:  # the part after the last newline is torn or empty
            try:
                entry = json.loads(line)
                rows = [int(r) for r in entry["rows"]]
                errors = {int(r): str(e) for r, e in entry.get("failed", {}).items()}
            except (ValueError, KeyError, TypeError):
                continue
            if rows and (min(rows) < 0 or max(rows) >= num_rows):
                continue
            done[rows] = True
            failed.update(errors)
    return done, failed


class FeatureCache:
    """A read-only view of a feature cache folder; see the module doc for the layout."""

    def __init__(self, directory: Path, manifest: dict[str, Any], ids: list[str], features: np.ndarray,
                 done: np.ndarray, failed: dict[str, str]):
        self.directory = directory
        self.manifest = manifest
        self.ids = ids
        self.features = features
        self.done = done
        self.failed = failed
        self._rows = {image_id: row for row, image_id in enumerate(ids)}

    @classmethod
    def open(cls, directory: str | Path) -> "FeatureCache":
        directory = Path(directory).expanduser()
        manifest = read_manifest(directory)
        try:
            ids = json.loads((directory / IDS_NAME).read_text())
            features = np.load(directory / FEATURES_NAME, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise IAAError(f"{directory}: damaged feature cache ({exc}); extract again into a new --out") from None
        if features.shape != (len(ids), manifest["dim"]):
            raise IAAError(f"{directory}: damaged feature cache ({FEATURES_NAME} has shape {features.shape}, "
                           f"expected {(len(ids), manifest['dim'])}); extract again into a new --out")
        done, failed_rows = read_progress(directory, len(ids))
        failed = {ids[row]: error for row, error in sorted(failed_rows.items())}
        return cls(directory, manifest, ids, features, done, failed)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def valid_ids(self) -> list[str]:
        """Ids whose features were extracted (done and decoded), in row order."""
        return [i for i, d in zip(self.ids, self.done) if d and i not in self.failed]

    def rows_for(self, ids: Iterable[str]) -> np.ndarray:
        """Features of `ids` as a float32 (len(ids), dim) array; IAAError names an id that has none."""
        rows = []
        for image_id in ids:
            row = self._rows.get(image_id)
            if row is None:
                raise IAAError(f"{self.directory}: image '{image_id}' is not in this feature cache")
            if image_id in self.failed:
                raise IAAError(f"{self.directory}: image '{image_id}' has no features ({self.failed[image_id]})")
            if not self.done[row]:
                raise IAAError(f"{self.directory}: image '{image_id}' has not been extracted yet; "
                               "rerun `iaa features` with the same --out to finish the cache")
            rows.append(row)
        return np.asarray(self.features[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def check_matches(self, dataset: Dataset) -> None:
        """Refuse a cache that was made for other images than `dataset`'s."""
        made_for = self.manifest["dataset"]
        if made_for["fingerprint"] != dataset.fingerprint():
            raise IAAError(
                f"{self.directory}: feature cache was made for dataset '{made_for['name']}' "
                f"({made_for['num_images']} images, fingerprint {made_for['fingerprint']}), not for "
                f"'{dataset.name}' ({len(dataset.records)} images, fingerprint {dataset.fingerprint()}); "
                "extract features for this dataset with `iaa features` into another --out"
            )


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    manifest = read_json(path, f"{directory}: not a feature cache (no {MANIFEST_NAME}); create one with `iaa features`")
    if manifest.get("format") != FORMAT:
        raise IAAError(f"{path}: not an iaa-distill feature cache manifest")
    return manifest


def create_cache(directory: Path, manifest: dict[str, Any], ids: Sequence[str]) -> None:
    """Write the index and the preallocated zero array, then the manifest (its presence marks the cache usable)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROGRESS_DIR).mkdir(exist_ok=True)
    for log in (directory / PROGRESS_DIR).glob("rank*.log"):  # left by a creation that never finished
        log.unlink()
    atomic_write_text(directory / IDS_NAME, json.dumps(list(ids)) + "\n")
    features = np.lib.format.open_memmap(directory / FEATURES_NAME, mode="w+", dtype=np.float16,
                                         shape=(len(ids), manifest["dim"]))
    features.flush()
    del features
    with open(directory / FEATURES_NAME, "rb+") as f:
        os.fsync(f.fileno())
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two manifests in what decides the features."""
    diffs = []
    old_names = [t["name"] for t in old["teachers"]]
    new_names = [t["name"] for t in new["teachers"]]
    if old_names != new_names:
        diffs.append(f"teachers {','.join(old_names)} vs {','.join(new_names)}")
    else:
        for a, b in zip(old["teachers"], new["teachers"]):
            for key in ("weights", "input_size", "mean", "std", "interpolation", "level_dims"):
                if a.get(key) != b.get(key):
                    diffs.append(f"{a['name']} {key} {a.get(key)} vs {b.get(key)}")
    for key in ("hflip", "preprocessing"):
        if old.get(key) != new.get(key):
            diffs.append(f"{key} {old.get(key)} vs {new.get(key)}")
    for key in ("name", "split", "fingerprint", "num_images", "ids_sha256"):
        if old["dataset"].get(key) != new["dataset"].get(key):
            diffs.append(f"dataset {key} {old['dataset'].get(key)} vs {new['dataset'].get(key)}")
    return diffs


def prepare_cache(directory: Path, manifest: dict[str, Any], ids: Sequence[str]) -> None:
    """Create the cache, or check that the existing one was made the same way (IAAError saying what differs)."""
    if not (directory / MANIFEST_NAME).is_file():
        ours = {MANIFEST_NAME, FEATURES_NAME, IDS_NAME, PROGRESS_DIR}
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in ours and not p.name.startswith(".")) \
            if directory.is_dir() else []
        if foreign:
            raise IAAError(f"{directory}: exists and is not a feature cache (holds {', '.join(foreign[:3])}); "
                           "choose an empty or new --out")
        create_cache(directory, manifest, ids)
        return
    existing = read_manifest(directory)
    diffs = spec_differences(existing, manifest)
    if diffs:
        raise IAAError(f"{directory}: feature cache was made differently ({'; '.join(diffs)}, cache vs this run); "
                       "use another --out, or delete the cache to extract again")
    FeatureCache.open(directory)  # refuses a damaged cache (missing or resized files)


def finalize_manifest(directory: Path) -> None:
    """Record completion and the undecodable images in the manifest once every row is done."""
    manifest = read_manifest(directory)
    ids = json.loads((directory / IDS_NAME).read_text())
    done, failed = read_progress(directory, len(ids))
    manifest["complete"] = bool(done.all())
    manifest["failed"] = {ids[row]: error for row, error in sorted(failed.items())}
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


class RowWriter:
    """Writes finished batches of one rank: rows into `features.npy` (synced), then a fsynced log line."""

    def __init__(self, directory: Path, rank: int):
        features = np.load(directory / FEATURES_NAME, mmap_mode="r")
        self._offset, self._row_bytes = int(features.offset), features.shape[1] * 2
        del features
        self._data = os.open(directory / FEATURES_NAME, os.O_WRONLY)
        log_path = directory / PROGRESS_DIR / f"rank{rank}.log"
        self._log = open(log_path, "ab+")
        self._log.seek(0)
        content = self._log.read()
        if content and not content.endswith(b"\n"):  # a torn line from a kill: drop it before appending
            self._log.truncate(content.rfind(b"\n") + 1)
        self._log.seek(0, os.SEEK_END)

    def write(self, rows: Sequence[int], features: np.ndarray, failed: dict[int, str]) -> None:
        """rows[i] <- features[i] (float16); `failed` rows are logged as done with their error, left zero."""
        features = np.ascontiguousarray(features, dtype=np.float16)
        for row, vector in zip(rows, features):
            os.pwrite(self._data, vector.tobytes(), self._offset + int(row) * self._row_bytes)
        os.fdatasync(self._data)
        line = json.dumps({"rows": [int(r) for r in rows] + [int(r) for r in failed],
                           "failed": {str(r): e for r, e in failed.items()}})
        self._log.write(line.encode() + b"\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def close(self) -> None:
        os.close(self._data)
        self._log.close()
