"""The on-disk feature cache: float16 MLSP rows in the one row layout of `iaa_distill.storage` (`RowCache`:
`ids.json`, `features.npy`, `manifest.json`, `progress/rank<R>.log`), written crash-safely and resumably by
every torchrun rank. This module knows `FeatureCacheManifest`, the one place that says what a cache's content
depends on (teachers with their weights hashes and per-level dims, preprocessing, the images).
Killed at any moment and rerun, extraction continues from the logged batches and ends with the same
bytes as an uninterrupted run.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.records import Dataset
from ..errors import IAAError
from ..storage import (IDS_FILE, MANIFEST_FILE, PROGRESS_DIR, Manifest, RowCache, create_rows, finish_rows,
                       reuse_decision)

MANIFEST_NAME = MANIFEST_FILE
FEATURES_NAME = "features.npy"
IDS_NAME = IDS_FILE
FORMAT = "iaa-distill feature cache"
FORMAT_VERSION = 1
OLD_IDS_HASH = "ids_sha256"  # the manifest key of caches hashed before `data.records.ids_hash`: resumed never


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
    dataset: dict[str, Any] = field(default_factory=dict)  # name, fingerprint, split, num_images, ids_hash
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


class FeatureCache(RowCache):
    """A read-only view of a feature cache folder: `rows_for(ids)` are rows of `features`, `features_for(ids)`
    their values."""

    ARRAY, KIND = FEATURES_NAME, "feature cache"
    HINT = "extract features for these images with `iaa features` into another --out"

    @classmethod
    def open(cls, directory: str | Path) -> "FeatureCache":
        directory = Path(directory).expanduser()
        manifest = read_manifest(directory)
        return cls.read_rows(directory, manifest, (manifest.dim,))

    @property
    def features(self) -> np.ndarray:
        """The (N, dim) float16 memory map."""
        return self.array

    @property
    def dim(self) -> int:
        return int(self.manifest.dim)

    def features_for(self, ids: Iterable[str]) -> np.ndarray:
        """Features of `ids` as a float32 (len(ids), dim) array; IAAError names an id that has none."""
        return np.asarray(self.features[self.rows_for(ids)], dtype=np.float32)

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
    create_rows(directory, manifest, ids, FEATURES_NAME, (len(ids), manifest.dim), np.float16)


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
    existing = read_manifest(directory)
    if OLD_IDS_HASH in existing.dataset:
        raise IAAError(f"{directory}: feature cache written by an older iaa-distill (another image-id hash); rebuild "
                       f"it: delete the folder and rerun `iaa features` (or `iaa fit`)")
    reuse_decision(existing.differences(manifest), existing.complete,
                   f"{directory}: feature cache was made differently ({{changes}}, cache vs this run); use another "
                   "--out, or delete the cache to extract again")  # the same: resumed (or complete: nothing to do)
    FeatureCache.open(directory)  # refuses a damaged cache (missing or resized files)


def finalize_manifest(directory: Path) -> None:
    """Record completion and the undecodable images in the manifest once every row is done."""
    finish_rows(directory, read_manifest(directory))
