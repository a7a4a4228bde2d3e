"""Paired bootstrap comparison: resampled metrics equal scipy's on the resampled arrays; CIs, p-values, refusals."""
import json
import math
import time

import numpy as np
import pytest
from scipy import stats

from iaa_distill.errors import IAAError
from iaa_distill.evaluation import Predictions, compare_runs, write_report
from iaa_distill.evaluation.compare import resample_counts, resampled_metrics

LEVELS = np.arange(1, 11)


def runs(n: int, noises: list[float], seed: int = 0, cats: bool = True) -> list[Predictions]:
    """Runs of different quality on the same images (smaller noise = better predictions)."""
    rng = np.random.default_rng(seed)
    true_dist = rng.dirichlet(np.full(10, 3.0), n)
    categories = [("tag:Landscape",) if i % 4 else ("tag:Portrait",) for i in range(n)] if cats else []
    categories = [c + (("tag:Rare",) if i < 8 else ()) for i, c in enumerate(categories)] if cats else []
    out = []
    for j, noise in enumerate(noises):
        pred = np.clip(true_dist + rng.normal(0, noise, true_dist.shape), 1e-4, None)
        pred /= pred.sum(1, keepdims=True)
        out.append(Predictions([f"{i}" for i in range(n)], true_dist @ LEVELS, pred @ LEVELS, true_dist, pred,
                               categories, (1, 10), 10, f"run{j}", "ava", "test"))
    return out


def test_resampled_metrics_equal_scipy_on_resampled_arrays():
    rng = np.random.default_rng(0)
    n = 150
    true = np.round(rng.normal(5, 1, n), 1)  # heavy ties in both
    pred = np.round(true + rng.normal(0, 0.8, n), 1)
    idx = rng.integers(0, n, size=(6, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)
    per_image = rng.uniform(0, 1, n)
    (res,) = resampled_metrics(counts, true, [pred], threshold=5.0, emds=[{"emd_r1": per_image}])
    for b, row in enumerate(idx):
        assert res["srcc"][b] == pytest.approx(stats.spearmanr(true[row], pred[row])[0], abs=1e-10)
        assert res["plcc"][b] == pytest.approx(stats.pearsonr(true[row], pred[row])[0], abs=1e-10)
        assert res["accuracy"][b] == pytest.approx(np.mean((true[row] >= 5) == (pred[row] >= 5)))
        assert res["emd_r1"][b] == pytest.approx(per_image[row].mean())
    const = resampled_metrics(counts, true, [np.full(n, 5.0)])[0]
    assert np.isnan(const["srcc"]).all() and np.isnan(const["plcc"]).all()


def test_resample_counts_are_seeded_multiplicities():
    a = np.concatenate(list(resample_counts(50, 7, seed=3)))
    b = np.concatenate(list(resample_counts(50, 7, seed=3)))
    assert a.shape == (7, 50) and (a.sum(1) == 50).all()
    np.testing.assert_array_equal(a, b)


def test_compare_better_run_with_confidence_intervals(tmp_path):
    base, better, same = runs(400, [0.06, 0.02, 0.06], seed=1)
    same = Predictions(base.ids, base.true_mean, base.pred_mean, base.true_dist, base.pred_dist, base.categories,
                       base.scale, 10, "copy", "ava", "test")
    dirs = []
    for p, name in ((base, "a"), (better, "b"), (same, "c")):
        write_report(p, tmp_path / name, min_category_images=30)
        dirs.append(tmp_path / name)
    doc = compare_runs(dirs, tmp_path / "cmp", bootstrap=300, seed=0)
    for name in ("comparison.md", "comparison.json", "comparison.png", "comparison.html"):
        assert (tmp_path / "cmp" / name).is_file()
    d = doc["differences"]["run1"]["srcc"]
    assert d["diff"] == pytest.approx(stats.spearmanr(base.true_mean, better.pred_mean)[0]
                                      - stats.spearmanr(base.true_mean, base.pred_mean)[0])
    assert 0 < d["ci_low"] < d["diff"] < d["ci_high"] and d["p_value"] < 0.01
    rel = doc["differences"]["run1"]["srcc_relative_change_pct"]
    assert rel == pytest.approx(100 * d["diff"] / d["baseline"])
    emd = doc["differences"]["run1"]["emd_r1"]
    assert emd["diff"] < 0 and not emd["higher_is_better"] and emd["ci_high"] < 0
    nochange = doc["differences"]["copy"]["srcc"]
    assert nochange["diff"] == 0 and nochange["ci_low"] == 0 == nochange["ci_high"] and nochange["p_value"] == 1.0
    cats = doc["per_category"]
    assert [c["category"] for c in cats][-1] == "tag:Rare" and cats[-1]["too_few"] and cats[-1]["n"] == 8
    shown = [c["runs"]["run1"]["diff"] for c in cats if not c["too_few"]]
    assert shown == sorted(shown, reverse=True) and len(shown) == 2
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["baseline"] == "run0" and saved["n"] == 400 and saved["bootstrap"] == 300
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Relative SRCC change: +" in md and "95% CI" in md and "Categories with too few images" in md


def test_compare_is_independent_of_row_order(tmp_path):
    a, b = runs(120, [0.06, 0.03], seed=2, cats=False)
    shuffled = b.subset(np.random.default_rng(0).permutation(120))
    write_report(a, tmp_path / "a")
    write_report(b, tmp_path / "b")
    write_report(shuffled, tmp_path / "s")
    one = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "c1", bootstrap=200)
    two = compare_runs([tmp_path / "a", tmp_path / "s"], tmp_path / "c2", bootstrap=200)
    assert one["differences"]["run1"] == two["differences"]["run1"]


