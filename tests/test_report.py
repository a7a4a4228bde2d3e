"""Evaluation folders: metrics.json (strict JSON), per_image.csv round trip, self-contained HTML, PNG plots."""
import base64
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from iaa_distill.errors import IAAError
from iaa_distill.evaluation import Predictions, compute_metrics, load_run, write_report
from iaa_distill.evaluation.predictions import COLUMNS


def make_predictions(n: int = 90, seed: int = 0, constant: bool = False) -> Predictions:
    rng = np.random.default_rng(seed)
    levels = np.arange(1, 11)
    true_dist = rng.dirichlet(np.full(10, 2.0), n)
    pred_dist = rng.dirichlet(np.full(10, 2.0), n) * 0.3 + true_dist * 0.7
    pred_mean = np.full(n, 5.5) if constant else pred_dist @ levels
    cats = [("tag:Landscape", "challenge:Sky") if i % 3 else ("tag:Portrait",) for i in range(n)]
    return Predictions([f"{1000 + i}" for i in range(n)], true_dist @ levels, pred_mean, true_dist, pred_dist, cats,
                       (1, 10), 10, "student-a", "ava", "test")


def test_write_report_files_and_round_trip(tmp_path):
    p = make_predictions()
    doc = write_report(p, tmp_path, min_category_images=40, excluded={"999": "cannot decode 999.jpg"},
                       extra={"model_kind": "student"})
    for name in ("metrics.json", "per_image.csv", "report.md", "report.html", "scatter.png", "histogram.png",
                 "categories.png"):
        assert (tmp_path / name).is_file(), name
    for name in ("scatter.png", "histogram.png", "categories.png"):
        assert Image.open(tmp_path / name).format == "PNG"

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"] == "student-a" and saved["dataset"] == "ava" and saved["split"] == "test"
    assert saved["n"] == 90 and saved["scale"] == [1.0, 10.0] and saved["excluded"] == {"999": "cannot decode 999.jpg"}
    assert saved["overall"]["srcc"] == pytest.approx(doc["overall"]["srcc"]) and "emd_r1" in saved["overall"]
    cats = {c["category"]: c for c in saved["per_category"]}
    assert cats["tag:Landscape"]["n"] == 60 and not cats["tag:Landscape"]["too_few"]
    assert cats["tag:Portrait"]["n"] == 30 and cats["tag:Portrait"]["too_few"]

    header = (tmp_path / "per_image.csv").read_text().splitlines()[0]
    assert header.split(",")[:5] == ["id", "true_mean", "pred_mean", "pred_std", "pred_dist"]
    run = load_run(tmp_path)
    q = run.predictions
    assert q.ids == p.ids and q.categories == p.categories and q.scale == (1.0, 10.0) and q.num_levels == 10
    np.testing.assert_array_equal(q.pred_mean, p.pred_mean)
    np.testing.assert_array_equal(q.pred_dist, p.pred_dist)
    assert compute_metrics(q) == compute_metrics(p)  # exact round trip
    spread = (p.pred_dist * (np.arange(1, 11) - p.pred_mean[:, None]) ** 2).sum(1)
    np.testing.assert_allclose(q.pred_std, np.sqrt(spread))


def test_report_markdown_and_html_are_self_contained(tmp_path):
    write_report(make_predictions(), tmp_path, min_category_images=40)
    md = (tmp_path / "report.md").read_text()
    assert "| SRCC |" in md and "PLCC (after 4-parameter logistic fit)" in md and "(true and predicted >= 5)" in md
    assert "Categories with too few images" in md and "tag:Portrait" in md
    html = (tmp_path / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(href|src)="(https?:|/|\.)', html)


def test_constant_predictions_still_write_a_report(tmp_path):
    with pytest.warns(UserWarning):
        doc = write_report(make_predictions(constant=True), tmp_path)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["overall"]["srcc"] is None
    assert math.isnan(doc["overall"]["srcc"]) and math.isnan(load_run(tmp_path).document["overall"]["srcc"])
    assert "n/a" in (tmp_path / "report.md").read_text()


def test_scalar_model_without_distributions(tmp_path):
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 1, 20)
    p = Predictions([f"img/{i}.jpg" for i in range(20)], true, true + rng.normal(0, 0.1, 20), scale=(0, 1))
    doc = write_report(p, tmp_path)
    assert "emd_r1" not in doc["overall"] and doc["overall"]["threshold"] == 0.5
    q = load_run(tmp_path).predictions
    assert q.pred_dist is None and q.true_dist is None and q.ids[3] == "img/3.jpg"
    assert all(math.isnan(v) for v in q.pred_std)


def test_malformed_per_image_csv_names_file_and_line(tmp_path):
    write_report(make_predictions(n=10), tmp_path)
    lines = (tmp_path / "per_image.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[COLUMNS.index("pred_mean")] = "oops"
    lines[3] = ",".join(cells)
    (tmp_path / "per_image.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(IAAError, match=r"per_image\.csv:4: malformed number"):
        load_run(tmp_path)
    with pytest.raises(IAAError, match="not an evaluation folder"):
        load_run(tmp_path / "missing")
