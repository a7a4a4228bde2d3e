"""Culling: rules, bursts, XMP sidecars (read back with exiftool and Exempi), file actions and `iaa cull` end to end."""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaa_distill.cli import main
from iaa_distill.culling import actions
from iaa_distill.culling.bursts import group_bursts
from iaa_distill.culling.decisions import read_decisions, write_decisions
from iaa_distill.culling.rules import CullRules, Decision, decide, keep_count, star_ratings
from iaa_distill.culling.survey import PhotoFacts, survey
from iaa_distill.culling.xmp import merge_rating, sidecar_path, write_rating
from iaa_distill.errors import IAAError
from iaa_distill.imaging import decode_photo
from tests.camera_files import write_dng, write_heic
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")


# -- rules ---------------------------------------------------------------------------------------
def test_keep_top_counts_and_shares():
    assert keep_count("20%", 11) == 3 and keep_count("50", 11) == 11 and keep_count("4", 11) == 4
    assert keep_count(None, 7) == 7 and keep_count("0%", 7) == 0
    for bad in ("lots", "120%", "-3"):
        with pytest.raises(IAAError, match="--keep-top"):
            keep_count(bad, 10)


def test_stars_by_quintiles_and_by_thresholds():
    scores = np.arange(10, dtype=float)
    assert star_ratings(scores).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert star_ratings(np.array([3.0, 4.5, 5.0, 7.0]), (4, 5, 6, 6.5)).tolist() == [1, 2, 3, 5]
    with pytest.raises(IAAError, match="four ascending"):
        star_ratings(scores, (5, 4, 3, 2))


def test_decide_keeps_the_best_of_each_burst_then_the_top_share():
    paths = [f"p{i}.jpg" for i in range(6)]
    scores = [5.0, 6.0, 4.0, 7.0, math.nan, 5.5]
    bursts = ["B1", "B1", "", "", "", "B1"]
    decisions = decide(paths, scores, bursts, CullRules(keep_top="50%"), ["", "", "", "", "broken", ""])
    flags = {d.path: d.flag for d in decisions}
    # p0 and p5 lose to p1 in burst B1; of p1, p2, p3 the best 50% (2) are picks, p2 stays unflagged
    # (issue 21: three tiers; it was rejected before)
    assert flags == {"p0.jpg": "reject", "p1.jpg": "pick", "p2.jpg": "unflagged", "p3.jpg": "pick",
                     "p4.jpg": "error", "p5.jpg": "reject"}
    assert "burst B1" in decisions[0].reason and decisions[4].reason == "broken"
    assert decisions[0].xmp_rating == -1 and decisions[3].xmp_rating == 5
    by_min = decide(paths, scores, bursts, CullRules(min_score=5.8, bursts=False))
    assert [d.flag for d in by_min] == ["reject", "pick", "reject", "pick", "error", "reject"]


# -- bursts --------------------------------------------------------------------------------------
def _facts(path: str, phash: str, taken: float | None) -> PhotoFacts:
    return PhotoFacts(path, "t.jpg", phash, taken, "")


def test_bursts_need_similar_looks_and_close_capture_times():
    a, b = "f0f0f0f0f0f0f0f0", "f0f0f0f0f0f0f0f1"  # 1 bit apart
    far = "0f0f0f0f0f0f0f0f"
    facts = [_facts("a", a, 100.0), _facts("b", b, 100.4), _facts("c", a, 101.0), _facts("d", far, 101.5),
             _facts("e", a, 200.0), _facts("f", b, None), _facts("g", a, None)]
    assert group_bursts(facts, gap=2.0, distance=4) == ["B1", "B1", "B1", "", "", "B2", "B2"]
    assert group_bursts(facts, gap=0.3, distance=4) == ["", "", "", "", "", "B1", "B1"]


def _jpeg_taken(path: Path, image: np.ndarray, stamp: str, subsec: str = "") -> Path:
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({36867: stamp, **({37521: subsec} if subsec else {})})
    Image.fromarray(image).save(path, quality=90, exif=exif)
    return path


def capture_time(path: str) -> float | None:
    return decode_photo(path).taken


