"""The strong simple baseline every benchmark reports: a linear probe on frozen features, and the t-interval
over seeds its claims come with.

The probe is ridge regression on standardised features. Its penalty is chosen from the teacher heads'
`RIDGE_ALPHAS` by K-fold CV on the fitted rows (folds shuffled by `cv_seed`), or by efficient leave-one-out
when `cv_seed` is None.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..training.head_candidates import RIDGE_ALPHAS


def fit_linear_probe(x: np.ndarray, y: np.ndarray, cv_seed: int | None = None, folds: int = 5) -> Pipeline:
    """Ridge on standardised `x` predicting `y`; penalty by `folds`-fold CV shuffled by `cv_seed` (LOO if None)."""
    cv = None if cv_seed is None else KFold(folds, shuffle=True, random_state=cv_seed)
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, cv=cv))
    return probe.fit(np.asarray(x, np.float64), np.asarray(y, np.float64))


def t_interval(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval of `values` (e.g. one figure per seed; 0 for a single value)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
