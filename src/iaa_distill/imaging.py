"""The one image decoder used everywhere: feature extraction, training, scoring and serving.

Every photo becomes an RGB uint8 PIL image with its EXIF orientation applied:
grayscale, palette, CMYK and 16-bit images are converted; images with transparency are
composited onto a white background (how a viewer shows them); animated images give their
first frame. Large JPEGs are decoded at reduced size (PIL draft mode) when the caller only
needs `min_side` pixels on the short side; a camera JPEG's embedded preview (its Multi-Picture Format
"Large Thumbnail", 1616x1080 to 1920x1280 on most cameras) is decoded instead of the full image when it covers
`min_side` and has the photo's aspect ratio. HEIC/HEIF opens through pillow-heif; camera RAW files
(recognised by extension) through LibRaw (rawpy), from their embedded preview when it is large
enough, else demosaiced (at half size when that suffices). An embedded preview takes the orientation of the
photo it belongs to; capture time and EXIF always come from the photo itself. Anything undecodable raises
`DecodeError` with the file name and the reason, so long runs report and skip it.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from .errors import DecodeError

DEFAULT_MAX_PIXELS = 120_000_000
# The decoder's version: raise it whenever the pixels it gives for the same file change. What is kept from a
# decode of a user's file (the cull's scores and thumbnail facts) records it and is made again under another
# one. 2: camera JPEGs decoded from their MPF preview (before: from the photo itself, at reduced size).
DECODER_VERSION = 2
HEIF_EXTENSIONS = (".heic", ".heif", ".hif")
RAW_EXTENSIONS = (".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
                  ".pef", ".srw", ".3fr", ".iiq", ".erf", ".mrw", ".x3f", ".kdc", ".dcr", ".mos", ".rwl")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif") + HEIF_EXTENSIONS + RAW_EXTENSIONS
# Raster formats PIL may open; anything else (EPS, PDF, ...) is refused: PIL hands EPS to Ghostscript.
# JPEG covers MPO (camera multi-picture); HEIF is pillow-heif's plugin (HEIC, HEIF).
RASTER_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF")
JPEG_FORMATS = ("JPEG", "MPO")  # what PIL names a JPEG: MPO is a camera JPEG with an MPF preview (or a 3D pair)
PREVIEW_ASPECT_TOLERANCE = 0.01  # a preview whose width/height differs more from the photo's is another crop
# Pillow's warning for the MP Attribute IFD that begins a camera's MPF preview (no image count: it is no MPO)
MPF_CHILD_WARNING = "Image appears to be a malformed MPO file"
ALPHA_BACKGROUND = (255, 255, 255)
RAW_PREVIEW_MIN_SIDE = 1024  # without a `min_side`, a RAW's embedded preview is used when at least this large
# LibRaw's `flip` -> the PIL transpose that makes the image upright
RAW_FLIPS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}

pillow_heif.register_heif_opener()
# The process that ran LibRaw's OpenMP code (a demosaic), if any. A process forked after that (a DataLoader
# worker) inherits this value, and with it the risk of deadlock that rawpy warns about in forked processes.
_LIBRAW_THREADS_PID: int | None = None

EXIF_IFD, DATETIME_ORIGINAL, SUBSEC_ORIGINAL, EXIF_ORIENTATION = 0x8769, 36867, 37521, 0x0112
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose)
EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                  5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_90}
REDUCIBLE_MODES = ("RGB", "L", "CMYK", "I", "F")  # modes Image.reduce takes whose average is right (no alpha)

ImageSource = str | Path | bytes | BinaryIO


@dataclass
class Photo:
    """A decoded photo and what the same open of the file told about it."""

    image: Image.Image  # upright RGB uint8
    taken: float | None  # capture time (EXIF DateTimeOriginal + SubsecTimeOriginal, or LibRaw's), epoch seconds


def decode_image(
    source: ImageSource,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` (path, bytes or binary file) into an upright RGB uint8 image.

    min_side: the caller needs at least this many pixels on the short side; JPEGs larger than
    that are decoded at a reduced size (1/2, 1/4 or 1/8) that still satisfies it, and other
    images far larger than that are shrunk by an integer factor before any conversion (memory).
    max_pixels: images with more pixels are refused (decompression-bomb guard).
    """
    return decode_photo(source, min_side=min_side, max_pixels=max_pixels, name=name).image


