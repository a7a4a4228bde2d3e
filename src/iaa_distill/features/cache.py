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
bytes as an uninterrupted run. The mechanics (journal, row store, id index, typed manifest) are
`iaa_distill.storage`'s; this module knows the layout and `FeatureCacheManifest`, the one place that
says what a cache's content depends on.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_write_text
from ..data.records import Dataset
from ..errors import IAAError
from ..storage import IdIndex, Manifest, RowStore, create_array, read_journal

MANIFEST_NAME = "manifest.json"
FEATURES_NAME = "features.npy"
IDS_NAME = "ids.json"
PROGRESS_DIR = "progress"
FORMAT = "iaa-distill feature cache"
FORMAT_VERSION = 1


@dataclass
class FeatureCacheManifest(Manifest):
    """`manifest.json`: what the features were made from (identity) and how far the cache got."""

    IDENTITY = ("teachers", "dim", "hflip", "preprocessing", "dataset")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    teachers: list[dict[str, Any]] = field(default_factory=list)  # each teacher's spec and column offset
    dim: int = 0
    hflip: bool = False
    preprocessing: dict[str, Any] = field(default_factory=dict)  # view, decoder actually used, precision
    dataset: dict[str, Any] = field(default_factory=dict)  # name, fingerprint, split, num_images, ids_sha256
    iaa_distill_version: str = ""
    created: str = ""
    complete: bool = False
    failed: dict[str, str] = field(default_factory=dict)  # image id -> why it has no features

    def differences(self, other: Manifest) -> list[str]:
        """`what old vs new` for each part of the identity that differs (teachers by name first)."""
        old_names = [t["name"] for t in self.teachers]
        new_names = [t["name"] for t in getattr(other, "teachers", [])]
        if old_names != new_names:
            return [f"teachers {','.join(old_names)} vs {','.join(new_names)}"]
        pairs = [(f"{a['name']} {key}", a.get(key), b.get(key))
                 for a, b in zip(self.teachers, other.teachers) for key in sorted(set(a) | set(b))]
        pairs += [(key, getattr(self, key), getattr(other, key)) for key in ("dim", "hflip", "preprocessing")]
        pairs += [(f"dataset {key}", self.dataset.get(key), other.dataset.get(key))
                  for key in sorted(set(self.dataset) | set(other.dataset))]
        return [f"{what} {a} vs {b}" for what, a, b in pairs if a != b]


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


