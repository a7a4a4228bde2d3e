"""Benchmark photos at realistic AVA sizes (~800x600, ~200 KB JPEG), made from scikit-image's real photographs,
and camera JPEGs with the embedded preview cameras write (an MPF "Large Thumbnail")."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from ..artifacts import atomic_write_bytes
from ..demo.synthetic import load_photos


def write_benchmark_photos(folder: str | Path, count: int, width: int = 800, height: int = 600, quality: int = 95, seed: int = 0) -> list[Path]:
    """`count` JPEGs of `width` x `height`: random crops of the real photos, upscaled, with mild grain.

    Grain keeps the file size near that of real camera photos (~200 KB at 800x600), so decoding
    costs what it costs on AVA. Existing files are reused.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(p) for _, p in sorted(load_photos().items())]
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:05d}_{width}x{height}.jpg"
        paths.append(path)
        if path.exists():
            continue
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = np.asarray(src.crop((x, y, x + cw, y + ch)).resize((width, height), Image.BICUBIC), dtype=np.float32)
        img += rng.normal(0, 6.0, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return paths


MPF_LARGE_THUMBNAIL = 0x010002  # MP type "Large Thumbnail (Full HD equivalent)"
MPF_PRIMARY = 0x20030000  # representative image flag + "Baseline MP Primary Image"


def with_mpf_preview(primary: bytes, preview: bytes) -> bytes:
    """The JPEG `primary` with the JPEG `preview` embedded as cameras do (CIPA DC-007): an APP2 "MPF" MP Index
    (version, 2 images, their MP entries) after the primary's APP0/APP1, an APP2 MP Attribute IFD (version,
    individual number 2) in the preview, and the preview after the primary's end. The primary's pixels are unchanged."""
    preview = _insert_app2(preview, _mp_ifd([(0xB000, 7, 4, b"0100"), (0xB101, 4, 1, struct.pack("<L", 2))]))
    def index(entries: bytes) -> bytes:
        return _app2(_mp_ifd([(0xB000, 7, 4, b"0100"), (0xB001, 4, 1, struct.pack("<L", 2)), (0xB002, 7, 32, entries)]))

    at = _after_app0_app1(primary)
    primary_size = len(primary) + len(index(bytes(32)))  # the index's size does not depend on its entries
    base = at + 8  # MP entry offsets count from the MP header, after the APP2 marker, length and "MPF\0"
    entries = struct.pack("<LLLHH", MPF_PRIMARY, primary_size, 0, 0, 0) + struct.pack(
        "<LLLHH", MPF_LARGE_THUMBNAIL, len(preview), primary_size - base, 0, 0)
    return primary[:at] + index(entries) + primary[at:] + preview


def _mp_ifd(tags: list[tuple[int, int, int, bytes]]) -> bytes:
    """A little-endian MP IFD: (tag, type, count, value) with values over 4 bytes stored after the IFD."""
    data_at = 8 + 2 + 12 * len(tags) + 4
    fields, data = b"", b""
    for tag, kind, count, value in tags:
        inline = len(value) <= 4
        fields += struct.pack("<HHL", tag, kind, count) + (value.ljust(4, b"\0") if inline else
                                                          struct.pack("<L", data_at + len(data)))
        data += b"" if inline else value
    return b"II*\0" + struct.pack("<L", 8) + struct.pack("<H", len(tags)) + fields + b"\0\0\0\0" + data


def _app2(mp: bytes) -> bytes:
    return b"\xff\xe2" + struct.pack(">H", 2 + 4 + len(mp)) + b"MPF\0" + mp


def _insert_app2(jpeg: bytes, mp: bytes) -> bytes:
    at = _after_app0_app1(jpeg)
    return jpeg[:at] + _app2(mp) + jpeg[at:]


def _after_app0_app1(jpeg: bytes) -> int:
    """Where a JPEG's leading APP0 (JFIF) and APP1 (EXIF) segments end."""
    at = 2
    while jpeg[at:at + 2] in (b"\xff\xe0", b"\xff\xe1"):
        at += 2 + struct.unpack(">H", jpeg[at + 2:at + 4])[0]
    return at


def add_mpf_preview(primary: bytes, long_side: int = 1920, size: tuple[int, int] | None = None) -> bytes:
    """The JPEG `primary` as a camera writes it: with an MPF Large Thumbnail made from its stored pixels (not
    rotated), of long side `long_side` at the same aspect ratio, or of `size` (width, height) when given."""
    with Image.open(io.BytesIO(primary)) as img:
        scale = long_side / max(img.size)
        size = size or (round(img.width * scale), round(img.height * scale))
        small = img.resize(size, Image.Resampling.LANCZOS)
    preview = io.BytesIO()
    small.save(preview, format="JPEG", quality=90)
    return with_mpf_preview(primary, preview.getvalue())


def write_camera_photos(folder: str | Path, sources: list[Path], long_side: int = 1920) -> list[Path]:
    """Each JPEG of `sources` again with an MPF preview (`add_mpf_preview`): the same primary bytes, so the same
    pixels when decoded in full. Existing files are reused."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / source.name for source in sources]
    for source, path in zip(sources, paths):
        if not path.exists():  # written whole or not at all: an interrupted run leaves no half photo to reuse
            atomic_write_bytes(path, add_mpf_preview(source.read_bytes(), long_side))
    return paths
