"""`iaa demo --quick`: the whole method end to end on the bundled photos, as a new user runs it."""
from __future__ import annotations

import csv
import json

from iaa_distill.cli import main


def test_demo_quick_runs_every_stage_and_leaves_a_usable_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "Elapsed per stage" in printed

    run = out / "run"
    for path in ("features/manifest.json", "teacher/targets.safetensors", "student/model/config.json",
                 "baseline/model/config.json", "eval/student/metrics.json", "eval/baseline/metrics.json",
                 "eval/teacher/metrics.json", "comparison/comparison.json"):
        assert (run / path).is_file(), path
    comparison = json.loads((run / "comparison" / "comparison.json").read_text())
    # the baseline's warm start, the frozen-feature linear probe on the student's backbone, is reported too
    assert comparison["baseline"] == "baseline" and set(comparison["differences"]) == {"student", "teacher", "probe"}
    assert (run / "eval" / "probe" / "metrics.json").is_file()

    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(1.0 <= float(r["mean"]) <= 10.0 for r in rows)
    page = (out / "gallery.html").read_text()
    assert "<img" in page and "id='synthetic'" in page  # the demo's model is marked as trained on synthetic labels

    # the trained model is what `iaa score --model` takes
    scores = tmp_path / "again.csv"
    photo = rows[0]["path"]
    assert main(["score", photo, "--model", str(run / "student" / "model"), "--out", str(scores)]) == 0
    with open(scores) as f:
        again = list(csv.DictReader(f))
    assert abs(float(again[0]["mean"]) - float(rows[0]["mean"])) < 1e-4

    # the recipe it saved is the demo's: `iaa fit` with it finds every stage up to date
    assert main(["fit", "--config", str(out / "recipe.yaml"), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("up to date") >= 8

    # a rerun skips every finished stage
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
