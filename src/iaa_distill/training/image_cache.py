"""A pre-resized image cache for student training: decode every JPEG once, reuse it for every epoch and run.

Each image is read through the shared batched input path (`iaa_distill.inputs`: on the CPU the shared
decoder with reduced-size JPEG decode in the workers, exactly `preprocessing.resize_whole`'s pixels; on a
GPU batched nvJPEG decoding; equal-size images resized together) to a square `size` x `size` uint8 array,
then stored in one
memory-mapped `images.npy` (N x size x size x 3). A folder holds:

- `images.npy`   the pixels (row i = `index.json` id i; rows of undecodable images stay black);
- `index.json`   ids and paths in row order;
- `manifest.json` size, interpolation, dataset fingerprint, ids hash, `complete`;
- `progress.jsonl` a journal: after every committed chunk (pixels fsynced first) one line
  {"done": rows, "failed": [[id, error], ...]}; an interrupted build resumes after the last line;
- `failed.json`  id -> error of the undecodable images (written when complete).

Training reads random crops straight from the memory map, so an epoch costs no JPEG decoding and
memory use does not grow with the number of images. Several processes (DDP ranks) may ask for
the same cache: a file lock lets one build it while the others wait. The journal, row writes and id
index are `iaa_distill.storage`'s (`RowStore`, `IdIndex`); `ImageCacheManifest` is the typed manifest.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic_write_text
from ..data.records import ImageRecord
from ..errors import IAAError
from ..devices import resolve_device
from ..inputs import iter_prepared, resolve_decoder
from ..messages import get_logger
from ..storage import IdIndex, Manifest, RowStore, create_array, read_journal

_log = get_logger(__name__)

IMAGES = "images.npy"
INDEX = "index.json"
MANIFEST = "manifest.json"
JOURNAL = "progress.jsonl"
FAILED = "failed.json"
LOCK = ".lock"
FORMAT_VERSION = 1


def default_cache_root() -> Path:
    """`$IAA_CACHE_DIR/images`, else `~/.cache/iaa_distill/images`."""
    base = os.environ.get("IAA_CACHE_DIR") or Path.home() / ".cache" / "iaa_distill"
    return Path(base).expanduser() / "images"


def ids_hash(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for image_id in ids:
        h.update(image_id.encode() + b"\n")
    return h.hexdigest()[:16]


@dataclass
class ImageCacheManifest(Manifest):
    """`manifest.json`: what the pixels are made from (everything but `complete`) and whether they are all there."""

    IDENTITY = ("format", "size", "interpolation", "shape", "dataset_fingerprint", "ids_hash", "decoder")

    format: int = FORMAT_VERSION
    size: int = 0
    interpolation: str = "bicubic"
    shape: list[int] = field(default_factory=list)
    dataset_fingerprint: str = ""
    ids_hash: str = ""
    decoder: str = "pil"  # "torchvision" (nvJPEG) when built on a GPU: pixels differ by a few levels
    complete: bool = False


@dataclass
class ImageCache:
    """A complete cache folder: `rows_for(ids)` locates images in `pixels` (opened read-only on demand)."""

    root: Path
    ids: list[str]
    size: int
    interpolation: str
    failed: dict[str, str]
    manifest: ImageCacheManifest

    def __post_init__(self) -> None:
        self.index = IdIndex(self.ids, f"{self.root} (image cache)", "delete the folder to build it again")

    @classmethod
    def open(cls, directory: str | Path) -> "ImageCache":
        root = Path(directory).expanduser()
        try:
            manifest = ImageCacheManifest.from_dict(json.loads((root / MANIFEST).read_text()))
            index = json.loads((root / INDEX).read_text())
            failed = json.loads((root / FAILED).read_text())
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise IAAError(f"{root}: not a complete image cache ({exc})") from None
        if not manifest.complete:
            raise IAAError(f"{root}: image cache is incomplete (its build was interrupted; rerun to finish it)")
        return cls(root, index["ids"], manifest.size, manifest.interpolation, failed, manifest)

    @property
    def path(self) -> Path:
        return self.root / IMAGES

    def pixels(self) -> np.ndarray:
        """The (N, size, size, 3) uint8 memory map."""
        return np.load(self.path, mmap_mode="r")

    def valid_ids(self) -> list[str]:
        return [i for i in self.ids if i not in self.failed]

    def rows_for(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of `ids` in `pixels`; IAAError naming an id the cache lacks."""
        return self.index.rows_for(ids)


