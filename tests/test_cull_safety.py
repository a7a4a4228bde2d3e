"""Culling that never loses a photo, a sidecar or a rating (issue 21): each case of the issue's table.

Most cases apply a decision list (`--decisions`), so no model is needed; the cases that need scores use
the tiny random student. Each test failed on the code before issue 21.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import iaa_distill
from iaa_distill.cli import main
from tests.conftest import write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")
SOURCE = {**os.environ, "PYTHONPATH": str(Path(iaa_distill.__file__).parents[1])}  # this checkout, for child processes
USER_SIDECAR = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="{}" xmp:Label="Red"/>'
                "</rdf:RDF></x:xmpmeta>\n")


def cull(*args) -> int:
    return main(["cull", *map(str, args), "--workers", "0", "--no-progress"])


def photo(path: Path, seed: int = 0, size: int = 48) -> Path:
    """A small JPEG of random pixels (each seed its own bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def decisions(path: Path, rows: list[tuple]) -> Path:
    """A decisions CSV: (photo, flag[, rating])."""
    lines = ["path,flag,rating"] + [f"{r[0]},{r[1]},{r[2] if len(r) > 2 else 3}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def tree(folder: Path) -> dict[str, bytes]:
    """Every file (links as 'link:DEST') under `folder`, by relative path."""
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            found[p.relative_to(folder).as_posix()] = f"link:{os.readlink(p)}".encode()
        elif p.is_file():
            found[p.relative_to(folder).as_posix()] = p.read_bytes()
    return found


def digests(*folders: Path) -> list[str]:
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in f.rglob("*")
                  if p.is_file() and not p.is_symlink())


@pytest.fixture
def shoot(tmp_path) -> Path:
    folder = tmp_path / "shoot"
    for i in range(4):
        photo(folder / f"IMG_{i}.jpg", i)
    return folder


# -- 1: interrupted copies and moves, a full disk ------------------------------------------------
def _fail_after(monkeypatch, count: int, error: int):
    """Copies write half a file, then fail with `error`, from the `count`-th copied file on."""
    real, calls = shutil.copyfileobj, []

    def failing(src, dst, length=0):
        calls.append(1)
        if len(calls) >= count:
            dst.write(src.read(100))
            raise OSError(error, os.strerror(error))
        return real(src, dst, length)

    monkeypatch.setattr(shutil, "copyfileobj", failing)
    monkeypatch.setattr(os, "rename", _cross_device(os.rename))  # the target is "another disk"


def _cross_device(rename):
    def across(src, dst):
        if ".iaa-partial" not in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(src, dst)

    return across


def test_full_disk_is_one_clear_error_no_partial_file_and_a_clean_resume(shoot, tmp_path, monkeypatch, capsys):
    before = digests(shoot)
    listed = decisions(tmp_path / "d.csv", [(p, "pick") for p in sorted(shoot.iterdir())])
    with monkeypatch.context() as patch:
        _fail_after(patch, 3, errno.ENOSPC)
        assert cull("--decisions", listed, "--move-to", tmp_path / "picks", "--apply") == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err and "move: 2 picks done now" in err
    assert sorted(tree(tmp_path / "picks")) == ["IMG_0.jpg", "IMG_1.jpg"], "no partial file, nothing hidden"
    assert digests(shoot, tmp_path / "picks") == before, "every photo whole, in exactly one place"
    assert cull("--decisions", listed, "--move-to", tmp_path / "picks", "--apply") == 0  # space again: resume
    assert "move: 2 picks done now" in capsys.readouterr().err
    assert digests(tmp_path / "picks") == before and not list(shoot.iterdir())


@contextmanager
def small_tmpfs(disk: Path, size: str):
    """A real tmpfs of `size` mounted on `disk` while in the block (needs root and mount; skips the test otherwise)."""
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_real_full_tmpfs(shoot, tmp_path, capsys):
    """The same on a real 200 KB tmpfs."""
    with small_tmpfs(tmp_path / "disk", "200k") as disk:
        big = [photo(shoot / f"BIG_{i}.jpg", 10 + i, size=300) for i in range(4)]  # ~150 KB each
        listed = decisions(tmp_path / "d.csv", [(p, "pick") for p in big])
        assert cull("--decisions", listed, "--copy-to", disk / "picks", "--apply") == 1
        assert "the disk is full" in capsys.readouterr().err
        left = tree(disk)
        assert all(data == (shoot / Path(name).name).read_bytes() for name, data in left.items()), "no partial file"


def test_a_broken_file_from_a_killed_run_is_not_called_done(shoot, tmp_path, capsys):
    (tmp_path / "picks").mkdir()
    (tmp_path / "picks" / "IMG_0.jpg").write_bytes((shoot / "IMG_0.jpg").read_bytes()[:200])  # truncated
    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_0.jpg", "pick")])
    assert cull("--decisions", listed, "--copy-to", tmp_path / "picks", "--apply") == 0
    err = capsys.readouterr().err
    assert "already holds another IMG_0.*, so it goes in as IMG_0-1" in err  # not ours: a free name instead
    assert (tmp_path / "picks" / "IMG_0-1.jpg").read_bytes() == (shoot / "IMG_0.jpg").read_bytes()


def test_failed_copy_leaves_no_partial_file_and_exits_non_zero(shoot, tmp_path, monkeypatch, capsys):
    listed = decisions(tmp_path / "d.csv", [(p, "pick") for p in sorted(shoot.iterdir())])
    with monkeypatch.context() as patch:
        _fail_after(patch, 2, errno.EIO)
        assert cull("--decisions", listed, "--copy-to", tmp_path / "picks", "--apply") == 1
    err = capsys.readouterr().err
    assert "1 picks done now" in err and "3 failed" in err
    assert sorted(tree(tmp_path / "picks")) == ["IMG_0.jpg"]


def test_kill_during_a_copy_leaves_the_photo_whole_or_absent(tmp_path):
    """A real kill -9 in the middle of one large copy: only a hidden partial file may be left, never the name."""
    from iaa_distill.culling import transfer

    source = tmp_path / "big.tif"
    source.write_bytes(os.urandom(64 << 20))
    target = tmp_path / "other" / "big.tif"
    code = ("import sys; from pathlib import Path; from iaa_distill.culling import transfer; "
            "transfer.carry_out(transfer.Step('copy', Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[1]).stat().st_size))")
    child = subprocess.Popen([sys.executable, "-c", code, str(source), str(target)],
                             env=SOURCE)
    partial = transfer.partial_name(target)
    while child.poll() is None and not partial.exists():
        pass
    child.kill()
    child.wait()
    assert not target.exists() or target.read_bytes() == source.read_bytes()
    step = transfer.Step("copy", source, target, source.stat().st_size)
    assert transfer.carry_out(step) in ("done", "already") and target.read_bytes() == source.read_bytes()
    assert not partial.exists()


# -- 2: symlinks ---------------------------------------------------------------------------------
def test_a_symlinked_photo_is_moved_as_a_link_never_its_target(tmp_path):
    library = tmp_path / "elsewhere" / "library"
    real = photo(library / "rocket.jpg")
    (tmp_path / "shoot").mkdir()
    (tmp_path / "shoot" / "rocket.jpg").symlink_to("../elsewhere/library/rocket.jpg")
    photo(tmp_path / "shoot" / "cat.jpg", 1)
    listed = decisions(tmp_path / "shoot" / "d.csv", [("rocket.jpg", "pick"), ("cat.jpg", "pick")])
    assert cull("--decisions", listed, "--move-to", tmp_path / "picks", "--apply") == 0
    assert real.is_file(), "the library keeps its file"
    moved = tmp_path / "picks" / "rocket.jpg"
    assert moved.is_symlink() and moved.resolve() == real.resolve() and (tmp_path / "picks" / "cat.jpg").is_file()
    assert not (tmp_path / "shoot" / "rocket.jpg").exists() and not os.path.lexists(tmp_path / "shoot" / "rocket.jpg")


# -- 3 and 5: foreign files in the target; sidecars travel -----------------------------------------
def test_name_clashes_get_a_suffix_and_sidecars_travel_with_their_photo(tmp_path, capsys):
    shoot, picks = tmp_path / "shoot", tmp_path / "picks"
    for name, seed in (("astronaut", 0), ("coffee", 1), ("cat", 2)):
        photo(shoot / f"{name}.jpg", seed)
    (shoot / "coffee.xmp").write_text(USER_SIDECAR.format(2))
    (shoot / "cat.jpg.xmp").write_text(USER_SIDECAR.format(4))  # darktable's name
    foreign = {"astronaut.jpg": photo(picks / "astronaut.jpg", 9).read_bytes(), "coffee.xmp": b"<foreign/>"}
    (picks / "coffee.xmp").write_bytes(foreign["coffee.xmp"])
    listed = decisions(tmp_path / "d.csv", [(shoot / f"{n}.jpg", "pick") for n in ("astronaut", "coffee", "cat")])
    assert cull(shoot, "--decisions", listed, "--move-to", picks, "--apply") == 0
    err = capsys.readouterr().err
    assert "move: 3 picks done now (5 files)" in err and "goes in as coffee-1" in err and "goes in as astronaut-1" in err
    assert all((picks / n).read_bytes() == data for n, data in foreign.items()), "foreign files untouched"
    assert {"coffee-1.jpg", "coffee-1.xmp", "astronaut-1.jpg", "cat.jpg", "cat.jpg.xmp"} <= set(tree(picks))
    assert not list(shoot.iterdir())


def test_ratings_and_the_file_action_report_their_progress(shoot, tmp_path, capsys):
    listed = decisions(tmp_path / "d.csv", [(shoot / f"IMG_{i}.jpg", "pick") for i in range(3)])
    assert main(["cull", "--decisions", str(listed), "--xmp", "--copy-to", str(tmp_path / "picks"), "--apply",
                 "--workers", "0"]) == 0
    err = capsys.readouterr().err  # off a terminal: one line per stage
    assert "xmp ratings: 3/3 photo in" in err and "copy: 3/3 photo in" in err


# -- 4: a photographer's ratings; undo -----------------------------------------------------------
def test_own_ratings_are_kept_by_default_and_undo_restores_every_sidecar(shoot, tmp_path, capsys):
    sidecars = {"IMG_0.xmp": USER_SIDECAR.format(5), "IMG_1.xmp": USER_SIDECAR.format(1)}
    for name, text in sidecars.items():
        (shoot / name).write_text(text)
    os.chmod(shoot / "IMG_0.xmp", 0o600)
    before = tree(shoot)
    listed = decisions(tmp_path / "d.csv", [(shoot / f"IMG_{i}.jpg", "reject" if i == 0 else "pick", 2) for i in range(4)])
    assert cull(shoot, "--decisions", listed, "--xmp") == 0
    assert "would write xmp:Rating into 2 sidecars" in capsys.readouterr().err  # IMG_2 and IMG_3 are unrated
    assert cull(shoot, "--decisions", listed, "--xmp", "--move-to", tmp_path / "picks", "--apply") == 0
    assert (tmp_path / "picks" / "IMG_1.xmp").read_text() == sidecars["IMG_1.xmp"], "the user's 1 star stays"
    assert (shoot / "IMG_0.xmp").read_text() == sidecars["IMG_0.xmp"]
    assert 'xmp:Rating="2"' in (tmp_path / "picks" / "IMG_2.xmp").read_text()
    assert cull("--undo", listed.with_suffix(".cull")) == 0
    assert tree(shoot) == before and not tree(tmp_path / "picks"), "photos back, sidecars byte-identical"
    assert stat.S_IMODE((shoot / "IMG_0.xmp").stat().st_mode) == 0o600


def test_replace_changes_user_ratings_and_undo_restores_them(shoot, tmp_path):
    (shoot / "IMG_0.xmp").write_text(USER_SIDECAR.format(5))
    before = tree(shoot)
    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_0.jpg", "pick", 1)])
    assert cull(shoot, "--decisions", listed, "--xmp", "--ratings", "replace", "--apply") == 0
    text = (shoot / "IMG_0.xmp").read_text()
    assert 'xmp:Rating="1"' in text and 'xmp:Label="Red"' in text
    assert cull("--undo", tmp_path / "d.cull") == 0 and tree(shoot) == before


def test_sidecar_writes_keep_mode_symlinks_and_hard_links(shoot, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "IMG_0.xmp").write_text(USER_SIDECAR.format(0))
    (shoot / "IMG_0.xmp").symlink_to(store / "IMG_0.xmp")
    (shoot / "IMG_1.xmp").write_text(USER_SIDECAR.format(0))
    os.link(shoot / "IMG_1.xmp", store / "IMG_1.xmp")
    (shoot / "IMG_2.xmp").write_text(USER_SIDECAR.format(0))
    os.chmod(shoot / "IMG_2.xmp", 0o600)
    listed = decisions(shoot / "d.csv", [(f"IMG_{i}.jpg", "pick", 4) for i in range(3)])
    assert cull("--decisions", listed, "--xmp", "--apply") == 0
    assert (shoot / "IMG_0.xmp").is_symlink() and 'xmp:Rating="4"' in (store / "IMG_0.xmp").read_text()
    assert os.path.samefile(shoot / "IMG_1.xmp", store / "IMG_1.xmp") and 'xmp:Rating="4"' in (store / "IMG_1.xmp").read_text()
    assert stat.S_IMODE((shoot / "IMG_2.xmp").stat().st_mode) == 0o600


# -- 6: decisions frozen; a rerun finishes the same plan ------------------------------------------
def test_a_rerun_finishes_the_frozen_plan_and_a_finished_one_is_a_no_op(model_dir, tmp_path, sample_photos, monkeypatch, capsys):
    shoot = tmp_path / "shoot"
    write_jpegs(shoot, sample_photos, 8, size=64)
    args = (shoot, "--model", model_dir, "--out", tmp_path / "cull", "--keep-top", "50%", "--no-bursts",
            "--move-to", tmp_path / "picks", "--apply")
    with monkeypatch.context() as patch:
        _fail_after(patch, 2, errno.ENOSPC)  # a move that stops after one photo
        assert cull(*args) == 1
    assert len(tree(tmp_path / "picks")) == 1
    assert cull(*args) == 0  # re-deciding from the 7 photos left would move 4 more
    assert len(tree(tmp_path / "picks")) == 4 and len(tree(shoot)) == 4
    capsys.readouterr()
    assert cull(*args) == 0 and len(tree(tmp_path / "picks")) == 4
    assert "0 picks done now (0 files), 4 already in place" in capsys.readouterr().err


def test_a_photo_changed_after_the_plan_is_refused(shoot, tmp_path, monkeypatch, capsys):
    listed = decisions(tmp_path / "d.csv", [(p, "pick") for p in sorted(shoot.iterdir())])
    with monkeypatch.context() as patch:
        _fail_after(patch, 2, errno.ENOSPC)
        assert cull("--decisions", listed, "--copy-to", tmp_path / "picks", "--apply") == 1
    photo(shoot / "IMG_3.jpg", 99)
    assert cull("--decisions", listed, "--copy-to", tmp_path / "picks", "--apply") == 1
    assert "IMG_3.jpg changed since the plan was made" in capsys.readouterr().err
    assert sorted(tree(tmp_path / "picks")) == ["IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg"]


# -- 7 and 10: the output and the target inside the shoot are not photos ---------------------------
def test_out_and_targets_inside_the_shoot_are_not_culled(model_dir, tmp_path, sample_photos, monkeypatch):
    shoot = tmp_path / "shoot"
    write_jpegs(shoot, sample_photos, 3, size=64)
    monkeypatch.chdir(shoot)
    for _ in range(3):
        assert cull(".", "--model", model_dir, "--copy-to", "picks", "--apply") == 0
    rows = (shoot / "cull" / "decisions.csv").read_text().splitlines()
    assert len(rows) == 4 and not any("thumbs" in r or "picks" in r for r in rows)
    assert sorted(tree(shoot / "picks")) == ["00000.jpg", "00001.jpg", "00002.jpg"]


# -- 8: decision lists from elsewhere ------------------------------------------------------------
def test_decision_list_paths_resolve_from_the_list_and_entries_outside_are_refused(shoot, tmp_path, monkeypatch, capsys):
    photo(tmp_path / "library" / "other.jpg", 7)
    lists = shoot / "lists"
    lists.mkdir()
    (lists / "picks.txt").write_text("../IMG_0.jpg\n../../library\n../../library/other.jpg\n")
    monkeypatch.chdir(tmp_path)
    assert cull(shoot, "--decisions", lists / "picks.txt", "--move-to", tmp_path / "picks", "--apply") == 0
    err = capsys.readouterr().err
    assert "library is not a photo file; refused" in err and "other.jpg is outside" in err
    assert sorted(tree(tmp_path / "picks")) == ["IMG_0.jpg"] and (tmp_path / "library" / "other.jpg").exists()


def test_a_fifo_as_decision_list_is_refused_not_waited_for(tmp_path):
    fifo = tmp_path / "decisions.csv"
    os.mkfifo(fifo)
    code = "import sys; from iaa_distill.cli import main; sys.exit(main(['cull', '--decisions', sys.argv[1]]))"
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60,
                          env=SOURCE)
    assert done.returncode == 1 and "not a regular file" in done.stderr


