"""`iaa score`: inputs (files, folders, globs), stdout (table on a terminal, else JSONL) and CSV/JSONL/JSON
files, embeddings, errors listed, atomic output, --resume after a kill, torchrun sharding and the HTML gallery. Random-weight model (mechanics only)."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from iaa_distill.cli import main
from iaa_distill.scoring import Scorer
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, sample_photos) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_jpegs(root / "a", sample_photos, 5, size=96)
    write_jpegs(root / "b" / "deep", sample_photos, 3, size=80, seed=1)
    (root / "b" / "notes.txt").write_text("not a photo")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (root / "a" / "._00000.jpg").write_bytes(b"\x00\x05\x16\x07 macOS metadata")  # hidden: not a photo of the user's
    write_jpegs(root / ".thumbnails", sample_photos, 2, size=32)
    return root


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def score(*args: str) -> int:
    return main(["score", *map(str, args), "--workers", "0", "--no-progress"])


def test_exit_code_is_1_when_no_file_could_be_scored(model_dir, photo_dir, capsys):
    broken = next(photo_dir.rglob("broken.jpg"))
    assert score(broken, "--model", model_dir) == 1
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.out  # its row, with the reason, still comes out
    assert captured.err.splitlines()[-1] == "iaa: error: no file could be scored (1 file failed)"
    assert score(photo_dir, "--model", model_dir) == 0  # some scored: the failures are listed, not fatal


def test_folder_to_csv_lists_failures_and_matches_the_api(model_dir, photo_dir, tmp_path):
    out = tmp_path / "scores.csv"
    assert score(photo_dir, "--model", model_dir, "--out", out) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "mean", "std", "distribution", "error"]
    assert len(rows) == 9  # 8 photos + the broken one; notes.txt is not an image
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0]["mean"] == "" and "broken.jpg" in broken[0]["error"]
    good = [r for r in rows if not r["error"]]
    expected = {r.path: r for r in Scorer.from_pretrained(model_dir, device="cpu").score([r["path"] for r in good])}
    for row in good:
        assert float(row["mean"]) == pytest.approx(expected[row["path"]].mean, abs=1e-5)
        assert float(row["std"]) == pytest.approx(expected[row["path"]].std, abs=1e-5)
        assert len(row["distribution"].split()) == 10
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*tmp"))
    assert oct(out.stat().st_mode & 0o777) != oct(0o600), "output should get the usual file permissions"


def test_globs_jsonl_and_sort(model_dir, photo_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert score(f"{photo_dir}/**/*.jpg", "--model", model_dir, "--out", out, "--sort") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9 and set(rows[0]) == {"path", "mean", "std", "distribution", "embedding", "error"}
    means = [r["mean"] for r in rows if not r["error"]]
    assert means == sorted(means, reverse=True)
    assert rows[-1]["error"] and rows[-1]["mean"] is None  # failures last


def test_without_out_results_go_to_stdout_and_reruns_never_fail(model_dir, photo_dir, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert score(photo_dir / "a", "--model", model_dir) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # piped: JSONL
        assert len(rows) == 5 and all(r["mean"] is not None for r in rows)
    assert not list(tmp_path.iterdir()), "no file unless asked for"
    assert score(photo_dir / "a", "--model", model_dir, "--out", "-", "--format", "json") == 0
    assert [r["path"] for r in json.loads(capsys.readouterr().out)] == [r["path"] for r in rows]
    assert score(photo_dir / "a", "--model", model_dir, "--out", "-", "--format", "csv", "--sort") == 0
    table = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    np.testing.assert_allclose([float(r["mean"]) for r in table], sorted((r["mean"] for r in rows), reverse=True),
                               atol=1e-6)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert score(photo_dir / "a", "--model", model_dir) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["score", "std", "path"] and len(lines) == 6
    assert float(lines[1].split()[0]) == pytest.approx(rows[0]["mean"], abs=1e-3)
    assert not list(tmp_path.iterdir())
    assert score(photo_dir / "a", "--model", model_dir, "--resume") == 1
    assert "--out FILE" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_embeddings_file_is_keyed_by_path(model_dir, photo_dir, tmp_path, capsys, suffix):
    from iaa_distill.scoring.embeddings import load_embeddings

    target = tmp_path / f"emb{suffix}"
    assert score(photo_dir / "b", "--model", model_dir, "--embeddings", target) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    good = [r["path"] for r in rows if not r["error"]]
    vectors = load_embeddings(target)
    assert sorted(vectors) == sorted(good) and len(good) == 3  # the broken file has none
    expected = Scorer.from_pretrained(model_dir, device="cpu").embed(good)
    np.testing.assert_allclose(np.stack([vectors[p] for p in good]), expected, atol=1e-4)
    assert score(photo_dir / "b", "--model", model_dir, "--embeddings", target) == 1  # not clobbered silently
    assert "already exists" in capsys.readouterr().err
    assert score(photo_dir / "b", "--model", model_dir, "--embeddings", tmp_path / "e.txt") == 1
    assert ".npy or .safetensors" in capsys.readouterr().err


def test_scalar_model_csv_has_no_distribution_column(tmp_path, photo_dir):
    model = save_tiny_student(tmp_path / "scalar", num_levels=None)
    out = tmp_path / "s.csv"
    assert score(photo_dir / "a", "--model", model, "--out", out) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "mean", "std", "error"] and rows[0]["std"] == ""


def test_expected_failures_exit_1_with_one_line(model_dir, photo_dir, tmp_path, capsys):
    assert score(tmp_path / "nothing-here", "--model", model_dir) == 1
    assert "nothing-here: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert score(tmp_path / "empty", "--model", model_dir) == 1
    assert "no image files found" in capsys.readouterr().err
    assert score(photo_dir, "--model", tmp_path / "empty") == 1
    assert "not a model folder" in capsys.readouterr().err


def test_resume_keeps_existing_rows_and_scores_only_new_files(model_dir, photo_dir, tmp_path):
    out = tmp_path / "scores.csv"
    assert score(photo_dir / "a", "--model", model_dir, "--out", out) == 0
    rows = read_csv(out)
    rows[0]["mean"] = "99.000000"  # a kept row must not be recomputed
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert score(photo_dir, "--model", model_dir, "--out", out, "--resume") == 0
    merged = {r["path"]: r for r in read_csv(out)}
    assert len(merged) == 9 and merged[rows[0]["path"]]["mean"] == "99.000000"


def test_killed_run_resumes_without_loss(model_dir, sample_photos, tmp_path):
    photos = write_jpegs(tmp_path / "many", sample_photos, 150, size=64)
    out = tmp_path / "scores.csv"
    journal = tmp_path / "scores.csv.partial"
    cmd = [sys.executable, "-m", "iaa_distill", "score", str(tmp_path / "many"), "--model", str(model_dir),
           "--out", str(out), "--batch-size", "1", "--workers", "0", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.stat().st_size > 5 * 300:  # a few batches journalled (~330 bytes per row)
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed; the test needs more images"
    lines = journal.read_text().splitlines()
    assert 3 <= len(lines) < len(photos)
    first = json.loads(lines[0])
    first["mean"] = 42.0  # journalled rows must be kept, not recomputed
    journal.write_text(json.dumps(first) + "\n" + "\n".join(lines[1:]) + "\n" + '{"path": "half-writ')  # torn tail

    assert score(tmp_path / "many", "--model", model_dir, "--out", out) == 1  # refuses to clobber the journal
    assert score(tmp_path / "many", "--model", model_dir, "--out", out, "--resume") == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [str(p) for p in photos]
    assert all(r["error"] == "" for r in rows)
    assert float(rows[0]["mean"]) == 42.0
    assert not journal.exists()


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_merge(model_dir, photo_dir, tmp_path):
    out = tmp_path / "dist.csv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "iaa_distill", "score", str(photo_dir), "--model", str(model_dir), "--out", str(out),
           "--workers", "0", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = tmp_path / "single.csv"
    assert score(photo_dir, "--model", model_dir, "--out", single) == 0
    merged, expected = read_csv(out), read_csv(single)
    assert [r["path"] for r in merged] == [r["path"] for r in expected]
    assert [r["error"] for r in merged] == [r["error"] for r in expected]
    np.testing.assert_allclose(
        [float(r["mean"] or "nan") for r in merged], [float(r["mean"] or "nan") for r in expected], atol=1e-5
    )
    assert not list(tmp_path.glob("dist.csv.*"))


def test_html_gallery_is_self_contained(model_dir, photo_dir, tmp_path):
    out, page = tmp_path / "scores.csv", tmp_path / "gallery.html"
    assert score(photo_dir, "--model", model_dir, "--out", out, "--html", page) == 0
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") >= 8 and "<svg" in html
    assert not re.search(r"(src|href)=['\"]https?:", html), "no external resources"
    assert "Best picks" in html and "Worst picks" in html and "broken.jpg" in html
    rows = [r for r in read_csv(out) if not r["error"]]
    all_section = html[html.index("id='all'"):]
    shown = [float(v) for v in re.findall(r'data-score="([-0-9.]+)"', all_section)]
    assert shown == sorted(shown, reverse=True) and len(shown) == len(rows)
    assert np.isclose(max(shown), max(float(r["mean"]) for r in rows), atol=1e-5)


def test_off_a_terminal_progress_is_one_line_per_stage(model_dir, photo_dir, capsys):
    assert main(["score", str(photo_dir / "a"), "--model", str(model_dir), "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and len([line for line in err.splitlines() if line.startswith("scoring: 5/5 img in")]) == 1