def decode_photo(
    source: ImageSource,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Photo:
    """`decode_image`, with the capture time read from the same open of the file."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    let_pil_open_up_to(max_pixels)
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    if is_raw_file(Path(label)):
        return _decode_raw(fp, label, min_side, max_pixels)
    return _decode_raster(fp, label, min_side, max_pixels)


def exif_capture_time(exif: Image.Exif) -> float | None:
    """EXIF DateTimeOriginal (+ SubsecTimeOriginal) as seconds since the epoch; None when absent or malformed."""
    sub_ifd = exif.get_ifd(EXIF_IFD)
    stamp, subsec = sub_ifd.get(DATETIME_ORIGINAL), str(sub_ifd.get(SUBSEC_ORIGINAL, "")).strip()
    try:
        taken = datetime.strptime(str(stamp).strip("\x00 "), "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None
    return taken + (float(f"0.{subsec}") if subsec.isdigit() else 0.0)


def raw_capture_time(raw) -> float | None:
    """LibRaw's capture time (whole seconds) of an open rawpy file; None when it has none."""
    taken = raw.other.timestamp
    return taken.timestamp() if taken.year > 1970 else None  # LibRaw gives the epoch when there is none


class _DamagedMpf(Exception):
    """An MPF index whose frames PIL could not seek to (the open file may be left at no frame at all)."""


def _decode_raster(fp: str | Path | BinaryIO, label: str, min_side: int | None, max_pixels: int) -> Photo:
    """Decode a file PIL opens (one of RASTER_FORMATS); a camera JPEG from its MPF preview when that suffices,
    and from the full image when the MPF index is damaged."""
    try:
        return _open_raster(fp, label, min_side, max_pixels, previews=True)
    except _DamagedMpf:
        if not isinstance(fp, (str, Path)):
            fp.seek(0)
        return _open_raster(fp, label, min_side, max_pixels, previews=False)


def _open_raster(fp: str | Path | BinaryIO, label: str, min_side: int | None, max_pixels: int, previews: bool) -> Photo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp, formats=RASTER_FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise DecodeError(too_many_pixels(label, max_pixels, f"{width}x{height} = {width * height:,} pixels"))
                exif = img.getexif()
                if previews and min_side and img.format == "MPO":
                    preview = _mpf_preview(img, min_side, exif)
                    if preview is not None:
                        return Photo(preview, _safe_capture_time(exif))
                if min_side and img.format in JPEG_FORMATS:
                    img.draft("RGB", _draft_request(img, min_side))
                img.seek(0)
                img.load()
                return Photo(_upright_rgb(img, exif, min_side), _safe_capture_time(exif))
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise DecodeError(f"{label}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise DecodeError(f"{label}: not a recognised image file (empty, corrupt or another format)") from None
    except Image.DecompressionBombError:  # Pillow's own guard (twice its limit): name the limit the user set
        raise DecodeError(too_many_pixels(label, max_pixels, "the image")) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"{label}: could not decode image ({exc})") from None


def _mpf_preview(img: Image.Image, needed: int, exif: Image.Exif) -> Image.Image | None:
    """A camera JPEG's MPF Large Thumbnail, upright by the photo's orientation, when one has the photo's aspect
    ratio, covers `needed` on its short side (the smallest such) and decodes; else None. `img` (an MPO at its
    first frame, the photo) is left there."""
    try:
        jpeg = _mpf_preview_jpeg(img, needed)
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise _DamagedMpf from exc
    return None if jpeg is None else _embedded_preview(jpeg, needed, EXIF_TRANSPOSE.get(exif.get(EXIF_ORIENTATION, 1)))


def _mpf_preview_jpeg(img: Image.Image, needed: int) -> bytes | None:
    """The bytes of the smallest Large Thumbnail frame of `img` of the photo's aspect ratio (in stored pixels, so a
    preview stored already rotated is refused) whose short side is at least `needed`."""
    shape, best = img.size, None
    for index, entry in enumerate(img.mpinfo[0xB002]):
        if index and str(entry["Attribute"]["MPType"]).startswith("Large Thumbnail"):
            img.seek(index)
            size = img.size
            if min(size) >= needed and _same_aspect(size, shape) and (best is None or min(size) < best[0]):
                best = (min(size), img.offset, entry["Size"])
            img.seek(0)
    if best is None:
        return None
    img.fp.seek(best[1])
    return img.fp.read(best[2])


def _same_aspect(size: tuple[int, int], shape: tuple[int, int]) -> bool:
    return abs(size[0] * shape[1] / (size[1] * shape[0]) - 1) <= PREVIEW_ASPECT_TOLERANCE


def _embedded_preview(jpeg: bytes, needed: int, transpose: Image.Transpose | None) -> Image.Image | None:
    """A camera's embedded preview JPEG (a RAW's, or a camera JPEG's MPF Large Thumbnail) decoded at the reduced
    size that keeps its short side at least `needed`, made upright by `transpose`, the orientation of the photo it
    belongs to (cameras store the preview as they store the photo; an orientation tag of the preview's own would
    describe the same pixels, so it is not applied again). None when it is smaller than `needed` or does not decode."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=MPF_CHILD_WARNING)
            with Image.open(io.BytesIO(jpeg), formats=("JPEG",)) as img:
                if min(img.size) < needed:
                    return None
                img.draft("RGB", _draft_request(img, needed))
                img.load()
                image = _to_rgb(img.transpose(transpose) if transpose is not None else img)
                return image.copy() if image is img else image
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None


def _upright_rgb(img: Image.Image, exif: Image.Exif, min_side: int | None) -> Image.Image:
    """A loaded image as upright RGB, never holding two full-size copies: a non-JPEG (JPEGs shrink at decode
    time) far larger than `min_side` is first reduced by the largest integer factor (a box filter) that keeps its
    short side at least 2 x `min_side`, so a 7700 x 7700 PNG needed at 224 px is rotated and converted at 452 px."""
    factor = min(img.size) // (2 * min_side) if min_side and img.format not in JPEG_FORMATS else 0
    out = img.reduce(factor) if factor >= 2 and img.mode in REDUCIBLE_MODES else img
    method = EXIF_TRANSPOSE.get(exif.get(EXIF_ORIENTATION, 1))
    out = _to_rgb(out.transpose(method) if method is not None else out)
    return out.copy() if out is img else out  # the opened image is closed when its file is


def _safe_capture_time(exif: Image.Exif) -> float | None:
    try:
        return exif_capture_time(exif)
    except (OSError, ValueError, TypeError, SyntaxError):  # a damaged EXIF block costs the time, not the photo
        return None


def _decode_raw(fp: str | Path | BinaryIO, label: str, min_side: int | None, max_pixels: int) -> Photo:
    """A camera RAW through LibRaw: its embedded preview when large enough, else demosaiced."""
    import rawpy

    try:
        with _open_raw(rawpy, str(fp) if isinstance(fp, Path) else fp) as raw:
            width, height = raw.sizes.width, raw.sizes.height
            if width * height > max_pixels:
                raise DecodeError(too_many_pixels(label, max_pixels, f"{width}x{height} RAW = {width * height:,} pixels"))
            needed = min(min_side or RAW_PREVIEW_MIN_SIDE, width, height)
            taken = raw_capture_time(raw)
            preview = _raw_preview(raw, needed)
            if preview is not None:
                return Photo(preview, taken)
            half = bool(min_side) and min(width, height) // 2 >= min_side
            global _LIBRAW_THREADS_PID
            _LIBRAW_THREADS_PID = _LIBRAW_THREADS_PID or os.getpid()
            return Photo(Image.fromarray(raw.postprocess(half_size=half, use_camera_wb=True, output_bps=8)), taken)
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError(f"{label}: file not found") from None
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise DecodeError(f"{label}: could not decode RAW file ({type(exc).__name__}: {exc})") from None


def _open_raw(rawpy, source):
    """`rawpy.imread`, without rawpy's warning about forked processes where it is a false alarm: no process
    before this one, in the chain that forked it, ran LibRaw's OpenMP threads. Otherwise the warning shows."""
    inherited = _LIBRAW_THREADS_PID is not None and _LIBRAW_THREADS_PID != os.getpid()
    with warnings.catch_warnings():
        if not inherited:
            warnings.filterwarnings("ignore", message="rawpy is being used in a process created by multiprocessing")
        return rawpy.imread(source)


def _raw_preview(raw, needed: int) -> Image.Image | None:
    """The RAW's embedded preview, upright, when its short side is at least `needed` (and, a JPEG, it decodes)."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    flip = RAW_FLIPS.get(raw.sizes.flip)  # the preview is stored as the RAW is: LibRaw's flip makes both upright
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return _embedded_preview(thumb.data, needed, flip)
    image = _to_rgb(Image.fromarray(thumb.data))
    if min(image.size) < needed:
        return None
    return image.transpose(flip) if flip is not None else image


def too_many_pixels(label: str, max_pixels: int, size: str) -> str:
    """The one message for an image over the pixel limit."""
    return (f"{label}: {size} exceeds the limit of {max_pixels:,} pixels "
            "(possible decompression bomb; raise --max-pixels to allow it)")


def let_pil_open_up_to(max_pixels: int) -> None:
    """PIL refuses to open images above twice its own limit; a higher `max_pixels` raises that limit.

    Only ever raised, never lowered: our check right after opening is the one that applies.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _draft_request(img: Image.Image, min_side: int) -> tuple[int, int]:
    """Size to ask of PIL's draft mode so that the short side stays >= min_side."""
    width, height = img.size
    scale = min_side / min(width, height)
    return (max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale))))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB uint8 (16-bit scaled down, alpha composited onto white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def is_image_file(path: Path) -> bool:
    """True when the file name has a common photo extension, RAW and HEIC included (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_raw_file(path: Path) -> bool:
    """True when the file name has a camera RAW extension (decoded through LibRaw)."""
    return path.suffix.lower() in RAW_EXTENSIONS