def test_capture_time_reads_exif_with_subseconds(tmp_path, sample_photos):
    photo = sample_photos["chelsea"][:64, :64]
    path = _jpeg_taken(tmp_path / "a.jpg", photo, "2024:05:01 10:00:00", "25")
    expected = datetime(2024, 5, 1, 10, 0, 0).timestamp() + 0.25
    assert capture_time(str(path)) == pytest.approx(expected)
    Image.fromarray(photo).save(tmp_path / "none.jpg")
    assert capture_time(str(tmp_path / "none.jpg")) is None
    dng = write_dng(tmp_path / "a.NEF", photo, taken="2024:05:01 10:00:03")
    assert capture_time(str(dng)) == pytest.approx(expected - 0.25 + 3)
    assert capture_time(str(write_dng(tmp_path / "b.dng", photo))) is None


def test_survey_writes_thumbnails_once_and_reports_undecodable_files(tmp_path, sample_photos, monkeypatch):
    paths = [str(p) for p in write_jpegs(tmp_path / "photos", sample_photos, 3, size=200)]
    (tmp_path / "photos" / "bad.jpg").write_bytes(b"nope")
    paths.append(str(tmp_path / "photos" / "bad.jpg"))
    facts = survey(paths, tmp_path / "thumbs", size=64, workers=2)
    assert all(max(Image.open(tmp_path / "thumbs" / facts[p].thumb).size) == 64 for p in paths[:3])
    assert "bad.jpg" in facts[paths[3]].error and not facts[paths[3]].thumb
    calls = []
    import iaa_distill.culling.survey as module

    real = module.survey_photo
    monkeypatch.setattr(module, "survey_photo", lambda p, *a: calls.append(p) or real(p, *a))
    assert survey(paths, tmp_path / "thumbs", size=64) == facts
    assert calls == [paths[3]]  # cached photos are not decoded again; the failed one is retried


# -- XMP -----------------------------------------------------------------------------------------
DARKTABLE_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="2"
    darktable:xmp_version="5">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Harbour at dawn</rdf:li></rdf:Alt></dc:title>
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure"/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def _debian_package(package: str, probe: str) -> bool:
    """True when `probe` exists, after installing Debian's `package` if needed and allowed (root with apt-get)."""
    if Path(probe).exists():
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", package]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
    return Path(probe).exists()


