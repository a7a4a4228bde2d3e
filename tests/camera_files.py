"""Camera files generated for tests: tiny DNGs (RAW through LibRaw) and HEICs; never committed binaries."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# The tags that make a TIFF a DNG that LibRaw opens: version, camera, a 2x2 RGGB colour-filter array, a colour matrix.
DNG_TAGS = [
    (50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 1, 0, 0), True), (50708, "s", 0, "Test Camera", True),
    (271, "s", 0, "Test", True), (272, "s", 0, "Camera", True), (33421, "H", 2, (2, 2), True),
    (33422, "B", 4, (0, 1, 1, 2), True), (50721, "2i", 9, (1, 1) * 9, True), (50778, "H", 1, 21, True),
]


def write_dng(path: Path, preview: np.ndarray | None, raw_shape: tuple[int, int] = (64, 96), jpeg: bool = True,
              taken: str | None = None) -> Path:
    """A DNG with a random Bayer mosaic of `raw_shape` and `preview` (RGB uint8) embedded as JPEG or bitmap;
    `taken` ('YYYY:MM:DD HH:MM:SS') becomes its capture time."""
    import tifffile

    mosaic = np.random.default_rng(0).integers(0, 4000, raw_shape, dtype=np.uint16)
    tags = DNG_TAGS + ([(306, "s", 0, taken, True)] if taken else [])
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(mosaic, photometric=32803, subfiletype=0, extratags=tags, subifds=0 if preview is None else 1)
        if preview is not None:
            tiff.write(preview, photometric="rgb", subfiletype=1, compression="jpeg" if jpeg else None)
    return path


def write_heic(path: Path, image: np.ndarray, **info) -> Path:
    """An HEIC file (pillow-heif's encoder) of `image` (RGB uint8); `info` goes to PIL's save (exif=...)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.fromarray(image).save(path, format="HEIF", quality=90, **info)
    return path


def heic_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="HEIF", quality=90)
    return buffer.getvalue()
