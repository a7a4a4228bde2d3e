"""The small-data regime over seeds: the chosen teacher head against a CV-tuned ridge, then student vs baseline.

On the demo's synthetic-label photos and unlabelled photos (built, with their feature cache, unless
`--demo-dir` already holds them: an `iaa demo` folder is reused as it is), only a seeded subset of the
training split keeps its labels. For each seed the teacher head is chosen by cross-validation on that
subset and trained (`train_teacher_head`, early stopping on the val split); the paper's MLP alone and a
ridge regression on the same features, normalised as the teacher's linear head normalises them
(`fit_linear_probe`; penalty chosen by 5-fold CV on the subset, folds shuffled by the seed), are measured
beside it. The test split is read only to report; the table gives
mean ± sd of test SRCC over the seeds.

With `--students 0,1,2` the same subset is then run as a user with that many ratings would run it: a
labels file holding only the kept rows (plus val and test), the demo's unlabelled photos as `unlabeled:`,
the demo's settings and one student and baseline per seed, written as a recipe
(`iaa fit RECIPE` reruns or resumes it) and run by `run_recipe`; the comparison across seeds is printed.

With `--no-unlabeled` the students train on the labelled subset alone (the few-labels regime of a user
without unlabelled photos); `--views N` (and `--view-area A`, the least area share kept) distils them on N
augmented views of each kept training image instead (`data.views`).

    python benchmarks/small_data.py --demo-dir iaa-small-data --train-images 150 --seeds 0,1,2,3,4 --students 0,1,2
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iaa_distill.cli.types import seed_list
from iaa_distill.data.records import Dataset
from iaa_distill.demo.run import SYNTHETIC_WARNING, demo_photos, demo_recipe
from iaa_distill.errors import IAAError
from iaa_distill.evaluation.metrics import srcc
from iaa_distill.evaluation.student_report import student_report
from iaa_distill.features import FeatureCache, extract_features
from iaa_distill.features.cache import FEATURES_NAME, FeatureCacheManifest, create_cache, finalize_manifest
from iaa_distill.features.extract import dataset_record
from iaa_distill.training.head_candidates import level_widths
from iaa_distill.training.linear_probe import fit_linear_probe
from iaa_distill.recipe import Recipe, run_recipe, stage_settings
from iaa_distill.storage import RowWriter
from iaa_distill.training.teacher import (
    TeacherTrainConfig,
    labelled_rows,
    train_teacher_head,
)

MODELS = ("chosen teacher", "paper MLP teacher", "ridge, 5-fold CV penalty")


def labelled_subset(dataset: Dataset, count: int, seed: int) -> Dataset:
    """`dataset` with labels kept on `count` training images drawn by `seed` (val and test keep theirs)."""
    train = [r.image_id for r in dataset.split("train") if r.label is not None]
    if count > len(train):
        raise IAAError(f"--train-images {count}: the training split has only {len(train)} labelled images")
    kept = set(np.random.default_rng(seed).choice(train, size=count, replace=False).tolist())
    records = [r if r.split != "train" or r.image_id in kept else replace(r, label=None) for r in dataset.records]
    return replace(dataset, records=records)


def ridge_test_srcc(dataset: Dataset, cache: FeatureCache, seed: int) -> float:
    """Test SRCC of the linear probe (ridge on normalised features) predicting the mean score, penalty by 5-fold CV
    on train."""
    train, test = (labelled_rows(dataset, cache, s) for s in ("train", "test"))
    widths = level_widths(cache.manifest.teachers, cache.manifest.dim)
    model = fit_linear_probe(cache.features[train.rows], train.means, widths, cv_seed=seed)
    return srcc(test.means, model.predict(np.asarray(cache.features[test.rows], np.float64)))


def demo_data(folder: Path) -> tuple[Dataset, FeatureCache, TeacherTrainConfig]:
    """The full demo dataset with its unlabelled photos, as `iaa demo` lays them out under `folder` (built when
    missing), their feature cache (extracted when missing: features depend on images only) and the demo's
    teacher settings."""
    csv_path, unlabeled = demo_photos(folder, quick=False, seed=0)
    recipe = demo_recipe(folder, csv_path, quick=False, seed=0, unlabeled=unlabeled)
    dataset = recipe.open_dataset()
    cache_dir = recipe.out / "features"
    if not (cache_dir / "manifest.json").is_file() or not FeatureCache.open(cache_dir).complete:
        print(f"[features] extracting teacher features -> {cache_dir}", flush=True)
        extract_features(dataset, cache_dir, stage_settings(recipe, progress=False).features)
    cache = FeatureCache.open(cache_dir)
    cache.check_matches(dataset)
    return dataset, cache, TeacherTrainConfig(**{**recipe.teacher, "progress": False})


def measure(dataset: Dataset, cache: FeatureCache, out: Path, teacher: TeacherTrainConfig, seed: int
            ) -> dict[str, Any]:
    """One seed: the chosen teacher, the paper's MLP alone and the ridge baseline, with test SRCC each."""
    chosen = train_teacher_head(dataset, cache, out / f"chosen-seed{seed}", replace(teacher, seed=seed))
    paper = train_teacher_head(dataset, cache, out / f"mlp-seed{seed}",
                               replace(teacher, seed=seed, candidates=("mlp",)))
    return {"seed": seed, "choice": chosen["head"], "test_srcc": {
        MODELS[0]: chosen["test"]["srcc"], MODELS[1]: paper["test"]["srcc"],
        MODELS[2]: ridge_test_srcc(dataset, cache, seed)}}


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sd (ddof=1) of each model's test SRCC over the seeds."""
    values = {name: np.array([r["test_srcc"][name] for r in runs]) for name in MODELS}
    return {name: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            for name, v in values.items()}


