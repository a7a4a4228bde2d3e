"""The strong simple baseline every benchmark reports: a linear probe on frozen features.

The probe is ridge regression on standardised features. Its penalty is chosen from the teacher heads'
`RIDGE_ALPHAS` by K-fold CV on the fitted rows (folds shuffled by `cv_seed`), or by efficient leave-one-out
when `cv_seed` is None.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .head_candidates import RIDGE_ALPHAS


def fit_linear_probe(x: np.ndarray, y: np.ndarray, cv_seed: int | None = None, folds: int = 5) -> Pipeline:
    """Ridge on standardised `x` predicting `y`; penalty by `folds`-fold CV shuffled by `cv_seed` (LOO if None)."""
    cv = None if cv_seed is None else KFold(folds, shuffle=True, random_state=cv_seed)
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, cv=cv))
    return probe.fit(np.asarray(x, np.float64), np.asarray(y, np.float64))
