"""Batched teacher feature extraction into a resumable cache, on CPU or CUDA, optionally sharded with torchrun.

Images come through the shared batched input path (`iaa_distill.inputs`), with one of two decoders
("auto": torchvision on CUDA, PIL on CPU):
- pil: DataLoader workers decode each image once with the shared decoder (reduced-size JPEG decode
  to the largest teacher input);
- torchvision: workers only read the bytes of plain JPEGs, which are decoded as a batch by
  `torchvision.io.decode_jpeg` on the extraction device (nvJPEG on CUDA); other formats, rotated or
  CMYK JPEGs, files without an end-of-image marker and batches the decoder refuses go through the
  shared decoder.
Either way each group of equal-size images is resized on the device to every teacher's size in one
call per teacher, and batch n+1 is read and resized while the teachers compute batch n. `hflip` costs
compute only: the mirror image is made on the device from the same input.
On CUDA the teachers run under bfloat16 autocast, on CPU in float32.
Under `torchrun` (torch.distributed initialised from the environment) each rank extracts a strided
shard of the rows into the same cache. Batches are fixed groups of rows, so a resumed run computes
exactly the batches an uninterrupted run would have.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data.records import Dataset, ids_hash
from ..devices import process_group, resolve_device
from ..errors import IAAError
from ..inputs import iter_prepared, resolve_decoder
from ..storage import IdIndex, RowWriter, pending_batches, read_progress
from ..teachers import TeacherSet, load_teachers
from .settings import ExtractionSettings
from .cache import FEATURES_NAME, FeatureCache, FeatureCacheManifest, finalize_manifest, prepare_cache


def _barrier_with_error(error: str | None, world: int) -> None:
    """Share rank 0's error (or None) with every rank, so that all stop together with the same message.

    Being a collective, it also synchronises the ranks (a barrier) when there is no error.
    """
    if world > 1:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise IAAError(error)


def dataset_record(dataset: Dataset, split: str, ids: Sequence[str]) -> dict[str, Any]:
    """What a feature cache records of the images it holds (`FeatureCacheManifest.dataset`)."""
    return {"name": dataset.name, "fingerprint": dataset.fingerprint(), "split": split, "num_images": len(ids),
            "ids_hash": ids_hash(ids)}


def build_manifest(dataset: Dataset, split: str, ids: Sequence[str], teachers: TeacherSet, hflip: bool,
                   device: torch.device, decoder: str) -> FeatureCacheManifest:
    """The cache manifest for this run (`FeatureCacheManifest.differences` says what must match on resume)."""
    gpu = device.type == "cuda"
    return FeatureCacheManifest(
        teachers=teachers.specs(),
        dim=teachers.dim,
        hflip=hflip,
        preprocessing={
            "view": "whole image resized to each teacher's input size",
            "decoder": "pil" if decoder == "pil" else ("nvjpeg+pil" if gpu else "torchvision+pil"),
            "precision": "bfloat16" if gpu else "float32",
        },
        dataset=dataset_record(dataset, split, ids),
        iaa_distill_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def extract_features(dataset: Dataset, out: str | Path, settings: ExtractionSettings | None = None) -> FeatureCache:
    """Extract the teachers' MLSP features of `dataset`'s `settings.split` into the cache folder `out`.

    Creates the cache, or resumes it when it was made the same way (other teachers, preprocessing or
    images are refused with an IAAError). Undecodable images are listed in `FeatureCache.failed`.
    `settings.decoder`: "pil", "torchvision" (batched `decode_jpeg` on the device; nvJPEG on CUDA) or "auto".
    """
    s = settings or ExtractionSettings()
    if s.batch_size < 1:
        raise IAAError(f"--batch-size must be at least 1, got {s.batch_size}")
    split = s.split
    records = dataset.split(split)
    if not records:
        raise IAAError(f"dataset '{dataset.name}' has no images in split '{split}'")
    ids = IdIndex([r.image_id for r in records], f"dataset '{dataset.name}'").ids  # refuses a repeated id
    out = Path(out).expanduser()
    torch_device = resolve_device(s.device)
    decoder = resolve_decoder(s.decoder, torch_device)
    with process_group(torch_device) as (rank, world):
        teacher_set = load_teachers(s.teachers, s.weights or None, torch_device, hflip=s.hflip)
        manifest = build_manifest(dataset, split, ids, teacher_set, s.hflip, torch_device, decoder)
        error = None
        if rank == 0:
            try:
                prepare_cache(out, manifest, ids)
            except IAAError as exc:
                error = str(exc)
        _barrier_with_error(error, world)
        done, _ = read_progress(out, len(ids))
        batches = pending_batches(list(range(rank, len(ids), world)), done, s.batch_size)
        writer = RowWriter(out, FEATURES_NAME, rank)
        try:
            _run(teacher_set, [str(r.path) for r in records], batches, writer, s.num_workers, torch_device, decoder,
                 s.progress and rank == 0)
        finally:
            writer.close()
        _barrier_with_error(None, world)
        if rank == 0:
            finalize_manifest(out)
        _barrier_with_error(None, world)
    return FeatureCache.open(out)


def _progress_bar(batches: list[list[int]], enabled: bool):
    from tqdm import tqdm

    from ..progress import on_terminal

    return tqdm(total=sum(map(len, batches)), unit="img", desc="features", disable=not (enabled and on_terminal()),
                smoothing=0.1)


def _run(teachers: TeacherSet, paths: list[str], batches: list[list[int]], writer: RowWriter, num_workers: int,
         device: torch.device, decoder: str, progress: bool) -> None:
    """Every teacher's features of every batch, read through the shared batched input path (`inputs`)."""
    sizes = [(t.input_size, t.interpolation) for t in teachers.teachers]
    prepared = iter_prepared(paths, batches, sizes, device, decoder=decoder, num_workers=num_workers)
    with _progress_bar(batches, progress) as bar:
        for batch in prepared:
            features = torch.zeros(0, teachers.dim)
            if batch.rows:
                inputs = [images.float().div_(255.0) for images in batch.images]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    features = teachers(inputs).float()
            writer.write(batch.rows, features.cpu().numpy(), batch.errors)
            bar.update(len(batch))
