"""The one batched input path: feature extraction, the image cache and scoring all read photos through it.

1. Workers (DataLoader processes, or a warm thread pool in latency mode) turn one batch of files into one
   `RawBatch` made of contiguous uint8 buffers, not one object per image:
   - `pixels`: images decoded by the shared decoder (`imaging.decode_image`: reduced-size JPEG decode to
     `min_side`, EXIF orientation, any mode -> RGB), HWC, sorted by size so that each run of equal sizes
     is one slice of the buffer;
   - `jpegs` (decoder "torchvision"): the bytes of complete, upright RGB/grayscale JPEGs, decoded later as a
     batch on the device (nvJPEG on CUDA). Rotated, CMYK, truncated or odd files take the shared decoder in
     the worker, which applies the rotation or names the problem.
2. `prepare` moves a batch to the device, decodes its JPEG bytes there and resizes each group of equal-size
   images with one call per output size (`preprocessing.resize_whole_batch`): uint8 (B, 3, S, S) per size.
3. `prefetch` prepares batch n+1 in a background thread (on a side CUDA stream on a GPU) while the caller
   computes batch n.
"""
from __future__ import annotations

import io
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .errors import DecodeError, IAAError
from .imaging import DEFAULT_MAX_PIXELS, Photo, decode_image, decode_photo
from .preprocessing import resize_whole_batch

JPEG_MAGIC = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
OutputSize = tuple[int, str]  # (size, interpolation): one square output of every image
DECODERS: tuple[str, ...] = ("auto", "pil", "torchvision")


class Visit(Protocol):
    """Work done in the workers on each photo they decode, from that same decode (`iaa cull`: thumbnail, hash,
    capture time). `min_side` raises the decode size to what the visit needs; `__call__(path, decode)` runs
    `decode()` itself (so it can look at the file first) and returns the photo and a picklable value, which
    the caller gets back in `Prepared.extras`; `Scorer.iter_paths` hands each batch's values to `collect` in
    the main process."""

    min_side: int

    def __call__(self, path: str, decode: Callable[[], Photo]) -> tuple[Photo, Any]: ...

    def collect(self, values: list[Any]) -> None: ...


def resolve_decoder(decoder: str, device: torch.device) -> str:
    """'auto' -> 'torchvision' (nvJPEG) on CUDA, 'pil' on CPU."""
    if decoder == "auto":
        return "torchvision" if device.type == "cuda" else "pil"
    if decoder not in DECODERS:
        raise IAAError(f"--decoder {decoder}: expected one of {', '.join(DECODERS)}")
    return decoder


