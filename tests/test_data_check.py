"""`check_dataset` and `iaa data check`: counts, label statistics, usability verdicts and the full-size AVA case."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from iaa_distill.cli import main
from iaa_distill.data import open_dataset
from iaa_distill.data.check import check_dataset
from tests.conftest import write_jpegs
from tests.test_readers import VOTES, ava_line, write_ava


def write_csv_dataset(root: Path, photos, *, count: int = 12, missing=(), broken=()) -> Path:
    """labels.csv over `count` real JPEGs in images/; `missing` indices are deleted, `broken` ones overwritten."""
    paths = write_jpegs(root / "images", photos, count, size=32)
    rows = ["image,score,split,category"]
    for i, path in enumerate(paths):
        split = "test" if i % 4 == 3 else ("val" if i % 4 == 2 else "train")
        rows.append(f"images/{path.name},{1 + i % 10},{split},{'cats' if i % 3 == 0 else 'dogs'}")
    for i in missing:
        paths[i].unlink()
    for i in broken:
        paths[i].write_text("not a jpeg")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_counts_stats_and_categories(tmp_path, sample_photos):
    labels = write_csv_dataset(tmp_path, sample_photos, missing=(0, 3), broken=(1,))
    ds = open_dataset(f"csv:{labels}?scale=1,10")
    report = check_dataset(ds)
    splits = {s.name: s for s in report.splits}
    assert [s.name for s in report.splits] == ["train", "val", "test"]
    assert (splits["train"].listed, splits["train"].found, splits["train"].missing) == (6, 5, 1)
    assert (splits["test"].listed, splits["test"].found, splits["test"].missing) == (3, 2, 1)
    assert splits["train"].missing_examples == [str(tmp_path / "images" / "00000.jpg")]
    assert splits["train"].undecodable is None
    train_scores = [1 + i % 10 for i in range(12) if i % 4 in (0, 1)]
    assert splits["train"].score_mean == pytest.approx(np.mean(train_scores))
    assert splits["train"].score_std == pytest.approx(np.std(train_scores))
    assert splits["train"].votes_mean is None
    assert splits["test"].categories == {"category:dogs": 2, "category:cats": 1}  # 3 cats; 7, 11 dogs
    assert report.usable and not report.reasons
    assert any("train: 1 of 6 images missing" in w for w in report.warnings)

    decoded = {s.name: s for s in check_dataset(ds, decode=True, workers=1).splits}
    assert decoded["train"].undecodable == 1 and decoded["train"].usable == 4
    assert "00001.jpg" in decoded["train"].undecodable_examples[0]
    assert decoded["val"].undecodable == 0


def test_vote_statistics(tmp_path):
    lines = [ava_line(i + 1, str(100 + i), VOTES[i % 3]) for i in range(9)]
    root = write_ava(tmp_path, lines, ["101", "104", "107"])
    for i in range(9):
        (root / "images" / f"{100 + i}.jpg").write_bytes(b"")
    report = check_dataset(open_dataset(f"ava:{root}", val_fraction=0.34))  # 2 of the 6 found train images
    test = next(s for s in report.splits if s.name == "test")
    assert (test.listed, test.found) == (3, 3)
    assert test.votes_mean == pytest.approx(sum(VOTES[1])) and test.votes_min == test.votes_max == sum(VOTES[1])
    votes = np.asarray(VOTES[1], dtype=float)
    assert test.score_mean == pytest.approx((votes * np.arange(1, 11)).sum() / votes.sum())
    assert report.usable


def test_unusable_verdicts(tmp_path, sample_photos):
    labels = write_csv_dataset(tmp_path / "a", sample_photos, count=8, missing=(3, 7))
    report = check_dataset(open_dataset(f"csv:{labels}"))
    assert not report.usable and report.reasons == ["split 'test' has no usable images (2 listed)"]

    labels = write_csv_dataset(tmp_path / "b", sample_photos, count=8, broken=range(8))
    assert check_dataset(open_dataset(f"csv:{labels}")).usable
    report = check_dataset(open_dataset(f"csv:{labels}"), decode=True, workers=1)
    assert not report.usable and "none of the 8 listed images decode" in report.reasons[0]

    (tmp_path / "empty").mkdir()
    report = check_dataset(open_dataset(f"folder:{tmp_path / 'empty'}"))
    assert not report.usable and "no image files" in report.reasons[0]

    write_jpegs(tmp_path / "unrated", sample_photos, 3)  # photos that exist, none of them rated
    report = check_dataset(open_dataset(f"xmp:{tmp_path / 'unrated'}"))
    assert not report.usable and report.reasons == ["no labelled images: all 3 are unlabelled"]


def test_an_empty_val_split_is_unusable_with_the_fix_and_fit_stops_before_features(tmp_path, capsys):
    """AVA with most images absent: val is carved from the found train images, so here it is empty."""
    lines = [ava_line(i + 1, str(100 + i), VOTES[i % 3]) for i in range(40)]
    root = write_ava(tmp_path / "AVA", lines, ["101", "104"])
    for image_id in (100, 101, 102, 103, 104):  # three found train images: 5 % of them is none
        (root / "images" / f"{image_id}.jpg").write_bytes(b"")
    assert main(["data", "check", f"ava:{root}"]) == 1
    captured = capsys.readouterr()
    assert "usable: NO (split 'val' has no usable images (0 listed): carve one from more train images with a " \
           "larger --val-fraction" in captured.out
    assert "val = 0 of the 3 found train images" in captured.out
    assert main(["data", "check", f"ava:{root}", "--val-fraction", "0.34"]) == 0
    assert "usable: yes" in capsys.readouterr().out

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"dataset: ava:{root}\nout: {tmp_path / 'run'}\n")
    assert main(["fit", "--config", str(recipe), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"iaa: error: dataset ava:{root} is not usable: split 'val' has no "
                                                 "usable images (0 listed): carve one from more train images with a "
                                                 "larger --val-fraction, or list val images"]
    assert not (tmp_path / "run" / "features").exists()  # stopped before any feature extraction


def test_folder_check_with_decode_pool(tmp_path, sample_photos):
    paths = write_jpegs(tmp_path / "photos" / "sub", sample_photos, 70, size=32)
    paths[5].write_bytes(b"")
    paths[9].write_bytes(paths[9].read_bytes()[:200])
    report = check_dataset(open_dataset(f"folder:{tmp_path / 'photos'}"), decode=True, workers=2)
    (split,) = report.splits
    assert (split.name, split.listed, split.found, split.missing, split.undecodable) == ("all", 70, 70, 0, 2)
    assert report.usable and split.score_mean is None
    assert sorted(Path(e.split(":")[0]).name for e in split.undecodable_examples) == ["00005.jpg", "00009.jpg"]


def test_cli_table_json_and_exit_codes(tmp_path, sample_photos, capsys):
    labels = write_csv_dataset(tmp_path, sample_photos, missing=(0,))
    spec = f"csv:{labels}?scale=1,10"
    assert main(["data", "check", spec]) == 0
    out = capsys.readouterr().out
    assert "split  listed  found  missing  mean score" in out
    assert any(line.split()[:4] == ["train", "6", "5", "1"] for line in out.splitlines())
    assert "categories (train): category:dogs 4, category:cats 2" in out and "usable: yes" in out

    assert main(["data", "check", spec, "--json", "--decode", "--workers", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["usable"] and data["scale"] == [1.0, 10.0]
    assert [(s["name"], s["found"], s["undecodable"]) for s in data["splits"]] == [("train", 5, 0), ("val", 3, 0), ("test", 3, 0)]

    for i in (3, 7, 11):
        (tmp_path / "images" / f"{i:05d}.jpg").unlink()
    assert main(["data", "check", spec]) == 1
    captured = capsys.readouterr()
    assert "usable: NO" in captured.out
    assert captured.err.strip() == f"iaa: error: dataset {spec} is not usable: split 'test' has no usable images (3 listed)"

    assert main(["data", "check", f"nope:{labels}"]) == 1
    assert "unknown format 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check"])
    assert exit_info.value.code == 2


def test_full_size_ava_label_file(tmp_path, capsys):
    """~255,500 AVA rows with only a few images on disk: reader and existence check stay fast."""
    rng = np.random.default_rng(0)
    n = 255_500
    ids = np.arange(100_000, 100_000 + n)
    votes = rng.integers(1, 60, size=(n, 10))
    tags = rng.integers(0, 30, size=(n, 2))
    lines = [f"{i + 1} {ids[i]} {' '.join(map(str, votes[i]))} {tags[i, 0]} {tags[i, 1]} 1396" for i in range(n)]
    root = write_ava(tmp_path / "AVA", lines, [str(i) for i in ids[::12][:20_000]] + ["999"],
                     categories={"animal_train": [str(i) for i in ids[5::101]]})
    for image_id in ids[:12]:  # ids[0] is a test image, the other 11 train images
        (root / "images" / f"{image_id}.jpg").write_bytes(b"")

    start = time.perf_counter()
    assert main(["data", "check", f"ava:{root}", "--json"]) == 0
    elapsed = time.perf_counter() - start
    report = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        print(f"\niaa data check on {n:,} AVA rows: {elapsed:.1f} s")

    splits = {s["name"]: s for s in report["splits"]}
    assert splits["test"]["listed"] == 20_000 and splits["test"]["found"] == 1  # ids[0] is in generic_test
    assert splits["train"]["listed"] + splits["val"]["listed"] == n - 20_000
    assert splits["val"]["listed"] == splits["val"]["found"] == round(0.05 * 11)  # carved from the found ones
    assert splits["train"]["found"] + splits["val"]["found"] == 11
    assert splits["train"]["votes_min"] >= 10 and 5.0 < splits["train"]["score_mean"] < 6.0
    assert splits["train"]["categories"]["category:animal"] > 2000
    assert any("1 ids of generic_test.jpgl have no labelled row in AVA.txt" in note for note in report["notes"])
