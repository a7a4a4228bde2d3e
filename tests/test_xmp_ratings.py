"""`xmp:PATH`: ratings from sidecars (both namings) and embedded XMP, as written by exiftool, darktable,
Lightroom and this project's own writer; hostile, malformed and foreign sidecars are one note each."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaa_distill.culling.xmp import write_rating
from iaa_distill.data import open_dataset
from iaa_distill.data.unlabeled import UNLABELED_SPLIT
from iaa_distill.data.xmp_ratings import read_xmp_ratings

from .camera_files import write_heic

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")

DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="{rating}" darktable:xmp_version="5" darktable:raw_params="0">
   <darktable:history><rdf:Seq/></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
LIGHTROOM = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    crs:Version="15.0" crs:Exposure2012="+0.35"/>
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
   <xmp:Rating>{rating}</xmp:Rating>
   <xmp:Label>Red</xmp:Label>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5" xmp:Label="&lol3;"/></rdf:RDF></x:xmpmeta>
"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:Rating>4</xmp:Rating><xmp:Label>&secret;</xmp:Label>
</rdf:Description></rdf:RDF></x:xmpmeta>
"""


def photo(path: Path, seed: int = 0, fmt: str | None = None) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def exiftool(*args: str) -> None:
    subprocess.run(["exiftool", "-q", "-overwrite_original", *args], check=True, capture_output=True)


def ratings(dataset) -> dict[str, float | None]:
    return {r.image_id: (r.label.score if r.label else None) for r in dataset.records}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_exiftool
def test_exiftool_sidecars_and_embedded_xmp_read_back_exactly(tmp_path):
    lib = tmp_path / "lib"
    for stars, name in enumerate(["a.jpg", "b.jpg", "c.png", "d.tif", "e.webp"], 1):
        photo(lib / name, stars)
    subprocess.run(["exiftool", "-q", "-XMP-xmp:Rating=3", "-o", str(lib / "a.xmp"), str(lib / "a.jpg")], check=True)
    subprocess.run(["exiftool", "-q", "-XMP-xmp:Rating=-1", "-o", str(lib / "b.jpg.xmp"), str(lib / "b.jpg")],
                   check=True)
    exiftool("-XMP-xmp:Rating=5", str(lib / "c.png"))
    exiftool("-XMP-xmp:Rating=2", str(lib / "d.tif"))
    exiftool("-XMP-xmp:Rating=4", str(lib / "e.webp"))
    photo(lib / "f.jpg", 9)
    exiftool("-XMP-xmp:Rating=1", str(lib / "f.jpg"))  # embedded in a JPEG
    photo(lib / "g.jpg", 10)  # never rated
    before = digests(lib)
    dataset = open_dataset(f"xmp:{lib}", val_fraction=0.0)
    assert ratings(dataset) == {"a.jpg": 3.0, "b.jpg": 0.0, "c.png": 5.0, "d.tif": 2.0, "e.webp": 4.0, "f.jpg": 1.0,
                                "g.jpg": None}
    assert [r.split for r in dataset.records if r.image_id == "g.jpg"] == [UNLABELED_SPLIT]
    assert dataset.scale == (0.0, 5.0)
    assert digests(lib) == before  # reading never writes


def test_heic_embedded_xmp_is_read(tmp_path):
    packet = DARKTABLE.format(rating=4).encode()
    write_heic(tmp_path / "p.heic", np.zeros((16, 16, 3), np.uint8), xmp=packet)
    assert ratings(read_xmp_ratings(tmp_path)) == {"p.heic": 4.0}


def test_darktable_lightroom_and_own_sidecars_read_back(tmp_path):
    photo(tmp_path / "dt.jpg")
    (tmp_path / "dt.jpg.xmp").write_text(DARKTABLE.format(rating=2))
    photo(tmp_path / "lr.jpg")
    (tmp_path / "lr.xmp").write_text(LIGHTROOM.format(rating=5))
    photo(tmp_path / "zero.jpg")
    (tmp_path / "zero.xmp").write_text(LIGHTROOM.format(rating=0))
    for rating, name in ((4, "own.jpg"), (-1, "own_reject.jpg")):
        photo(tmp_path / name)
        write_rating(tmp_path / name, rating, "ext")
    dataset = read_xmp_ratings(tmp_path)
    assert ratings(dataset) == {"dt.jpg": 2.0, "lr.jpg": 5.0, "own.jpg": 4.0, "own_reject.jpg": 0.0, "zero.jpg": None}
    assert any("2 rating(s) were written by iaa cull" in n for n in dataset.notes)
    assert ratings(read_xmp_ratings(tmp_path, own="skip"))["own.jpg"] is None


