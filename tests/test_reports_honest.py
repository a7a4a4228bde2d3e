"""Issue 13, reports: the logistic PLCC keeps the sign, small categories get no CI, p-values read '< 0.001',
comparison.html has the forest plot and scrolling tables, plots are zoomed, sorted, shared and titled."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from iaa_distill.evaluation import metrics as M
from iaa_distill.evaluation import plots
from iaa_distill.evaluation.categories import MIN_CI_IMAGES, srcc_interval
from iaa_distill.evaluation.compare import compare_runs
from iaa_distill.evaluation.predictions import Predictions
from iaa_distill.evaluation.report import fmt_p, write_report


def test_logistic_plcc_never_flips_a_negative_correlation():
    rng = np.random.default_rng(4)
    true = rng.uniform(3, 8, 300)
    pred = 5.5 - 0.3 * (true - 5.5) + rng.normal(0, 0.6, 300)  # predictions run against the truth
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        raw, fitted = M.plcc(true, pred), M.plcc_logistic(true, pred)
    assert raw < -0.2
    assert not fitted > 0, f"logistic PLCC {fitted:+.3f} flips the sign of raw PLCC {raw:+.3f}"
    b1, b2, _, b4 = M.fit_logistic(true, pred)
    assert b1 >= b2 and b4 > 0  # increasing


def _pair(n: int, categories: list[tuple[str, ...]], seed: int = 0) -> tuple[Predictions, Predictions]:
    rng = np.random.default_rng(seed)
    true = rng.uniform(2, 9, n)
    ids = [str(i) for i in range(n)]
    make = lambda noise, name: Predictions(ids, true, true + rng.normal(0, noise, n), categories=categories,  # noqa: E731
                                           scale=(1, 10), model_name=name, dataset="csv:/data/mine/labels.csv",
                                           split="test")
    return make(2.0, "baseline"), make(0.2, "distilled")


def test_small_categories_get_no_interval_and_p_values_read_below_0001(tmp_path):
    n = 300
    categories = [("tag:Tiny",) if i < 5 else ("tag:Big",) for i in range(n)]
    for prediction in _pair(n, categories):
        write_report(prediction, tmp_path / prediction.model_name, min_category_images=5)
    document = compare_runs([tmp_path / "baseline", tmp_path / "distilled"], tmp_path / "cmp", bootstrap=2000)
    tiny = next(c for c in document["per_category"] if c["category"] == "tag:Tiny")
    assert tiny["n"] == 5 and math.isnan(tiny["runs"]["distilled"]["ci_low"])
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    tiny_row = next(line for line in md.splitlines() if line.startswith("| tag:Tiny"))
    assert f"too few (n < {MIN_CI_IMAGES})" in tiny_row and "+0.0000, +0.0000" not in tiny_row
    srcc_rows = [line for line in md.splitlines() if line.startswith("| SRCC |")]
    assert "< 0.001" in srcc_rows[-1] and "0.0010" not in md  # the difference table's row
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert '<img alt="SRCC differences (forest plot)" src="data:image/png;base64,' in page
    assert 'class="wide"' in page and "overflow-x:auto" in page
    report = (tmp_path / "distilled" / "report.md").read_text()
    assert "| tag:Tiny | 5 |" in report and "too few" in report.split("| tag:Tiny")[1].splitlines()[0]


def test_p_values_and_intervals():
    assert fmt_p(0.0004998) == "< 0.001" and fmt_p(0.0123) == "0.012" and fmt_p(math.nan) == "n/a"
    assert all(math.isnan(v) for v in srcc_interval(0.9, MIN_CI_IMAGES - 1))
    low, high = srcc_interval(0.5, 100)
    assert 0.3 < low < 0.5 < high < 0.65


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions save, by file name."""
    saved, save = {}, plots._save

    def keep(fig, path):
        saved[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_plots_are_zoomed_fitted_sorted_shared_and_titled(tmp_path, figures):
    n = 400
    rng = np.random.default_rng(1)
    categories = [(f"tag:{'ABCD'[i % 4]}",) for i in range(n)]
    base, better = _pair(n, categories)
    shifted = Predictions(base.ids, base.true_mean * 0.2 + 5, base.true_mean * 0.2 + 5 + rng.normal(0, 0.1, n),
                          categories=categories, scale=(1, 10), model_name="narrow", dataset=base.dataset, split="test")
    write_report(shifted, tmp_path / "narrow")
    scatter = figures["scatter.png"].axes[0]
    low, high = scatter.get_xlim()
    assert 5.0 < low and high < 7.5, "zoomed to the data, not the 1..10 scale"
    assert "fitted logistic" in [line.get_label() for line in scatter.get_lines()]
    assert "csv:/data/mine/labels.csv" in scatter.get_title()
    legend = figures["scatter.png"].legends[0]
    assert legend is not None and scatter.get_legend() is None  # outside the axes, off the points
    histogram = figures["histogram.png"].axes[0]
    assert len(histogram.patches) / 2 == len(np.histogram_bin_edges(
        np.concatenate([shifted.true_mean, shifted.pred_mean]), bins="auto")) - 1
    assert "csv:/data/mine/labels.csv" in histogram.get_title()
    ranges = []
    for prediction in (base, better):
        write_report(prediction, tmp_path / prediction.model_name, min_category_images=30)
        axis = figures.pop("categories.png").axes[0]
        widths = [bar.get_width() for bar in axis.patches]
        assert widths == sorted(widths, reverse=True) and len(axis.lines) + len(axis.collections) > 1  # CI bars
        ranges.append(axis.get_xlim())
    assert ranges[0] == ranges[1]
