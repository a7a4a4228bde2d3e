"""`iaa fit`: every stage of the method from one YAML recipe, each skipped when its outputs are up to date.

Stages and their folders under the recipe's `out`:
  features/          teacher MLSP features (resumable cache)
  teacher/           stage-1 teacher head + distillation targets
  image_cache/       pre-resized training images, shared by the student and the baseline
  student/           stage-2 distilled student (`student/model` is the scoring model)
  baseline/          the same student trained on labels only (alpha = beta = 0)
  eval/{teacher,student,baseline}/   reports on the evaluation split
  comparison/        baseline vs distilled student (and teacher): bootstrap CIs, per category
A stage is up to date when its folder holds a finished result made from the same settings and the
same upstream results (`stages.json` records a hash per stage); otherwise it runs (and the
resumable stages continue where an interrupted run stopped).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .artifacts import atomic_write_text
from .errors import IAAError

STAGES_FILE = "stages.json"
RECIPE_KEYS = ("dataset", "out", "val_fraction", "seed", "features", "teacher", "student", "baseline", "evaluation")


@dataclass
class Recipe:
    """A whole experiment: dataset, output folder and the settings of each stage."""

    dataset: str
    out: Path
    val_fraction: float = 0.05
    seed: int = 0
    features: dict[str, Any] = field(default_factory=dict)  # extract_features keyword arguments
    teacher: dict[str, Any] = field(default_factory=dict)  # TeacherTrainConfig fields
    student: dict[str, Any] = field(default_factory=dict)  # StudentTrainConfig fields
    baseline: bool = True
    evaluation: dict[str, Any] = field(default_factory=dict)  # evaluate_model keyword arguments (split, ...)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> "Recipe":
        path = Path(path).expanduser()
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise IAAError(f"{path}: recipe not found") from None
        except yaml.YAMLError as exc:
            raise IAAError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise IAAError(f"{path}: a recipe is a mapping of {', '.join(RECIPE_KEYS)}")
        unknown = sorted(set(data) - set(RECIPE_KEYS))
        if unknown:
            raise IAAError(f"{path}: unknown recipe keys {unknown} (known: {', '.join(RECIPE_KEYS)})")
        data.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("dataset", "out"):
            if not data.get(key):
                raise IAAError(f"{path}: '{key}' is required (in the recipe or on the command line)")
        data["out"] = Path(str(data["out"])).expanduser()
        return cls(**data)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checked_fields(cls: type, values: dict[str, Any], stage: str) -> Any:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise IAAError(f"recipe section '{stage}': unknown settings {unknown}")
    return cls(**values)


class StageRunner:
    """Runs stages in order, skipping those whose recorded hash matches, and times each one."""

    def __init__(self, out: Path, log: Callable[[str], None] = print):
        self.out = out
        self.log = log
        self.path = out / STAGES_FILE
        self.done: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.timings: dict[str, float] = {}

    def run(self, name: str, key: str, folder: Path, action: Callable[[], Any], fresh_on_change: bool = True) -> str:
        """Run `action` unless stage `name` already finished with `key`; returns the key for downstream hashes."""
        if self.done.get(name) == key and folder.exists():
            self.log(f"[{name}] up to date: {folder}")
            self.timings[name] = 0.0
            return key
        if fresh_on_change and name in self.done and self.done[name] != key and folder.exists():
            self.log(f"[{name}] settings or inputs changed: starting this stage afresh in {folder}")
            shutil.rmtree(folder)
        self.log(f"[{name}] running -> {folder}")
        start = time.perf_counter()
        action()
        self.timings[name] = time.perf_counter() - start
        self.log(f"[{name}] done in {self.timings[name]:.1f} s")
        self.done[name] = key
        atomic_write_text(self.path, json.dumps(self.done, indent=2) + "\n")
        return key


def run_recipe(recipe: Recipe, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage of `recipe`; returns the folders, the timings and the comparison document."""
    from .data.registry import open_dataset
    from .evaluation import compare_runs, evaluate_model
    from .features import extract_features
    from .training.student import train_student
    from .training.student_config import StudentTrainConfig
    from .training.teacher import TeacherTrainConfig, train_teacher_head

    out = recipe.out
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(recipe.dataset, val_fraction=recipe.val_fraction, seed=recipe.seed)
    teacher_config = _checked_fields(TeacherTrainConfig, {"seed": recipe.seed, "progress": progress, **recipe.teacher}, "teacher")
    student_config = _checked_fields(
        StudentTrainConfig, {"seed": recipe.seed, "val_fraction": recipe.val_fraction, "progress": progress, **recipe.student},
        "student")
    evaluation = {"split": "test", "progress": progress, **recipe.evaluation}
    runner = StageRunner(out, log)
    folders = {name: out / name for name in ("features", "teacher", "image_cache", "student", "baseline", "comparison")}
    data_key = _digest(dataset.fingerprint(), recipe.val_fraction, recipe.seed,
                       [(r.image_id, r.split, r.label) for r in dataset.records])

    features_key = runner.run("features", _digest(data_key, recipe.features), folders["features"], lambda: extract_features(
        dataset, folders["features"], progress=progress, **recipe.features))
    teacher_key = runner.run("teacher", _digest(features_key, recipe.teacher, recipe.seed), folders["teacher"],
                             lambda: train_teacher_head(dataset, folders["features"], folders["teacher"], teacher_config))
    runs = {"student": False, **({"baseline": True} if recipe.baseline else {})}
    keys = {}
    for name, baseline in runs.items():
        keys[name] = runner.run(name, _digest(teacher_key, recipe.student, recipe.seed, baseline), folders[name], lambda b=baseline, n=name: train_student(
            # the baseline reads only the aesthetic-feature size from the targets: same architecture, no distillation
            dataset, folders[n], student_config, targets_dir=folders["teacher"], baseline=b,
            image_cache_dir=folders["image_cache"]))

    eval_dirs = {}
    models = {"teacher": (folders["teacher"], teacher_key), **{n: (folders[n] / "model", keys[n]) for n in runs}}
    for name, (model_dir, key) in models.items():
        eval_dirs[name] = out / "eval" / name
        features = folders["features"] if name == "teacher" else None  # students score the images themselves
        runner.run(f"eval-{name}", _digest(key, evaluation), eval_dirs[name], lambda m=model_dir, d=eval_dirs[name], f=features, n=name: evaluate_model(
            m, dataset, out=d, features=f, name=n, **evaluation))
    comparison = None
    if recipe.baseline:
        order = [eval_dirs["baseline"], eval_dirs["student"], eval_dirs["teacher"]]
        runner.run("compare", _digest([runner.done[f"eval-{n}"] for n in models]), folders["comparison"],
                   lambda: compare_runs(order, folders["comparison"]))
        comparison = json.loads((folders["comparison"] / "comparison.json").read_text())
    return {"folders": {**{k: str(v) for k, v in folders.items()}, "eval": {k: str(v) for k, v in eval_dirs.items()}},
            "timings": runner.timings, "comparison": comparison, "dataset": dataset}