@dataclass
class RawBatch:
    """What a worker hands the main process for one batch: a few contiguous buffers."""

    rows: torch.Tensor  # int64 (n,): rows of the decoded images, in buffer order
    shapes: torch.Tensor  # int64 (n, 2): height, width of each decoded image
    pixels: torch.Tensor  # uint8: the decoded HWC images back to back
    jpeg_rows: torch.Tensor  # int64 (m,): rows whose JPEG bytes are in `jpegs`
    jpeg_sizes: torch.Tensor  # int64 (m,)
    jpegs: torch.Tensor  # uint8: the JPEG files back to back
    errors: list[tuple[int, str]] = field(default_factory=list)
    extras: list[tuple[int, Any]] = field(default_factory=list)  # what a `Visit` returned, by row

    def pin_memory(self) -> "RawBatch":
        """Page-locked copies of the buffers (the DataLoader calls this when `pin_memory=True`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return RawBatch(**{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in values.items()})


@dataclass
class Prepared:
    """One batch ready for a model: `images[k]` (B, 3, S_k, S_k) uint8 on the device for output size k,
    row i of each for `rows[i]`; `errors` maps the rows that could not be decoded to the reason."""

    rows: list[int]
    images: list[torch.Tensor]
    errors: dict[int, str]
    extras: dict[int, Any] = field(default_factory=dict)  # what a `Visit` returned, by row

    def __len__(self) -> int:
        return len(self.rows) + len(self.errors)


def plain_jpeg(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """A complete RGB or grayscale JPEG without EXIF rotation and of sane size: safe for batch decoding.

    Truncated files (no end-of-image marker) are left to the shared decoder, which reports them:
    batch decoders may fill the missing part silently. So are camera JPEGs with an MPF index (PIL's MPO):
    the shared decoder reads their embedded preview, so their scores are the same on every device.
    """
    if data[:2] != JPEG_MAGIC or not data.rstrip(b"\x00").endswith(JPEG_END):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            return (img.format == "JPEG" and img.mode in ("RGB", "L") and img.width * img.height <= max_pixels
                    and img.getexif().get(0x0112, 1) == 1)
    except Exception:  # anything odd goes through the shared decoder, which names the problem
        return False


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DecodeError(f"{path}: file not found") from None
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read ({exc.strerror})") from None


class BatchReader(torch.utils.data.Dataset):
    """Item k = `RawBatch` of the rows `batches[k]` of `paths`; a bad file becomes an error, never an exception."""

    def __init__(self, paths: Sequence[str], batches: Sequence[Sequence[int]], min_side: int,
                 encoded: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, visit: Visit | None = None):
        self.paths = [str(p) for p in paths]
        self.batches = [list(b) for b in batches]
        self.min_side = max(min_side, visit.min_side) if visit is not None else min_side
        self.encoded = encoded and visit is None  # a visit needs the decoded pixels
        self.max_pixels = max_pixels
        self.visit = visit

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> RawBatch:
        decoded: list[tuple[int, np.ndarray]] = []
        jpegs: list[tuple[int, bytes]] = []
        errors: list[tuple[int, str]] = []
        extras: list[tuple[int, Any]] = []
        for row in self.batches[index]:
            try:
                item = self.read(row)
            except DecodeError as exc:
                errors.append((row, str(exc)))
                continue
            if isinstance(item, tuple):
                item, extra = item
                extras.append((row, extra))
            (jpegs if isinstance(item, bytes) else decoded).append((row, item))
        return pack(decoded, jpegs, errors, extras)

    def read(self, row: int) -> bytes | np.ndarray | tuple[np.ndarray, Any]:
        """JPEG bytes for the device decoder (encoded mode, plain JPEGs), else the decoded HWC uint8 image
        (with what the visit made of it, when there is one)."""
        path = self.paths[row]
        source: str | bytes = path
        if self.encoded:
            source = _read_bytes(path)
            if plain_jpeg(source, self.max_pixels):
                return source
        decode = partial(decode_photo, source, min_side=self.min_side, max_pixels=self.max_pixels, name=path)
        if self.visit is None:
            return np.asarray(decode().image)
        photo, extra = self.visit(path, decode)
        return np.asarray(photo.image), extra


def pack(decoded: list[tuple[int, np.ndarray]], jpegs: list[tuple[int, bytes]],
         errors: list[tuple[int, str]], extras: list[tuple[int, Any]] | None = None) -> RawBatch:
    """Join decoded images (sorted by size) and JPEG bytes into one `RawBatch`."""
    decoded = sorted(decoded, key=lambda item: item[1].shape[:2])
    pixels = np.concatenate([a.reshape(-1) for _, a in decoded]) if decoded else np.zeros(0, np.uint8)
    data = b"".join(b for _, b in jpegs)
    return RawBatch(
        rows=torch.tensor([r for r, _ in decoded], dtype=torch.int64),
        shapes=torch.tensor([a.shape[:2] for _, a in decoded], dtype=torch.int64).reshape(-1, 2),
        pixels=torch.from_numpy(pixels),
        jpeg_rows=torch.tensor([r for r, _ in jpegs], dtype=torch.int64),
        jpeg_sizes=torch.tensor([len(b) for _, b in jpegs], dtype=torch.int64),
        jpegs=torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8),
        errors=errors,
        extras=extras or [],
    )


def _pixel_groups(raw: RawBatch, device: torch.device) -> list[tuple[list[int], torch.Tensor]]:
    """Runs of equal-size decoded images as (rows, (n, 3, H, W) uint8 on `device`), one transfer in all."""
    pixels = raw.pixels.to(device, non_blocking=True)
    groups, start, first = [], 0, 0
    for (height, width), run in groupby(raw.shapes.tolist(), key=tuple):
        count = len(list(run))
        size = count * height * width * 3
        images = pixels[start:start + size].view(count, height, width, 3).permute(0, 3, 1, 2)
        groups.append((raw.rows[first:first + count].tolist(), images))
        start, first = start + size, first + count
    return groups


def _jpeg_groups(raw: RawBatch, device: torch.device, paths: Sequence[str], min_side: int,
                 errors: dict[int, str]) -> list[tuple[list[int], torch.Tensor]]:
    """Decode the batch's JPEG bytes on `device` (nvJPEG on CUDA) and group them by size.

    When the batch decoder refuses the batch (one bad file fails it), each file takes the shared decoder.
    """
    if not len(raw.jpeg_rows):
        return []
    from torchvision.io import ImageReadMode, decode_jpeg

    rows = raw.jpeg_rows.tolist()
    files = list(raw.jpegs.split(raw.jpeg_sizes.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            images = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            images = [_decode_one(f, paths[row], row, min_side, errors, device) for f, row in zip(files, rows)]
    by_size: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
    for row, image in zip(rows, images):
        if image is not None:
            by_size.setdefault(tuple(image.shape[1:]), []).append((row, image))
    return [([r for r, _ in items], torch.stack([i for _, i in items])) for items in by_size.values()]


def _decode_one(data: torch.Tensor, path: str, row: int, min_side: int, errors: dict[int, str],
                device: torch.device) -> torch.Tensor | None:
    try:
        image = decode_image(data.numpy().tobytes(), min_side=min_side, name=path)
    except DecodeError as exc:
        errors[row] = str(exc)
        return None
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).to(device)


def prepare(raw: RawBatch, device: torch.device, sizes: Sequence[OutputSize], paths: Sequence[str],
            min_side: int) -> Prepared:
    """Decode (JPEG bytes, on the device) and resize (each group of equal size in one call per output size);
    `paths` name the files in errors."""
    errors = dict(raw.errors)
    groups = _pixel_groups(raw, device) + _jpeg_groups(raw, device, paths, min_side, errors)
    rows = [row for group_rows, _ in groups for row in group_rows]
    images = []
    for size, interpolation in sizes:
        resized = [resize_whole_batch(group, size, interpolation) for _, group in groups]
        empty = torch.zeros(0, 3, size, size, dtype=torch.uint8, device=device)
        images.append(torch.cat(resized) if resized else empty)
    return Prepared(rows, images, errors, dict(raw.extras))


_DONE = object()


@dataclass
class _Failure:
    error: BaseException


def prefetch(items: Iterable, work: Callable, device: torch.device, depth: int = 2) -> Iterator:
    """Yield `work(item)` for each item, computed up to `depth` items ahead in a background thread.

    On CUDA the thread runs on its own stream (copies and resizing overlap the caller's compute); each result
    is handed over once its work is done. An exception in the thread is raised here; leaving early stops it.
    `items` is iterated from here, the caller's thread: a DataLoader forks its workers there. Forked from the
    background thread, a worker's Python would free what only the caller's frames hold (an ONNX Runtime session)
    and hang in its destructor, waiting on threads that do not exist in the child.
    """
    source = iter(items)
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(value: object) -> None:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def run() -> None:
        try:
            with torch.cuda.stream(stream):
                for item in source:
                    if stop.is_set():
                        return
                    done = work(item)
                    event = stream.record_event() if stream is not None else None
                    put((done, event))
        except BaseException as exc:  # handed to the caller, which raises it
            put(_Failure(exc))
        finally:
            put(_DONE)

    thread = threading.Thread(target=run, name="iaa-prefetch", daemon=True)
    thread.start()
    try:
        while (got := results.get()) is not _DONE:
            if isinstance(got, _Failure):
                raise got.error
            done, event = got
            if event is not None:
                _hand_over(done, event, device)
            yield done
    finally:
        stop.set()
        thread.join()


def _hand_over(batch: Prepared, event: torch.cuda.Event, device: torch.device) -> None:
    """Make the caller's stream wait for the prefetch stream, and keep the batch's memory until it is used."""
    current = torch.cuda.current_stream(device)
    current.wait_event(event)
    for images in batch.images:
        images.record_stream(current)


def in_threads(reader: BatchReader, pool: Executor, lookahead: int = 4) -> Iterator[RawBatch]:
    """`reader`'s batches in order, read by an already running thread pool (no worker start-up per call)."""
    pending: deque = deque()
    for index in range(len(reader)):
        pending.append(pool.submit(reader.__getitem__, index))
        if len(pending) > lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def iter_prepared(paths: Sequence[str], batches: Sequence[Sequence[int]], sizes: Sequence[OutputSize],
                  device: torch.device, *, decoder: str = "pil", num_workers: int = 2, pool: Executor | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, visit: Visit | None = None) -> Iterator[Prepared]:
    """The batches of `paths` resized to every size in `sizes` on `device`, read ahead of the caller.

    decoder: "pil" (shared decoder in the workers) or "torchvision" (batched JPEG decode on the device).
    Workers: `num_workers` DataLoader processes, or the threads of `pool` when given (latency mode).
    visit: more work on each decoded photo in the workers (its results in `Prepared.extras`).
    """
    min_side = max(size for size, _ in sizes)
    reader = BatchReader(paths, batches, min_side, encoded=decoder == "torchvision", max_pixels=max_pixels,
                         visit=visit)
    if pool is not None:
        source: Iterable[RawBatch] = in_threads(reader, pool)
    else:
        source = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=num_workers,
                                             pin_memory=device.type == "cuda",
                                             prefetch_factor=2 if num_workers else None)
    return prefetch(source, partial(prepare, device=device, sizes=sizes, paths=reader.paths, min_side=min_side), device)
