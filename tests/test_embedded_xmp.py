"""Ratings embedded in JPEG/TIFF/DNG through exiftool: pixels unchanged, journalled, undone byte for byte."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaa_distill.culling.embedded import rated_photo_bytes, write_embedded_rating
from iaa_distill.culling.journal import Journal
from iaa_distill.data.xmp_ratings import embedded_packet, packet_rating
from iaa_distill.errors import IAAError

from .camera_files import write_dng

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")


def pixels(path: Path) -> np.ndarray:
    from iaa_distill.imaging import decode_image

    return np.asarray(decode_image(path))


@pytest.mark.parametrize("name", ["p.jpg", "p.tif", "p.dng"])
def test_embedded_rating_keeps_pixels_reads_back_and_undoes_byte_identical(tmp_path, name):
    photo = tmp_path / name
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    if name.endswith(".dng"):
        write_dng(photo, image)
    else:
        Image.fromarray(image).save(photo)
    before, decoded = photo.read_bytes(), pixels(photo)
    journal = Journal(tmp_path / "journal")
    write_embedded_rating(photo, 4, journal)
    assert photo.read_bytes() != before and np.array_equal(pixels(photo), decoded)
    assert packet_rating(embedded_packet(photo), photo, []) == (4, True)  # marked as written by iaa cull (iaa:Rating)
    assert not list(tmp_path.glob(".*"))  # no temporary file or folder left
    assert Journal(tmp_path / "journal").restore() == []
    assert photo.read_bytes() == before


def test_a_failed_write_leaves_the_photo_unchanged(tmp_path):
    photo = tmp_path / "broken.jpg"
    photo.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(IAAError, match="exiftool could not write the rating"):
        rated_photo_bytes(photo, 3)
    assert photo.read_bytes() == b"\xff\xd8 not really a jpeg"
