"""`iaa taste`: ratings in XMP -> a personal model through the stages of `iaa fit`; the simulated photographer."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from iaa_distill.cli import main
from iaa_distill.culling.xmp import write_rating
from iaa_distill.data.xmp_ratings import read_xmp_ratings
from iaa_distill.demo.photographer import CUTS, hidden_taste, rate_with_exiftool, stars
from iaa_distill.taste.agreement import agreement, pairwise_accuracy
from tests.conftest import write_jpegs
from tests.test_teachers import write_tiny_weights


def tiny_settings(weights: Path) -> list[str]:
    """`--set` items for a tiny random teacher and student: every stage runs in seconds."""
    items = ["features.teachers=[test_efficientnet]", f"features.weights={{test_efficientnet: {weights}}}",
             "features.num_workers=0", "features.device=cpu", "teacher.epochs=2", "teacher.hidden=[16, 8]",
             "teacher.candidates=[ridge:2]", "teacher.device=cpu", "student.backbone=test_efficientnet",
             "student.pretrained=false", "student.input_size=32", "student.train_resize=40", "student.epochs=1",
             "student.batch_size=4", "student.num_workers=0", "student.accelerator=cpu", "student.devices=1",
             "evaluation.num_workers=0", "evaluation.device=cpu"]
    return [x for item in items for x in ("--set", item)]


def test_pairwise_accuracy_counts_only_differently_rated_pairs():
    true = np.array([1, 1, 2, 3])
    assert pairwise_accuracy(true, np.array([0.0, 5.0, 1.0, 2.0])) == pytest.approx(3 / 5)  # photo 1 is put above photos 2 and 3
    assert pairwise_accuracy(true, -true) == 0.0
    found = agreement(true, true.astype(float), n_boot=50)
    assert found["pairs"] == 5 and found["pairwise_accuracy"]["value"] == 1.0
    assert found["srcc"]["ci_low"] <= found["srcc"]["value"] <= found["srcc"]["ci_high"]


def test_within_folder_agreement_counts_only_pairs_of_one_shoot():
    true, pred = np.array([1, 2, 4, 5]), np.array([2.0, 1.0, 9.0, 8.0])  # each shoot's order reversed, the shoots' kept
    found = agreement(true, pred, n_boot=20, folders=["a", "a", "b", "b"])
    assert found["pairwise_accuracy"]["value"] == pytest.approx(4 / 6)
    assert found["within_folder"] == {"pairwise_accuracy": 0.0, "pairs": 2}
    assert "within_folder" not in agreement(true, pred, n_boot=20, folders=["a"] * 4)


def test_the_label_only_baseline_is_trained_only_when_asked_for(tmp_path):
    from iaa_distill.recipe import student_runs
    from iaa_distill.taste.personal import taste_recipe

    assert list(student_runs(taste_recipe(str(tmp_path), tmp_path / "a"))) == ["student"]
    assert list(student_runs(taste_recipe(str(tmp_path), tmp_path / "b", compare=True))) == ["student", "baseline"]


def test_the_student_trains_at_its_backbones_own_input_size_as_the_first_teacher_sees_it(tmp_path):
    """224 px for lite0: at 128 px its frozen features could not take in the teacher's lead (docs/taste.md)."""
    from iaa_distill.student import StudentConfig
    from iaa_distill.taste.personal import taste_recipe

    recipe = taste_recipe(str(tmp_path), tmp_path / "out")
    assert recipe.student["backbone"] == recipe.features["teachers"][0]
    assert recipe.student["input_size"] == StudentConfig.for_backbone(recipe.student["backbone"]).input_size == 224


def test_too_few_ratings_is_refused_with_one_line(tmp_path, sample_photos, capsys):
    """A refused sidecar is one line naming it (before the refusal, which it may explain), never a traceback."""
    paths = write_jpegs(tmp_path / "lib", sample_photos, 12, size=48)
    for i, path in enumerate(paths[:5]):
        write_rating(path, 1 + i % 5)
    paths[6].with_suffix(".xmp").write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>')
    assert main(["taste", str(tmp_path / "lib"), "--out", str(tmp_path / "out")]) == 1
    out, error = capsys.readouterr()
    assert "5 rated photo(s), a personal model needs at least 20" in error and "Traceback" not in error
    assert [line for line in out.splitlines() if paths[6].with_suffix(".xmp").name in line][0].startswith("note: ")


