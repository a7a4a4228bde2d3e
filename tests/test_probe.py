import numpy as np
from scipy import stats

from iaa_distill.evaluation.seeds import t_interval
from iaa_distill.training.linear_probe import fit_linear_probe


def test_linear_probe_recovers_a_linear_score_and_its_cv_depends_on_the_seed_only_through_the_folds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 30)) * rng.uniform(0.1, 10, size=30)  # unequal scales: the probe standardises
    weights = np.array([1.0, -2.0, 0.5]) / x[:, :3].std(0)
    y = x[:, :3] @ weights + 0.1 * rng.normal(size=120)
    held = rng.normal(size=(50, 30)) * x.std(0)
    truth = held[:, :3] @ weights
    for cv_seed in (None, 0, 1):
        assert np.corrcoef(fit_linear_probe(x, y, cv_seed=cv_seed).predict(held), truth)[0, 1] > 0.98


def test_t_interval_is_scipys_95_percent_interval_of_the_mean():
    values = [0.81, 0.84, 0.79, 0.86]
    mean, half = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert np.isclose(mean - half, low) and np.isclose(mean + half, high)
    assert t_interval([0.5]) == (0.5, 0.0)
