"""`iaa fit`: every stage of the method from one YAML recipe, each skipped when its outputs are up to date.

Stages and their folders under the recipe's `out`:
  views/             augmented views of the training images (`views:`, off by default; `auto`: without `unlabeled:`)
  features/          teacher MLSP features (resumable cache), unlabelled images (`unlabeled:`) and views included
  teacher/           stage-1 teacher head + distillation targets
  image_cache/       pre-resized training images, shared by the student and the baseline
  student/           stage-2 distilled student (`student/model` is the scoring model)
  baseline/          the same student trained on labels only (alpha = beta = 0)
  eval/{teacher,student,baseline}/   reports on the evaluation split
  comparison/        baseline vs distilled student (and teacher): bootstrap CIs, per category
  dropped.json       images left out of every stage after the features (missing or undecodable), and why
A stage is up to date when its folder holds a finished result made from the same settings and the
same upstream results (`stages.json` records a hash per stage); otherwise it runs (and the
resumable stages continue where an interrupted run stopped).
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .artifacts import atomic_write_text
from .data.records import Dataset
from .data.splits import DEFAULT_VAL_FRACTION
from .errors import IAAError
from .evaluation.settings import EvaluationSettings
from .features.settings import ExtractionSettings
from .messages import get_logger
from .settings import check_ranges, checked_values, fingerprint
from .storage import Reuse, reuse_decision
from .training.student_config import STUDENT_FIT_VERSION
from .training.teacher_config import TEACHER_FIT_VERSION

if TYPE_CHECKING:
    from .training.student_config import StudentTrainConfig
    from .training.teacher import TeacherTrainConfig

_log = get_logger(__name__)
STAGES_FILE = "stages.json"
DROPPED_FILE = "dropped.json"  # the images every stage after the features leaves out, and why
RECIPE_KEYS = ("dataset", "unlabeled", "views", "out", "val_fraction", "seed", "seeds", "features", "teacher",
               "student", "baseline", "evaluation")


@dataclass
class StageSettings:
    """A recipe's sections as typed settings: what each stage's key is made of."""

    features: ExtractionSettings
    teacher: TeacherTrainConfig
    student: StudentTrainConfig
    evaluation: EvaluationSettings


@dataclass
class Recipe:
    """A whole experiment: dataset, output folder and the settings of each stage."""

    dataset: str
    out: Path
    unlabeled: list[str] = field(default_factory=list)  # dataset specs of unlabelled images to distil on
    views: dict[str, Any] = field(default_factory=dict)  # ViewSettings fields: views of the training images
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # one student and baseline per seed (features, teacher shared)
    features: dict[str, Any] = field(default_factory=dict)  # ExtractionSettings fields
    teacher: dict[str, Any] = field(default_factory=dict)  # TeacherTrainConfig fields
    student: dict[str, Any] = field(default_factory=dict)  # StudentTrainConfig fields
    baseline: bool = True
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvaluationSettings fields

    @classmethod
    def load(cls, path: str | Path, sets: Sequence[str] = (), **overrides: Any) -> "Recipe":
        """The recipe at `path`; `overrides` replace top-level keys (None: kept), `sets` are `KEY=VALUE` or
        `SECTION.KEY=VALUE` items (VALUE read as YAML) such as `student.alpha=0.3`."""
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
        for item in sets:
            _apply_set(data, item)
        for key in ("dataset", "out"):
            if not data.get(key):
                raise IAAError(f"{path}: '{key}' is required (in the recipe or on the command line)")
        data["out"] = Path(str(data["out"])).expanduser()
        seeds = data.get("seeds") or []
        if not isinstance(seeds, list) or not all(isinstance(x, int) for x in seeds) or len(set(seeds)) < len(seeds):
            raise IAAError(f"{path}: 'seeds' is a list of different integers, e.g. [0, 1, 2]")
        data["seeds"] = seeds
        views = data.get("views")
        data["views"] = {} if views is None else views if isinstance(views, dict) else {"count": views}  # views: 4
        unlabeled = data.get("unlabeled") or []
        data["unlabeled"] = [unlabeled] if isinstance(unlabeled, str) else unlabeled
        if not isinstance(data["unlabeled"], list) or not all(isinstance(spec, str) for spec in data["unlabeled"]):
            raise IAAError(f"{path}: 'unlabeled' is a list of dataset specs such as folder:~/Photos")
        for section in SECTIONS:
            data[section] = data.get(section) or {}  # `student:` with nothing under it
        return cls(**checked_values(cls, data, f"{path}: "))

    def save(self, path: str | Path) -> Path:
        """Write the recipe as YAML that `load` (and `iaa fit --config PATH`) reads back; returns the path."""
        path = Path(path)
        document = json.loads(json.dumps(asdict(self), default=str))  # paths as text, tuples as lists
        atomic_write_text(path, yaml.safe_dump(document, sort_keys=False))
        return path

    def open_dataset(self) -> Dataset:
        """The recipe's dataset with its unlabelled images (split `unlabeled`) added."""
        from .data.registry import open_dataset
        from .data.unlabeled import with_unlabeled

        labelled = open_dataset(self.dataset, val_fraction=self.val_fraction, seed=self.seed)
        return with_unlabeled(labelled, self.unlabeled, seed=self.seed)

    def training_dataset(self) -> Dataset:
        """`open_dataset` plus the augmented views of the training images (`data.views`; made under OUT/views
        when missing): the images every stage of `run_recipe` sees."""
        from .data.views import ViewSettings, with_views

        views = _checked_fields(ViewSettings, self.views, "views")
        return with_views(self.open_dataset(), self.out / "views", views)


