"""What the cull needs to know about each photo besides its score: a thumbnail, a perceptual hash and
the capture time, from one reduced-size decode per photo, cached in the thumbnail folder.

Thumbnails are JPEGs named by a hash of the photo's path; `index.json` beside them remembers each
photo's facts with the file's size and modification time and the decoder's version, so a rerun decodes only
new or changed photos (and every photo again under another version of the decoder).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import imagehash
from PIL import Image

from ..artifacts import atomic_write_bytes, atomic_write_text
from ..errors import DecodeError
from ..imaging import DECODER_VERSION, Photo, decode_photo
from ..progress import progress_bar

INDEX, INDEX_EVERY = "index.json", 100  # the index is saved every INDEX_EVERY photos


@dataclass(frozen=True)
class PhotoFacts:
    """One photo's thumbnail (file name in the thumbnail folder), perceptual hash and capture time."""

    path: str
    thumb: str
    phash: str
    taken: float | None  # seconds since the epoch, from EXIF DateTimeOriginal (+ SubsecTimeOriginal)
    signature: str  # size and mtime of the file the facts were made from
    error: str = ""
    decoder: int = DECODER_VERSION  # `imaging.DECODER_VERSION` of the decode they were made from


def _signature(path: str) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def thumbnail_name(path: str) -> str:
    return hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:20] + ".jpg"


def survey_photo(path: str, folder: Path, size: int) -> PhotoFacts:
    """Decode `path` at reduced size once: its thumbnail (longest side `size`), hash and capture time."""
    try:
        return Surveyor(folder, size)(path, partial(decode_photo, path, min_side=thumb_min_side(size)))[1]
    except (DecodeError, OSError) as exc:
        return PhotoFacts(path, "", "", None, "", str(exc))


def thumb_min_side(size: int) -> int:
    """The short side a decode needs for a thumbnail of longest side `size` (4:3 photos)."""
    return size * 3 // 4


def make_thumbnail(image: Image.Image, size: int, quality: int = 82) -> tuple[Image.Image, bytes]:
    """Every thumbnail (the cull's files, `iaa score --html`'s data URIs): a copy of `image` shrunk to longest
    side `size`, and that copy as JPEG bytes."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return thumb, buffer.getvalue()


class Surveyor:
    """A photo's facts from a decode made for something else too (`inputs.Visit`: the scorer's workers decode
    each photo once, for its score and its facts). The main process collects the facts into `facts`."""

    def __init__(self, folder: Path, size: int):
        # imagehash.phash imports scipy.fftpack at its first call: imported here, once, the decoding workers
        # forked after it have it, where each imported it again (about 0.5 s of CPU per worker and cull)
        import scipy.fftpack  # noqa: F401

        self.folder, self.size, self.min_side = folder, size, thumb_min_side(size)
        self.facts: dict[str, PhotoFacts] = {}

    def __call__(self, path: str, decode: Callable[[], Photo]) -> tuple[Photo, PhotoFacts]:
        """Decode (the file's signature taken first, so an edit during the decode is seen next time) and write
        the thumbnail. A file that cannot be decoded raises DecodeError, as the decode alone would."""
        try:
            signature = _signature(path)
        except OSError:
            signature = ""  # gone: the decode names the problem
        photo = decode()
        image, jpeg = make_thumbnail(photo.image, self.size)
        name = thumbnail_name(path)
        atomic_write_bytes(self.folder / name, jpeg, durable=False)  # a cache: no fsync per photo
        return photo, PhotoFacts(path, name, str(imagehash.phash(image)), photo.taken, signature)

    def collect(self, values: list[PhotoFacts]) -> None:
        self.facts.update((f.path, f) for f in values)


def survey(paths: Sequence[str], folder: str | Path, size: int = 400, workers: int = 2, progress: bool = False,
           known: dict[str, PhotoFacts] | None = None) -> dict[str, PhotoFacts]:
    """Facts for every path (threads: PIL decodes outside the GIL); cached photos (and `known` ones, made by
    a `Surveyor` during scoring) are not decoded again."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cached = {**_read_index(folder), **(known or {})}
    facts: dict[str, PhotoFacts] = {}
    todo = []
    for path in paths:
        fact = cached.get(path)
        if fact and not fact.error and (folder / fact.thumb).exists() and _same_file(path, fact.signature):
            facts[path] = fact
        else:
            todo.append(path)
    with ThreadPoolExecutor(max(1, workers)) as pool, progress_bar(len(todo), "thumbnails", progress and bool(todo)) as bar:
        for done, result in enumerate(pool.map(lambda p: survey_photo(p, folder, size), todo), 1):
            facts[result.path] = result
            bar.update()
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
    """The cached facts made by this version of the decoder; an unreadable index (killed writer, older version)
    just means decoding again."""
    try:
        text = (folder / INDEX).read_text(encoding="utf-8", errors="surrogateescape")
        return {p: PhotoFacts(**f) for p, f in json.loads(text).items() if f.get("decoder") == DECODER_VERSION}
    except (OSError, ValueError, TypeError):
        return {}