def table(runs: list[dict[str, Any]], train_images: int, test_images: int) -> str:
    """The results as a Markdown table."""
    lines = [f"Test SRCC over seeds {', '.join(str(r['seed']) for r in runs)}: {train_images} labelled training "
             f"images, {test_images} test images (synthetic labels)", "",
             "| model | mean ± sd | per seed |", "|---|---|---|"]
    for name, stats in summary(runs).items():
        per_seed = ", ".join(f"{r['test_srcc'][name]:.3f}" for r in runs)
        lines.append(f"| {name} | {stats['mean']:.3f} ± {stats['sd']:.3f} | {per_seed} |")
    lines.append("")
    lines.append("Chosen heads: " + ", ".join(f"seed {r['seed']}: {r['choice']['chosen']}" for r in runs))
    return "\n".join(lines)


def subset_labels_file(folder: Path, dataset: Dataset, name: str) -> Path:
    """The demo's labels.csv with only the rows `dataset` keeps labelled: the file of a user with that many
    ratings (the held-back training images are simply absent)."""
    source = folder / "dataset" / "labels.csv"
    kept = {r.image_id for r in dataset.records if r.label is not None}
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, [row for row in reader if row["image"] in kept]
    if len(rows) != len(kept):
        raise IAAError(f"{source}: {len(kept) - len(rows)} kept image(s) have no row (not an `iaa demo` labels file?)")
    target = source.with_name(f"{name}.csv")
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


def student_recipe(folder: Path, labels: Path, out: Path, seeds: list[int], unlabeled: bool = True,
                   views: dict[str, Any] | None = None) -> Path:
    """The demo's settings on `labels` plus (`unlabeled`) its unlabelled photos (`demo_data` made them), one
    student and baseline per seed, `views` as the recipe's section (None: its default); written to
    OUT/recipe.yaml (`iaa fit` reruns or resumes it). Returns its path."""
    recipe = replace(demo_recipe(out, labels, quick=False, seed=0, unlabeled=folder / "unlabeled" if unlabeled else None),
                     out=out / "fit", seeds=seeds, views=views or {})
    return recipe.save(out / "recipe.yaml")


def seed_features(recipe: Recipe, cache: FeatureCache) -> None:
    """The recipe's feature cache filled with the demo cache's rows of its images (features depend on the
    images only), so `run_recipe` runs the three teachers only on the images the demo lacks (the views of the
    training images, `data.views`): complete without views. Nothing is done when the recipe's cache exists (a
    rerun resumes or checks it as usual)."""
    target = recipe.out / "features"
    if (target / "manifest.json").is_file():
        return
    dataset = recipe.training_dataset()
    split = stage_settings(recipe, progress=False).features.split
    ids = [r.image_id for r in dataset.split(split)]
    known = [row for row, image_id in enumerate(ids) if image_id in cache.index]
    manifest = FeatureCacheManifest.from_dict({**cache.manifest.to_dict(), "complete": False, "failed": {}})
    manifest.dataset = dataset_record(dataset, split, ids)
    create_cache(target, manifest, ids)
    with RowWriter(target, FEATURES_NAME) as writer:
        writer.write(known, np.asarray(cache.features[cache.rows_for([ids[row] for row in known])]), {})
    if len(known) == len(ids):
        finalize_manifest(target)


