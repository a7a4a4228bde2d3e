"""What the cull needs to know about each photo besides its score: a thumbnail, a perceptual hash and
the capture time, from one reduced-size decode per photo, cached in the thumbnail folder.

Thumbnails are JPEGs named by a hash of the photo's path; `index.json` beside them remembers each
photo's facts with the file's size and modification time, so a rerun decodes only new or changed photos.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import imagehash
from PIL import Image, UnidentifiedImageError

from ..artifacts import atomic_write_text
from ..errors import DecodeError
from ..imaging import RASTER_FORMATS, decode_image, is_raw_file

INDEX, INDEX_EVERY = "index.json", 100  # the index is saved every INDEX_EVERY photos
EXIF_IFD, DATETIME_ORIGINAL, SUBSEC_ORIGINAL = 0x8769, 36867, 37521


@dataclass(frozen=True)
class PhotoFacts:
    """One photo's thumbnail (file name in the thumbnail folder), perceptual hash and capture time."""

    path: str
    thumb: str
    phash: str
    taken: float | None  # seconds since the epoch, from EXIF DateTimeOriginal (+ SubsecTimeOriginal)
    signature: str  # size and mtime of the file the facts were made from
    error: str = ""


def capture_time(path: str) -> float | None:
    """EXIF DateTimeOriginal (+ SubsecTimeOriginal) as seconds since the epoch; None when absent or unreadable.

    RAW files: LibRaw's capture time (whole seconds)."""
    if is_raw_file(Path(path)):
        return _raw_capture_time(path)
    try:
        with Image.open(path, formats=RASTER_FORMATS) as img:
            exif = img.getexif().get_ifd(EXIF_IFD)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    stamp, subsec = exif.get(DATETIME_ORIGINAL), str(exif.get(SUBSEC_ORIGINAL, "")).strip()
    try:
        taken = datetime.strptime(str(stamp).strip("\x00 "), "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None
    return taken + (float(f"0.{subsec}") if subsec.isdigit() else 0.0)


def _raw_capture_time(path: str) -> float | None:
    import rawpy

    try:
        with rawpy.imread(path) as raw:
            taken = raw.other.timestamp
    except (rawpy.LibRawError, OSError, ValueError):
        return None
    return taken.timestamp() if taken.year > 1970 else None  # LibRaw gives the epoch when there is none


def _signature(path: str) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def thumbnail_name(path: str) -> str:
    return hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:20] + ".jpg"


def survey_photo(path: str, folder: Path, size: int) -> PhotoFacts:
    """Decode `path` at reduced size once: write its thumbnail (longest side `size`) and hash it."""
    try:
        signature = _signature(path)
        image = decode_image(path, min_side=size * 3 // 4)
    except (DecodeError, OSError) as exc:
        return PhotoFacts(path, "", "", None, "", str(exc))
    image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    name = thumbnail_name(path)
    tmp = folder / f".{name}.tmp"
    image.save(tmp, format="JPEG", quality=82)
    os.replace(tmp, folder / name)
    return PhotoFacts(path, name, str(imagehash.phash(image)), capture_time(path), signature)


def survey(paths: Sequence[str], folder: str | Path, size: int = 400, workers: int = 2) -> dict[str, PhotoFacts]:
    """Facts for every path (threads: PIL decodes outside the GIL); cached photos are not decoded again."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cached = _read_index(folder)
    facts: dict[str, PhotoFacts] = {}
    todo = []
    for path in paths:
        known = cached.get(path)
        if known and not known.error and (folder / known.thumb).exists() and _same_file(path, known.signature):
            facts[path] = known
        else:
            todo.append(path)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for done, result in enumerate(pool.map(lambda p: survey_photo(p, folder, size), todo), 1):
            facts[result.path] = result
            if done % INDEX_EVERY == 0:  # an interrupted run keeps what it made
                _write_index(folder, cached, facts)
    _write_index(folder, cached, facts)
    return facts


def _write_index(folder: Path, cached: dict[str, PhotoFacts], facts: dict[str, PhotoFacts]) -> None:
    merged = {**cached, **facts}
    atomic_write_text(folder / INDEX, json.dumps({p: asdict(f) for p, f in merged.items()}) + "\n")


def changed_photos(folder: str | Path, paths: Sequence[str]) -> list[str]:
    """The photos whose size or modification time differ from when they were last surveyed (replaced or edited)."""
    cached = _read_index(Path(folder))
    return [p for p in paths if p in cached and cached[p].signature and not _same_file(p, cached[p].signature)]


def _same_file(path: str, signature: str) -> bool:
    try:
        return _signature(path) == signature
    except OSError:
        return False


def _read_index(folder: Path) -> dict[str, PhotoFacts]:
    """The cached facts; an unreadable index (killed writer, older version) just means decoding again."""
    try:
        text = (folder / INDEX).read_text(encoding="utf-8", errors="surrogateescape")
        return {p: PhotoFacts(**f) for p, f in json.loads(text).items()}
    except (OSError, ValueError, TypeError):
        return {}
