"""Ratings written into the XMP *embedded* in a JPEG, TIFF or DNG, where Lightroom Classic reads them
(`iaa cull --xmp --xmp-into embedded|both`).

Through exiftool (an optional external tool: a clear error when it is missing), which writes the new file to
a pipe: nothing is left behind by a kill. Only `xmp:Rating` changes, with this tool's marks (`iaa:Rating`,
`iaa:Stars`, defined for exiftool in `iaa.exiftool_config`) so a later cull knows its own rating. The decoded
pixels of the new bytes (a DNG's sensor data too) must equal the original's before anything changes; the photo
is then replaced through the cull's `Journal` (old bytes saved first, new size and sha256 noted, temporary
file + rename), so a kill leaves the old or the new file, a rerun recognises its own write, and
`Journal.restore` (`iaa cull --undo`) brings the old bytes back byte for byte.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import IAAError
from .journal import Journal

EMBEDDED_FORMATS = (".jpg", ".jpeg", ".tif", ".tiff", ".dng")
CONFIG = Path(__file__).with_name("iaa.exiftool_config")


def can_embed(photo: Path) -> bool:
    return photo.suffix.lower() in EMBEDDED_FORMATS


def exiftool() -> str:
    found = shutil.which("exiftool")
    if found is None:
        raise IAAError("writing ratings into photos needs exiftool (Debian/Ubuntu: apt install "
                       "libimage-exiftool-perl; macOS: brew install exiftool); sidecars (--xmp) need nothing")
    return found


def embedded_text(photo: Path) -> str | None:
    """The XMP packet embedded in `photo`, as text (None when it has none)."""
    from ..data.xmp_ratings import embedded_packet  # the reader of `xmp:` datasets: one reader of embedded XMP

    data = embedded_packet(photo)
    return data.strip(b"\x00").decode("utf-8", errors="replace") if data else None


def rated_photo_bytes(photo: Path, rating: int, stars: int | None = None) -> bytes:
    """The bytes of `photo` with xmp:Rating set to `rating` in its embedded XMP, decoded pixels unchanged."""
    if not can_embed(photo):
        raise IAAError(f"{photo}: ratings are embedded only in {', '.join(EMBEDDED_FORMATS)}; use a sidecar")
    marks = [f"-XMP-xmp:Rating={rating}", f"-XMP-iaa:Rating={rating}"] + ([f"-XMP-iaa:Stars={stars}"] if stars else [])
    done = subprocess.run([exiftool(), "-config", str(CONFIG), "-q", "-q", *marks, "-o", "-", str(photo)],
                          capture_output=True)
    if done.returncode != 0 or not done.stdout:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[0]
        raise IAAError(f"{photo}: exiftool could not write the rating ({reason}); the photo is unchanged")
    if not np.array_equal(_pixels(photo.read_bytes(), photo), _pixels(done.stdout, photo)):
        raise IAAError(f"{photo}: writing the rating would change the decoded pixels; the photo is unchanged")
    return done.stdout


def write_embedded_rating(photo: Path, rating: int, journal: Journal, stars: int | None = None) -> None:
    """Set the rating embedded in `photo`, journalled (old bytes first) and atomic (temp file + rename)."""
    if os.stat(photo).st_nlink > 1:
        raise IAAError(f"{photo}: has {os.stat(photo).st_nlink} hard links, which a new file would split; "
                       "its rating was not embedded (use a sidecar)")
    old = photo.read_bytes()
    journal.write(photo, old, rated_photo_bytes(photo, rating, stars), photo=True)


def _pixels(data: bytes, photo: Path) -> np.ndarray:
    """The decoded pixels: a DNG's sensor data and its decoded image, others' decoded image."""
    from ..imaging import decode_image, is_raw_file

    decoded = np.asarray(decode_image(data, name=str(photo)))
    if not is_raw_file(photo):
        return decoded
    import rawpy

    with rawpy.imread(io.BytesIO(data)) as raw:
        return np.concatenate([decoded.ravel(), raw.raw_image_visible.ravel().view(np.uint8)])
