"""`darktable:LIBRARY.db`: ratings read from a library that darktable itself built (skipped without darktable-cli)."""
from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from iaa_distill.data import open_dataset
from iaa_distill.data.unlabeled import UNLABELED_SPLIT
from iaa_distill.errors import DatasetError

pytestmark = pytest.mark.skipif(shutil.which("darktable-cli") is None or shutil.which("exiftool") is None,
                                reason="needs darktable-cli (apt install darktable) and exiftool")
STARS = {"two.jpg": 2, "three.jpg": 3, "five.jpg": 5, "rejected.jpg": -1, "zero.jpg": 0, "one.jpg": 1}


def darktable_library(tmp_path: Path) -> Path:
    """A library.db made by darktable importing photos whose sidecars carry the ratings; `unseen.jpg` has none
    (darktable gives it its initial rating, 1 star) and `gone.jpg` is deleted after the import."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate([*STARS, "unseen.jpg", "gone.jpg"]):
        Image.new("RGB", (32, 24), (30 * i, 90, 60)).save(photos / name)
        if name in STARS:
            subprocess.run(["exiftool", "-q", "-o", f"{photos / name}.xmp", f"-XMP-xmp:Rating={STARS[name]}",
                            str(photos / name)], check=True)
    library = tmp_path / "library.db"
    subprocess.run(["darktable-cli", "--import", str(photos), str(tmp_path / "export") + "/", "--core", "--library",
                    str(library), "--configdir", str(tmp_path / "config")], capture_output=True, timeout=120)
    (photos / "gone.jpg").unlink()
    return library


def test_darktable_library_reads_stars_rejects_and_unrated_and_is_never_written(tmp_path):
    library = darktable_library(tmp_path)
    before = hashlib.sha256(library.read_bytes()).hexdigest()
    lock = sqlite3.connect(library)
    lock.execute("BEGIN EXCLUSIVE")  # darktable holds its library open and locked
    try:
        dataset = open_dataset(f"darktable:{library}")
        counted = open_dataset(f"darktable:{library}?initial_rating=0")
    finally:
        lock.rollback()
        lock.close()
    scores = {r.image_id: r.label.score for r in dataset.records if r.label is not None}
    assert scores == {"two.jpg": 2.0, "three.jpg": 3.0, "five.jpg": 5.0, "rejected.jpg": 0.0}
    unrated = {r.image_id for r in dataset.records if r.split == UNLABELED_SPLIT}
    assert unrated == {"zero.jpg", "one.jpg", "unseen.jpg"}
    assert {r.image_id: r.label.score for r in counted.records if r.label is not None}["one.jpg"] == 1.0
    assert any("locked" in n for n in dataset.notes) and any("1 photo(s)" in n and "missing" in n for n in dataset.notes)
    assert hashlib.sha256(library.read_bytes()).hexdigest() == before


def test_a_file_that_is_not_a_library_is_one_error_naming_it(tmp_path):
    bad = tmp_path / "library.db"
    bad.write_text("not a database")
    with pytest.raises(DatasetError, match="library.db: not a readable catalogue"):
        open_dataset(f"darktable:{bad}")