# -- 9: a read-only source -----------------------------------------------------------------------
def test_read_only_source_is_reported_and_nothing_is_copied_silently(shoot, tmp_path, monkeypatch, capsys):
    listed = decisions(tmp_path / "d.csv", [(p, "pick") for p in sorted(shoot.iterdir())])
    real_unlink = os.unlink

    def read_only(path, *a, **k):
        if Path(path).parent == shoot:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "rename", _cross_device(os.rename))
    monkeypatch.setattr(os, "unlink", read_only)
    assert cull("--decisions", listed, "--move-to", tmp_path / "picks", "--apply") == 1
    assert "cannot be removed (Permission denied), so it was not moved" in capsys.readouterr().err
    assert tree(tmp_path / "picks") == {} and len(tree(shoot)) == 4


# -- 11 and 12: odd names, replaced photos ---------------------------------------------------------
def test_a_non_utf8_file_name_is_culled_without_a_traceback(model_dir, tmp_path, monkeypatch):
    shoot = tmp_path / "shoot"
    photo(shoot / "plain.jpg")
    name = os.fsdecode(b"caf\xe9.jpg")
    photo(shoot / name, 1)
    assert cull(shoot, "--model", model_dir, "--out", tmp_path / "cull", "--copy-to", tmp_path / "picks", "--apply") == 0
    assert (tmp_path / "picks" / name).read_bytes() == (shoot / name).read_bytes()
    assert not [p for p in (tmp_path / "cull").rglob("*") if p.name.endswith(".tmp")]
    assert cull(shoot, "--model", model_dir, "--out", tmp_path / "cull") == 0  # reading its own files back


