"""Metrics against scipy on random data with ties; degenerate inputs give NaN + a warning, not a crash."""
import math
import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from iaa_distill.evaluation import MetricWarning, Predictions, compute_metrics, per_category
from iaa_distill.evaluation import metrics as M


def tied_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True/pred means on 1..10 rounded to one decimal (many ties), correlated but not perfectly."""
    rng = np.random.default_rng(seed)
    true = np.round(rng.normal(5.4, 0.8, n), 1)
    pred = np.round(true + rng.normal(0, 0.6, n), 1)
    return true, pred


def dists(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy_with_ties(seed):
    true, pred = tied_scores(300, seed)
    assert len(np.unique(pred)) < 100  # ties really present
    m = compute_metrics(Predictions([str(i) for i in range(300)], true, pred, scale=(1, 10)))
    assert m["srcc"] == pytest.approx(stats.spearmanr(true, pred)[0], abs=1e-12)
    assert m["plcc"] == pytest.approx(stats.pearsonr(true, pred)[0], abs=1e-12)
    assert m["krcc"] == pytest.approx(stats.kendalltau(true, pred)[0], abs=1e-12)
    assert m["mse"] == pytest.approx(np.mean((pred - true) ** 2))
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - true)))
    assert m["true_mean"] == pytest.approx(true.mean()) and m["pred_std"] == pytest.approx(pred.std())
    assert m["n"] == 300 and "emd_r1" not in m


def test_binary_accuracy_ava_convention():
    assert M.default_threshold((1, 10)) == 5.0
    assert M.default_threshold((1, 5)) == 3.0
    assert M.default_threshold((0, 1)) == 0.5
    true = np.array([5.0, 4.99, 6.0, 3.0, 7.0])
    pred = np.array([5.0, 5.0, 4.0, 4.5, 5.5])  # a mean of exactly 5 counts as high quality
    assert M.binary_accuracy(true, pred, 5.0) == pytest.approx(3 / 5)
    p = Predictions(list("abcde"), true, pred, scale=(1, 10))
    assert compute_metrics(p)["accuracy"] == pytest.approx(0.6) and compute_metrics(p)["threshold"] == 5.0
    assert compute_metrics(p, threshold=4.75)["accuracy"] == pytest.approx(np.mean((true >= 4.75) == (pred >= 4.75)))


@pytest.mark.parametrize("k", [5, 10])
def test_emd_against_wasserstein_and_explicit_formula(k):
    p, q = dists(50, k, 3), dists(50, k, 4)
    levels = np.arange(k, dtype=float)
    # r=1 with unit spacing: sum_k |CDF_p - CDF_q| = Wasserstein-1; the EMD averages over the K levels
    w = np.array([stats.wasserstein_distance(levels, levels, a, b) for a, b in zip(p, q)])
    assert M.emd(p, q, 1) == pytest.approx(np.mean(w / k), rel=1e-10)
    explicit = np.mean([np.sqrt(np.mean((np.cumsum(a) - np.cumsum(b)) ** 2)) for a, b in zip(p, q)])
    assert M.emd(p, q, 2) == pytest.approx(explicit, rel=1e-12)
    assert M.emd(p, p, 1) == 0.0
    preds = Predictions([str(i) for i in range(50)], p @ (levels + 1), q @ (levels + 1), p, q, scale=(1, k),
                        num_levels=k)
    m = compute_metrics(preds)
    assert m["emd_r1"] == pytest.approx(M.emd(p, q, 1)) and m["emd_r2"] == pytest.approx(explicit)


def test_constant_predictions_give_nan_and_one_clear_warning():
    true, _ = tied_scores(40, 5)
    p = Predictions([str(i) for i in range(40)], true, np.full(40, 5.5), scale=(1, 10))
    with pytest.warns(MetricWarning, match="predicted scores are constant") as record:
        m = compute_metrics(p)
    assert len([w for w in record if issubclass(w.category, MetricWarning)]) == 1
    for key in ("srcc", "plcc", "plcc_logistic", "krcc"):
        assert math.isnan(m[key])
    assert m["accuracy"] == pytest.approx(np.mean(true >= 5))  # still defined
    assert m["pred_std"] == 0.0


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_images_give_nan(n):
    p = Predictions([str(i) for i in range(n)], np.arange(n) + 3.0, np.arange(n) + 4.0, scale=(1, 10))
    with pytest.warns(MetricWarning, match="need at least 3"):
        m = compute_metrics(p)
    assert math.isnan(m["srcc"]) and math.isnan(m["krcc"]) and m["n"] == n
    assert math.isnan(m["mse"]) if n == 0 else m["mse"] == pytest.approx(1.0)


def test_logistic_plcc_fits_a_monotone_nonlinearity():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, 400)
    true = M.logistic4(pred, 8.0, 2.0, 0.5, 0.08) + rng.normal(0, 0.05, 400)
    raw, fitted = M.plcc(true, pred), M.plcc_logistic(true, pred)
    assert fitted > raw and fitted > 0.99
    assert fitted <= 1.0


def test_logistic_fit_failure_is_nan_with_warning(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(optimize, "curve_fit", fail)
    true, pred = tied_scores(50, 1)
    with pytest.warns(MetricWarning, match="did not converge"):
        assert math.isnan(M.plcc_logistic(true, pred))


def test_per_category_counts_flags_and_values():
    true, pred = tied_scores(120, 7)
    cats = [("tag:Landscape",) if i < 80 else ("tag:Portrait", "theme:animal") for i in range(120)]
    cats[0] = ("tag:Landscape", "tag:Landscape")  # a duplicate tag on one image counts once
    p = Predictions([str(i) for i in range(120)], true, pred, categories=cats, scale=(1, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricWarning)
        rows = {r["category"]: r for r in per_category(p, min_images=50)}
    assert [rows[c]["n"] for c in ("tag:Landscape", "tag:Portrait", "theme:animal")] == [80, 40, 40]
    assert not rows["tag:Landscape"]["too_few"] and rows["tag:Portrait"]["too_few"]
    assert rows["tag:Landscape"]["srcc"] == pytest.approx(stats.spearmanr(true[:80], pred[:80])[0])
    assert rows["theme:animal"]["plcc"] == pytest.approx(stats.pearsonr(true[80:], pred[80:])[0])
