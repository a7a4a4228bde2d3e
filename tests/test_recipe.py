"""Recipes (`iaa fit`): shipped configs are valid, stages are skipped only when up to date."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from iaa_distill.errors import IAAError
from iaa_distill.recipe import Recipe, StageRunner, _checked_fields

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    from iaa_distill.features import extract_features
    from iaa_distill.training.student_config import StudentTrainConfig
    from iaa_distill.training.teacher import TeacherTrainConfig

    recipe = Recipe.load(path)
    _checked_fields(TeacherTrainConfig, recipe.teacher, "teacher")
    _checked_fields(StudentTrainConfig, recipe.student, "student")
    assert set(recipe.features) <= set(inspect.signature(extract_features).parameters)
    assert recipe.evaluation.get("split", "test") in ("val", "test")


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