def test_a_replaced_photo_is_scored_again(model_dir, tmp_path, sample_photos):
    shoot = tmp_path / "shoot"
    write_jpegs(shoot, sample_photos, 3, size=64)
    assert cull(shoot, "--model", model_dir, "--out", tmp_path / "cull") == 0
    first = (tmp_path / "cull" / "scores.csv").read_text()
    Image.fromarray(sample_photos["rocket"][:200, :200]).resize((64, 48)).save(shoot / "00001.jpg")
    assert cull(shoot, "--model", model_dir, "--out", tmp_path / "cull") == 0
    old, new = ({r.split(",")[0]: r for r in t.splitlines()} for t in (first, (tmp_path / "cull" / "scores.csv").read_text()))
    assert new[str(shoot / "00001.jpg")] != old[str(shoot / "00001.jpg")]
    assert new[str(shoot / "00000.jpg")] == old[str(shoot / "00000.jpg")]


# -- 13: RAW + JPEG twins ------------------------------------------------------------------------
def test_raw_and_jpeg_twins_are_one_photo(model_dir, tmp_path, sample_photos):
    from tests.camera_files import write_dng

    shoot = tmp_path / "shoot"
    shoot.mkdir()
    for i, name in enumerate(("chelsea", "coffee")):
        image = sample_photos[name][:96, :128]
        write_dng(shoot / f"IMG_{i}.CR3", image)
        Image.fromarray(image).save(shoot / f"IMG_{i}.JPG")
    assert cull(shoot, "--model", model_dir, "--out", tmp_path / "cull", "--xmp", "--move-to", tmp_path / "picks",
                "--apply") == 0
    rows = (tmp_path / "cull" / "decisions.csv").read_text().splitlines()
    assert len(rows) == 3 and all(".JPG" in r for r in rows[1:]), "one decision per pair, not a burst"
    assert sorted(tree(tmp_path / "picks")) == ["IMG_0.CR3", "IMG_0.JPG", "IMG_0.xmp", "IMG_1.CR3", "IMG_1.JPG", "IMG_1.xmp"]