SECTIONS = ("views", "features", "teacher", "student", "evaluation")


def _apply_set(data: dict[str, Any], item: str) -> None:
    """One `--set KEY=VALUE` / `SECTION.KEY=VALUE` into the recipe's raw mapping."""
    key, eq, text = item.partition("=")
    section, dot, name = key.strip().rpartition(".")
    if not eq or not name or (dot and section not in SECTIONS) or (not dot and name not in RECIPE_KEYS):
        raise IAAError(f"--set {item!r}: expected SECTION.KEY=VALUE (sections: {', '.join(SECTIONS)}) or a recipe "
                       "key, e.g. student.alpha=0.3")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise IAAError(f"--set {item!r}: the value is not valid YAML") from None
    if dot:
        data[section] = {**(data.get(section) or {}), name: value}
    else:
        data[name] = value


MOVED = {"val_fraction": "the recipe's top level"}  # settings that left a section: where they are now


def _checked_fields(cls: type, values: dict[str, Any], stage: str) -> Any:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    for name in set(unknown) & set(MOVED):
        raise IAAError(f"recipe section '{stage}': '{name}' moved to {MOVED[name]}: write it there")
    if unknown:
        raise IAAError(f"recipe section '{stage}': unknown settings {unknown}")
    where = f"recipe section '{stage}': "
    return check_ranges(cls(**checked_values(cls, values, where)), where)


class StageRunner:
    """Runs stages in order, skipping those whose recorded hash matches, and times each one."""

    def __init__(self, out: Path, log: Callable[[str], None] | None = None):
        self.out = out
        self.log = log or _log.info
        self.path = out / STAGES_FILE
        self.done: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.timings: dict[str, float] = {}

    def run(self, name: str, key: str, folder: Path, action: Callable[[], Any]) -> str:
        """Run `action` unless stage `name` already finished with `key` (`storage.reuse_decision`; a stage whose
        folder was deleted runs again); returns the key for downstream hashes."""
        recorded = self.done.get(name)
        changes = None if recorded is None else [] if recorded == key else [f"stage key {recorded} -> {key}"]
        decision = reuse_decision(changes, folder.exists())
        if decision is Reuse.UP_TO_DATE:
            self.log(f"[{name}] up to date: {folder}")
            self.timings[name] = 0.0
            return key
        if decision is Reuse.CHANGED and folder.exists():
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


def stage_settings(recipe: Recipe, progress: bool = True) -> StageSettings:
    """Each section of `recipe` as its typed settings (IAAError naming an unknown setting)."""
    from .training.student_config import StudentTrainConfig
    from .training.teacher import TeacherTrainConfig

    return StageSettings(
        features=_checked_fields(ExtractionSettings, {"progress": progress, **recipe.features}, "features"),
        teacher=_checked_fields(TeacherTrainConfig, {"seed": recipe.seed, "progress": progress, **recipe.teacher},
                                "teacher"),
        student=_checked_fields(StudentTrainConfig, {"seed": recipe.seed, "progress": progress, **recipe.student},
                                "student"),
        evaluation=_checked_fields(EvaluationSettings, {"progress": progress, **recipe.evaluation}, "evaluation"),
    )


