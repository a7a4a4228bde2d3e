"""A pre-resized image cache for student training: decode every JPEG once, reuse it for every epoch and run.

Each image is read through the shared batched input path (`iaa_distill.inputs`: on the CPU the shared
decoder with reduced-size JPEG decode in the workers, exactly `preprocessing.resize_whole`'s pixels; on a
GPU batched nvJPEG decoding; equal-size images resized together) to a square `size` x `size` uint8 array.
The folder is the one row layout of `iaa_distill.storage` (`RowCache`): `ids.json`, the memory-mapped
`images.npy` (N x size x size x 3; rows of undecodable images stay black), `manifest.json`
(`ImageCacheManifest`: size, interpolation, dataset fingerprint, ids hash, decoder; `complete` and the
undecodable images once built) and the `progress/` journal, so an interrupted build resumes after its last
committed batch.

Training reads random crops straight from the memory map, so an epoch costs no JPEG decoding and
memory use does not grow with the number of images. Several processes (DDP ranks) may ask for
the same cache: a file lock lets one build it while the others wait. A cache in the layout before this one
(format 1) is rebuilt in place.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.records import ImageRecord, ids_hash
from ..devices import resolve_device
from ..errors import IAAError
from ..inputs import iter_prepared, resolve_decoder
from ..messages import get_logger
from ..settings import differences as settings_differences
from ..storage import (MANIFEST_FILE, Manifest, Reuse, RowCache, RowWriter, finish_rows, pending_batches,
                       read_progress, resume_or_create_rows, reuse_decision)

_log = get_logger(__name__)

IMAGES = "images.npy"
MANIFEST = MANIFEST_FILE
LOCK = ".lock"
FORMAT_VERSION = 2  # 1: index.json, progress.jsonl and failed.json (rebuilt)


def default_cache_root() -> Path:
    """`$IAA_CACHE_DIR/images`, else `~/.cache/iaa_distill/images`."""
    base = os.environ.get("IAA_CACHE_DIR") or Path.home() / ".cache" / "iaa_distill"
    return Path(base).expanduser() / "images"


@dataclass
class ImageCacheManifest(Manifest):
    """`manifest.json`: what the pixels are made from (the identity), whether they are all there and which images
    could not be decoded."""

    IDENTITY = ("format", "size", "interpolation", "shape", "dataset_fingerprint", "ids_hash", "decoder")
    # A complete cache is reused when these match (the folder's key): the same images at the same size, whichever
    # decoder or copy of the dataset built it; an unfinished one is resumed only under the whole identity.
    REUSED_BY = ("format", "size", "interpolation", "shape", "ids_hash")

    def reused_for(self, wanted: "ImageCacheManifest") -> list[str]:
        """What differs in `REUSED_BY` between this (an existing cache's manifest) and `wanted`."""
        return settings_differences({k: getattr(self, k) for k in self.REUSED_BY},
                                    {k: getattr(wanted, k) for k in self.REUSED_BY})

    format: int = FORMAT_VERSION
    size: int = 0
    interpolation: str = "bicubic"
    shape: list[int] = field(default_factory=list)
    dataset_fingerprint: str = ""
    ids_hash: str = ""
    decoder: str = "pil"  # "torchvision" (nvJPEG) when built on a GPU: pixels differ by a few levels
    complete: bool = False
    failed: dict[str, str] = field(default_factory=dict)  # image id -> why it could not be decoded


class ImageCache(RowCache):
    """A complete cache folder: `rows_for(ids)` are rows of `pixels()` (opened read-only on demand)."""

    ARRAY, KIND, HINT = IMAGES, "image cache", "delete the folder to build it again"

    @classmethod
    def open(cls, directory: str | Path) -> "ImageCache":
        directory = Path(directory).expanduser()
        manifest = ImageCacheManifest.read(directory / MANIFEST, f"{directory}: not an image cache")
        if manifest.format != FORMAT_VERSION or not manifest.complete:
            raise IAAError(f"{directory}: image cache is incomplete or in an older layout; rerun to build it")
        return cls.read_rows(directory, manifest, (manifest.size, manifest.size, 3))

    @property
    def size(self) -> int:
        return int(self.manifest.size)

    def pixels(self) -> np.ndarray:
        """The (N, size, size, 3) uint8 memory map."""
        return self.array


def ensure_image_cache(
    records: Sequence[ImageRecord],
    size: int,
    interpolation: str = "bicubic",
    root: str | Path | None = None,
    name: str = "images",
    dataset_fingerprint: str = "",
    num_workers: int = 4,
    batch_size: int = 32,
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
    torch_device = resolve_device(device)
    manifest = ImageCacheManifest(size=size, interpolation=interpolation, shape=[len(ids), size, size, 3],
                                  dataset_fingerprint=dataset_fingerprint, ids_hash=ids_hash(ids),
                                  decoder=resolve_decoder("auto", torch_device))
    with open(folder / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; concurrent ranks wait here, then find it complete
        existing = ImageCacheManifest.read_existing(folder / MANIFEST)
        changes = existing.reused_for(manifest) if existing is not None else None
        if reuse_decision(changes, bool(existing and existing.complete)) is not Reuse.UP_TO_DATE:
            _build(records, folder, manifest, num_workers, batch_size, torch_device)
        return ImageCache.open(folder)


def _build(records: Sequence[ImageRecord], folder: Path, manifest: ImageCacheManifest, num_workers: int,
           batch_size: int, device: torch.device) -> None:
    """Decode the rows not committed yet in fixed batches through the shared batched input path, each batch
    committed (pixels, then journal) before the next; then record completion and the failures."""
    from tqdm import tqdm

    ids = [r.image_id for r in records]
    for stale in ("index.json", "progress.jsonl", "failed.json"):  # format 1's files (never in a format-2 build)
        (folder / stale).unlink(missing_ok=True)
    resume_or_create_rows(folder, manifest, ids, IMAGES, tuple(manifest.shape), np.uint8)
    done, _ = read_progress(folder, len(ids))
    batches = pending_batches(range(len(ids)), done, batch_size)
    remaining = sum(map(len, batches))
    _log.info(f"image cache: {'resuming' if done.any() else 'writing'} {remaining} of {len(ids)} images at "
              f"{manifest.size}x{manifest.size} in {folder}")
    start = time.perf_counter()
    prepared = iter_prepared([str(r.path) for r in records], batches, [(manifest.size, manifest.interpolation)],
                             device, decoder=manifest.decoder, num_workers=num_workers)
    progress = tqdm(total=len(ids), initial=len(ids) - remaining, unit="img", desc="image cache", disable=None,
                    file=sys.stderr)
    with RowWriter(folder, IMAGES) as writer:
        for batch in prepared:
            writer.write(batch.rows, batch.images[0].permute(0, 2, 3, 1).cpu().numpy(), batch.errors)
            progress.update(len(batch))
    progress.close()
    failed = finish_rows(folder, ImageCacheManifest.read(folder / MANIFEST, "")).failed
    rate = remaining / max(time.perf_counter() - start, 1e-9)
    _log.info(f"image cache: done ({rate:.0f} img/s), {len(failed)} undecodable image(s) excluded")
    for image_id, error in list(failed.items())[:5]:
        _log.info(f"  {image_id}: {error}")