# -- 14: options and the gallery in an ASCII locale ------------------------------------------------
@pytest.mark.parametrize("option", [("--keep-top", "nan%"), ("--min-score", "nan"), ("--burst-gap", "nan"),
                                    ("--star-thresholds", "1", "2", "nan", "4"), ("--reject-bottom", "nan"),
                                    ("--star-thresholds", "1", "2", "3"), ("--star-thresholds", "4", "3", "2", "1")])
def test_bad_rule_options_are_refused_before_scoring(shoot, tmp_path, option, capsys):
    assert cull(shoot, "--model", tmp_path / "no-model-needed", *option) == 1
    err = capsys.readouterr().err
    assert option[0] in err and "Traceback" not in err and "no-model-needed" not in err


def test_gallery_and_files_are_written_in_an_ascii_locale(tmp_path):
    code = ("import sys; from pathlib import Path; from iaa_distill.artifacts import atomic_write_text; "
            "atomic_write_text(Path(sys.argv[1]), '5.50 \\u00b1 0.20')")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii", "PYTHONPATH": SOURCE["PYTHONPATH"]}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.html")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.html").read_text(encoding="utf-8") == "5.50 \u00b1 0.20"
    assert [p.name for p in tmp_path.iterdir()] == ["g.html"]


def test_dry_run_counts_ratings_each_policy_would_change(shoot, tmp_path, capsys):
    (shoot / "IMG_0.xmp").write_text(USER_SIDECAR.format(5))
    (shoot / "IMG_1.xmp").write_text(USER_SIDECAR.format(0))  # unrated
    listed = decisions(tmp_path / "d.csv", [(shoot / f"IMG_{i}.jpg", "pick", 2) for i in range(2)])
    said = {}
    for policy in ("keep", "fill", "replace"):
        assert cull(shoot, "--decisions", listed, "--xmp", "--ratings", policy) == 0
        said[policy] = capsys.readouterr().err
    assert "into 1 sidecars" in said["keep"] and "1 keep the photographer's own rating" in said["keep"]
    assert "into 1 sidecars" in said["fill"]
    assert "into 2 sidecars" in said["replace"] and "1 of them change the photographer's own rating" in said["replace"]
    assert (shoot / "IMG_0.xmp").read_text() == USER_SIDECAR.format(5), "a dry run writes nothing"


