"""XMP ratings: a photographer's own stars and rejects as a dataset (`xmp:~/Photos`).

Every image below the folder (listed as `folder:` lists it) is looked up in this order: a darktable/digiKam
sidecar `photo.ext.xmp`, a Lightroom/Capture One/Bridge sidecar `photo.xmp`, then the XMP embedded in the
file (JPEG, TIFF/DNG, HEIC, PNG, WebP through Pillow and pillow-heif; other RAW files by the packet's
markers). `xmp:Rating` 1-5 is the label (a score on 0..5), a reject (-1) is the bottom of the scale (0);
unrated photos (0 or no rating) join the `unlabeled` split, the distillation's free unlabelled data.
The rated photos are split once, seeded: test = `test_fraction` of them (by a seeded hash of each id, so
a test photo mostly stays one when more get rated), the rest train (val is carved from
train by `open_dataset`). Ids are paths relative to the folder whether rated or not, so the feature cache
of a library stays valid when more photos get rated.

Reading never writes: sidecars and photos are opened read-only. XML is parsed with defusedxml (no DTDs,
entities or external references). A malformed, hostile or foreign sidecar, or an out-of-range rating, is one
note naming the file, and that photo counts as unrated. Ratings written by `iaa cull` (marked `iaa:Rating`)
count as the photographer's (`own=skip` leaves them out, e.g. after an unreviewed automatic cull).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

from PIL import Image

from ..culling.xmp import read_rating, sidecar_path
from ..errors import DatasetError
from ..imaging import RAW_EXTENSIONS
from .folder import read_folder
from .parsing import assign_splits
from .records import Dataset, ImageRecord, Label
from .unlabeled import UNLABELED_SPLIT

SCALE = (0.0, 5.0)  # reject = 0, stars 1..5
REJECT = -1
PACKET = re.compile(rb"<x:xmpmeta.*?</x:xmpmeta>", re.S)
RAW_SCAN_BYTES = 8 << 20  # a RAW file's XMP packet lies in its metadata, near the start
OWN_POLICIES = ("keep", "skip")


def read_xmp_ratings(path: Path, *, seed: int = 0, test_fraction: float = 0.2, own: str = "keep",
                     holdout: str | None = None) -> Dataset:
    """The images below `path` with their XMP ratings: rated ones train/test, unrated ones `unlabeled`.
    `holdout` (a subfolder, e.g. one whole shoot) makes its rated photos the test split instead of a share;
    its unrated photos are left out (neither tested nor distilled on)."""
    if own not in OWN_POLICIES:
        raise DatasetError(f"xmp:{path}: own={own!r}; expected one of {', '.join(OWN_POLICIES)}")
    listing = read_folder(Path(path))
    notes, records, marked = list(listing.notes), [], 0
    for record in listing.records:
        rating, ours = photo_rating(record.path, notes)
        if rating is not None and ours:
            marked += 1
            if own == "skip":
                rating = None
        records.append(rated_record(record, rating))
    if holdout:
        records, test = _held_out_folder(records, holdout.strip("/"), path)
    else:
        test = held_out([r.image_id for r in records if r.label is not None], test_fraction, seed)
    records = assign_splits(records, {"test": test})
    rated = [r.image_id for r in records if r.label is not None]
    notes.append(f"{len(rated)} rated photos ({len(test)} held out as test, seeded), "
                 f"{len(records) - len(rated)} unrated (unlabelled)")
    if marked:
        notes.append(f"{marked} rating(s) were written by iaa cull (iaa:Rating): "
                     + ("left out (own=skip)" if own == "skip" else "counted as yours (add ?own=skip to leave them out)"))
    return Dataset(name=listing.name, root=listing.root, records=records, scale=SCALE, notes=notes)


def held_out(ids: list[str], fraction: float, seed: int) -> set[str]:
    """The rated photos kept for test: those whose seeded hash lies below `fraction` (a photo stays on its
    side when more photos get rated), topped up with the lowest hashes to round(fraction * n) photos."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"test_fraction must be in [0, 1), got {fraction}")
    hashes = {i: int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") for i in ids}
    lowest = sorted(ids, key=hashes.__getitem__)[:round(fraction * len(ids))]
    return {i for i in ids if hashes[i] < fraction * 2**64} | set(lowest)


def _held_out_folder(records: list[ImageRecord], folder: str, root: Path) -> tuple[list[ImageRecord], set[str]]:
    inside = {r.image_id for r in records if r.image_id.startswith(folder + "/")}
    test = {r.image_id for r in records if r.image_id in inside and r.label is not None}
    if not test:
        raise DatasetError(f"xmp:{root}: holdout={folder!r} holds no rated photos")
    return [r for r in records if r.label is not None or r.image_id not in inside], test


def rated_record(listed: ImageRecord, rating: int | None) -> ImageRecord:
    """The record of a listed photo with its rating (-1..5; None: unrated, the `unlabeled` split)."""
    if rating is None:
        return replace(listed, dataset="xmp", split=UNLABELED_SPLIT)
    return replace(listed, dataset="xmp", split="train", label=Label(SCALE, score=float(max(rating, 0))))


def photo_rating(photo: Path, notes: list[str]) -> tuple[int | None, bool]:
    """The photo's rating (-1 reject, 1-5 stars; None: unrated or unreadable, noted) and whether `iaa cull`
    wrote it. The first source that exists decides: `photo.ext.xmp`, `photo.xmp`, the embedded packet."""
    for sidecar in (sidecar_path(photo, "ext"), sidecar_path(photo, "stem")):
        if sidecar.is_file():
            try:
                data = sidecar.read_bytes()
            except OSError as exc:
                notes.append(f"{sidecar}: cannot read ({exc.strerror or exc}); photo counted as unrated")
                return None, False
            return packet_rating(data, sidecar, notes)
    data = embedded_packet(photo)
    return packet_rating(data, photo, notes) if data else (None, False)


def packet_rating(data: bytes, where: Path, notes: list[str]) -> tuple[int | None, bool]:
    """xmp:Rating of an XMP packet (None when unrated), read by the one reader (`culling.xmp.read_rating`);
    problems become one note."""
    found = read_rating(data)
    if found.problem:
        notes.append(f"{where}: {_PROBLEMS[found.problem]} ({found.detail}); photo counted as unrated")
    elif found.malformed:
        notes.append(f"{where}: xmp:Rating {found.text!r} is not -1..5; photo counted as unrated")
    return found.value, found.value is not None and found.ours


_PROBLEMS = {"hostile": "refused", "unreadable": "not a readable XMP packet", "foreign": "not an XMP packet"}


def embedded_packet(photo: Path) -> bytes | None:
    """The XMP packet embedded in `photo` (None when there is none or the file cannot be opened)."""
    if photo.suffix.lower() in RAW_EXTENSIONS and photo.suffix.lower() != ".dng":
        return _scanned_packet(photo)
    try:
        with Image.open(photo) as image:
            data = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
            if not data and hasattr(image, "tag_v2"):
                data = image.tag_v2.get(700)
    except Exception:  # not an image Pillow opens (a DNG it cannot read, a damaged file): look for the packet
        return _scanned_packet(photo)
    if isinstance(data, str):
        data = data.encode("utf-8")
    return data or None


def _scanned_packet(photo: Path) -> bytes | None:
    try:
        with open(photo, "rb") as f:
            match = PACKET.search(f.read(RAW_SCAN_BYTES))
    except OSError:
        return None
    return match.group(0) if match else None
