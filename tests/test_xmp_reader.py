"""One XMP rating reader (`culling.xmp.read_rating`) for the cull and for `xmp:` datasets: a malformed rating
is the photographer's and never overwritten under `--ratings keep|fill`; a hostile or foreign sidecar is
refused by the cull and left byte-identical."""
from __future__ import annotations

import subprocess
import sys

import pytest

from iaa_distill.culling.xmp import existing_rating, read_rating, wanted, write_rating
from iaa_distill.data.xmp_ratings import packet_rating
from iaa_distill.errors import IAAError

from .test_xmp_ratings import BILLION_LAUGHS, DARKTABLE, LIGHTROOM, XXE

UNRATED_WITH_DTD = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e "expanded">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Label="&e;"/></rdf:RDF></x:xmpmeta>
"""


@pytest.mark.parametrize("value", ["three", "0.5", "nan"])
def test_a_malformed_rating_is_kept_under_keep_and_fill(value):
    text = LIGHTROOM.format(rating=value)
    assert not wanted(text, "keep") and not wanted(text, "fill")  # the photographer's, of unknown meaning
    assert wanted(text, "replace")
    assert existing_rating(text).malformed and existing_rating(text).value is None


@pytest.mark.parametrize("text", [UNRATED_WITH_DTD, BILLION_LAUGHS, XXE, "<html><body>hi</body></html>"])
def test_a_hostile_or_foreign_sidecar_is_refused_by_the_cull_and_left_as_it_is(tmp_path, text):
    (tmp_path / "a.jpg").write_bytes(b"x")
    sidecar = tmp_path / "a.xmp"
    sidecar.write_text(text)
    for policy in ("keep", "fill", "replace"):
        with pytest.raises(IAAError, match="a.xmp: not a readable XMP sidecar"):
            wanted(text, policy, sidecar)
    with pytest.raises(IAAError, match="a.xmp: not a readable XMP sidecar"):
        write_rating(tmp_path / "a.jpg", 3)
    assert sidecar.read_text() == text


@pytest.mark.parametrize("rating", ["-1", "0", "3", "5", "3.0", "7", "2.5", "x"])
def test_the_cull_and_the_taste_reader_read_a_packet_alike(rating):
    for template in (LIGHTROOM, DARKTABLE):
        text = template.format(rating=rating)
        assert packet_rating(text.encode(), "p.xmp", []) == (existing_rating(text).value, False)
        assert read_rating(text.encode()) == read_rating(text)


def test_culling_file_actions_and_hashes_import_no_torch():
    code = ("import sys, iaa_distill.hashing, iaa_distill.culling.plan, iaa_distill.culling.journal; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("policy", ["keep", "fill"])
def test_a_cull_never_overwrites_a_malformed_rating_the_photographer_wrote(tmp_path, policy):
    from .test_cull_safety import USER_SIDECAR, cull, decisions, photo

    photo(tmp_path / "shoot" / "IMG_0.jpg")
    photo(tmp_path / "shoot" / "IMG_1.jpg", 1)
    sidecar = tmp_path / "shoot" / "IMG_0.xmp"
    sidecar.write_text(USER_SIDECAR.format("three"))
    before = sidecar.read_bytes()
    listed = decisions(tmp_path / "d.csv", [(tmp_path / "shoot" / f"IMG_{i}.jpg", "pick", 4) for i in range(2)])
    assert cull(tmp_path / "shoot", "--decisions", listed, "--xmp", "--ratings", policy, "--apply") == 0
    assert sidecar.read_bytes() == before
    assert 'xmp:Rating="4"' in (tmp_path / "shoot" / "IMG_1.xmp").read_text()  # the unrated photo is rated


def test_a_cull_stops_on_a_hostile_sidecar_with_one_line_and_leaves_it(tmp_path, capsys):
    from .test_cull_safety import cull, decisions, photo

    photo(tmp_path / "shoot" / "IMG_0.jpg")
    sidecar = tmp_path / "shoot" / "IMG_0.xmp"
    sidecar.write_text(UNRATED_WITH_DTD)
    listed = decisions(tmp_path / "d.csv", [(tmp_path / "shoot" / "IMG_0.jpg", "pick", 4)])
    assert cull(tmp_path / "shoot", "--decisions", listed, "--xmp", "--ratings", "replace", "--apply") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("iaa: error: ")
    assert "IMG_0.xmp: not a readable XMP sidecar (a DTD" in errors[0]
    assert sidecar.read_text() == UNRATED_WITH_DTD
