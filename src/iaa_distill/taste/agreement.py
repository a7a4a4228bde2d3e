"""How well a model agrees with a photographer's own ratings: SRCC and pairwise accuracy, with bootstrap CIs.

Pairwise accuracy is the share of photo pairs with *different* ratings that the model orders as the
photographer did (a tie in the model's scores counts half); pairs of equal ratings say nothing about order
and are left out. CIs are 95 % percentile intervals over photos resampled with replacement (seeded).
Ratings are relative within a shoot, so with photos in several folders the share is also given over the
pairs of photos in the same folder (`within_folder`): how well the model orders each shoot as rated.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluation.metrics import srcc

DEFAULT_BOOTSTRAP = 1000


def pair_matrices(true: np.ndarray, pred: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ordered as rated: 1, 0.5 for a tied prediction, 0; counted: 1 where the two ratings differ, and with
    `groups` the two photos are in the same group) per pair."""
    dt = np.sign(true[:, None] - true[None, :])
    dp = np.sign(pred[:, None] - pred[None, :])
    counted = (dt != 0).astype(np.float64)
    if groups is not None:
        counted *= groups[:, None] == groups[None, :]
    agree = np.where(dp == 0, 0.5, (dt == dp).astype(np.float64)) * counted
    return agree, counted


def pairwise_accuracy(true: np.ndarray, pred: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Share of differently rated pairs (within a group, with `groups`) ordered as rated (NaN without any)."""
    agree, counted = pair_matrices(np.asarray(true, np.float64), np.asarray(pred, np.float64),
                                   None if groups is None else np.asarray(groups))
    total = counted.sum()
    return float(agree.sum() / total) if total else float("nan")


def agreement(true: np.ndarray, pred: np.ndarray, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              folders: list[str] | None = None) -> dict[str, Any]:
    """SRCC and pairwise accuracy of `pred` against the ratings `true`, each with a bootstrap 95 % CI; with the
    photos' `folders` (more than one), also the pairwise accuracy within a folder and its number of pairs."""
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    agree, counted = pair_matrices(true, pred)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {"srcc": [], "pairwise_accuracy": []}
    for _ in range(n_boot):
        idx = rng.integers(0, len(true), len(true))
        weights = np.bincount(idx, minlength=len(true)).astype(np.float64)
        total = weights @ counted @ weights
        if total == 0:
            continue
        samples["pairwise_accuracy"].append(float(weights @ agree @ weights / total))
        samples["srcc"].append(srcc(true[idx], pred[idx]))
    point = {"srcc": srcc(true, pred), "pairwise_accuracy": pairwise_accuracy(true, pred)}
    result: dict[str, Any] = {"n": int(len(true)), "pairs": int(counted.sum() // 2)}
    for name, values in samples.items():
        finite = np.asarray([v for v in values if np.isfinite(v)])
        low, high = np.percentile(finite, [2.5, 97.5]) if finite.size else (np.nan, np.nan)
        result[name] = {"value": point[name], "ci_low": float(low), "ci_high": float(high)}
    if folders is not None and len(set(folders)) > 1:
        groups = np.unique(folders, return_inverse=True)[1]
        result["within_folder"] = {"pairwise_accuracy": pairwise_accuracy(true, pred, groups),
                                   "pairs": int(pair_matrices(true, pred, groups)[1].sum() // 2)}
    return result
