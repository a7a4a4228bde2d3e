import numpy as np
from scipy import stats
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from iaa_distill.evaluation.seeds import t_interval
from iaa_distill.training.head_candidates import RIDGE_ALPHAS
from iaa_distill.training.linear_probe import fit_linear_probe


def test_linear_probe_recovers_a_linear_score_and_its_cv_depends_on_the_seed_only_through_the_folds():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(170, 30)) * rng.uniform(0.1, 10, size=30)  # unequal scales: the probe standardises
    x = np.sign(z) * z ** 2  # its signed square root is z, on which the score is linear
    weights = np.array([1.0, -2.0, 0.5]) / z[:, :3].std(0)
    truth = z @ np.concatenate([weights, np.zeros(27)])
    y = truth + 0.1 * rng.normal(size=170)
    for cv_seed in (None, 0, 1):
        predicted = fit_linear_probe(x[:120], y[:120], [30], cv_seed=cv_seed).predict(x[120:])
        assert np.corrcoef(predicted, truth[120:])[0, 1] > 0.98


def written_out(x: np.ndarray, fit: np.ndarray, widths: list[int]) -> np.ndarray:
    """The normalisation by hand: sign(x) sqrt|x|, standardised over `fit` (+1e-5, BatchNorm's eps), each block
    scaled so that its total variance is the same."""
    root = np.sign(x) * np.sqrt(np.abs(x))
    standard = (root - root[fit].mean(0)) / np.sqrt(root[fit].var(0) + 1e-5)
    scales = np.concatenate([np.full(w, np.sqrt(sum(widths) / (len(widths) * w))) for w in widths])
    return standard * scales


def test_linear_probe_is_ridge_on_the_normalised_features_with_their_block_widths():
    rng = np.random.default_rng(3)
    widths = [3, 40, 9]
    x = rng.gamma(2.0, size=(90, 52)) * rng.uniform(0.05, 5, size=52)  # non-negative, as pooled activations
    y = np.sqrt(x[:, :3]) @ np.array([1.0, -0.5, 0.7]) + 0.2 * rng.normal(size=90)
    fit, held = np.arange(60), np.arange(60, 90)
    z = written_out(x, fit, widths)
    for cv_seed in (None, 2):
        cv = None if cv_seed is None else KFold(5, shuffle=True, random_state=cv_seed)
        expected = RidgeCV(alphas=RIDGE_ALPHAS, cv=cv).fit(z[fit], y[fit]).predict(z[held])
        probe = fit_linear_probe(x[fit], y[fit], widths, cv_seed=cv_seed)
        np.testing.assert_allclose(probe.predict(x[held]), expected, rtol=1e-4, atol=1e-5)
    other = fit_linear_probe(x[fit], y[fit], [52]).predict(x[held])  # one block: another fit
    assert np.abs(other - fit_linear_probe(x[fit], y[fit], widths).predict(x[held])).max() > 1e-3


def test_linear_probe_weighs_blocks_not_their_widths():
    """A narrow block carrying the score beside a wide block of noise: with the widths, the probe ranks held-out
    rows far better than with every value standardised alike."""
    rng = np.random.default_rng(4)
    x = np.abs(rng.normal(size=(120, 404)))
    y = np.sqrt(x[:, :4]) @ np.array([1.0, -0.8, 0.6, 0.4])
    scores = {str(widths): stats.spearmanr(fit_linear_probe(x[:60], y[:60], widths).predict(x[60:]), y[60:])[0]
              for widths in ([4, 400], [404])}
    assert scores["[4, 400]"] > scores["[404]"] + 0.15 and scores["[4, 400]"] > 0.9


def test_t_interval_is_scipys_95_percent_interval_of_the_mean():
    values = [0.81, 0.84, 0.79, 0.86]
    mean, half = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert np.isclose(mean - half, low) and np.isclose(mean + half, high)
    assert t_interval([0.5]) == (0.5, 0.0)