def student_runs(recipe: Recipe) -> dict[str, tuple[bool, int | None]]:
    """Folder name -> (is baseline, seed) of every stage-2 run: `student` and `baseline` (seed None: the
    student section's), or with a `seeds` list `student-seed0`, `baseline-seed0`, ... (teacher shared)."""
    suffixes = {s: f"-seed{s}" for s in recipe.seeds} if recipe.seeds else {None: ""}
    runs: dict[str, tuple[bool, int | None]] = {}
    for seed, suffix in suffixes.items():
        runs[f"student{suffix}"] = (False, seed)
        if recipe.baseline:
            runs[f"baseline{suffix}"] = (True, seed)
    return runs


def probe_runs(runs: dict[str, tuple[bool, int | None]]) -> dict[str, str]:
    """`probe` name -> its baseline run: every baseline's warm start is the frozen-feature linear probe on the
    student's backbone (`baseline/probe`), evaluated and compared next to it."""
    return {name.replace("baseline", "probe", 1): name for name, (baseline, _) in runs.items() if baseline}


def _seeded(config: StudentTrainConfig, seed: int | None) -> StudentTrainConfig:
    return config if seed is None else replace(config, seed=seed)


def stage_keys(dataset: Dataset, stages: StageSettings, runs: dict[str, tuple[bool, int | None]]) -> dict[str, str]:
    """The key of every stage: its identity settings and its inputs' keys (execution settings never enter).

    Features depend only on the images (ids and paths) and their identity settings, so new labels or
    another split (`val_fraction`, `seed`) keep them; every later stage also depends on the labels and splits
    (the student's key through the labels and splits, not through a setting of its own). The teacher's and
    the student's keys hold their code's fit version too (`TEACHER_FIT_VERSION`, `STUDENT_FIT_VERSION`), so a
    folder trained before the fit changed is trained again rather than silently kept.
    `runs`: the stage-2 runs (`student_runs`).
    """
    images = [(r.image_id, str(r.path)) for r in dataset.split(stages.features.split)]
    labels = [(r.image_id, r.split, r.label) for r in dataset.records]
    keys = {"features": fingerprint("features", images, stages.features)}
    keys["teacher"] = fingerprint(keys["features"], labels, stages.teacher, TEACHER_FIT_VERSION)
    for name, (baseline, seed) in runs.items():
        keys[name] = fingerprint(keys["teacher"], labels, _seeded(stages.student, seed), baseline, STUDENT_FIT_VERSION)
    for name in ("teacher", *runs):
        keys[f"eval-{name}"] = fingerprint(keys[name], labels, stages.evaluation)
    for probe, base in probe_runs(runs).items():
        keys[f"eval-{probe}"] = fingerprint(keys[base], labels, stages.evaluation, "probe")
    keys["compare"] = fingerprint([keys[f"eval-{name}"] for name in ("teacher", *runs, *probe_runs(runs))])
    return keys


