"""Distillation on unlabelled images: the dataset helper, mixed batches, masked GT loss, bit-identical resume."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from iaa_distill.data.unlabeled import UNLABELED_SPLIT, with_unlabeled
from iaa_distill.errors import DatasetError
from iaa_distill.losses import label_loss
from iaa_distill.training import datamodule as dm
from iaa_distill.training import student as student_module
from iaa_distill.training.student import train_student
from tests.conftest import write_jpegs
from tests.test_student_training import (
    assert_same_weights,
    crashed_then_resumed,
    make_dataset,
    make_targets,
    tiny_config,
)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, sample_photos):
    """The toy dataset (28 train / 8 val / 4 test) plus 20 unlabelled photos, and targets covering all."""
    root = tmp_path_factory.mktemp("mixed")
    labelled = make_dataset(root, sample_photos)
    write_jpegs(root / "photos", sample_photos, 20, size=64, seed=9)
    dataset = with_unlabeled(labelled, [f"folder:{root / 'photos'}"])
    return dataset, make_targets(dataset, root / "teacher"), root / "cache"


def test_with_unlabeled_prefixes_ids_and_skips_labelled_files(mixed, tmp_path):
    dataset, _, _ = mixed
    extra = dataset.split(UNLABELED_SPLIT)
    assert len(extra) == 20 and len(dataset.records) == 60
    assert all(r.label is None and r.image_id.startswith("unlabeled/0/") for r in extra)
    assert len({r.image_id for r in dataset.records}) == 60
    # A folder holding the labelled images themselves adds nothing: it is refused, naming the spec.
    with pytest.raises(DatasetError, match="no images besides the labelled ones"):
        with_unlabeled(dataset, [f"folder:{dataset.root / 'images'}"])
    assert with_unlabeled(dataset, []) is dataset


def test_mixed_batches_keep_the_labelled_batches_and_add_seeded_unlabelled_ones():
    labelled = dm.AugmentationSampler(20, 40, 32, seed=3)
    baseline = list(labelled)
    batches = dm.MixedBatches(dm.AugmentationSampler(20, 40, 32, seed=3), dm.AugmentationSampler(7, 40, 32, seed=4),
                              batch_size=8, unlabeled_ratio=0.75, offset=20)  # 6 per batch
    batches.set_epoch(0)
    first = list(batches)
    assert len(first) == len(batches) == 2
    assert [item for batch in first for item in batch[:8]] == baseline[:16]
    unlabelled = [item[0] for batch in first for item in batch[8:]]
    assert len(unlabelled) == 12 and all(20 <= i < 27 for i in unlabelled)
    assert set(unlabelled) == set(range(20, 27))  # every unlabelled image before any repeats
    assert list(batches) == first
    batches.set_epoch(1)
    assert list(batches) != first


def test_gt_loss_sees_only_labelled_rows_and_the_baseline_no_unlabelled(mixed, tmp_path, monkeypatch):
    dataset, targets_dir, cache_root = mixed
    seen = []

    def recording_label_loss(raw, target, *args):
        seen.append((raw.shape[0], target.shape[0]))
        return label_loss(raw, target, *args)

    monkeypatch.setattr(student_module, "label_loss", recording_label_loss)
    metrics = train_student(dataset, tmp_path / "run", tiny_config(epochs=1, unlabeled_ratio=0.5),
                            targets_dir=targets_dir, image_cache_dir=cache_root)
    monkeypatch.undo()
    assert metrics["num_unlabeled"] == 20 and metrics["num_train"] == 28
    # the warm start's epoch-0 validation (all 8 val images) comes first, then the training steps
    assert seen[0] == (8, 8)
    train_calls = seen[1:1 + 28 // 8]
    assert train_calls == [(8, 8)] * 3
    baseline = train_student(dataset, tmp_path / "baseline", tiny_config(epochs=1), targets_dir=targets_dir,
                             baseline=True, image_cache_dir=cache_root)
    assert baseline["num_unlabeled"] == 0


def test_unlabelled_run_resumes_bit_identical(mixed, tmp_path):
    dataset, targets_dir, cache_root = mixed
    config = tiny_config(epochs=3, deterministic=True, unlabeled_ratio=1.0)
    whole = train_student(dataset, tmp_path / "whole", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    resumed = crashed_then_resumed(lambda out, callbacks: train_student(
        dataset, out, config, targets_dir=targets_dir, image_cache_dir=cache_root, callbacks=callbacks),
        tmp_path / "resumed")
    assert resumed["best_val_srcc"] == whole["best_val_srcc"]
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")


def test_teacher_rule_chooses_on_held_out_unlabelled_photos_and_resumes_bit_identical(mixed, tmp_path,
                                                                                        monkeypatch):
    from iaa_distill.training import student_recipe

    monkeypatch.setattr(student_recipe, "MIN_HOLDOUT", 2)  # the fixture has 20 unlabelled photos: 5 held out
    dataset, targets_dir, cache_root = mixed
    config = tiny_config(epochs=3, deterministic=True, unlabeled_ratio=1.0, recipe_rule="teacher")
    whole = train_student(dataset, tmp_path / "whole", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    assert whole["num_unlabeled"] == 15 and whole["recipe"]["held_out"] == 5
    agreement = [h["teacher_srcc"] for h in whole["history"]]
    assert len(agreement) == 4 and whole["best_epoch"] == int(np.argmax(agreement))  # first of ties, as recorded
    assert "held-out unlabelled photos" in whole["recipe"]["selected_on"]
    resumed = crashed_then_resumed(lambda out, callbacks: train_student(
        dataset, out, config, targets_dir=targets_dir, image_cache_dir=cache_root, callbacks=callbacks),
        tmp_path / "resumed")
    assert [h["teacher_srcc"] for h in resumed["history"]] == agreement
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
    # the label-only baseline never sees the teacher: it chooses on val labels and holds nothing out
    baseline = train_student(dataset, tmp_path / "baseline", tiny_config(epochs=1, recipe_rule="teacher"),
                             targets_dir=targets_dir, baseline=True, image_cache_dir=cache_root)
    assert "teacher_srcc" not in baseline["history"][0] and "held_out" not in baseline["recipe"]
    # agreement_patience 1: the run ends at the first epoch that agrees less with the teacher than the kept one
    stopped = train_student(dataset, tmp_path / "patience", replace(config, epochs=8, agreement_patience=1),
                            targets_dir=targets_dir, image_cache_dir=cache_root)
    seen = [h["teacher_srcc"] for h in stopped["history"]]
    assert len(seen) < 9 and seen[-1] <= max(seen[:-1])  # it stopped before its 8 epochs, on an epoch that lost
    assert all(seen[i] > max(seen[:i]) for i in range(1, len(seen) - 1))  # and not before


def test_recipe_reads_unlabeled_specs(tmp_path):
    from iaa_distill.errors import IAAError
    from iaa_distill.recipe import Recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("dataset: csv:labels.csv\nout: run\nunlabeled: folder:~/Photos\n")
    assert Recipe.load(path).unlabeled == ["folder:~/Photos"]
    path.write_text("dataset: csv:labels.csv\nout: run\nunlabeled: [{folder: x}]\n")
    with pytest.raises(IAAError, match="'unlabeled' is a list of dataset specs"):
        Recipe.load(path)