def ensure_image_cache(
    records: Sequence[ImageRecord],
    size: int,
    interpolation: str = "bicubic",
    root: str | Path | None = None,
    name: str = "images",
    dataset_fingerprint: str = "",
    num_workers: int = 4,
    batch_size: int = 32,
    commit_every: int = 1024,
    device: str = "auto",
) -> ImageCache:
    """Open the cache of `records` at `size`, building or finishing it first when needed.

    device: where JPEGs are decoded and resized while building ("auto": the GPU when there is one,
    with batched nvJPEG decoding; else reduced-size decoding in the CPU workers).

    The folder `root/<name>-<size>px-<interpolation>-<ids hash>` is keyed by everything that
    changes its content, so caches for other images or sizes never collide and every run or
    baseline over the same images reuses the same one.
    """
    ids = [r.image_id for r in records]
    folder = Path(root or default_cache_root()).expanduser() / f"{name}-{size}px-{interpolation}-{ids_hash(ids)}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; concurrent ranks wait here, then find it complete
        try:
            return ImageCache.open(folder)
        except IAAError:
            pass
        _build(records, folder, size, interpolation, dataset_fingerprint, num_workers, batch_size, commit_every,
               resolve_device(device))
        return ImageCache.open(folder)


def _build(
    records: Sequence[ImageRecord],
    folder: Path,
    size: int,
    interpolation: str,
    dataset_fingerprint: str,
    num_workers: int,
    batch_size: int,
    commit_every: int,
    device: torch.device,
) -> None:
    ids = [r.image_id for r in records]
    shape = (len(ids), size, size, 3)
    manifest = ImageCacheManifest(size=size, interpolation=interpolation, shape=list(shape),
                                  dataset_fingerprint=dataset_fingerprint, ids_hash=ids_hash(ids),
                                  decoder=resolve_decoder("auto", device))
    done, failed = _resume_point(folder, manifest)
    if done == 0:
        for stale in (JOURNAL, FAILED):
            (folder / stale).unlink(missing_ok=True)
        atomic_write_text(folder / INDEX, json.dumps({"ids": ids, "paths": [str(r.path) for r in records]}) + "\n")
        create_array(folder / IMAGES, shape, np.uint8)
        manifest.write(folder / MANIFEST)
    start = time.perf_counter()
    remaining = len(ids) - done
    _log.info(f"image cache: {'resuming' if done else 'writing'} {remaining} of {len(ids)} images at {size}x{size} in {folder}")
    if remaining:
        _fill(records, folder, (size, interpolation), done, failed, num_workers, batch_size, commit_every, device)
    atomic_write_text(folder / FAILED, json.dumps(failed, indent=1) + "\n")
    manifest.complete = True
    manifest.write(folder / MANIFEST)
    rate = remaining / max(time.perf_counter() - start, 1e-9)
    _log.info(f"image cache: done ({rate:.0f} img/s), {len(failed)} undecodable image(s) excluded")
    for image_id, error in list(failed.items())[:5]:
        _log.info(f"  {image_id}: {error}")


def _resume_point(folder: Path, manifest: ImageCacheManifest) -> tuple[int, dict[str, str]]:
    """Rows already committed by an interrupted build of the same content (0 when starting afresh)."""
    try:
        old = ImageCacheManifest.from_dict(json.loads((folder / MANIFEST).read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return 0, {}
    if old.differences(manifest) or not (folder / IMAGES).is_file():
        return 0, {}
    done, failed = 0, {}
    for entry in read_journal(folder / JOURNAL):
        try:
            done, failed = int(entry["done"]), {**failed, **dict(entry["failed"])}
        except (KeyError, TypeError, ValueError):
            continue
    return done, failed


def _fill(
    records: Sequence[ImageRecord],
    folder: Path,
    output: tuple[int, str],
    done: int,
    failed: dict[str, str],
    num_workers: int,
    batch_size: int,
    commit_every: int,
    device: torch.device,
) -> None:
    """Decode rows done..N-1 in order through the shared batched input path, committing pixels then journal
    every chunk."""
    from tqdm import tqdm

    paths = [str(r.path) for r in records]
    batches = [range(start, min(start + batch_size, len(records))) for start in range(done, len(records), batch_size)]
    prepared = iter_prepared(paths, batches, [output], device, decoder=resolve_decoder("auto", device),
                             num_workers=num_workers)
    with RowStore(folder / IMAGES, folder / JOURNAL) as store:
        pending: list[list[str]] = []
        row = done
        progress = tqdm(total=len(records), initial=done, unit="img", desc="image cache", disable=None, file=sys.stderr)
        for batch in prepared:
            store.write(batch.rows, batch.images[0].permute(0, 2, 3, 1).cpu().numpy())
            pending += [[records[r].image_id, error] for r, error in sorted(batch.errors.items())]
            row += len(batch)
            progress.update(len(batch))
            if row - done >= commit_every or row == len(records):
                store.commit({"done": row, "failed": pending})
                failed.update(dict(pending))
                pending, done = [], row
        progress.close()

