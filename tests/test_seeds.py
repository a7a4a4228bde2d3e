"""Claims across seeds: group means, a paired bootstrap over seeds x images, relative gain, teacher share."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from iaa_distill.cli import main
from iaa_distill.errors import IAAError
from iaa_distill.evaluation import Predictions, write_report
from iaa_distill.evaluation.seeds import compare_seeds


def _eval_dirs(root, name: str, noises: list[float], true: np.ndarray, seed: int) -> list[str]:
    """One evaluation folder per seed of model `name` (smaller noise = better)."""
    rng = np.random.default_rng(seed)
    dirs = []
    for s, noise in enumerate(noises):
        pred = true + rng.normal(0, noise, len(true))
        p = Predictions([str(i) for i in range(len(true))], true, pred, None, None, [], (1, 10), None, name,
                        "demo", "test")
        write_report(p, root / f"{name}-{s}")
        dirs.append(str(root / f"{name}-{s}"))
    return dirs


@pytest.fixture
def groups(tmp_path):
    true = np.random.default_rng(0).uniform(2, 8, 300)
    return (_eval_dirs(tmp_path, "baseline", [2.0, 2.2, 1.8], true, 1),
            _eval_dirs(tmp_path, "student", [1.0, 1.1, 0.9], true, 2),
            _eval_dirs(tmp_path, "teacher", [0.5], true, 3), true)


def test_compare_seeds_means_gain_and_teacher_share(groups, tmp_path):
    base, student, teacher, true = groups
    doc = compare_seeds([base, student, teacher], tmp_path / "cmp", bootstrap=300)
    srcc = {name: [stats.spearmanr(true, json_pred(d))[0] for d in dirs]
            for name, dirs in (("baseline", base), ("student", student), ("teacher", teacher))}
    assert doc["groups"]["student"]["mean"] == pytest.approx(np.mean(srcc["student"]))
    assert doc["groups"]["student"]["sd"] == pytest.approx(np.std(srcc["student"], ddof=1))
    gain = doc["differences"]["student"]
    diff = np.mean(srcc["student"]) - np.mean(srcc["baseline"])
    assert gain["srcc"]["diff"] == pytest.approx(diff)
    assert 0 < gain["srcc"]["ci_low"] < diff < gain["srcc"]["ci_high"] and gain["srcc"]["p_value"] < 0.01
    assert gain["relative_gain_pct"]["value"] == pytest.approx(100 * diff / np.mean(srcc["baseline"]))
    share = gain["teacher_share"]
    assert share["value"] == pytest.approx(np.mean(srcc["student"]) / srcc["teacher"][0])
    assert share["ci_low"] < share["value"] < share["ci_high"] < 1
    assert "teacher_share" not in doc["differences"]["teacher"]
    assert (tmp_path / "cmp" / "seeds.md").is_file()
    # the same model twice is refused
    with pytest.raises(IAAError, match="different models"):
        compare_seeds([base, base[:1]], tmp_path / "bad")


def json_pred(directory: str) -> np.ndarray:
    """The predictions of an evaluation folder, in image order."""
    with open(Path(directory) / "per_image.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["id"]))
    return np.array([float(r["pred_mean"]) for r in rows])


def test_cli_compares_comma_separated_seed_groups(groups, tmp_path, capsys):
    base, student, teacher, _ = groups
    out = tmp_path / "cli"
    assert main(["compare", ",".join(base), ",".join(student), teacher[0], "--out", str(out), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "over 3 seed(s)" in printed and "of the teacher's SRCC" in printed
    assert json.loads((out / "seeds.json").read_text())["groups"]["teacher"]["sd"] is None


def test_recipe_compares_its_seed_runs_across_seeds(groups, tmp_path):
    from iaa_distill.recipe import Recipe, _compare, student_runs

    base, student, teacher, _ = groups
    runs = student_runs(Recipe(dataset="csv:x.csv", out=tmp_path, seeds=[0, 1, 2]))
    eval_dirs = {"teacher": Path(teacher[0]),
                 **{f"{m}-seed{s}": Path(d) for m, dirs in (("baseline", base), ("student", student))
                    for s, d in enumerate(dirs)}}
    document = _compare(runs, eval_dirs, tmp_path / "comparison")
    assert document == json.loads((tmp_path / "comparison" / "seeds.json").read_text())
    assert document["groups"]["student"]["runs"] == student and document["baseline"] == "baseline"
    assert _compare(runs, eval_dirs, tmp_path / "comparison", write=False) == document


def _dist_dirs(root, name: str, widths: list[float], true: np.ndarray) -> list[str]:
    """Evaluation folders with vote distributions: a Gaussian of `width` levels around each true mean."""
    levels = np.arange(1, 11, dtype=np.float64)
    true_dist = np.exp(-0.5 * ((levels - true[:, None]) / 1.3) ** 2)
    true_dist /= true_dist.sum(1, keepdims=True)
    dirs = []
    for s, width in enumerate(widths):
        pred_dist = np.exp(-0.5 * ((levels - true[:, None]) / width) ** 2)
        pred_dist /= pred_dist.sum(1, keepdims=True)
        p = Predictions([str(i) for i in range(len(true))], true_dist @ levels, pred_dist @ levels, true_dist,
                        pred_dist, [], (1, 10), 10, name, "demo", "test")
        write_report(p, root / f"{name}-{s}")
        dirs.append(str(root / f"{name}-{s}"))
    return dirs


def test_emd_difference_of_seed_groups(tmp_path):
    from iaa_distill.evaluation.student_report import emd_difference

    true = np.random.default_rng(0).uniform(3, 8, 120)
    matched, wide = _dist_dirs(tmp_path, "matched", [1.3, 1.4], true), _dist_dirs(tmp_path, "wide", [2.5, 2.8], true)
    worse = emd_difference([matched, wide])
    assert worse["diff"] > 0 and 0 < worse["ci_low"] <= worse["diff"] <= worse["ci_high"]
    assert emd_difference([wide, matched])["diff"] == pytest.approx(-worse["diff"])
    assert emd_difference([matched, _eval_dirs(tmp_path, "scalar", [1.0], true, 4)]) is None
