"""Ratings written into the XMP *embedded* in a JPEG, TIFF or DNG, where Lightroom Classic reads them.

Opt-in and through exiftool (an optional external tool: a clear error when it is missing). exiftool
writes a new copy beside a temporary folder; the decoded pixels of the copy are checked identical to the
original's before anything changes; the photo is then replaced through the cull's `Journal` (old bytes
saved first, temporary file + rename), so a kill leaves the old or the new file and `Journal.restore`
(`iaa cull --undo`) brings the old bytes back byte for byte. Not yet an option of `iaa cull`.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import IAAError
from .journal import Journal

EMBEDDED_FORMATS = (".jpg", ".jpeg", ".tif", ".tiff", ".dng")


def exiftool() -> str:
    found = shutil.which("exiftool")
    if found is None:
        raise IAAError("writing ratings into photos needs exiftool (Debian/Ubuntu: apt install "
                       "libimage-exiftool-perl; macOS: brew install exiftool); sidecars (--xmp) need nothing")
    return found


def rated_photo_bytes(photo: Path, rating: int) -> bytes:
    """The bytes of `photo` with xmp:Rating set to `rating` in its embedded XMP, decoded pixels unchanged."""
    if photo.suffix.lower() not in EMBEDDED_FORMATS:
        raise IAAError(f"{photo}: ratings are embedded only in {', '.join(EMBEDDED_FORMATS)}; use a sidecar")
    with tempfile.TemporaryDirectory(dir=photo.parent, prefix=".iaa-embed-") as folder:
        copy = Path(folder) / photo.name
        done = subprocess.run([exiftool(), "-q", "-q", f"-XMP-xmp:Rating={rating}", "-o", str(copy), str(photo)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not copy.is_file():
            reason = (done.stderr.strip().splitlines() or ["no output"])[0]
            raise IAAError(f"{photo}: exiftool could not write the rating ({reason}); the photo is unchanged")
        if not np.array_equal(_pixels(photo), _pixels(copy)):
            raise IAAError(f"{photo}: writing the rating would change the decoded pixels; the photo is unchanged")
        return copy.read_bytes()


def write_embedded_rating(photo: Path, rating: int, journal: Journal) -> None:
    """Set the rating embedded in `photo`, journalled (old bytes first) and atomic (temp file + rename)."""
    new = rated_photo_bytes(photo, rating)
    journal.write(photo, photo.read_bytes(), new)


def _pixels(path: Path) -> np.ndarray:
    from ..imaging import decode_image

    return np.asarray(decode_image(path))
