"""`iaa fit` on real-world datasets: missing and undecodable images are dropped once, for every stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iaa_distill.cli import main
from iaa_distill.data import open_dataset
from iaa_distill.training.student import train_student
from iaa_distill.training.student_config import StudentTrainConfig
from iaa_distill.recipe import Recipe
from tests.conftest import write_jpegs
from tests.test_teachers import write_tiny_weights

COUNT = 48


def _tiny_recipe(path: Path, dataset: str, out: Path, weights: Path, **extra) -> Path:
    """A recipe with a tiny random teacher and student: every stage runs in seconds."""
    recipe = Recipe(
        dataset=dataset, out=out,
        features={"teachers": ["test_efficientnet"], "weights": {"test_efficientnet": str(weights)},
                  "batch_size": 8, "num_workers": 0, "device": "cpu"},
        teacher={"epochs": 2, "batch_size": 8, "hidden": (16, 8), "candidates": ["mlp"], "device": "cpu"},
        student={"backbone": "test_efficientnet", "pretrained": False, "input_size": 32, "train_resize": 40,
                 "epochs": 1, "batch_size": 4, "num_workers": 0, "warmup_epochs": 0.5, "accelerator": "cpu",
                 "devices": 1},
        evaluation={"batch_size": 8, "num_workers": 0, "device": "cpu"}, **extra)
    recipe.save(path)
    return path


def _break(paths: list[Path], missing: list[int], broken: list[int]) -> None:
    for i in missing:
        paths[i].unlink()
    for i in broken:
        paths[i].write_bytes(b"\xff\xd8 not really a jpeg")


def _write_ava(root: Path, sample_photos) -> list[Path]:
    paths = write_jpegs(root / "jpegs", sample_photos, COUNT, size=48)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines, ids = [], []
    for i, path in enumerate(paths):
        image_id = str(800000 + i)
        ids.append(image_id)
        path.rename(root / "images" / f"{image_id}.jpg")
        votes = " ".join(str(v) for v in rng.integers(1, 20, 10))
        lines.append(f"{i + 1} {image_id} {votes} 0 0 1")
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    (root / "aesthetics_image_lists").mkdir()
    (root / "aesthetics_image_lists" / "generic_test.jpgl").write_text("\n".join(ids[-12:]) + "\n")
    return [root / "images" / f"{i}.jpg" for i in ids]


def _dropped(out: Path) -> dict[str, str]:
    return json.loads((out / "dropped.json").read_text())


@pytest.mark.slow
def test_fit_on_an_ava_layout_with_missing_and_broken_files(tmp_path, sample_photos, capsys):
    paths = _write_ava(tmp_path / "AVA", sample_photos)
    _break(paths, missing=[0, 5, 40], broken=[3, 41])  # train and test images alike
    weights = write_tiny_weights(tmp_path)
    recipe = _tiny_recipe(tmp_path / "r.yaml", f"ava:{tmp_path / 'AVA'}", tmp_path / "run", weights,
                          val_fraction=0.2)
    assert main(["fit", "--config", str(recipe), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "run"
    assert (out / "comparison" / "comparison.json").is_file()
    dropped = _dropped(out)
    assert set(dropped) == {"800000", "800005", "800040", "800003", "800041"}
    assert f"5 images dropped (missing or undecodable), listed in {out / 'dropped.json'}" in printed
    # every model was evaluated on the same test images: the 12 listed minus the two dropped
    for name in ("teacher", "student", "baseline"):
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        assert metrics["n"] == 10, name
        # the summary gives every model's headline figures and where its report is
        assert (f"  {name:<16} SRCC {metrics['overall']['srcc']:.3f}  PLCC {metrics['overall']['plcc']:.3f}  "
                f"(10 images; {out / 'eval' / name / 'report.md'})") in printed
    assert "Models on the test split:" in printed and "Teacher head: mlp (the only candidate)" in printed
    assert f"Comparison: {out / 'comparison' / 'comparison.md'}" in printed


@pytest.mark.slow
def test_fit_on_a_csv_with_missing_and_broken_files(tmp_path, sample_photos, capsys):
    paths = write_jpegs(tmp_path / "data" / "images", sample_photos, COUNT, size=48)
    rows = ["image,score,split"] + [f"images/{p.name},{1 + i % 5},{'test' if i >= 36 else 'train'}"
                                    for i, p in enumerate(paths)]
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    _break(paths, missing=[1, 2], broken=[7])
    weights = write_tiny_weights(tmp_path)
    recipe = _tiny_recipe(tmp_path / "r.yaml", f"csv:{tmp_path / 'data' / 'labels.csv'}?scale=1,5",
                          tmp_path / "run", weights, val_fraction=0.2)
    assert main(["fit", "--config", str(recipe), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert set(_dropped(tmp_path / "run")) == {"images/00001.jpg", "images/00002.jpg", "images/00007.jpg"}
    assert "3 images dropped" in printed
    # a rerun finds every stage up to date and drops the same images
    assert main(["fit", "--config", str(recipe), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert "3 images dropped" in again and again.count("up to date") >= 7


@pytest.mark.slow
def test_stage_by_stage_commands_drop_the_same_images(tmp_path, sample_photos, capsys):
    paths = write_jpegs(tmp_path / "data" / "images", sample_photos, COUNT, size=48)
    rows = ["image,score,split"] + [f"images/{p.name},{1 + i % 5},{('train', 'val', 'test')[i % 3]}"
                                    for i, p in enumerate(paths)]
    spec = f"csv:{tmp_path / 'data' / 'labels.csv'}?scale=1,5"
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    _break(paths, missing=[0, 1], broken=[3])  # two train images, one val image
    weights = write_tiny_weights(tmp_path)
    assert main(["features", spec, "--teachers", "test_efficientnet", "--weights", f"test_efficientnet={weights}",
                 "--out", str(tmp_path / "features"), "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
    assert main(["train-teacher", spec, "--features", str(tmp_path / "features"), "--out", str(tmp_path / "teacher"),
                 "--epochs", "1", "--batch-size", "8", "--hidden", "16,8", "--candidates", "mlp", "--device", "cpu",
                 "--no-progress"]) == 0
    # the student stage, as `iaa train-student --targets` runs it (a tiny random backbone: no --no-pretrained option)
    config = StudentTrainConfig(backbone="test_efficientnet", pretrained=False, input_size=32, train_resize=40,
                                epochs=1, batch_size=4, num_workers=0, accelerator="cpu", devices=1, progress=False)
    metrics = train_student(open_dataset(spec), tmp_path / "student", config, targets_dir=tmp_path / "teacher",
                            image_cache_dir=tmp_path / "cache")
    assert (metrics["num_train"], metrics["num_val"]) == (14, 15) and metrics["excluded_images"] == []