def test_compare_refuses_different_image_sets(tmp_path):
    a, b = runs(60, [0.05, 0.05], cats=False)
    write_report(a, tmp_path / "a")
    write_report(b.subset(np.arange(57)), tmp_path / "b")
    with pytest.raises(IAAError, match=r"different image sets \(0 image\(s\) only in the first, 3 only in the second"):
        compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp", bootstrap=10)
    relabelled = Predictions(b.ids, b.true_mean + 0.5, b.pred_mean, scale=(1, 10), model_name="x")
    write_report(relabelled, tmp_path / "r")
    with pytest.raises(IAAError, match="different true scores for 60"):
        compare_runs([tmp_path / "a", tmp_path / "r"], tmp_path / "cmp", bootstrap=10)
    with pytest.raises(IAAError, match="at least two"):
        compare_runs([tmp_path / "a"], tmp_path / "cmp")


@pytest.mark.slow
def test_bootstrap_of_20k_images_takes_seconds(tmp_path):
    a, b = runs(20000, [0.06, 0.04], seed=3, cats=False)
    write_report(a, tmp_path / "a")
    write_report(b, tmp_path / "b")
    start = time.perf_counter()
    doc = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp", bootstrap=2000)
    assert time.perf_counter() - start < 60
    assert doc["differences"]["run1"]["srcc"]["ci_low"] > 0 and not math.isnan(doc["overall"]["run0"]["srcc"])


def test_no_relative_change_against_a_near_zero_baseline_and_worse_metrics_are_flagged(tmp_path):
    rng = np.random.default_rng(5)
    base, good = runs(300, [0.06, 0.02], seed=4, cats=False)
    chance = Predictions(base.ids, base.true_mean, rng.permutation(base.pred_mean), base.true_dist,
                         base.pred_dist[rng.permutation(300)], [], base.scale, 10, "chance", "ava", "test")
    write_report(chance, tmp_path / "chance")
    write_report(good, tmp_path / "good")
    doc = compare_runs([tmp_path / "chance", tmp_path / "good"], tmp_path / "up", bootstrap=300)
    assert 0 < doc["overall"]["chance"]["srcc"] < 0.05  # a permuted baseline: ~0.01, a ratio would say "+8000 %"
    assert math.isnan(doc["differences"]["run1"]["srcc_relative_change_pct"])
    assert "Relative SRCC change: n/a (baseline SRCC <= 0.05)" in (tmp_path / "up" / "comparison.md").read_text()
    # the reverse comparison: every metric of the chance run is significantly worse, and the report says so
    reverse = compare_runs([tmp_path / "good", tmp_path / "chance"], tmp_path / "down", bootstrap=300)
    assert set(reverse["differences"]["chance"]["significantly_worse"]) >= {"srcc", "plcc", "emd_r1"}
    md = (tmp_path / "down" / "comparison.md").read_text()
    assert "Significantly worse than run1" in md and "EMD (r=1) (+" in md and "(worse)" in md
    assert doc["differences"]["run1"]["significantly_worse"] == []