def subset_recipe(folder: Path, dataset: Dataset, cache: FeatureCache, out: Path, seeds: list[int],
                  unlabeled: bool = True, views: dict[str, Any] | None = None) -> Recipe:
    """The recipe of the labelled subset `dataset` in `out` (its labels file, `student_recipe`), written and read
    back, with its feature cache filled from the demo's `cache` (`seed_features`)."""
    labels = subset_labels_file(folder, dataset, out.name)
    recipe_path = student_recipe(folder, labels, out, seeds, unlabeled, views)
    print(f"[students] iaa fit --config {recipe_path}", flush=True)
    recipe = Recipe.load(recipe_path)
    seed_features(recipe, cache)
    return recipe


def subset_folder(demo_dir: Path, train_images: int, subset_seed: int, unlabeled: bool = True,
                  views: dict[str, Any] | None = None) -> Path:
    """DEMO_DIR/small-data-N-subsetS[-no-unlabeled][-views-...]: the folder of one labelled subset's runs."""
    return demo_dir / (f"small-data-{train_images}-subset{subset_seed}" + ("" if unlabeled else "-no-unlabeled")
                       + "".join(f"-views-{k}{v}" for k, v in (views or {}).items()))


def students(folder: Path, dataset: Dataset, cache: FeatureCache, out: Path, seeds: list[int],
             unlabeled: bool = True, views: dict[str, Any] | None = None) -> str:
    """Student, baseline and probe per seed on the labelled subset (+ unlabelled photos or views): the table of
    `benchmarks/students.py` (SRCC with CIs, EMD, predicted spread). The teacher features come from `cache`."""
    recipe = subset_recipe(folder, dataset, cache, out, seeds, unlabeled, views)
    result = run_recipe(recipe, progress=False)
    return student_report(recipe, result["folders"]["eval"], Path(result["folders"]["comparison"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("iaa-small-data"), help="demo dataset and feature cache")
    parser.add_argument("--train-images", type=int, default=150, help="labelled training images kept")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed that draws the labelled subset")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2,3,4", metavar="S,S,...",
                        help="comma-separated training seeds of the teacher heads")
    parser.add_argument("--students", type=seed_list, metavar="S,S,...",
                        help="also train a student and a baseline per seed on the subset (e.g. 0,1,2)")
    parser.add_argument("--no-unlabeled", dest="unlabeled", action="store_false",
                        help="students without the unlabelled photos (labels only, as a user without them)")
    parser.add_argument("--views", type=int, metavar="N",
                        help="augmented views per labelled training image (default: the recipe's, none)")
    parser.add_argument("--view-area", type=float, metavar="A", help="least area share a view keeps (views.min_area)")
    args = parser.parse_args(argv)
    views = {k: v for k, v in (("count", args.views), ("min_area", args.view_area)) if v is not None}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny heads: threads only wait on each other
    print(SYNTHETIC_WARNING, flush=True)
    try:
        full, cache, teacher = demo_data(args.demo_dir.expanduser().resolve())
        dataset = labelled_subset(full, args.train_images, args.subset_seed)
    except IAAError as error:
        print(f"small_data: error: {error}", file=sys.stderr)
        return 1
    out = subset_folder(args.demo_dir, args.train_images, args.subset_seed, args.unlabeled, views)
    runs = [measure(dataset, cache, out, teacher, seed) for seed in args.seeds]
    text = table(runs, args.train_images, len(dataset.split("test")))
    (out / "small_data.json").write_text(json.dumps({"runs": runs, "summary": summary(runs)}, indent=2) + "\n")
    (out / "small_data.md").write_text(text + "\n")
    print("\n" + text)
    if args.students:
        torch.set_num_threads(threads)  # the students' convolutions do use every core
        try:
            print("\n" + students(args.demo_dir.expanduser().resolve(), dataset, cache, out.resolve(),
                                   args.students, args.unlabeled, views))
        except IAAError as error:
            print(f"small_data: error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