def test_fill_leaves_ratings_this_tool_wrote_earlier(shoot, tmp_path):
    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_0.jpg", "pick", 2)])
    assert cull(shoot, "--decisions", listed, "--xmp", "--apply", "--out", tmp_path / "first") == 0
    again = decisions(tmp_path / "e.csv", [(shoot / "IMG_0.jpg", "pick", 4)])
    assert cull(shoot, "--decisions", again, "--xmp", "--ratings", "fill", "--apply") == 0
    assert 'xmp:Rating="2"' in (shoot / "IMG_0.xmp").read_text()
    assert cull(shoot, "--decisions", again, "--xmp", "--apply", "--out", tmp_path / "third") == 0  # keep: ours, updated
    assert 'xmp:Rating="4"' in (shoot / "IMG_0.xmp").read_text()


def test_three_tiers_with_stars_for_all(model_dir, tmp_path, sample_photos):
    shoot = tmp_path / "shoot"
    write_jpegs(shoot, sample_photos, 10, size=64)
    assert cull(shoot, "--model", model_dir, "--out", tmp_path / "cull", "--no-bursts", "--keep-top", "3",
                "--reject-bottom", "20%") == 0
    import csv

    with open(tmp_path / "cull" / "decisions.csv") as f:
        rows = list(csv.DictReader(f))
    flags = [r["flag"] for r in sorted(rows, key=lambda r: -float(r["score"]))]
    assert flags == ["pick"] * 3 + ["unflagged"] * 5 + ["reject"] * 2
    assert all(1 <= int(r["rating"]) <= 5 for r in rows)


