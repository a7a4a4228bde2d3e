"""Dataset readers on fixtures generated in every real layout, with the usual defects of real copies."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iaa_distill.data import open_dataset
from iaa_distill.data.aadb import read_aadb
from iaa_distill.data.ava import read_ava
from iaa_distill.data.csv_labels import read_csv
from iaa_distill.data.folder import read_folder
from iaa_distill.data.koniq import read_koniq
from iaa_distill.data.tad66k import read_tad66k
from iaa_distill.errors import DatasetError


def write(path: Path, text: str, *, crlf: bool = False, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def touch_images(dataset) -> None:
    """Create (empty) image files for every record: val is carved from the found train images."""
    for record in dataset.records:
        record.path.parent.mkdir(parents=True, exist_ok=True)
        record.path.touch()


def ava_line(index: int, image_id: str, votes, tag1: int = 0, tag2: int = 0, challenge: int = 1396) -> str:
    return f"{index} {image_id} {' '.join(str(v) for v in votes)} {tag1} {tag2} {challenge}"


def write_ava(root: Path, lines: list[str], test_ids: list[str], *, crlf: bool = False, categories=None) -> Path:
    """An AVA folder: AVA.txt, generic_test.jpgl, category lists, tags.txt, challenges.txt."""
    write(root / "AVA.txt", "\n".join(lines) + "\n", crlf=crlf)
    lists = root / "aesthetics_image_lists"
    write(lists / "generic_test.jpgl", "\n".join(test_ids) + "\n", crlf=crlf)
    for name, ids in (categories or {}).items():
        write(lists / f"{name}.jpgl", "\n".join(ids) + "\n")
    write(root / "tags.txt", "14 Landscape\n19 Animals\n21 Black and White \n", crlf=crlf, bom=True)
    write(root / "challenges.txt", "1396 Macro\n811 Self_Portrait IV\n")
    (root / "images").mkdir(exist_ok=True)
    return root


VOTES = [(0, 1, 4, 18, 41, 40, 16, 7, 2, 1), (1, 2, 5, 10, 37, 60, 31, 15, 4, 2), (0, 0, 2, 9, 30, 52, 28, 11, 5, 3)]


def mean_of(votes) -> float:
    v = np.asarray(votes, dtype=float)
    return float((v * np.arange(1, 11)).sum() / v.sum())


def test_ava_split_labels_categories_and_defects(tmp_path):
    lines = [ava_line(i + 1, str(900001 + i), VOTES[i % 3], tag1=(14, 19, 0)[i % 3], tag2=21 if i == 1 else 0) for i in range(40)]
    lines.insert(5, "")  # blank line
    lines.append("  " + ava_line(41, "900099", [0] * 10) + "   ")  # zero votes + stray spaces
    lines.append(ava_line(42, "900003", VOTES[2], tag1=0))  # exact duplicate of 900003 (same votes)
    lines.append(ava_line(43, "900004", VOTES[2]))  # conflicting duplicate of 900004
    test_ids = ["900002", "900010", "123", "900099"]
    root = write_ava(tmp_path / "AVA", lines, test_ids, crlf=True,
                     categories={"animal_train": ["900001", "900005"], "animal_test": ["900002"], "portrait_train": ["900001"]})
    touch_images(read_ava(root))
    ds = open_dataset(f"ava:{root}", val_fraction=0.25, seed=3)

    assert ds.num_levels == 10 and ds.scale == (1.0, 10.0) and ds.name == "ava"
    by_id = {r.image_id: r for r in ds.records}
    assert len(by_id) == len(ds.records) == 39  # 40 - conflicting 900004
    assert "900099" not in by_id and "900004" not in by_id
    r1 = by_id["900001"]
    assert r1.path == root / "images" / "900001.jpg"
    assert r1.label.votes == VOTES[0] and r1.label.mean == pytest.approx(mean_of(VOTES[0]))
    assert r1.categories == ("tag:Landscape", "category:animal", "category:portrait")
    assert by_id["900002"].categories == ("tag:Animals", "tag:Black and White", "category:animal")
    assert by_id["900003"].categories == ()
    assert {r.image_id for r in ds.split("test")} == {"900002", "900010"}
    assert len(ds.split("val")) == round(0.25 * 37) and len(ds.split("train")) == 37 - len(ds.split("val"))
    notes = " | ".join(ds.notes)
    assert "1 rows with zero votes" in notes and "900099" in notes
    assert "kept once" in notes and "'900003'" in notes
    assert "conflicting" in notes and "'900004'" in notes
    assert "2 ids of generic_test.jpgl have no labelled row in AVA.txt" in notes  # 123 and the zero-vote 900099

    again = open_dataset(f"ava:{root}", val_fraction=0.25, seed=3)
    other = open_dataset(f"ava:{root}", val_fraction=0.25, seed=4)
    assert [r.split for r in again.records] == [r.split for r in ds.records]
    assert {r.image_id for r in other.split("val")} != {r.image_id for r in ds.split("val")}


def test_ava_malformed_rows_name_file_and_line(tmp_path):
    good = ava_line(1, "1", VOTES[0])
    root = write_ava(tmp_path / "a", [good, "2 2 1 2 3"], ["1"])
    with pytest.raises(DatasetError, match=r"AVA\.txt:2: expected 15"):
        read_ava(root)
    write(root / "AVA.txt", good + "\n" + ava_line(2, "2", ["x"] * 10) + "\n")
    with pytest.raises(DatasetError, match=r"AVA\.txt:2: vote counts"):
        read_ava(root)
    write(root / "AVA.txt", good + "\n" + ava_line(2, "2", [-1] + [3] * 9) + "\n")
    with pytest.raises(DatasetError, match=r"AVA\.txt:2: negative"):
        read_ava(root)
    (root / "aesthetics_image_lists" / "generic_test.jpgl").unlink()
    with pytest.raises(DatasetError, match="generic_test.jpgl: not found"):
        read_ava(root)
    with pytest.raises(DatasetError, match="no AVA.txt"):
        read_ava(tmp_path)


def test_tad66k_themes_image_folder_and_unicode(tmp_path):
    root = tmp_path / "TAD66K"
    write(root / "merge" / "train.csv", "image,score\ncity a.jpg,5.61\nportrait_d4.jpg,4.12\n\nanimal_07.jpg,6.87\nanimal_08.jpg,7.5\n", crlf=True, bom=True)
    write(root / "merge" / "test.csv", "image,score\nfood_77.jpg,3.95\nanimal_ü.jpg,6.02\n")
    write(root / "unmerge" / "train" / "animal.csv", "image,score\nanimal_07.jpg,6.87\nanimal_08.jpg,7.5\n")
    write(root / "unmerge" / "train" / "pets.csv", "image,score\nanimal_07.jpg,6.87\n")
    write(root / "unmerge" / "test" / "animal.csv", "image,score\nanimal_ü.jpg,6.02\n")
    (root / "imgs").mkdir()
    touch_images(read_tad66k(root))
    ds = open_dataset(f"tad66k:{root}", val_fraction=0.25)
    by_id = {r.image_id: r for r in ds.records}
    assert ds.num_levels is None and ds.scale == (1.0, 10.0)
    assert by_id["animal_07.jpg"].categories == ("theme:animal", "theme:pets")
    assert by_id["animal_ü.jpg"].split == "test" and by_id["animal_ü.jpg"].categories == ("theme:animal",)
    assert by_id["city a.jpg"].path == root / "imgs" / "city a.jpg" and by_id["city a.jpg"].label.score == 5.61
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [3, 1, 2]

    elsewhere = tmp_path / "tad images"
    ds2 = open_dataset(f"tad66k:{root}?images={elsewhere}")
    assert ds2.records[0].path == elsewhere / "city a.jpg"

    write(root / "merge" / "test.csv", "image,score\nfood_77.jpg,n/a\n")
    with pytest.raises(DatasetError, match=r"test\.csv:2: score 'n/a' is not a number"):
        read_tad66k(root)


def test_aadb_official_split(tmp_path):
    lists = tmp_path / "AADB" / "imgListFiles_label"
    write(lists / "imgListTrainRegression_score.txt", "farm1_1.jpg 0.6\nfarm1 2.jpg 0.35 \n\n", crlf=True)
    write(lists / "imgListValidationRegression_score.txt", "farm1_3.jpg 0.8\n")
    write(lists / "imgListTestNewRegression_score.txt", "farm1_4.jpg 0.45\n")
    write(lists / "imgListTrainRegression_ColorHarmony.txt", "farm1_1.jpg -0.2\n")
    ds = read_aadb(tmp_path / "AADB")
    assert [(r.image_id, r.split, r.label.score) for r in ds.records] == [
        ("farm1_1.jpg", "train", 0.6), ("farm1 2.jpg", "train", 0.35), ("farm1_3.jpg", "val", 0.8), ("farm1_4.jpg", "test", 0.45)]
    assert ds.scale == (0.0, 1.0)
    assert ds.records[1].path == tmp_path / "AADB" / "datasetImages_originalSize" / "farm1 2.jpg"
    write(lists / "imgListTestNewRegression_score.txt", "farm1_4.jpg 0.45\nfarm1_5.jpg\n")
    with pytest.raises(DatasetError, match=r"imgListTestNewRegression_score\.txt:2"):
        read_aadb(tmp_path / "AADB")


def test_koniq_votes_and_seeded_split(tmp_path):
    rows = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"']
    rng = np.random.default_rng(0)
    for i in range(50):
        votes = rng.integers(0, 40, size=5)
        rows.append(f'"{10000000 + i}.jpg",{",".join(map(str, votes))},{votes.sum()},3.0,0.7,50.0')
    rows.append('"zero.jpg",0,0,0,0,0,0,0,0,0')
    write(tmp_path / "koniq" / "koniq10k_scores_and_distributions.csv", "\n".join(rows) + "\n", crlf=True)
    touch_images(read_koniq(tmp_path / "koniq"))
    ds = open_dataset(f"koniq:{tmp_path / 'koniq'}", val_fraction=0.1, seed=1)
    assert ds.num_levels == 5 and ds.scale == (1.0, 5.0) and len(ds.records) == 50
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [36, 4, 10]
    r = ds.records[0]
    assert r.path == tmp_path / "koniq" / "1024x768" / "10000000.jpg" and len(r.label.votes) == 5
    assert 1.0 <= r.label.mean <= 5.0
    assert any("zero votes" in n for n in ds.notes)
    assert {x.image_id for x in read_koniq(tmp_path / "koniq", seed=2).split("test")} != {x.image_id for x in ds.split("test")}


def test_csv_scores_scale_split_and_categories(tmp_path):
    labels = write(tmp_path / "mine" / "labels.csv",
                   "image,score,split,category\nphotos/beach.jpg,7.5,train,landscape\nphotos/cät 1.jpg,6.0,TRAIN,animal;pet\n"
                   "photos/blurry.jpg,2.5,test,\n\nphotos/x.jpg,3,val,landscape\n", crlf=True, bom=True)
    ds = read_csv(labels)
    assert ds.scale == (2.5, 7.5) and ds.num_levels is None and ds.root == labels.parent
    by_id = {r.image_id: r for r in ds.records}
    assert by_id["photos/cät 1.jpg"].categories == ("category:animal", "category:pet")
    assert by_id["photos/cät 1.jpg"].path == labels.parent / "photos" / "cät 1.jpg"
    assert [r.split for r in ds.records] == ["train", "train", "test", "val"]
    assert read_csv(labels, scale="1,10").scale == (1.0, 10.0)
    assert open_dataset(f"csv:{labels}?scale=0,10").scale == (0.0, 10.0)
    with pytest.raises(DatasetError, match="outside the scale"):
        read_csv(labels, scale="3,10")


def test_csv_votes_and_seeded_split_without_split_column(tmp_path):
    header = "image," + ",".join(f"votes_{k}" for k in range(1, 6))
    rows = [f"img_{i}.jpg,{i % 3},{1 + i % 4},5,2,1" for i in range(40)]
    path = write(tmp_path / "votes.csv", header + "\n" + "\n".join(rows) + "\n")
    touch_images(read_csv(path))
    ds = open_dataset(f"csv:{path}", val_fraction=0.1)
    assert ds.num_levels == 5 and ds.scale == (1.0, 5.0)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [29, 3, 8]
    assert ds.records[0].label.votes == (0.0, 1.0, 5.0, 2.0, 1.0)


@pytest.mark.parametrize(
    "body, message",
    [
        ("image,score\na.jpg,7\nb.jpg,high\n", r"labels\.csv:3: score 'high' is not a number"),
        ("image,score\na.jpg,7\n,5\n", r"labels\.csv:3: missing image name"),
        ("image,score\na.jpg,7\nb.jpg,nan\n", r"labels\.csv:3: .*not a finite"),
        ("image,votes_1,votes_2\na.jpg,1,2\nb.jpg,-1,3\n", r"labels\.csv:3: negative vote"),
        ("image,votes_1,votes_2\na.jpg,1,2\nb.jpg,0,0\n", r"labels\.csv:3: all vote counts are zero"),
        ("image,score,split\na.jpg,7,train\nb.jpg,5,holdout\n", r"labels\.csv:3: split 'holdout'"),
        ("image,score\na.jpg,7\nb.jpg,5,extra\n", r"labels\.csv:3: 3 fields"),
        ("image,score\n../a.jpg,7\n", r"labels\.csv:2: image path"),
        ("image,rating\na.jpg,7\n", r"needs a 'score' column"),
        ("file,score\na.jpg,7\n", r"no 'image' column"),
        ("image,votes_1,votes_3\na.jpg,1,2\n", r"without gaps"),
        ("image,score\na.jpg,7\nb.jpg,7\n", r"cannot infer the scale"),
        ("", r"empty CSV"),
    ],
)
def test_csv_bad_rows_name_file_and_line(tmp_path, body, message):
    path = write(tmp_path / "labels.csv", body)
    with pytest.raises(DatasetError, match=message):
        read_csv(path)


def test_csv_duplicates_kept_once_or_dropped(tmp_path):
    path = write(tmp_path / "labels.csv", "image,score\na.jpg,7\nb.jpg,5\na.jpg,7\nb.jpg,6\nc.jpg,1\n")
    ds = read_csv(path, scale="1,10")
    assert [r.image_id for r in ds.records] == ["a.jpg", "c.jpg"]
    assert any("labels.csv:3, " in n and "labels.csv:5" in n and "'b.jpg'" in n for n in ds.notes)
    assert any("kept once" in n and "labels.csv:4" in n for n in ds.notes)


def test_folder_lists_images_recursively(tmp_path):
    for name in ("b.jpg", "A.PNG", "sub/ç 2.jpeg", "sub/deeper/x.webp", ".hidden.jpg", ".cache/y.jpg", "notes.txt"):
        p = tmp_path / "photos" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    ds = read_folder(tmp_path / "photos")
    assert [r.image_id for r in ds.records] == ["A.PNG", "b.jpg", "sub/ç 2.jpeg", "sub/deeper/x.webp"]
    assert all(r.split == "" and r.label is None for r in ds.records) and ds.scale is None
    assert ds.records[2].path == tmp_path / "photos" / "sub" / "ç 2.jpeg"
    with pytest.raises(DatasetError, match="not a folder"):
        read_folder(tmp_path / "photos" / "b.jpg")


def test_open_dataset_specs(tmp_path, monkeypatch):
    (tmp_path / "Photos").mkdir()
    (tmp_path / "Photos" / "a.jpg").write_bytes(b"")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert [r.image_id for r in open_dataset("folder:~/Photos").records] == ["a.jpg"]
    with pytest.raises(DatasetError, match="unknown format 'imagenet'; known formats: ava, tad66k, aadb, koniq, csv, folder"):
        open_dataset("imagenet:/data")
    with pytest.raises(DatasetError, match="expected FORMAT:PATH"):
        open_dataset(str(tmp_path))
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(f"ava:{tmp_path}/missing")
    with pytest.raises(DatasetError, match="unknown option 'scale=1,10'"):
        open_dataset("folder:~/Photos?scale=1,10")
