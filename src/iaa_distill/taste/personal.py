"""`iaa taste`: a photographer's ratings -> a personal model, through the stages of `iaa fit`.

The ratings (`xmp:PHOTOS`, or any rated dataset spec such as `decisions:FILE`) become a recipe,
OUT/recipe.yaml, run by `run_recipe`: teacher features of every photo (rated and unrated), the teacher
head chosen by cross-validation on the rated train photos, the student distilled on rated and unrated
photos (with `compare`, the label-only baseline too), evaluation on the held-out ratings. Every rating that
is not held out trains: no val split is carved (`VAL_FRACTION` 0), because every choice has a signal without
one: the teacher head is chosen by cross-validation and fitted as its folds were, the student's epoch by its
agreement with the teacher on a held-out quarter of the unrated photos (`recipe_rule: teacher`), and a run
with nothing to choose on (the baseline; the student with under 80 unrated photos) keeps its closed-form warm
start (`training.student`). Agreement with those ratings (SRCC
and pairwise accuracy with bootstrap CIs) goes to OUT/agreement.json. The model is OUT/student/model, used
by `iaa cull --model` and `iaa score --model` as it is. A rerun with more ratings keeps the feature cache
(features depend on the images only) and reruns what the new labels change.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..artifacts import atomic_write_text
from ..errors import DatasetError
from ..features.settings import DEFAULT_TEACHERS
from ..messages import get_logger
from ..recipe import Recipe

_log = get_logger(__name__)

MIN_RATINGS = 20
AGREEMENT_FILE = "agreement.json"
VAL_FRACTION = 0.0  # every rating that is not held out trains (see the module doc)
TEACHER = {"epochs": 80, "batch_size": 32, "patience": 15, "hidden": [256, 128], "dropout": 0.2}
STUDENT = {"backbone": "tf_efficientnet_lite0", "input_size": 224, "epochs": 4, "batch_size": 16, "num_workers": 2,
           "warmup_epochs": 0.5, "patience": 10, "unlabeled_ratio": 3.0, "recipe_rule": "teacher",
           "agreement_patience": 2}


def ratings_spec(photos: str) -> str:
    """A folder of photos reads as `xmp:FOLDER`; a spec with a format (`decisions:FILE`) is kept."""
    fmt, sep, _ = photos.partition(":")
    return photos if sep and fmt.isalpha() and len(fmt) > 1 and not Path(photos).exists() else f"xmp:{photos}"


def taste_recipe(photos: str, out: Path, seed: int = 0, sets: Sequence[str] = (), compare: bool = False) -> Recipe:
    """The recipe of a personal model, written to OUT/recipe.yaml (`iaa fit --config` reruns it) and loaded
    back with `sets` (`SECTION.KEY=VALUE`) applied. compare: also the label-only baseline (and its
    frozen-feature probe), a comparison your model does not need, at about the cost of a second student."""
    recipe = Recipe(dataset=ratings_spec(photos), out=out, val_fraction=VAL_FRACTION, seed=seed, baseline=compare,
                    features={"teachers": list(DEFAULT_TEACHERS), "batch_size": 16, "num_workers": 2},
                    teacher=dict(TEACHER), student=dict(STUDENT),
                    evaluation={"split": "test", "batch_size": 32, "num_workers": 2, "min_category_images": 5})
    out.mkdir(parents=True, exist_ok=True)
    return Recipe.load(recipe.save(out / "recipe.yaml"), sets)


def require_ratings(recipe: Recipe, minimum: int = MIN_RATINGS,
                    log: Callable[[str], None] = _log.info) -> dict[str, int]:
    """Counts of rated (train/val/test) and unrated photos; DatasetError below `minimum` rated photos. Each note
    of the reading (a sidecar refused or unreadable, named; the split) is logged first, one line each."""
    dataset = recipe.open_dataset()
    for note in dataset.notes:
        log(f"note: {note}")
    counts = {split: len([r for r in dataset.split(split) if r.label is not None]) for split in ("train", "val", "test")}
    counts["unrated"] = sum(1 for r in dataset.records if r.label is None)
    rated = counts["train"] + counts["val"] + counts["test"]
    if rated < minimum:
        raise DatasetError(f"{recipe.dataset}: {rated} rated photo(s), a personal model needs at least {minimum}: "
                           "give stars (1-5) or rejects to more photos in your editor or the gallery, then rerun")
    return counts


def fit_taste(recipe: Recipe, progress: bool = True, log: Callable[[str], None] = _log.info,
              min_ratings: int = MIN_RATINGS) -> dict[str, Any]:
    """Run the recipe's stages; returns `run_recipe`'s result plus the counts, the agreement of each model with
    the held-out ratings (also in OUT/agreement.json) and the model folder."""
    from ..recipe import run_recipe

    counts = require_ratings(recipe, min_ratings, log)
    recipe = batch_for_ratings(recipe, counts["train"], log)
    val = f", val {counts['val']}" if counts["val"] else ""
    log(f"[ratings] {counts['train'] + counts['val'] + counts['test']} rated photos (train {counts['train']}{val}, "
        f"held out {counts['test']}), {counts['unrated']} unrated photos as unlabelled data")
    result = run_recipe(recipe, progress=progress, log=log)
    agreements = held_out_agreement(result["folders"]["eval"])
    atomic_write_text(recipe.out / AGREEMENT_FILE, json.dumps({"counts": counts, "models": agreements}, indent=2) + "\n")
    return {**result, "counts": counts, "agreement": agreements, "model": str(recipe.out / "student" / "model")}


def batch_for_ratings(recipe: Recipe, num_train: int, log: Callable[[str], None] = _log.info) -> Recipe:
    """The recipe with a student batch small enough for `num_train` rated training photos (the student needs
    one full batch plus `MIN_TRAIN_IMAGES`; with 20-40 ratings the default 16 is too many), saved to
    OUT/recipe.yaml; unchanged when the batch fits."""
    from dataclasses import replace

    from ..training.spine import MIN_TRAIN_IMAGES

    batch = int(recipe.student.get("batch_size", STUDENT["batch_size"]))
    fits = max(1, num_train - MIN_TRAIN_IMAGES)
    if batch <= fits:
        return recipe
    log(f"[ratings] {num_train} rated training photos: student batch {fits} instead of {batch}")
    smaller = replace(recipe, student={**recipe.student, "batch_size": fits})
    smaller.save(recipe.out / "recipe.yaml")
    return smaller


def held_out_agreement(eval_dirs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Agreement of every evaluated model with the held-out ratings, from its per_image.csv."""
    from ..evaluation.predictions import Predictions
    from ..evaluation.report import PER_IMAGE_NAME
    from .agreement import agreement

    found = {}
    for name, folder in eval_dirs.items():
        predictions = Predictions.from_csv(Path(folder) / PER_IMAGE_NAME)
        folders = [str(PurePosixPath(i).parent) for i in predictions.ids]  # ids are paths relative to PHOTOS
        found[name] = agreement(predictions.true_mean, predictions.pred_mean, folders=folders)
    return found


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What `iaa taste` says when it is done: agreement per model, where the model is and how to use it."""
    lines = [f"Agreement with your {result['counts']['test']} held-out ratings (95 % CI over photos):"]
    for name, found in result["agreement"].items():
        s, p = found["srcc"], found["pairwise_accuracy"]
        lines.append(f"  {name:<9} SRCC {s['value']:.3f} ({s['ci_low']:.3f}..{s['ci_high']:.3f})  pairs ordered as "
                     f"you did {p['value']:.1%} ({p['ci_low']:.1%}..{p['ci_high']:.1%}) of {found['pairs']}"
                     + _within_folder(found))
    model = result["model"]
    lines += [f"Your model: {model}", f"  iaa cull PHOTOS --model {model}", f"  iaa score PHOTOS --model {model}",
              f"Accuracy mode (every teacher per photo: slower, often closer to you, see its agreement above): "
              f"--model {result['folders']['teacher']}"]
    return lines


def _within_folder(found: dict[str, Any]) -> str:
    within = found.get("within_folder")
    return f"; within a folder {within['pairwise_accuracy']:.1%} of {within['pairs']}" if within else ""
