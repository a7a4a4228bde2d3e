"""Recipes (`iaa fit`): shipped configs are valid, stages are skipped only when up to date."""
from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest

from iaa_distill.errors import IAAError
from iaa_distill.recipe import (
    Recipe,
    StageRunner,
    _checked_fields,
    stage_keys,
    stage_settings,
    student_runs,
)
from iaa_distill.settings import execution_names

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    from iaa_distill.features import ExtractionSettings
    from iaa_distill.training.student_config import StudentTrainConfig
    from iaa_distill.training.teacher import TeacherTrainConfig

    recipe = Recipe.load(path)
    _checked_fields(TeacherTrainConfig, recipe.teacher, "teacher")
    _checked_fields(StudentTrainConfig, recipe.student, "student")
    assert set(recipe.features) <= {f.name for f in fields(ExtractionSettings)}
    assert recipe.evaluation.get("split", "test") in ("val", "test")
    stage_settings(recipe)  # every section names only known settings


def test_every_stage_takes_its_settings_object():
    """One calling convention: each stage function takes its section's settings object, and none of its
    parameters retypes a setting of that object."""
    from iaa_distill.evaluation import evaluate_model
    from iaa_distill.evaluation.settings import EvaluationSettings
    from iaa_distill.features import ExtractionSettings, extract_features
    from iaa_distill.training.student import train_student
    from iaa_distill.training.student_config import StudentTrainConfig
    from iaa_distill.training.teacher import TeacherTrainConfig, train_teacher_head

    for cls, function in ((ExtractionSettings, extract_features), (EvaluationSettings, evaluate_model),
                          (TeacherTrainConfig, train_teacher_head), (StudentTrainConfig, train_student)):
        parameters = inspect.signature(function).parameters
        typed = [name for name, p in parameters.items() if cls.__name__ in str(p.annotation)]
        assert len(typed) == 1, (function.__name__, cls.__name__)
        assert not {f.name for f in fields(cls)} & set(parameters), function.__name__


def _ratings(tmp_path: Path, count: int = 40) -> Path:
    rows = ["image,score"] + [f"img{i:02d}.jpg,{1 + i % 5}" for i in range(count)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    for i in range(count):  # found images: val is carved from them
        (tmp_path / f"img{i:02d}.jpg").touch()
    return tmp_path / "labels.csv"


def _keys(csv_path: Path, **recipe_fields) -> dict[str, str]:
    from iaa_distill.data.registry import open_dataset

    recipe = Recipe(dataset=f"csv:{csv_path}?scale=1,5", out=csv_path.parent / "run", **recipe_fields)
    dataset = open_dataset(recipe.dataset, val_fraction=recipe.val_fraction, seed=recipe.seed)
    return stage_keys(dataset, stage_settings(recipe), student_runs(recipe))


def test_execution_settings_leave_every_stage_up_to_date(tmp_path):
    from iaa_distill.features import ExtractionSettings
    from iaa_distill.evaluation.settings import EvaluationSettings
    from iaa_distill.training.student_config import StudentTrainConfig
    from iaa_distill.training.teacher import TeacherTrainConfig

    csv_path = _ratings(tmp_path)
    base = _keys(csv_path)
    changed = {"num_workers": 7, "batch_size": 3, "device": "cpu", "devices": 2, "progress": False}
    sections = {"features": ExtractionSettings, "teacher": TeacherTrainConfig, "student": StudentTrainConfig,
                "evaluation": EvaluationSettings}
    for section, cls in sections.items():
        execution = {name: changed[name] for name in execution_names(cls) if name in changed}
        assert _keys(csv_path, **{section: execution}) == base, section
    assert {"num_workers", "batch_size", "device"} <= execution_names(ExtractionSettings)
    assert {"num_workers", "batch_size", "device"} <= execution_names(EvaluationSettings)
    # identity settings do change the stage they configure and everything after it
    assert _keys(csv_path, features={"hflip": True})["features"] != base["features"]
    evaluated = _keys(csv_path, evaluation={"split": "val"})
    assert evaluated["teacher"] == base["teacher"] and evaluated["eval-student"] != base["eval-student"]


def test_a_new_split_keeps_the_features(tmp_path):
    csv_path = _ratings(tmp_path)
    base = _keys(csv_path)
    for other in ({"val_fraction": 0.2}, {"seed": 3}):
        keys = _keys(csv_path, **other)
        assert keys["features"] == base["features"], other
        assert keys["teacher"] != base["teacher"] and keys["student"] != base["student"], other


def test_recipe_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: csv:x.csv\nout: runs\nstudnet: {}\n")
    with pytest.raises(IAAError, match="unknown recipe keys.*studnet"):
        Recipe.load(bad)
    bad.write_text("out: runs\n")
    with pytest.raises(IAAError, match="'dataset' is required"):
        Recipe.load(bad)
    assert Recipe.load(bad, dataset="csv:x.csv").dataset == "csv:x.csv"
    with pytest.raises(IAAError, match="recipe section 'student': unknown settings"):
        from iaa_distill.training.student_config import StudentTrainConfig

        _checked_fields(StudentTrainConfig, {"epoch": 3}, "student")


def test_stage_runner_skips_only_up_to_date_stages(tmp_path):
    calls = []

    def make(name):
        def action():
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / "out.txt").write_text(str(len(calls)))
            calls.append(name)
        return action

    runner = StageRunner(tmp_path, log=lambda _: None)
    runner.run("a", "k1", tmp_path / "a", make("a"))
    assert calls == ["a"]
    again = StageRunner(tmp_path, log=lambda _: None)  # a new process reads stages.json
    again.run("a", "k1", tmp_path / "a", make("a"))
    assert calls == ["a"] and again.timings["a"] == 0.0
    again.run("a", "k2", tmp_path / "a", make("a"))  # settings changed: the stage starts afresh
    assert calls == ["a", "a"] and (tmp_path / "a" / "out.txt").read_text() == "1"
    runner = StageRunner(tmp_path, log=lambda _: None)
    import shutil

    shutil.rmtree(tmp_path / "a")  # outputs deleted by the user: rerun even though the key matches
    runner.run("a", "k2", tmp_path / "a", make("a"))
    assert calls == ["a", "a", "a"]


