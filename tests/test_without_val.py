"""Stages without a val split (`val_fraction` 0, as `iaa taste` runs them): the teacher head fitted as its CV
folds were, the student's epoch chosen by agreement with the teacher on held-out unlabelled photos, a run
with nothing to choose on keeping its closed-form warm start, and one-line refusals where nothing can choose."""
from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iaa_distill.data.check import check_dataset
from iaa_distill.data.records import Dataset
from iaa_distill.data.splits import SPLIT_FILE, carve_val, load_split
from iaa_distill.errors import IAAError
from iaa_distill.evaluation import EvaluationSettings, evaluate_model
from iaa_distill.student import Student
from iaa_distill.teacher_head import TeacherHead, run_head
from iaa_distill.training.head_candidates import fit_mlp_head
from iaa_distill.training.student import train_student
from iaa_distill.training.student_recipe import choice_lines
from iaa_distill.training.teacher import TeacherTrainConfig, train_teacher_head
from tests.test_head_selection import MLP, linear_data
from tests.test_student_training import assert_same_weights, crashed_then_resumed, tiny_config
from tests.test_teacher_head import synthetic_dataset, write_cache
from tests.test_unlabeled import mixed  # noqa: F401 (a fixture)


def without_val(dataset: Dataset) -> Dataset:
    """`dataset` with its val images moved into train (what `val_fraction` 0 gives a dataset without a val list)."""
    return replace(dataset, records=[replace(r, split="train") if r.split == "val" else r for r in dataset.records])


@pytest.fixture
def unsplit(tmp_path):
    features, quality = linear_data(60, seed=5)
    dataset = without_val(synthetic_dataset(quality))
    return dataset, write_cache(tmp_path / "cache", dataset, features), features


def test_teacher_mlp_without_val_is_trained_as_in_its_folds(unsplit, tmp_path):
    dataset, cache, _ = unsplit
    config = TeacherTrainConfig(**{**MLP, "hidden": (16, 8), "candidates": ("mlp", "mlp:8:0.1")})
    metrics = train_teacher_head(dataset, cache, tmp_path / "head", config)
    assert metrics["val"] is None and metrics["train_images"] == 51 and metrics["epochs_trained"] == MLP["epochs"]
    head = TeacherHead.from_pretrained(tmp_path / "head")
    train = [i for i, r in enumerate(dataset.records) if r.split == "train"]
    stored = np.asarray(cache.features[train], np.float32)
    labels, _ = head.config.space.encode_all([dataset.records[i].label for i in train], [str(i) for i in train])
    expected = fit_mlp_head(stored, labels, head.config, config)  # every training image, `epochs` epochs
    probe = np.asarray(cache.features[:], np.float32)
    np.testing.assert_allclose(run_head(head, probe)[0], run_head(expected, probe)[0], rtol=1e-5, atol=1e-6)


def test_teacher_without_val_refuses_an_mlp_no_cross_validation_chose(unsplit, tmp_path):
    dataset, cache, _ = unsplit
    with pytest.raises(IAAError, match="no val images, and the MLP head 'mlp' is not chosen by cross-validation"):
        train_teacher_head(dataset, cache, tmp_path / "head", TeacherTrainConfig(**{**MLP, "candidates": ("mlp",)}))
    ridge = train_teacher_head(dataset, cache, tmp_path / "ridge", TeacherTrainConfig(**{**MLP, "candidates": ("ridge:2",)}))
    assert ridge["val"] is None and ridge["test"]["srcc"] > 0.5