@pytest.mark.slow  # two tiny runs of every stage: about a minute on a shared machine
def test_taste_trains_reports_agreement_and_reuses_the_features(tmp_path, sample_photos, capsys):
    paths = write_jpegs(tmp_path / "lib", sample_photos, 48, size=48)
    for i, path in enumerate(paths[:30]):
        write_rating(path, -1 if i % 6 == 0 else 1 + i % 5, "ext")
    weights = write_tiny_weights(tmp_path)
    args = ["taste", str(tmp_path / "lib"), "--out", str(tmp_path / "me"), "--no-progress", "--compare",
            *tiny_settings(weights)]
    assert main(args) == 0
    text = capsys.readouterr().out
    model = tmp_path / "me" / "student" / "model"
    assert f"Your model: {model}" in text and "pairs ordered as you did" in text
    assert f"--model {tmp_path / 'me' / 'teacher'}" in text
    assert "18 unrated photos as unlabelled data" in text
    assert "val = 0" not in text and "writing 0 of 0" not in text  # no val split: nothing said of one, none built
    kept = "recipe: the warm start (epoch 0, a linear probe on the frozen backbone) kept and no epoch trained"
    assert f"student {kept}" in text and f"baseline {kept}" in text  # each run's line names it
    # every rating that is not held out trains; too few unrated photos to hold any out: the warm start is kept
    counts = json.loads((tmp_path / "me" / "agreement.json").read_text())["counts"]
    student = json.loads((tmp_path / "me" / "student" / "metrics.json").read_text())
    teacher = json.loads((tmp_path / "me" / "teacher" / "metrics.json").read_text())
    assert counts["val"] == 0 and student["num_val"] == 0 and student["best_epoch"] == 0
    assert student["num_train"] == teacher["train_images"] == 30 - counts["test"]
    document = json.loads((tmp_path / "me" / "agreement.json").read_text())
    assert {"teacher", "student", "baseline"} <= set(document["models"])  # and the baseline's probe, when made
    assert (model / "model.safetensors").is_file()
    assert main(["score", str(paths[40]), "--model", str(model)]) == 0
    for path in paths[30:36]:  # more ratings: the features are kept, the rest reruns
        write_rating(path, 3, "ext")
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "[features] up to date" in text and "[teacher] settings or inputs changed" in text


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_simulated_photographer_rates_through_exiftool_sidecars(tmp_path, sample_photos):
    names = ["chelsea_000_colour_cast3.jpg", "retina_001_tilt3.jpg", "coffee_002_clean0.jpg", "hubble_003_blur1.jpg"]
    for name in names:
        write_jpegs(tmp_path, sample_photos, 1, size=32)[0].rename(tmp_path / name)
    written = rate_with_exiftool([tmp_path / n for n in names], seed=0)
    read = {r.path.name: int(r.label.score) or -1 for r in read_xmp_ratings(tmp_path).records}
    assert read == {p.name: r for p, r in written.items()}  # a reject reads back as the bottom of the scale
    assert hidden_taste(names[0]) > hidden_taste(names[2]) > hidden_taste(names[1])  # warm cat > coffee > tilted
    assert stars(names[0]) == 5 and stars(names[1]) == -1 and len(CUTS) == 5


def test_the_student_batch_shrinks_to_fit_a_few_dozen_ratings(tmp_path):
    """25 ratings leave 20 training photos: the default batch (16) + 8 would refuse them after the features."""
    from iaa_distill.recipe import Recipe
    from iaa_distill.taste.personal import batch_for_ratings, taste_recipe

    recipe = taste_recipe(str(tmp_path), tmp_path / "out")
    assert batch_for_ratings(recipe, 40) is recipe
    lines = []
    smaller = batch_for_ratings(recipe, 20, lines.append)
    assert smaller.student["batch_size"] == 12 and "batch 12 instead of 16" in lines[0]
    assert Recipe.load(tmp_path / "out" / "recipe.yaml").student["batch_size"] == 12