@pytest.mark.parametrize("text", [BILLION_LAUGHS, XXE, "<x:xmpmeta>not closed", "<html><body>hi</body></html>",
                                  LIGHTROOM.format(rating="7"), LIGHTROOM.format(rating="three")])
def test_hostile_malformed_or_foreign_sidecar_is_one_note_and_the_run_goes_on(tmp_path, text):
    photo(tmp_path / "bad.jpg")
    (tmp_path / "bad.xmp").write_text(text)
    assert "unrated" in one_note_beside_a_good_photo(tmp_path, "bad.xmp")


def one_note_beside_a_good_photo(folder: Path, bad: str) -> str:
    """Read `folder` (holding bad.jpg) with a well-rated good.jpg added: bad.jpg unrated, good.jpg read, exactly
    one note naming `bad`, nothing written; returns that note."""
    photo(folder / "good.jpg")
    (folder / "good.xmp").write_text(LIGHTROOM.format(rating=3))
    before = digests(folder)
    dataset = read_xmp_ratings(folder)
    assert ratings(dataset) == {"bad.jpg": None, "good.jpg": 3.0}
    about = [n for n in dataset.notes if bad in n]
    assert len(about) == 1 and digests(folder) == before
    return about[0]


def test_test_split_is_seeded_and_stable_when_more_photos_get_rated(tmp_path):
    for i in range(60):
        photo(tmp_path / f"p{i:02d}.jpg", i)
    for i in range(30):
        (tmp_path / f"p{i:02d}.xmp").write_text(LIGHTROOM.format(rating=1 + i % 5))
    first = {r.image_id for r in read_xmp_ratings(tmp_path).split("test")}
    assert first == {r.image_id for r in read_xmp_ratings(tmp_path).split("test")}
    assert 6 <= len(first) < 15  # at least round(0.2 * 30)
    for i in range(30, 60):
        (tmp_path / f"p{i:02d}.xmp").write_text(LIGHTROOM.format(rating=1 + i % 5))
    later = {r.image_id for r in read_xmp_ratings(tmp_path).split("test")}
    assert len(later) >= 12 and len(first & later) >= len(first) // 2
    assert first != {r.image_id for r in read_xmp_ratings(tmp_path, seed=1).split("test")}


def test_a_held_out_folder_is_the_test_split(tmp_path):
    for folder in ("shoot1", "shoot2"):
        for i in range(4):
            photo(tmp_path / folder / f"p{i}.jpg", i)
            if i < 3:
                (tmp_path / folder / f"p{i}.xmp").write_text(LIGHTROOM.format(rating=i + 1))
    dataset = open_dataset(f"xmp:{tmp_path}?holdout=shoot2", val_fraction=0.0)
    assert {r.image_id for r in dataset.split("test")} == {"shoot2/p0.jpg", "shoot2/p1.jpg", "shoot2/p2.jpg"}
    assert {r.image_id for r in dataset.split(UNLABELED_SPLIT)} == {"shoot1/p3.jpg"}


def test_gallery_export_is_a_dataset_of_the_ratings_set_by_hand(tmp_path):
    from iaa_distill.culling.decisions import write_decisions
    from iaa_distill.culling.rules import Decision

    for i in range(5):
        photo(tmp_path / "shoot" / f"p{i}.jpg", i)
    rows = [Decision("shoot/p0.jpg", 4.2, "pick", 4, "", "set in the gallery"),
            Decision("shoot/p1.jpg", 1.0, "reject", 0, "", "set in the gallery"),
            Decision("shoot/p2.jpg", 3.0, "unflagged", 2, "", "set in the gallery"),
            Decision("shoot/p3.jpg", 3.5, "pick", 5, "", "top 20%"),  # the cull's own stars: not a rating
            Decision("shoot/p4.jpg", 2.0, "unflagged", 0, "", "")]
    exported = write_decisions(rows, tmp_path / "decisions.csv")
    dataset = open_dataset(f"decisions:{exported}", val_fraction=0.0)
    assert ratings(dataset) == {"p0.jpg": 4.0, "p1.jpg": 0.0, "p2.jpg": 2.0, "p3.jpg": None, "p4.jpg": None}
    assert dataset.records[0].path == tmp_path / "shoot" / "p0.jpg"
    assert ratings(open_dataset(f"decisions:{exported}?ratings=all", val_fraction=0.0))["p3.jpg"] == 5.0


@pytest.mark.parametrize("text", [BILLION_LAUGHS, XXE])
def test_hostile_embedded_xmp_is_one_note_and_the_photo_unchanged(tmp_path, text):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "bad.jpg", xmp=text.encode())
    assert "refused" in one_note_beside_a_good_photo(tmp_path, "bad.jpg")