def test_student_without_val_keeps_the_epoch_that_agrees_best_with_the_teacher_and_resumes(mixed, tmp_path,
                                                                                          monkeypatch):
    from iaa_distill.training import student_recipe

    monkeypatch.setattr(student_recipe, "MIN_HOLDOUT", 2)  # 20 unlabelled photos: 5 held out
    dataset, targets_dir, cache_root = mixed
    dataset = without_val(dataset)
    config = tiny_config(epochs=3, deterministic=True, unlabeled_ratio=1.0, recipe_rule="teacher")
    whole = train_student(dataset, tmp_path / "whole", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    assert (whole["num_train"], whole["num_val"], whole["recipe"]["held_out"]) == (36, 0, 5)
    agreement = [h["teacher_srcc"] for h in whole["history"]]
    assert len(agreement) == 4 and not any("val_srcc" in h for h in whole["history"])
    assert whole["best_epoch"] == int(np.argmax(agreement)) and whole["best_val_srcc"] is None
    lines = choice_lines(whole)  # the kept epoch and its agreement, no val SRCC and no share of the teacher on val
    assert len(lines) == 1 and "val SRCC" not in lines[0] and "None" not in lines[0]
    assert lines[0].startswith(f"student recipe: {whole['recipe']['chosen']}, epoch {whole['best_epoch']} kept "
                               "(agreement with the teacher on the held-out unlabelled photos per recipe: probe ")
    resumed = crashed_then_resumed(lambda out, callbacks: train_student(
        dataset, out, config, targets_dir=targets_dir, image_cache_dir=cache_root, callbacks=callbacks),
        tmp_path / "resumed")
    assert [h["teacher_srcc"] for h in resumed["history"]] == agreement
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")


def test_baseline_without_val_keeps_its_warm_start_and_nothing_else_is_refused(mixed, tmp_path, caplog):
    dataset, targets_dir, cache_root = mixed
    dataset = without_val(dataset)
    caplog.set_level(logging.INFO, logger="iaa_distill")
    baseline = train_student(dataset, tmp_path / "baseline", tiny_config(epochs=2), targets_dir=targets_dir,
                             baseline=True, image_cache_dir=cache_root)
    assert [h["epoch"] for h in baseline["history"]] == [0] and baseline["best_epoch"] == 0
    assert [p.name for p in cache_root.iterdir() if "-val-" in p.name] == []  # no empty val image cache is built
    said = ["baseline recipe: the warm start (epoch 0, a linear probe on the frozen backbone) kept and no epoch "
            "trained: no val images and no held-out unlabelled photos to choose on"]  # no share of the teacher on val
    assert choice_lines(baseline) == said and said[0] in caplog.messages  # what the run logs
    model_dir = tmp_path / "baseline" / "model"
    assert Student.from_pretrained(model_dir).config.extra["split"] == {"val_images": 0}  # what its config records
    copied = tmp_path / "copied"  # the model folder copied without its split.json: `iaa eval` carves 5 % as val
    copied.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(model_dir / name, copied / name)
    with pytest.raises(IAAError, match=r"copied: trained without val images \(val_fraction 0\)"):
        evaluate_model(copied, carve_val(dataset), EvaluationSettings(split="val"))
    model = load_file(str(tmp_path / "baseline" / "model" / "model.safetensors"))
    probe = load_file(str(tmp_path / "baseline" / "probe" / "model.safetensors"))
    assert all(torch.equal(model[k], probe[k]) for k in model)  # the frozen-feature linear probe itself
    with pytest.raises(IAAError, match="0 labelled validation images.*needs warm_start on"):
        train_student(dataset, tmp_path / "cold", tiny_config(warm_start=False), targets_dir=targets_dir,
                      baseline=True, image_cache_dir=cache_root)


def test_an_empty_val_split_is_usable_only_when_none_is_carved(tmp_path):
    from tests.test_readers import touch_images

    _, quality = linear_data(20)
    dataset = without_val(synthetic_dataset(quality))
    dataset = replace(dataset, root=tmp_path, records=[replace(r, path=tmp_path / r.path) for r in dataset.records])
    touch_images(dataset)
    assert not check_dataset(dataset).usable and "split 'val'" in check_dataset(dataset).reasons[0]
    assert check_dataset(dataset, need_val=False).usable
    unsplit = carve_val(dataset, val_fraction=0.0)  # nothing carved, nothing noted ("val = 0 of 20"), but recorded
    assert (unsplit.records, unsplit.notes, unsplit.val_carved) == (dataset.records, dataset.notes, (0.0, 0))


def test_evaluating_the_val_split_of_a_model_trained_without_val_is_refused_in_one_line(unsplit, tmp_path):
    dataset, cache, _ = unsplit
    train_teacher_head(dataset, cache, tmp_path / "head", TeacherTrainConfig(**{**MLP, "candidates": ("ridge:2",)}))
    with pytest.raises(IAAError, match=f"^{re.escape(str(tmp_path / 'head'))}: trained without val images "
                                       r"\(val_fraction 0\), .*evaluate on test \(--split test\), or retrain with "
                                       "--val-fraction > 0$"):
        evaluate_model(tmp_path / "head", dataset, EvaluationSettings(split="val"), features=cache.directory)
    assert evaluate_model(tmp_path / "head", dataset, EvaluationSettings(split="test"), features=cache.directory)["n"]


def test_a_model_folder_without_its_split_json_is_evaluated_on_the_split_its_config_records(unsplit, tmp_path):
    from tests.test_readers import touch_images

    dataset, cache, _ = unsplit
    dataset = replace(dataset, root=tmp_path, records=[replace(r, path=tmp_path / r.path) for r in dataset.records])
    touch_images(dataset)  # val is carved from the found train images
    ridge = TeacherTrainConfig(**{**MLP, "candidates": ("ridge:2",)})
    settings = EvaluationSettings(split="val")
    # trained without val (val_fraction 0): the val split `iaa eval` carves by default is refused
    train_teacher_head(carve_val(dataset, 0.0), cache, tmp_path / "none", ridge)
    (tmp_path / "none" / SPLIT_FILE).unlink()
    with pytest.raises(IAAError, match=r"none: trained without val images \(val_fraction 0\), .*\(--split test\)"):
        evaluate_model(tmp_path / "none", carve_val(dataset), settings, features=cache.directory)
    # val carved with val_fraction 0.2, seed 3: evaluated on those images (carved again), saying so in one line
    train_teacher_head(carve_val(dataset, 0.2, seed=3), cache, tmp_path / "head", ridge)
    trained = load_split(tmp_path / "head")["val"]
    (tmp_path / "head" / SPLIT_FILE).unlink()
    document = evaluate_model(tmp_path / "head", carve_val(dataset), settings, out=tmp_path / "eval",
                              features=cache.directory)
    with open(tmp_path / "eval" / "per_image.csv") as rows:
        assert sorted(row["id"] for row in csv.DictReader(rows)) == sorted(trained)
    assert document["notes"] == [f"no split.json with the model: val carved as in its training (val_fraction 0.2, "
                                 f"seed 3), {len(trained)} images"]
    same = evaluate_model(tmp_path / "head", carve_val(dataset, 0.2, seed=3), settings, features=cache.directory)
    assert (same["n"], same["notes"]) == (len(trained), [])  # the dataset as trained: nothing assumed
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    del config["extra"]  # a folder saved before the record: the dataset's val split as given
    (tmp_path / "head" / "config.json").write_text(json.dumps(config))
    older = evaluate_model(tmp_path / "head", carve_val(dataset), settings, features=cache.directory)
    assert (older["n"], older["notes"]) == (len(carve_val(dataset).split("val")), [])


def test_fit_evaluating_on_val_without_val_images_stops_before_the_features(tmp_path, capsys):
    from iaa_distill.cli import main

    rows = ["image,score,split"] + [f"img{i:02d}.jpg,{1 + i % 5},{'test' if i % 5 == 0 else 'train'}" for i in range(40)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    for i in range(40):
        (tmp_path / f"img{i:02d}.jpg").touch()
    (tmp_path / "recipe.yaml").write_text(f"dataset: csv:{tmp_path / 'labels.csv'}?scale=1,5\nout: {tmp_path / 'run'}\n")
    assert main(["fit", "--config", str(tmp_path / "recipe.yaml"), "--val-fraction", "0",
                 "--set", "evaluation.split=val"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("iaa: error: ") and len(error.splitlines()) == 1
    assert "evaluation.split is val, but the run trains without val images (val_fraction 0)" in error
    assert not (tmp_path / "run" / "features").exists()


def test_choice_lines_give_the_kept_epoch_and_the_share_of_the_teacher_only_on_val_images():
    recipe = {"chosen": "partial", "scores": {"probe": 0.8, "partial": 0.85},
              "selected_on": "best epoch by SRCC on the val split (40 images), epoch 0 (the warm-started probe) included"}
    validated = {"recipe": recipe, "best_val_srcc": 0.85, "teacher_val_srcc": 0.9, "best_epoch": 3}
    assert choice_lines(validated) == [
        "student recipe: partial, epoch 3 kept (val SRCC per recipe: probe 0.800, partial 0.850; best epoch by SRCC on "
        "the val split (40 images), epoch 0 (the warm-started probe) included)",
        "the student keeps 94 % of the teacher on val (SRCC 0.850 vs 0.900)"]
    agreed = {"recipe": {**recipe, "scores": {}, "teacher_scores": {"probe": 0.9}}, "best_val_srcc": None,
              "teacher_val_srcc": None, "best_epoch": 0}
    assert choice_lines(agreed) == ["student recipe: partial, epoch 0 kept (agreement with the teacher on the held-out "
                                    f"unlabelled photos per recipe: probe 0.900; {recipe['selected_on']})"]
    baseline = {**validated, "baseline": True, "teacher_val_srcc": None}  # a label-only run: no teacher rows
    assert choice_lines(baseline) == [choice_lines(validated)[0].replace("student recipe:", "baseline recipe:", 1)]
