"""The small-data measurement script (benchmarks/small_data.py) on a tiny synthetic feature cache."""
import numpy as np
import pytest

from benchmarks.small_data import MODELS, labelled_subset, measure, ridge_test_srcc, summary, table
from iaa_distill.errors import IAAError
from iaa_distill.training.teacher import TeacherTrainConfig
from tests.test_teacher_head import FAST, synthetic_dataset, synthetic_features, write_cache


@pytest.fixture()
def small(tmp_path):
    features, quality = synthetic_features(200, seed=7)
    dataset = synthetic_dataset(quality)
    return dataset, write_cache(tmp_path / "cache", dataset, features)


def test_subset_keeps_labels_on_drawn_training_images_only(small):
    dataset, _ = small
    subset = labelled_subset(dataset, 50, seed=3)
    kept = [r.image_id for r in subset.split("train") if r.label is not None]
    assert len(kept) == 50 and kept != [r.image_id for r in labelled_subset(dataset, 50, seed=4).split("train")
                                        if r.label is not None]
    assert subset.fingerprint() == dataset.fingerprint()  # same images: the feature cache still matches
    for split in ("val", "test"):
        assert [r.label for r in subset.split(split)] == [r.label for r in dataset.split(split)]
    with pytest.raises(IAAError, match="only 140"):
        labelled_subset(dataset, 500, seed=0)


def test_ridge_baseline_learns_the_score(small):
    dataset, cache = small
    assert ridge_test_srcc(labelled_subset(dataset, 60, seed=0), cache, seed=0) > 0.7


@pytest.mark.slow
def test_measure_over_seeds(small, tmp_path):
    dataset, cache = small
    subset = labelled_subset(dataset, 60, seed=0)
    config = TeacherTrainConfig(**{**FAST, "candidates": ("mlp", "ridge:2"), "cv_folds": 3})
    runs = [measure(subset, cache, tmp_path / "runs", config, seed) for seed in (0, 1)]
    assert all(r["choice"]["cv_images"] == 60 for r in runs)
    stats = summary(runs)
    assert set(stats) == set(MODELS) and all(np.isfinite(s["mean"]) and s["sd"] >= 0 for s in stats.values())
    assert stats[MODELS[0]]["mean"] > 0.6
    assert "| chosen teacher |" in table(runs, 60, 30)


def test_students_run_on_a_labels_file_holding_only_the_subset(tmp_path):
    from benchmarks.small_data import student_recipe, subset_labels_file
    from iaa_distill.data import open_dataset
    from iaa_distill.demo.synthetic import build_synthetic_dataset
    from iaa_distill.recipe import Recipe

    build_synthetic_dataset(tmp_path / "dataset", images_per_photo=3, seed=0)
    (tmp_path / "unlabeled").mkdir()  # present: the recipe uses it as it is
    full = open_dataset(f"csv:{tmp_path / 'dataset' / 'labels.csv'}")
    subset = labelled_subset(full, 5, seed=1)
    labels = subset_labels_file(tmp_path, subset, "few")
    reread = open_dataset(f"csv:{labels}")
    kept = {r.image_id for r in subset.split("train") if r.label is not None}
    assert {r.image_id for r in reread.split("train")} == kept
    for split in ("val", "test"):
        assert [(r.image_id, r.label) for r in reread.split(split)] == [(r.image_id, r.label) for r in full.split(split)]
    (tmp_path / "dataset" / "labels.csv").write_text("image,score\n")  # not the file the dataset came from
    with pytest.raises(IAAError, match="have no row"):
        subset_labels_file(tmp_path, subset, "few")
    recipe = Recipe.load(student_recipe(tmp_path, labels, tmp_path / "few", [0, 1]))
    assert recipe.seeds == [0, 1] and recipe.unlabeled == [f"folder:{tmp_path / 'unlabeled'}"]
    assert recipe.dataset == f"csv:{labels}" and recipe.out == tmp_path / "few" / "fit"


def test_seeded_feature_cache_holds_the_demo_rows_of_the_recipes_images(tmp_path):
    from benchmarks.small_data import seed_features, student_recipe, subset_labels_file
    from iaa_distill.data import open_dataset
    from iaa_distill.demo.synthetic import build_synthetic_dataset
    from iaa_distill.features import FeatureCache
    from iaa_distill.recipe import Recipe

    build_synthetic_dataset(tmp_path / "dataset", images_per_photo=3, seed=0)
    full = open_dataset(f"csv:{tmp_path / 'dataset' / 'labels.csv'}")
    features = np.random.default_rng(0).normal(size=(len(full.records), 16)).astype(np.float16)
    demo = write_cache(tmp_path / "demo-features", full, features)
    subset = labelled_subset(full, 5, seed=1)
    recipe = Recipe.load(student_recipe(tmp_path, subset_labels_file(tmp_path, subset, "few"), tmp_path / "few", [0],
                                          unlabeled=False, views={"count": "auto"}))
    seed_features(recipe, demo)
    seeded = FeatureCache.open(recipe.out / "features")
    images = recipe.training_dataset()  # without unlabelled photos: the labelled images and their views
    ids = [r.image_id for r in images.records]
    labelled = [i for i in ids if not i.startswith("views/")]
    assert len(ids) > len(labelled) and seeded.ids == ids and len(labelled) < len(full.records)
    assert not seeded.complete and set(seeded.valid_ids()) == set(labelled)  # the views are left to the teachers
    assert seeded.manifest.dataset["fingerprint"] == images.fingerprint()
    assert np.array_equal(np.asarray(seeded.features[seeded.rows_for(labelled)]),
                          np.asarray(demo.features[demo.rows_for(labelled)]))
    assert seeded.manifest.teachers == demo.manifest.teachers
    no_views = Recipe.load(student_recipe(tmp_path, subset_labels_file(tmp_path, subset, "few"), tmp_path / "none",
                                          [0], unlabeled=False, views={"count": 0}))
    seed_features(no_views, demo)
    seeded = FeatureCache.open(no_views.out / "features")
    assert seeded.complete and seeded.ids == [r.image_id for r in no_views.open_dataset().records]
