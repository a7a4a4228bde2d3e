"""The strong simple baseline every benchmark reports: a linear probe on frozen features.

The probe is ridge regression on the features normalised as the teacher's linear head normalises them
(`head_candidates.MLSPNormaliser`: signed square root, standardisation, each block of the vector scaled to the
same total variance), so that it is as strong as the project's own linear fits. The block widths are the
feature cache manifest's `level_dims` for teacher features (`head_candidates.level_widths`) and
`Student.block_widths` for a student backbone's pooled vector. Its penalty is chosen from the teacher heads'
`RIDGE_ALPHAS` by K-fold CV on the fitted rows (folds shuffled by `cv_seed`), or by efficient leave-one-out
when `cv_seed` is None.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline

from .head_candidates import RIDGE_ALPHAS, MLSPNormaliser


def fit_linear_probe(x: np.ndarray, y: np.ndarray, widths: Sequence[int], cv_seed: int | None = None,
                     folds: int = 5) -> Pipeline:
    """Ridge on `x` normalised with block `widths` (see the module doc) predicting `y`; penalty by `folds`-fold
    CV shuffled by `cv_seed` (LOO if None)."""
    cv = None if cv_seed is None else KFold(folds, shuffle=True, random_state=cv_seed)
    probe = make_pipeline(MLSPNormaliser(widths), RidgeCV(alphas=RIDGE_ALPHAS, cv=cv))
    return probe.fit(np.asarray(x, np.float64), np.asarray(y, np.float64))