def test_public_api_names_resolve_lazily():
    import subprocess
    import sys

    import iaa_distill

    for name in iaa_distill.__all__:
        assert getattr(iaa_distill, name) is not None, name
    light = subprocess.run([sys.executable, "-c", "import sys, iaa_distill; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"


def test_seeds_give_one_student_and_baseline_per_seed_sharing_the_teacher(tmp_path):
    csv_path = _ratings(tmp_path)
    single, seeded = _keys(csv_path), _keys(csv_path, seeds=[0, 1, 2])
    runs = [k for k in seeded if k.startswith(("student", "baseline"))]
    assert runs == [f"{m}-seed{s}" for s in range(3) for m in ("student", "baseline")]
    assert seeded["features"] == single["features"] and seeded["teacher"] == single["teacher"]
    assert seeded["student-seed0"] == single["student"] != seeded["student-seed1"]
    assert seeded["baseline-seed2"] == _keys(csv_path, seed=0, student={"seed": 2})["baseline"]
    # every baseline's warm start (the frozen-feature linear probe) is evaluated and compared too
    assert [k for k in seeded if k.startswith("eval-probe")] == [f"eval-probe-seed{s}" for s in range(3)]
    assert "eval-probe" in single and single["eval-probe"] != single["eval-baseline"]
    (tmp_path / "r.yaml").write_text("dataset: csv:x.csv\nout: o\nseeds: [0, 0]\n")
    with pytest.raises(IAAError, match="'seeds' is a list of different integers"):
        Recipe.load(tmp_path / "r.yaml")
    assert Recipe.load(tmp_path / "r.yaml", seeds=[3, 4]).seeds == [3, 4]


def test_a_saved_recipe_loads_back_with_the_same_stages(tmp_path):
    from PIL import Image

    csv_path = _ratings(tmp_path)
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "unrated.jpg")
    recipe = Recipe(dataset=f"csv:{csv_path}?scale=1,5", out=tmp_path / "run", seeds=[0, 2], val_fraction=0.2,
                    unlabeled=[f"folder:{tmp_path / 'photos'}"], teacher={"hidden": (64, 32), "candidates": ("mlp", "ridge:2")},
                    student={"epochs": 3, "unlabeled_ratio": 2.0}, baseline=False)
    loaded = Recipe.load(recipe.save(tmp_path / "saved" / "recipe.yaml"))
    assert (loaded.dataset, loaded.out, loaded.seeds, loaded.val_fraction, loaded.unlabeled, loaded.baseline) == (
        recipe.dataset, recipe.out, recipe.seeds, recipe.val_fraction, recipe.unlabeled, recipe.baseline)
    dataset = recipe.open_dataset()
    assert stage_keys(dataset, stage_settings(loaded), student_runs(loaded)) == stage_keys(
        dataset, stage_settings(recipe), student_runs(recipe))


def test_settings_out_of_range_are_refused_at_parse_time_and_in_recipes(tmp_path, capsys):
    from iaa_distill.cli import main

    csv_path = _ratings(tmp_path)
    for option, value, expected in (("--batch-size", "0", "an integer >= 1"),
                                    ("--unlabeled-ratio", "-2", "a number >= 0"), ("--alpha", "-5", "a number >= 0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train-student", f"csv:{csv_path}", "--out", str(tmp_path / "s"), option, value])
        assert exit_info.value.code == 2
        assert f"argument {option}: '{value}' is not {expected}" in capsys.readouterr().err.splitlines()[-1]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"dataset: csv:{csv_path}\nout: {tmp_path / 'run'}\nstudent: {{alpha: -5}}\n")
    assert main(["fit", "--config", str(recipe)]) == 1
    assert capsys.readouterr().err.strip() == ("iaa: error: recipe section 'student': alpha must be a number >= 0, "
                                               "got -5")
    assert not (tmp_path / "run" / "features").exists()
    with pytest.raises(IAAError, match="recipe section 'teacher': cv_folds must be an integer >= 2, got 1"):
        stage_settings(Recipe(dataset="csv:x.csv", out=tmp_path, teacher={"cv_folds": 1}))