class FeatureCache:
    """A read-only view of a feature cache folder; see the module doc for the layout."""

    def __init__(self, directory: Path, manifest: FeatureCacheManifest, ids: list[str], features: np.ndarray,
                 done: np.ndarray, failed: dict[str, str]):
        self.directory = directory
        self.manifest = manifest
        self.index = IdIndex(ids, f"{directory} (feature cache)",
                             "extract features for these images with `iaa features` into another --out")
        self.ids = self.index.ids
        self.features = features
        self.done = done
        self.failed = failed

    @classmethod
    def open(cls, directory: str | Path) -> "FeatureCache":
        directory = Path(directory).expanduser()
        manifest = read_manifest(directory)
        try:
            ids = json.loads((directory / IDS_NAME).read_text())
            features = np.load(directory / FEATURES_NAME, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise IAAError(f"{directory}: damaged feature cache ({exc}); extract again into a new --out") from None
        if features.shape != (len(ids), manifest.dim):
            raise IAAError(f"{directory}: damaged feature cache ({FEATURES_NAME} has shape {features.shape}, "
                           f"expected {(len(ids), manifest.dim)}); extract again into a new --out")
        done, failed_rows = read_progress(directory, len(ids))
        failed = {ids[row]: error for row, error in sorted(failed_rows.items())}
        return cls(directory, manifest, ids, features, done, failed)

    @property
    def dim(self) -> int:
        return int(self.manifest.dim)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def valid_ids(self) -> list[str]:
        """Ids whose features were extracted (done and decoded), in row order."""
        return [i for i, d in zip(self.ids, self.done) if d and i not in self.failed]

    def rows_for(self, ids: Iterable[str]) -> np.ndarray:
        """Features of `ids` as a float32 (len(ids), dim) array; IAAError names an id that has none."""
        ids = list(ids)
        rows = self.index.rows_for(ids)
        for image_id, row in zip(ids, rows):
            if image_id in self.failed:
                raise IAAError(f"{self.directory}: image '{image_id}' has no features ({self.failed[image_id]})")
            if not self.done[row]:
                raise IAAError(f"{self.directory}: image '{image_id}' has not been extracted yet; "
                               "rerun `iaa features` with the same --out to finish the cache")
        return np.asarray(self.features[rows], dtype=np.float32)

    def check_matches(self, dataset: Dataset) -> None:
        """Refuse a cache that was made for other images than `dataset`'s."""
        made_for = self.manifest.dataset
        if made_for["fingerprint"] != dataset.fingerprint():
            raise IAAError(
                f"{self.directory}: feature cache was made for dataset '{made_for['name']}' "
                f"({made_for['num_images']} images, fingerprint {made_for['fingerprint']}), not for "
                f"'{dataset.name}' ({len(dataset.records)} images, fingerprint {dataset.fingerprint()}); "
                "extract features for this dataset with `iaa features` into another --out"
            )


def read_manifest(directory: Path) -> FeatureCacheManifest:
    path = directory / MANIFEST_NAME
    manifest = FeatureCacheManifest.read(
        path, f"{directory}: not a feature cache (no {MANIFEST_NAME}); create one with `iaa features`")
    if manifest.format != FORMAT:
        raise IAAError(f"{path}: not an iaa-distill feature cache manifest")
    if manifest.format_version != FORMAT_VERSION:
        raise IAAError(f"{path}: feature cache format {manifest.format_version}, this version reads "
                       f"{FORMAT_VERSION}; extract again into a new --out")
    return manifest


def create_cache(directory: Path, manifest: FeatureCacheManifest | dict[str, Any], ids: Sequence[str]) -> None:
    """Write the index and the preallocated zero array, then the manifest (its presence marks the cache usable)."""
    if isinstance(manifest, dict):
        manifest = FeatureCacheManifest.from_dict(manifest)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROGRESS_DIR).mkdir(exist_ok=True)
    for log in (directory / PROGRESS_DIR).glob("rank*.log"):  # left by a creation that never finished
        log.unlink()
    atomic_write_text(directory / IDS_NAME, json.dumps(list(ids)) + "\n")
    create_array(directory / FEATURES_NAME, (len(ids), manifest.dim), np.float16)
    manifest.write(directory / MANIFEST_NAME)


def prepare_cache(directory: Path, manifest: FeatureCacheManifest, ids: Sequence[str]) -> None:
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
    diffs = read_manifest(directory).differences(manifest)
    if diffs:
        raise IAAError(f"{directory}: feature cache was made differently ({'; '.join(diffs)}, cache vs this run); "
                       "use another --out, or delete the cache to extract again")
    FeatureCache.open(directory)  # refuses a damaged cache (missing or resized files)


def finalize_manifest(directory: Path) -> None:
    """Record completion and the undecodable images in the manifest once every row is done."""
    manifest = read_manifest(directory)
    ids = json.loads((directory / IDS_NAME).read_text())
    done, failed = read_progress(directory, len(ids))
    manifest.complete = bool(done.all())
    manifest.failed = {ids[row]: error for row, error in sorted(failed.items())}
    manifest.write(directory / MANIFEST_NAME)


class RowWriter:
    """Writes finished batches of one rank: rows into `features.npy` (synced), then a line in its progress log."""

    def __init__(self, directory: Path, rank: int):
        self._store = RowStore(directory / FEATURES_NAME, directory / PROGRESS_DIR / f"rank{rank}.log")

    def write(self, rows: Sequence[int], features: np.ndarray, failed: dict[int, str]) -> None:
        """rows[i] <- features[i] (float16); `failed` rows are logged as done with their error, left zero."""
        self._store.write(rows, features)
        self._store.commit({"rows": [int(r) for r in rows] + [int(r) for r in failed],
                            "failed": {str(r): e for r, e in failed.items()}})

    def close(self) -> None:
        self._store.close()