def test_score_html_is_not_overwritten_silently(model_dir, shoot, tmp_path, capsys):
    page = tmp_path / "gallery.html"
    page.write_text("my notes")
    args = ["score", str(shoot), "--model", str(model_dir), "--out", str(tmp_path / "s.csv"), "--html", str(page),
            "--workers", "0", "--no-progress"]
    assert main(args) == 1 and page.read_text() == "my notes"
    assert "gallery.html: already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0 and "<html" in page.read_text()


def test_score_writes_non_utf8_names(model_dir, tmp_path):
    photo(tmp_path / "shoot" / os.fsdecode(b"caf\xe9.jpg"))
    out = tmp_path / "s.csv"
    args = ["score", str(tmp_path / "shoot"), "--model", str(model_dir), "--out", str(out), "--html",
            str(tmp_path / "g.html"), "--workers", "0", "--no-progress"]
    assert main(args) == 0 and b"caf\xe9.jpg" in out.read_bytes()
    assert main(args[:-5] + ["--resume", "--workers", "0", "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.html", "s.csv", "shoot"]


def test_verify_sha256_catches_a_copy_that_differs_with_the_same_size(shoot, tmp_path, monkeypatch, capsys):
    real = shutil.copyfileobj

    def flipping(src, dst, length=0):
        data = bytearray(src.read())
        data[len(data) // 2] ^= 0xFF  # same size, one byte wrong
        dst.write(bytes(data))

    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_0.jpg", "pick")])
    monkeypatch.setattr(os, "rename", _cross_device(os.rename))
    monkeypatch.setattr(shutil, "copyfileobj", flipping)
    assert cull(shoot, "--decisions", listed, "--move-to", tmp_path / "picks", "--verify", "sha256", "--apply") == 1
    assert "sha256 differs" in capsys.readouterr().err
    assert tree(tmp_path / "picks") == {} and (shoot / "IMG_0.jpg").exists()
    monkeypatch.setattr(shutil, "copyfileobj", real)
    assert cull(shoot, "--decisions", listed, "--move-to", tmp_path / "picks", "--verify", "sha256", "--apply") == 0
    assert not (shoot / "IMG_0.jpg").exists() and len(tree(tmp_path / "picks")) == 1


def test_a_dry_run_after_apply_shows_the_frozen_plan(shoot, tmp_path, capsys):
    listed = decisions(tmp_path / "d.csv", [(shoot / "IMG_0.jpg", "pick")])
    assert cull(shoot, "--decisions", listed, "--copy-to", tmp_path / "picks", "--apply") == 0
    capsys.readouterr()
    assert cull(shoot, "--decisions", listed, "--copy-to", tmp_path / "picks") == 0
    err = capsys.readouterr().err
    assert "a cull was applied here" in err and "would copy 1 picks" in err
