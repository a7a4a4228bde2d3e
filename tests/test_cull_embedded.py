"""`iaa cull --xmp --xmp-into embedded|both`: ratings in the XMP embedded in JPEG/DNG (issue 23, item 4), through
the frozen plan and the journal: a rerun recognises its own write, a photo changed by someone else is refused,
--ratings applies, a full disk leaves the photo whole, --undo restores every byte."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from iaa_distill.data.xmp_ratings import embedded_packet, packet_rating
from tests.test_cull_safety import cull, decisions, photo, small_tmpfs, tree

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")]
EMBED = ("--xmp", "--xmp-into", "embedded")


def embedded(path) -> tuple[int | None, bool]:
    data = embedded_packet(path)
    return packet_rating(data, path, []) if data else (None, False)


def users_rating(path, stars: int) -> None:
    """What Lightroom leaves: xmp:Rating embedded, no mark of this tool."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-xmp:Rating={stars}", str(path)], check=True)


@pytest.fixture
def shoot(tmp_path):
    folder = tmp_path / "shoot"
    for i in range(3):
        photo(folder / f"IMG_{i}.jpg", i)
    (folder / "IMG_1.CR3").write_bytes(os.urandom(2000))  # a RAW twin: Lightroom reads its sidecar
    users_rating(folder / "IMG_2.jpg", 5)
    return folder


def test_embedded_ratings_with_a_move_rerun_as_a_no_op_and_undo_byte_identical(shoot, tmp_path, capsys):
    before, picks = tree(shoot), tmp_path / "picks"
    listed = decisions(tmp_path / "d.csv", [(shoot / f"IMG_{i}.jpg", "pick", 2) for i in range(3)])
    assert cull(shoot, "--decisions", listed, *EMBED, "--move-to", picks, "--apply") == 0
    err = capsys.readouterr().err
    assert "1 sidecars and the XMP embedded in 2 photos" in err and "1 kept the photographer's own rating" in err
    assert embedded(picks / "IMG_0.jpg") == (2, True) and embedded(picks / "IMG_1.jpg") == (2, True)
    assert 'xmp:Rating="2"' in (picks / "IMG_1.xmp").read_text(), "the RAW twin's rating is in its sidecar"
    assert (picks / "IMG_2.jpg").read_bytes() == before["IMG_2.jpg"], "the photographer's 5 stars stay"
    assert not [n for n in tree(picks) if n.startswith(".")], "no temporary file left"
    assert cull(shoot, "--decisions", listed, *EMBED, "--move-to", picks, "--apply") == 0, "its own writes are not 'changed'"
    err = capsys.readouterr().err
    assert "refused" not in err and "0 picks done now" in err and "(3 already done" in err, err
    assert cull("--undo", listed.with_suffix(".cull")) == 0
    assert tree(shoot) == before and not tree(picks), "photos back, byte for byte"


def test_own_write_is_recognised_after_a_kill_and_a_photo_changed_by_someone_else_is_refused(shoot, tmp_path, capsys):
    listed = decisions(tmp_path / "d.csv", [(shoot / f"IMG_{i}.jpg", "pick", 3) for i in range(2)])
    assert cull(shoot, "--decisions", listed, *EMBED, "--apply") == 0
    log = listed.with_suffix(".cull") / "journal" / "log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n")  # killed after the rename of IMG_1.jpg, before its "done" line
    assert json.loads(lines[-1])["state"] == "done"
    assert cull(shoot, "--decisions", listed, *EMBED, "--apply") == 0
    assert "refused" not in capsys.readouterr().err
    users_rating(shoot / "IMG_0.jpg", 1)  # the photographer rates it again in Lightroom
    assert cull(shoot, "--decisions", listed, *EMBED, "--apply") == 1
    assert "IMG_0.jpg changed since the plan was made" in capsys.readouterr().err
    assert embedded(shoot / "IMG_0.jpg") == (1, False), "the photographer's new rating stays"


def test_ratings_policy_applies_to_embedded_ratings(shoot, tmp_path, capsys):
    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_2.jpg", "pick", 2)])
    for policy in ("keep", "replace"):
        assert cull(shoot, "--decisions", listed, "--xmp", "--xmp-into", "both", "--ratings", policy) == 0
    said = capsys.readouterr().err.split("add --apply")
    assert "0 sidecars and the XMP embedded in 1 photos" not in said[0]
    assert "1 keep the photographer's own rating" in said[0]
    assert "1 of them change the photographer's own rating" in said[1]
    assert cull(shoot, "--decisions", listed, "--xmp", "--xmp-into", "both", "--ratings", "replace", "--apply") == 0
    assert embedded(shoot / "IMG_2.jpg") == (2, True) and 'xmp:Rating="2"' in (shoot / "IMG_2.xmp").read_text()


def test_a_full_disk_during_an_embedded_write_leaves_the_photo_whole(tmp_path, capsys):
    """A real tmpfs with less free space than the photo."""
    with small_tmpfs(tmp_path / "disk", "400k") as disk:
        big = photo(disk / "shoot" / "BIG.jpg", 3, size=300)  # ~150 KB
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 50_000))
        before = big.read_bytes()
        listed = decisions(tmp_path / "d.csv", [(big, "pick", 4)])
        assert cull(disk / "shoot", "--decisions", listed, *EMBED, "--apply") == 1
        err = capsys.readouterr().err
        assert "disk" in err and "full" in err and "Traceback" not in err
        assert big.read_bytes() == before and sorted(tree(disk / "shoot")) == ["BIG.jpg"], "whole, nothing partial"
        (disk / "filler").unlink()
        assert cull(disk / "shoot", "--decisions", listed, *EMBED, "--apply") == 0  # space again: resume
        assert embedded(big) == (4, True)
        assert np.array_equal(np.asarray(Image.open(big)), np.asarray(Image.open(io.BytesIO(before)))), "same pixels"


def test_an_undo_killed_at_its_end_is_finished_by_its_rerun_and_leaves_no_spent_journal(shoot, tmp_path, monkeypatch):
    from iaa_distill.culling import plan

    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_0.jpg", "pick", 3)])
    before = tree(shoot)
    assert cull(shoot, "--decisions", listed, *EMBED, "--apply") == 0
    real, calls = os.replace, []

    def killed_after_the_first(src, dst):  # SIGKILL after undo retired one of its two records
        calls.append(src)
        if len(calls) > 1:
            raise SystemExit(137)
        return real(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(plan.os, "replace", killed_after_the_first)
        with pytest.raises(SystemExit):
            cull("--undo", listed.with_suffix(".cull"))
    assert tree(shoot) == before
    assert cull("--undo", listed.with_suffix(".cull")) == 0 and cull("--undo", listed.with_suffix(".cull")) == 0
    assert cull(shoot, "--decisions", listed, *EMBED, "--apply") == 0
    assert embedded(shoot / "IMG_0.jpg") == (3, True), "the next cull on that folder writes its rating again"