def run_recipe(recipe: Recipe, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every stage of `recipe`; returns the folders, the timings and the comparison document."""
    from .data.check import require_usable
    from .evaluation import evaluate_model
    from .training.student import train_student

    out = recipe.out
    out.mkdir(parents=True, exist_ok=True)
    stages = stage_settings(recipe, progress)  # a setting out of range stops here, before the dataset is read
    dataset = recipe.training_dataset()
    # an empty split stops here, before hours of feature extraction (val may be empty when none is carved)
    require_usable(dataset, recipe.dataset, need_val=recipe.val_fraction > 0)
    if stages.evaluation.split == "val" and not dataset.split("val"):
        raise IAAError(f"{recipe.dataset}: evaluation.split is val, but the run trains without val images "
                       "(val_fraction 0): evaluate on test (evaluation.split=test), or carve a val split "
                       "(val_fraction > 0)")
    runs = student_runs(recipe)
    keys = stage_keys(dataset, stages, runs)
    runner = StageRunner(out, log)
    folders = {name: out / name for name in ("features", "teacher", "image_cache", *runs, "comparison")}
    dataset = run_teacher_stages(dataset, stages, keys, runner, out)
    for name, (baseline, seed) in runs.items():
        runner.run(name, keys[name], folders[name], lambda b=baseline, n=name, s=seed: train_student(
            # the baseline reads only the aesthetic-feature size from the targets: same architecture, no distillation
            dataset, folders[n], _seeded(stages.student, s), targets_dir=folders["teacher"], baseline=b,
            image_cache_dir=folders["image_cache"]))

    eval_dirs = {}
    models = {"teacher": folders["teacher"], **{n: folders[n] / "model" for n in runs}}
    models.update({p: folders[b] / "probe" for p, b in probe_runs(runs).items() if (folders[b] / "probe").is_dir()})
    for name, model_dir in models.items():
        eval_dirs[name] = out / "eval" / name
        features = folders["features"] if name == "teacher" else None  # students score the images themselves
        model_name = name.split("-seed")[0]  # every seed of a model carries its name: the groups across seeds
        runner.run(f"eval-{name}", keys[f"eval-{name}"], eval_dirs[name], lambda m=model_dir, d=eval_dirs[name], f=features, n=model_name: evaluate_model(
            m, dataset, stages.evaluation, out=d, features=f, name=n))
    comparison = None
    if recipe.baseline:
        compare = partial(_compare, runs, eval_dirs, folders["comparison"])
        runner.run("compare", keys["compare"], folders["comparison"], compare)
        comparison = compare(write=False)
    return {"folders": {**{k: str(v) for k, v in folders.items()}, "eval": {k: str(v) for k, v in eval_dirs.items()}},
            "timings": runner.timings, "comparison": comparison, "dataset": dataset,
            "dropped": {"count": len(dataset.dropped), "list": str(out / DROPPED_FILE)},
            "split": stages.evaluation.split}


def run_teacher_stages(dataset: Dataset, stages: StageSettings, keys: dict[str, str], runner: StageRunner,
                       out: Path) -> Dataset:
    """The `features` and `teacher` stages into OUT/features and OUT/teacher (each skipped when up to date);
    returns `dataset` without the images whose features could not be read (listed in OUT/dropped.json)."""
    from .features import extract_features
    from .training.teacher import train_teacher_head

    runner.run("features", keys["features"], out / "features",
               lambda: extract_features(dataset, out / "features", stages.features))
    readable = drop_unreadable(dataset, out / "features", out / DROPPED_FILE)
    runner.run("teacher", keys["teacher"], out / "teacher",
               lambda: train_teacher_head(readable, out / "features", out / "teacher", stages.teacher))
    return readable


def drop_unreadable(dataset: Dataset, features: Path, listing: Path) -> Dataset:
    """`dataset` without the images the feature cache could not read (missing or undecodable files), the one
    decision every later stage sees; the dropped ids and why are written to `listing` (JSON, id -> reason)."""
    from .features.cache import FeatureCache

    kept = dataset.without(FeatureCache.open(features).failed)
    atomic_write_text(listing, json.dumps(kept.dropped, indent=1, sort_keys=True) + "\n")
    return kept


def _compare(runs: dict[str, tuple[bool, int | None]], eval_dirs: dict[str, Path], out: Path,
             write: bool = True) -> dict[str, Any]:
    """Baseline vs student vs teacher: one seed with `compare_runs` (comparison.json), several with
    `compare_seeds` (seeds.json). write=False reads the finished document back."""
    from .evaluation import compare_runs
    from .evaluation.seeds import SEEDS_JSON, compare_seeds

    baselines = [eval_dirs[n] for n, (b, _) in runs.items() if b]
    students = [eval_dirs[n] for n, (b, _) in runs.items() if not b]
    probes = [eval_dirs[p] for p in probe_runs(runs) if p in eval_dirs]
    if len(students) > 1:
        if write:
            compare_seeds([baselines, students, [eval_dirs["teacher"]], *([probes] if probes else [])], out)
        return json.loads((out / SEEDS_JSON).read_text())
    if write:
        compare_runs([baselines[0], students[0], eval_dirs["teacher"], *probes[:1]], out)
    return json.loads((out / "comparison.json").read_text())
