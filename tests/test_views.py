"""Augmented views of the training images (`data.views`): seeded, atomic, reused, off beside unlabelled photos,
part of the caches' keys, and grouped with their source wherever rows are held out."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from iaa_distill.data.records import ImageRecord
from iaa_distill.data.unlabeled import UNLABELED_SPLIT, with_unlabeled
from iaa_distill.data.views import AUTO_VIEWS, ViewSettings, source_groups, view_id, view_source, with_views
from iaa_distill.errors import IAAError
from iaa_distill.recipe import Recipe, stage_keys, stage_settings, student_runs
from iaa_distill.training.student_recipe import HOLDOUT_SHARE, hold_out
from iaa_distill.training.warm_start import _ridge
from tests.conftest import write_jpegs
from tests.test_student_training import make_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory, sample_photos):
    """The toy dataset of the student tests: 28 labelled train images (64x48), 8 val, 4 test."""
    return make_dataset(tmp_path_factory.mktemp("views"), sample_photos)


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_views_are_seeded_crops_and_flips_written_once_under_the_run(toy, tmp_path):
    settings = ViewSettings(count=2, min_area=0.5)
    dataset = with_views(toy, tmp_path / "a", settings)
    views = dataset.split(UNLABELED_SPLIT)
    train = [r for r in toy.split("train")]
    assert len(views) == 2 * len(train) and len(dataset.records) == len(toy.records) + len(views)
    assert [r.image_id for r in views[:2]] == [view_id(0, train[0].image_id), view_id(1, train[0].image_id)]
    assert all(r.label is None and view_source(r.image_id) == s.image_id for r, s in
               zip(views, [s for s in train for _ in range(2)]))
    assert all(r.path.parent.parent == tmp_path / "a" for r in views)  # never beside the user's photos
    first = _files(tmp_path / "a")
    assert len(first) == len(views) and not any(p.name.startswith(".") for p in first)
    sizes = {Image.open(r.path).size for r in views}
    assert all(w <= 64 and h <= 48 and w * h >= 0.5 * 64 * 48 * 0.9 for w, h in sizes) and len(sizes) > 1
    again = with_views(toy, tmp_path / "b", settings)  # another folder, the same bytes: seeded per image and view
    assert _files(tmp_path / "b") == first
    mtimes = [r.path.stat().st_mtime_ns for r in views]
    assert with_views(toy, tmp_path / "a", settings).records == dataset.records  # reused, not written again
    assert [r.path.stat().st_mtime_ns for r in views] == mtimes
    other = with_views(toy, tmp_path / "a", replace(settings, seed=1)).split(UNLABELED_SPLIT)
    assert other[0].path.read_bytes() != views[0].path.read_bytes()
    assert [r.path.name for r in again.split(UNLABELED_SPLIT)] == [r.path.name for r in views]


def test_an_interrupted_write_leaves_no_view_behind(toy, tmp_path, monkeypatch):
    def torn_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"\xff\xd8 half a jpeg")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", torn_save)
    dataset = with_views(toy, tmp_path, ViewSettings(count=1))
    assert dataset.split(UNLABELED_SPLIT) == [] and not _files(tmp_path)  # no torn file, no temp file
    assert sum("no views of unreadable" in note for note in dataset.notes) == len(toy.split("train"))
    monkeypatch.undo()
    assert len(with_views(toy, tmp_path, ViewSettings(count=1)).split(UNLABELED_SPLIT)) == len(toy.split("train"))


def test_auto_makes_views_only_without_unlabelled_photos(toy, tmp_path, sample_photos):
    assert with_views(toy, tmp_path / "v", ViewSettings()) is toy  # off by default (it did not help on validation)
    auto = ViewSettings(count="auto")
    assert len(with_views(toy, tmp_path / "v", auto).split(UNLABELED_SPLIT)) == AUTO_VIEWS * 28
    write_jpegs(tmp_path / "photos", sample_photos, 3, size=64, seed=5)
    mixed = with_unlabeled(toy, [f"folder:{tmp_path / 'photos'}"])
    assert with_views(mixed, tmp_path / "w", auto) is mixed  # `iaa demo` and runs with photos: unchanged
    assert not (tmp_path / "w").exists()
    assert len(with_views(mixed, tmp_path / "w", ViewSettings(count=1)).split(UNLABELED_SPLIT)) == 3 + 28
    assert with_views(toy, tmp_path / "z", ViewSettings(count=0)) is toy
    with pytest.raises(IAAError, match="count must be 'auto' or an integer"):
        with_views(toy, tmp_path / "z", ViewSettings(count="many"))


def test_the_demo_recipe_gets_no_views_and_a_recipe_without_photos_does(tmp_path):
    from iaa_distill.demo.run import demo_recipe
    from iaa_distill.demo.synthetic import build_synthetic_dataset

    csv_path = build_synthetic_dataset(tmp_path / "dataset", images_per_photo=2, seed=0)
    write_jpegs(tmp_path / "unlabeled", {"a": np.full((60, 80, 3), 90, np.uint8)}, 2, size=64)
    with_photos = replace(demo_recipe(tmp_path, csv_path, quick=True, seed=0, unlabeled=tmp_path / "unlabeled"),
                          views={"count": "auto"})
    assert not [r for r in with_photos.training_dataset().records if r.image_id.startswith("views/")]
    alone = replace(with_photos, unlabeled=[], out=tmp_path / "alone")
    views = [r for r in alone.training_dataset().records if r.image_id.startswith("views/")]
    assert len(views) == AUTO_VIEWS * len(alone.open_dataset().split("train"))
    assert all((tmp_path / "alone" / "views") in r.path.parents for r in views)


def test_view_settings_enter_the_feature_key_through_the_view_paths(tmp_path):
    from iaa_distill.demo.synthetic import build_synthetic_dataset

    csv_path = build_synthetic_dataset(tmp_path / "dataset", images_per_photo=2, seed=0)

    def features_key(**views):
        recipe = Recipe(dataset=f"csv:{csv_path}", out=tmp_path / "run", views=views)
        return stage_keys(recipe.training_dataset(), stage_settings(recipe, False), student_runs(recipe))["features"]

    keys = [features_key(count=2), features_key(count=2, min_area=0.8), features_key(count=2, seed=1),
            features_key(count=3), features_key(count=0)]
    assert len(set(keys)) == len(keys)
    assert features_key(count=2) == keys[0] and features_key(count="auto") == features_key(count=AUTO_VIEWS)
    assert Recipe.load(Recipe(dataset="csv:x", out=tmp_path, views={"count": 3}).save(tmp_path / "r.yaml"),
                       ["views.min_area=0.7"]).views == {"count": 3, "min_area": 0.7}
    (tmp_path / "s.yaml").write_text("dataset: csv:x\nout: o\nviews: 5\n")
    assert Recipe.load(tmp_path / "s.yaml").views == {"count": 5}


def _records(sources: int, views: int) -> list[ImageRecord]:
    return [ImageRecord(view_id(k, f"img{i}") if views else f"unlabeled/0/img{i}", None, "toy", UNLABELED_SPLIT)
            for i in range(sources) for k in range(max(views, 1))]


def test_the_teacher_rule_holds_out_every_view_of_an_image_together():
    kept, held = hold_out(_records(40, 4), seed=3)
    held_sources = {view_source(r.image_id) for r in held}
    assert len(held_sources) == round(40 * HOLDOUT_SHARE) and len(held) == 4 * len(held_sources)
    assert not held_sources & {view_source(r.image_id) for r in kept}
    photos = _records(100, 0)  # photos without views: the same draw as before views existed
    drawn = set(np.random.default_rng(3).choice(100, size=25, replace=False).tolist())
    assert hold_out(photos, seed=3)[1] == [r for i, r in enumerate(photos) if i in drawn]


def test_the_warm_starts_penalty_is_chosen_over_source_images_when_views_share_one():
    rng = np.random.default_rng(0)
    sources, copies, dim = 30, 5, 20
    base = rng.standard_normal((sources, dim))
    x = np.repeat(base, copies, axis=0) + 0.01 * rng.standard_normal((sources * copies, dim))
    y = np.repeat(rng.standard_normal((sources, 2)), copies, axis=0)  # noise: nothing to learn across images
    ids = [view_id(k, f"img{i}") for i in range(sources) for k in range(copies)]
    groups = source_groups(ids)
    assert len(set(groups.tolist())) == sources and source_groups(["a", "b"]).tolist() == [0, 1]
    loo = _ridge(x, y)[2]
    grouped = _ridge(x, y, None, groups)[2]
    assert grouped > 100 * loo  # leave-one-out leaks between siblings and fits the noise; grouped CV does not
    assert _ridge(x, y, None, np.arange(len(x)))[2] == loo  # no shared source: leave-one-out as before


def test_a_corrupt_or_missing_training_image_gets_a_note_and_the_others_their_views(toy, tmp_path):
    train = toy.split("train")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    broken = {train[0].image_id: corrupt, train[1].image_id: tmp_path / "missing.jpg"}
    dataset = replace(toy, records=[replace(r, path=broken.get(r.image_id, r.path)) for r in toy.records])
    result = with_views(dataset, tmp_path / "views", ViewSettings(count=1))
    views = result.split(UNLABELED_SPLIT)
    assert sorted(view_source(r.image_id) for r in views) == sorted(r.image_id for r in train[2:])
    unreadable = [n for n in result.notes if "no views of unreadable" in n]
    assert len(unreadable) == 2 and any(str(corrupt) in n for n in unreadable)
    assert any("missing.jpg" in n for n in unreadable)