def _exiftool(sidecar: Path, *tags: str) -> dict:
    if not _debian_package("libimage-exiftool-perl", "/usr/bin/exiftool"):
        pytest.skip("exiftool not installed (Debian: apt-get install libimage-exiftool-perl)")
    out = subprocess.run(["exiftool", "-j", "-struct", *[f"-{t}" for t in tags], str(sidecar)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def test_new_sidecar_read_by_exiftool_and_exempi(tmp_path):
    photo = tmp_path / "IMG_0001.CR2"
    photo.write_bytes(b"raw")
    sidecar = write_rating(photo, -1)
    assert sidecar == tmp_path / "IMG_0001.xmp" and photo.read_bytes() == b"raw"
    assert _exiftool(sidecar, "XMP:Rating")["Rating"] == -1
    _debian_package("libexempi8", "/usr/lib/x86_64-linux-gnu/libexempi.so.8")  # python-xmp-toolkit loads it
    libxmp = pytest.importorskip("libxmp", reason="python-xmp-toolkit (test extra) + Debian libexempi8 read XMP independently")
    meta = libxmp.XMPMeta(xmp_str=sidecar.read_text())
    assert meta.get_property_int(libxmp.consts.XMP_NS_XMP, "Rating") == -1


def test_existing_sidecar_is_merged_keeping_other_properties(tmp_path):
    photo = tmp_path / "harbour.nef"
    photo.write_bytes(b"raw")
    sidecar = sidecar_path(photo, "ext")
    assert sidecar.name == "harbour.nef.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR)
    write_rating(photo, 4, "ext")
    info = _exiftool(sidecar, "XMP:all")
    assert info["Rating"] == 4 and info["Title"] == "Harbour at dawn" and info["Xmp_version"] == 5
    assert info["History"] == [{"Operation": "exposure"}]
    assert "xmlns:darktable" in sidecar.read_text()  # unknown namespaces keep their prefix


def test_rating_stored_as_an_element_is_replaced_not_duplicated():
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:Rating>3</xmp:Rating></rdf:Description>'
              "</rdf:RDF></x:xmpmeta>")
    merged = merge_rating(packet, 5)
    assert merged.count("xmp:Rating") == 2 and "<xmp:Rating>5</xmp:Rating>" in merged  # open + close tag only
    assert 'iaa:Rating="5"' in merged  # what this tool wrote, so a later cull knows the rating is not the user's


def test_unreadable_sidecar_is_a_clear_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.xmp").write_text("<x:xmpmeta><unclosed>")
    with pytest.raises(IAAError, match="a.xmp: not a readable XMP sidecar"):
        write_rating(tmp_path / "a.jpg", 3)
    assert (tmp_path / "a.xmp").read_text() == "<x:xmpmeta><unclosed>"


# -- decisions file and actions ------------------------------------------------------------------
def test_decisions_round_trip_and_bad_rows(tmp_path):
    decisions = [Decision("/a b/x,1.jpg", 5.5, "pick", 4, "B1", ""), Decision("y.jpg", 4.0, "reject", 1, "", "low")]
    write_decisions(decisions, tmp_path / "d.csv")
    # relative paths are read from the list's own folder (issue 21: they were read from the working folder)
    assert read_decisions(tmp_path / "d.csv") == [decisions[0], Decision(str(tmp_path / "y.jpg"), 4.0, "reject", 1, "", "low")]
    (tmp_path / "picks.txt").write_text("a.jpg\n\nb.jpg\n")
    listed = [(d.path, d.flag) for d in read_decisions(tmp_path / "picks.txt")]
    assert listed == [(str(tmp_path / "a.jpg"), "pick"), (str(tmp_path / "b.jpg"), "pick")]
    (tmp_path / "bad.csv").write_text("path,flag\na.jpg,pick\nb.jpg,maybe\n")
    with pytest.raises(IAAError, match="bad.csv, line 3: .*maybe"):
        read_decisions(tmp_path / "bad.csv")


def test_actions_copy_link_move_keep_subfolders_and_verify_existing(tmp_path):
    for sub in ("day1", "day2"):
        (tmp_path / "shoot" / sub).mkdir(parents=True)
        (tmp_path / "shoot" / sub / "a.jpg").write_bytes(sub.encode())
    (tmp_path / "shoot" / "day1" / "a.xmp").write_text("<x/>")
    photos = [str(tmp_path / "shoot" / s / "a.jpg") for s in ("day1", "day2")]
    units = actions.plan(photos, "copy", tmp_path / "out")
    targets = [s.target.relative_to(tmp_path / "out").as_posix() for u in units for s in u.steps]
    assert targets == ["day1/a.jpg", "day1/a.xmp", "day2/a.jpg"]  # the sidecar travels with its photo
    first = actions.apply(units)
    assert (first.done, first.files, first.failed) == (2, 3, []) and (tmp_path / "out" / "day2" / "a.jpg").read_bytes() == b"day2"
    again = actions.apply(units)  # a rerun verifies what it finds: whole files are done, nothing is copied twice
    assert (again.done, again.already, again.failed) == (0, 2, [])
    linked = actions.plan(photos, "link", tmp_path / "links")
    actions.apply(linked)
    assert os.path.samefile(photos[0], tmp_path / "links" / "day1" / "a.jpg")
    moved = actions.apply(actions.plan(photos[1:], "move", tmp_path / "moved"))
    assert moved.done == 1 and not Path(photos[1]).exists() and (tmp_path / "moved" / "a.jpg").read_bytes() == b"day2"


def test_link_falls_back_to_a_symlink_across_devices(tmp_path, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(b"x")

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    said = []
    outcome = actions.apply(actions.plan([str(tmp_path / "a.jpg")], "link", tmp_path / "out"), said.append)
    assert (tmp_path / "out" / "a.jpg").is_symlink() and outcome.done == 1 and not outcome.failed
    assert len(said) == 1 and "a symbolic link" in said[0] and "a.jpg" in said[0], "the user is told"


# -- iaa cull end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shoot(tmp_path_factory, sample_photos) -> Path:
    """JPEGs (two of them a burst), a HEIC, a DNG, a broken file and a text file."""
    folder = tmp_path_factory.mktemp("shoot")
    write_jpegs(folder, sample_photos, 6, size=160)
    photo = sample_photos["astronaut"][100:300, 100:400]
    _jpeg_taken(folder / "burst_1.jpg", photo, "2024:05:01 10:00:00", "10")
    _jpeg_taken(folder / "burst_2.jpg", photo, "2024:05:01 10:00:00", "60")
    write_heic(folder / "phone.HEIC", sample_photos["coffee"][:200, :300])
    write_dng(folder / "camera.DNG", sample_photos["rocket"][:120, :160])
    (folder / "broken.jpg").write_bytes(b"not a photo")
    (folder / "notes.txt").write_text("shot list")
    return folder


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def cull(*args) -> int:
    return main(["cull", *map(str, args), "--workers", "0", "--no-progress"])


def test_cull_decides_groups_bursts_and_reports_skips(model_dir, shoot, tmp_path, capsys):
    out = tmp_path / "cull"
    assert cull(shoot, "--model", model_dir, "--out", out, "--keep-top", "50%") == 0
    err = capsys.readouterr().err
    assert "skipped files that are not photos: 1 .txt" in err and "broken.jpg" in err
    rows = {Path(r["path"]).name: r for r in _rows(out / "decisions.csv")}
    assert {"phone.HEIC", "camera.DNG"} <= {n for n, r in rows.items() if r["flag"] != "error"}
    assert rows["broken.jpg"]["flag"] == "error"
    assert rows["burst_1.jpg"]["burst"] and rows["burst_1.jpg"]["burst"] == rows["burst_2.jpg"]["burst"]
    # one of the burst is rejected as such; the other keeps the tier its score gives it
    flags = [rows[n]["flag"] for n in ("burst_1.jpg", "burst_2.jpg")]
    assert flags.count("reject") == 1 and "burst" in rows[("burst_1.jpg", "burst_2.jpg")[flags.index("reject")]]["reason"]
    decided = [r for r in rows.values() if r["flag"] != "error"]
    assert sum(r["flag"] == "pick" for r in decided) <= math.ceil(len(decided) / 2)
    page = (out / "gallery.html").read_text()
    assert "camera.DNG" in page and 'loading="lazy"' in page and "id='synthetic'" not in page
    assert all((out / src).exists() for src in re.findall(r'<img src="(thumbs/[^"]+)"', page))
    assert not list(shoot.glob("*.xmp")), "a dry run writes nothing beside the photos"


def test_changing_a_rule_does_not_rescore(model_dir, shoot, tmp_path, monkeypatch):
    out = tmp_path / "cull"
    assert cull(shoot, "--model", model_dir, "--out", out, "--keep-top", "2") == 0
    from iaa_distill.scoring import Scorer

    scored = []
    real = Scorer.iter_paths
    monkeypatch.setattr(Scorer, "iter_paths", lambda self, paths, *a, **k: scored.extend(paths) or real(self, paths, *a, **k))
    assert cull(shoot, "--model", model_dir, "--out", out, "--keep-top", "4") == 0
    assert scored == []
    assert sum(r["flag"] == "pick" for r in _rows(out / "decisions.csv")) == 4


def test_raw_only_folder_is_culled(model_dir, tmp_path, sample_photos):
    folder = tmp_path / "raws"
    folder.mkdir()
    for i, name in enumerate(("chelsea", "coffee", "coffee")):  # the two coffee shots: a burst, one second apart
        write_dng(folder / f"DSC_{i}.NEF", sample_photos[name][:96, :128], taken=f"2024:05:01 10:00:0{i}")
    assert cull(folder, "--model", model_dir, "--out", tmp_path / "cull") == 0
    rows = _rows(tmp_path / "cull" / "decisions.csv")
    assert [r["burst"] for r in rows] == ["", "B1", "B1"] and rows[0]["flag"] == "pick"
    assert sorted(r["flag"] for r in rows[1:]) == ["pick", "reject"]


def test_apply_writes_sidecars_and_copies_picks_then_reapplies_a_decision_list(model_dir, shoot, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(shoot, photos)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    out = tmp_path / "cull"
    assert cull(photos, "--model", model_dir, "--out", out, "--keep-top", "3", "--xmp", "--xmp-name", "ext",
                "--copy-to", tmp_path / "picks", "--apply") == 0
    rows = _rows(out / "decisions.csv")
    picks = sorted(Path(r["path"]).name for r in rows if r["flag"] == "pick")
    assert sorted(p.name for p in (tmp_path / "picks").iterdir() if p.suffix != ".xmp") == picks
    for row in (r for r in rows if r["flag"] != "error"):
        expected = -1 if row["flag"] == "reject" else int(row["rating"])
        assert _exiftool(Path(row["path"] + ".xmp"), "XMP:Rating")["Rating"] == expected
    assert all(p.read_bytes() == before[p.name] for p in photos.iterdir() if p.name in before), "originals untouched"
    chosen = tmp_path / "mine.csv"
    chosen.write_text("path,flag,rating\n" + f"{photos / 'phone.HEIC'},pick,5\n{photos / '00001.jpg'},reject,0\n")
    assert cull("--decisions", chosen, "--link-to", tmp_path / "mine", "--apply") == 0
    # the photo's sidecar travels with it (it did not before issue 21, even though the cull had written it)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["phone.HEIC", "phone.HEIC.xmp"]
    listed = tmp_path / "picks.txt"  # a pick list carries no stars: existing ratings stay, missing photos are named
    listed.write_text(f"{photos / 'camera.DNG'}\n{photos / 'gone.jpg'}\n")
    rating = _exiftool(photos / "camera.DNG.xmp", "XMP:Rating")["Rating"]
    assert cull("--decisions", listed, "--xmp", "--xmp-name", "ext", "--apply") == 0
    assert _exiftool(photos / "camera.DNG.xmp", "XMP:Rating")["Rating"] == rating and not (photos / "gone.jpg.xmp").exists()


def test_synthetic_model_is_marked_and_another_model_refuses_the_folder(shoot, tmp_path, capsys):
    import torch

    from iaa_distill.student import Student, StudentConfig

    torch.manual_seed(0)
    config = StudentConfig.for_backbone("test_efficientnet", input_size=64, num_levels=10, feature_dim=16)
    config.synthetic_labels = True
    Student(config).save_pretrained(tmp_path / "demo_model", note="synthetic")
    out = tmp_path / "cull"
    assert cull(shoot, "--model", tmp_path / "demo_model", "--out", out) == 0
    assert "SYNTHETIC labels" in capsys.readouterr().err and "id='synthetic'" in (out / "gallery.html").read_text()
    other = save_tiny_student(tmp_path / "other", seed=1, num_levels=None)
    assert cull(shoot, "--model", other, "--out", out) == 1
    assert "its scores were made by" in capsys.readouterr().err


def test_cull_opens_each_photo_once_for_score_thumbnail_hash_and_capture_time(tmp_path, sample_photos, monkeypatch):
    from collections import Counter

    from iaa_distill.culling import cull as run_cull
    from iaa_distill.scoring import Scorer

    paths = [str(p) for p in write_jpegs(tmp_path / "shoot", sample_photos, 3, size=200)]
    model_dir = save_tiny_student(tmp_path / "model")
    opened: Counter[str] = Counter()
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.update([str(fp)]) or real_open(fp, *a, **k))
    result = run_cull(paths, Scorer.from_pretrained(model_dir, backend="torch"), model_dir, tmp_path / "cull", workers=0)
    assert opened == Counter(paths)  # one decode per photo: score, thumbnail, hash and capture time from it
    assert all(f.thumb and f.phash and (tmp_path / "cull" / "thumbs" / f.thumb).exists() for f in result.facts.values())
    assert all(d.flag != "error" for d in result.decisions)


def test_scores_and_facts_of_an_older_decoder_are_made_again(model_dir, shoot, tmp_path):
    """A folder culled by an older decoder (before camera JPEGs were read from their MPF preview: other pixels
    of the same files) is scored and surveyed again, never mixed with today's scores."""
    out = tmp_path / "cull"
    assert cull(shoot, "--model", model_dir, "--out", out) == 0
    stamp = json.loads((out / "model.json").read_text())
    stamp.pop("decoder", None)  # what the older version wrote
    (out / "model.json").write_text(json.dumps(stamp))
    rows = _rows(out / "scores.csv")
    photo = next(r["path"] for r in rows if r["mean"])
    with (out / "scores.csv").open("w", newline="") as f:  # a score the model never gives, as if from other pixels
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "mean": "0.123"} if r["path"] == photo else r for r in rows)
    index = json.loads((out / "thumbs" / "index.json").read_text())
    (out / "thumbs" / "index.json").write_text(json.dumps(
        {p: {k: v for k, v in f.items() if k != "decoder"} | ({"phash": "0" * 16} if p == photo else {})
         for p, f in index.items()}))
    assert cull(shoot, "--model", model_dir, "--out", out) == 0
    again = {r["path"]: r for r in _rows(out / "scores.csv")}
    assert float(again[photo]["mean"]) != pytest.approx(0.123)
    assert json.loads((out / "thumbs" / "index.json").read_text())[photo]["phash"] != "0" * 16
    assert json.loads((out / "model.json").read_text())["decoder"] >= 2


def test_the_perceptual_hash_library_is_loaded_before_the_decoding_workers_start(tmp_path):
    """imagehash.phash imports scipy.fftpack at its first call; a `Surveyor` (made in the main process before the
    workers fork) loads it, so the workers do not each import it again."""
    code = ("import sys; from pathlib import Path; from iaa_distill.culling.survey import Surveyor; "
            f"Surveyor(Path({str(tmp_path)!r}), 400); print('scipy.fftpack' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
