"""Batched teacher feature extraction into a resumable cache, on CPU or CUDA, optionally sharded with torchrun.

Two decoders, chosen with `decoder` ("auto": torchvision on CUDA, PIL on CPU):
- pil: DataLoader workers decode each image once with the shared decoder (reduced-size JPEG decode
  to the largest teacher input) and resize it for every teacher.
- torchvision: workers only read the bytes of plain JPEGs, which are decoded as a batch by
  `torchvision.io.decode_jpeg` on the extraction device (nvJPEG on CUDA); other formats, rotated or
  CMYK JPEGs, files without an end-of-image marker and batches the decoder refuses go through the
  shared decoder. Resizing happens on the device.
On CUDA the teachers run under bfloat16 autocast, on CPU in float32.
Under `torchrun` (torch.distributed initialised from the environment) each rank extracts a strided
shard of the rows into the same cache. Batches are fixed groups of rows, so a resumed run computes
exactly the batches an uninterrupted run would have.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..data.loading import ImageFiles
from ..devices import process_group, resolve_device
from ..data.records import Dataset
from ..errors import DecodeError, IAAError
from ..imaging import decode_image
from ..preprocessing import resize_whole_tensor
from ..storage import IdIndex
from ..teachers import DEFAULT_TEACHERS, TeacherSet, load_teachers
from .cache import FeatureCache, FeatureCacheManifest, RowWriter, finalize_manifest, prepare_cache, read_progress
from .settings import DECODERS

JPEG_MAGIC = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


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


def resolve_decoder(decoder: str, device: torch.device) -> str:
    """'auto' -> 'torchvision' (nvJPEG) on CUDA, 'pil' on CPU."""
    if decoder == "auto":
        return "torchvision" if device.type == "cuda" else "pil"
    if decoder not in DECODERS:
        raise IAAError(f"--decoder {decoder}: expected one of {', '.join(DECODERS)}")
    return decoder


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
        dataset={
            "name": dataset.name,
            "fingerprint": dataset.fingerprint(),
            "split": split,
            "num_images": len(ids),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        },
        iaa_distill_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _pending_batches(rows: Sequence[int], done: np.ndarray, batch_size: int) -> list[list[int]]:
    """Fixed groups of `batch_size` rows with their finished rows removed; empty groups dropped."""
    groups = (rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
    return [pending for group in groups if (pending := [r for r in group if not done[r]])]


def extract_features(
    dataset: Dataset,
    out: str | Path,
    teachers: Sequence[str] = DEFAULT_TEACHERS,
    *,
    weights: dict[str, str] | None = None,
    split: str = "all",
    batch_size: int = 32,
    num_workers: int = 2,
    device: str = "auto",
    decoder: str = "auto",
    hflip: bool = False,
    progress: bool = True,
) -> FeatureCache:
    """Extract the teachers' MLSP features of `dataset`'s `split` into the cache folder `out`.

    Creates the cache, or resumes it when it was made the same way (other teachers, preprocessing or
    images are refused with an IAAError). Undecodable images are listed in `FeatureCache.failed`.
    decoder: "pil", "torchvision" (batched `decode_jpeg` on the device; nvJPEG on CUDA) or "auto".
    """
    if batch_size < 1:
        raise IAAError(f"--batch-size must be at least 1, got {batch_size}")
    records = dataset.split(split)
    if not records:
        raise IAAError(f"dataset '{dataset.name}' has no images in split '{split}'")
    ids = IdIndex([r.image_id for r in records], f"dataset '{dataset.name}'").ids  # refuses a repeated id
    out = Path(out).expanduser()
    torch_device = resolve_device(device)
    decoder = resolve_decoder(decoder, torch_device)
    with process_group(torch_device) as (rank, world):
        teacher_set = load_teachers(teachers, weights, torch_device, hflip=hflip)
        manifest = build_manifest(dataset, split, ids, teacher_set, hflip, torch_device, decoder)
        error = None
        if rank == 0:
            try:
                prepare_cache(out, manifest, ids)
            except IAAError as exc:
                error = str(exc)
        _barrier_with_error(error, world)
        done, _ = read_progress(out, len(ids))
        batches = _pending_batches(list(range(rank, len(ids), world)), done, batch_size)
        writer = RowWriter(out, rank)
        try:
            run = _run_batch_decode if decoder == "torchvision" else _run_pil
            run(teacher_set, [str(r.path) for r in records], batches, writer, num_workers, torch_device,
                progress and rank == 0)
        finally:
            writer.close()
        _barrier_with_error(None, world)
        if rank == 0:
            finalize_manifest(out)
        _barrier_with_error(None, world)
    return FeatureCache.open(out)


def _progress_bar(batches: list[list[int]], enabled: bool):
    from tqdm import tqdm

    return tqdm(total=sum(map(len, batches)), unit="img", desc="features", disable=not enabled, smoothing=0.1)


def _run_pil(teachers: TeacherSet, paths: list[str], batches: list[list[int]], writer: RowWriter,
             num_workers: int, device: torch.device, progress: bool) -> None:
    transform = teachers.input_transform()
    files = ImageFiles(paths, transform, (transform.numel,), min_side=teachers.max_input_size)
    loader = torch.utils.data.DataLoader(files, batch_sampler=batches, num_workers=num_workers)
    with _progress_bar(batches, progress) as bar:
        for batch in loader:
            ok = batch["ok"]
            features = teachers(batch["image"][ok].to(device)) if ok.any() else torch.zeros(0, teachers.dim)
            rows = batch["index"].tolist()
            writer.write([r for r, good in zip(rows, ok.tolist()) if good], features.cpu().numpy(),
                         {r: e for r, e, good in zip(rows, batch["error"], ok.tolist()) if not good})
            bar.update(len(rows))


class _EncodedImages(torch.utils.data.Dataset):
    """For batch decoding: raw bytes of plain JPEGs (decoded later on the device); anything else decoded here."""

    def __init__(self, paths: Sequence[str], min_side: int):
        self.paths = list(paths)
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return {"index": index, "jpeg": None, "image": None, "error": f"{path}: cannot read ({exc.strerror})"}
        if data[:2] == JPEG_MAGIC and _plain_jpeg(data):
            return {"index": index, "jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8), "image": None,
                    "error": ""}
        try:
            image = decode_image(data, min_side=self.min_side, name=path)
        except DecodeError as exc:
            return {"index": index, "jpeg": None, "image": None, "error": str(exc)}
        return {"index": index, "jpeg": None, "image": torch.from_numpy(np.array(image)).permute(2, 0, 1),
                "error": ""}


def _plain_jpeg(data: bytes, max_pixels: int = 120_000_000) -> bool:
    """A complete RGB or grayscale JPEG without EXIF rotation and of sane size: safe for batch decoding.

    Truncated files (no end-of-image marker) are left to the shared decoder, which reports them:
    batch decoders may fill the missing part silently.
    """
    if not data.rstrip(b"\x00").endswith(JPEG_END):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            return (img.mode in ("RGB", "L") and img.width * img.height <= max_pixels
                    and img.getexif().get(0x0112, 1) == 1)
    except Exception:  # anything odd goes through the shared decoder, which names the problem
        return False


def _run_batch_decode(teachers: TeacherSet, paths: list[str], batches: list[list[int]], writer: RowWriter,
              num_workers: int, device: torch.device, progress: bool) -> None:
    from torchvision.io import ImageReadMode, decode_jpeg

    files = _EncodedImages(paths, teachers.max_input_size)
    loader = torch.utils.data.DataLoader(files, batch_sampler=batches, num_workers=num_workers,
                                         collate_fn=list, pin_memory=False)
    with _progress_bar(batches, progress) as bar:
        for items in loader:
            jpegs = [item for item in items if item["jpeg"] is not None]
            if jpegs:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        decoded = decode_jpeg([i["jpeg"] for i in jpegs], mode=ImageReadMode.RGB, device=device)
                    except RuntimeError:  # one bad file fails the batch: fall back to the shared decoder
                        decoded = [None] * len(jpegs)
                for item, image in zip(jpegs, decoded):
                    if image is None:
                        try:
                            image = torch.from_numpy(np.array(decode_image(
                                item["jpeg"].numpy().tobytes(), min_side=teachers.max_input_size,
                                name=paths[item["index"]])))
                            image = image.permute(2, 0, 1)
                        except DecodeError as exc:
                            item["error"] = str(exc)
                    item["image"] = image
            good = [item for item in items if item["image"] is not None]
            failed = {item["index"]: item["error"] for item in items if item["image"] is None}
            features = torch.zeros(0, teachers.dim)
            if good:
                inputs = [torch.stack([resize_whole_tensor(item["image"].to(device, non_blocking=True),
                                                         t.input_size, t.interpolation) for item in good])
                          for t in teachers.teachers]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    features = teachers(inputs).float()
            writer.write([item["index"] for item in good], features.cpu().numpy(), failed)
            bar.update(len(items))