def test_set_overrides_a_recipe_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: csv:x.csv\nout: runs\nstudent: {alpha: 0.1, epochs: 3}\n")
    recipe = Recipe.load(path, ["student.alpha=0.3", "teacher.hidden=[16, 8]", "seed=4"])
    assert recipe.student == {"alpha": 0.3, "epochs": 3} and recipe.teacher == {"hidden": [16, 8]} and recipe.seed == 4
    assert stage_settings(recipe).student.alpha == 0.3
    for bad in ("student.alpha", "studnet.alpha=1", "nope=1"):
        with pytest.raises(IAAError, match="expected SECTION.KEY=VALUE"):
            Recipe.load(path, [bad])
    with pytest.raises(IAAError, match="alpha must be a number >= 0, got -1"):
        stage_settings(Recipe.load(path, ["student.alpha=-1"]))


def test_settings_of_the_wrong_type_are_refused_when_the_recipe_is_read(tmp_path, capsys):
    """A typo in `--set` or a recipe stops with one line before any stage runs (it used to start the student
    stage afresh, deleting the finished one, and then fail with a traceback); YAML's text `1e-4` is a number."""
    from iaa_distill.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(f"dataset: csv:x.csv\nout: {tmp_path / 'run'}\nstudent:\n")
    for item, message in (("student.alpha=abc", "recipe section 'student': alpha must be a number, got 'abc'"),
                          ("student.epochs=2.5", "recipe section 'student': epochs must be an integer, got 2.5"),
                          ("student.pretrained=maybe", "pretrained must be true or false, got 'maybe'"),
                          ("features.teachers=tf_efficientnet_lite0", "teachers must be a list of strings"),
                          ("evaluation.split=testing", "split must be one of 'test', 'val', 'train', 'all'"),
                          ("seed=abc", "r.yaml: seed must be an integer, got 'abc'"),
                          ("teacher=5", "r.yaml: teacher must be a mapping, got 5")):
        with pytest.raises(IAAError, match=message):
            stage_settings(Recipe.load(path, [item]))
    assert stage_settings(Recipe.load(path, ["student.backbone_lr=1e-4"])).student.backbone_lr == 1e-4
    assert stage_settings(Recipe.load(path)).student.alpha == 0.1  # `student:` with nothing under it
    assert main(["fit", "--config", str(path), "--set", "student.alpha=abc"]) == 1
    assert capsys.readouterr().err.strip() == "iaa: error: recipe section 'student': alpha must be a number, got 'abc'"


@pytest.mark.parametrize("version", ["TEACHER_FIT_VERSION", "STUDENT_FIT_VERSION"])
def test_a_changed_fit_trains_again_what_it_fits(tmp_path, monkeypatch, version):
    import iaa_distill.recipe as recipe_module

    csv_path = _ratings(tmp_path)
    before = _keys(csv_path)
    monkeypatch.setattr(recipe_module, version, getattr(recipe_module, version) + 1)
    after = _keys(csv_path)
    assert after["features"] == before["features"]
    assert (after["teacher"] != before["teacher"]) == (version == "TEACHER_FIT_VERSION")
    assert after["student"] != before["student"] and after["baseline"] != before["baseline"]
