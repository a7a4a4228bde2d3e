"""The metrics the IAA literature reports: rank/linear correlation, binary accuracy, EMD, errors.

Conventions (documented so numbers are comparable with published tables):
- SRCC / KRCC: scipy.stats.spearmanr / kendalltau (tau-b, average ranks for ties).
- PLCC: Pearson on the raw predicted means. `plcc_logistic` is Pearson after the customary
  4-parameter logistic mapping of predictions onto the true scores (VQEG); reported separately. The
  logistic is fitted monotonic increasing (as in the IQA literature), so it never flips the sign of a
  negative correlation.
- Binary accuracy: an image is "high quality" when its mean score >= threshold, for both the
  ground truth and the prediction. On the 1..10 scale the threshold is 5 (AVA convention of
  Murray et al. 2012 / NIMA / MLSP); on other scales the default is the scale midpoint.
- EMD_r (NIMA): mean over images of (mean_k |CDF_true - CDF_pred|^r)^(1/r), r = 1 and 2, only
  when both the true and the predicted K-level distributions exist.
Undefined values (n < 3, constant scores) are NaN with a MetricWarning, never an exception.
"""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import optimize, stats

if TYPE_CHECKING:
    from .predictions import Predictions

MIN_N = 3
AVA_SCALE = (1.0, 10.0)
AVA_THRESHOLD = 5.0


class MetricWarning(UserWarning):
    """A metric could not be computed (too few images, constant scores, logistic fit failed)."""


def undefined_reason(true: np.ndarray, pred: np.ndarray) -> str | None:
    """Why a correlation between `true` and `pred` is undefined, or None when it is defined."""
    if len(true) < MIN_N:
        return f"only {len(true)} image(s), need at least {MIN_N}"
    if np.ptp(pred) == 0:
        return f"the predicted scores are constant ({pred[0]:.4g})"
    if np.ptp(true) == 0:
        return f"the true scores are constant ({true[0]:.4g})"
    return None


def _defined(name: str, true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Both series as float64, or None (with a MetricWarning naming the reason) where `name` is undefined."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    reason = undefined_reason(true, pred)
    if reason:
        warnings.warn(f"{name} is undefined: {reason}; reported as NaN", MetricWarning, stacklevel=4)
        return None
    return true, pred


def _correlation(name: str, func, true: np.ndarray, pred: np.ndarray) -> float:
    series = _defined(name, true, pred)
    return math.nan if series is None else float(func(*series)[0])


def srcc(true: np.ndarray, pred: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return _correlation("SRCC", stats.spearmanr, true, pred)


def plcc(true: np.ndarray, pred: np.ndarray) -> float:
    """Pearson linear correlation of the raw predictions."""
    return _correlation("PLCC", stats.pearsonr, true, pred)


def krcc(true: np.ndarray, pred: np.ndarray) -> float:
    """Kendall rank correlation (tau-b)."""
    return _correlation("KRCC", stats.kendalltau, true, pred)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _rising_logistic(x: np.ndarray, amplitude: float, low: float, centre: float, width: float) -> np.ndarray:
    """`logistic4` with b1 = low + amplitude, b2 = low: increasing whenever amplitude >= 0 and width > 0."""
    return logistic4(x, low + amplitude, low, centre, width)


def fit_logistic(true: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float] | None:
    """`logistic4` parameters (b1, b2, b3, b4) mapping `pred` onto `true`, constrained monotonic increasing
    (b1 >= b2, b4 > 0, by curve_fit bounds); None when the fit fails."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    spread = float(np.std(pred)) or 1.0
    p0 = [max(float(np.ptp(true)), 1e-6), float(true.min()), float(np.mean(pred)), spread]
    bounds = ([0.0, -np.inf, -np.inf, 1e-9 * spread], [np.inf, np.inf, np.inf, np.inf])
    try:
        with warnings.catch_warnings():  # an inestimable covariance does not invalidate the fitted curve
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (amplitude, low, centre, width), _ = optimize.curve_fit(
                _rising_logistic, pred, true, p0=p0, bounds=bounds, maxfev=10000)
    except (RuntimeError, ValueError):
        return None
    return float(low + amplitude), float(low), float(centre), float(width)


def plcc_logistic(true: np.ndarray, pred: np.ndarray) -> float:
    """PLCC after fitting the increasing 4-parameter logistic from predictions to true scores; NaN if the fit fails."""
    series = _defined("PLCC (logistic)", true, pred)
    if series is None:
        return math.nan
    true, pred = series
    params = fit_logistic(true, pred)
    if params is None:
        warnings.warn("PLCC (logistic): the 4-parameter fit did not converge; reported as NaN",
                      MetricWarning, stacklevel=2)
        return math.nan
    fitted = logistic4(pred, *params)
    if np.ptp(fitted) == 0 or not np.all(np.isfinite(fitted)):
        warnings.warn("PLCC (logistic): the fitted curve is flat; reported as NaN", MetricWarning, stacklevel=2)
        return math.nan
    with warnings.catch_warnings():  # a nearly flat fit (no increasing relation) still has a defined sign
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        return float(stats.pearsonr(true, fitted)[0])


def default_threshold(scale: tuple[float, float] | None) -> float | None:
    """5 on the 1..10 scale (AVA convention), otherwise the scale midpoint; None without a scale."""
    if scale is None:
        return None
    if tuple(float(s) for s in scale) == AVA_SCALE:
        return AVA_THRESHOLD
    return (float(scale[0]) + float(scale[1])) / 2.0


def binary_accuracy(true: np.ndarray, pred: np.ndarray, threshold: float) -> float:
    """Fraction of images on the same side of `threshold` (mean >= threshold means high quality)."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if len(true) == 0:
        return math.nan
    return float(np.mean((true >= threshold) == (pred >= threshold)))


def emd_per_image(true_dist: np.ndarray, pred_dist: np.ndarray, r: int) -> np.ndarray:
    """(mean_k |CDF_true - CDF_pred|^r)^(1/r) for each image (rows are normalised first)."""
    p = np.asarray(true_dist, dtype=np.float64)
    q = np.asarray(pred_dist, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"EMD needs two (N, K) arrays of the same shape, got {p.shape} and {q.shape}")
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    diff = np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1))
    return np.mean(diff**r, axis=1) ** (1.0 / r)


def emd(true_dist: np.ndarray, pred_dist: np.ndarray, r: int = 1) -> float:
    """Mean EMD_r over images."""
    values = emd_per_image(true_dist, pred_dist, r)
    return float(values.mean()) if len(values) else math.nan


def compute_metrics(predictions: "Predictions", threshold: float | None = None) -> dict[str, Any]:
    """Every headline metric of one set of predictions (NaN where undefined, one warning per cause)."""
    true = np.asarray(predictions.true_mean, dtype=np.float64)
    pred = np.asarray(predictions.pred_mean, dtype=np.float64)
    threshold = default_threshold(predictions.scale) if threshold is None else float(threshold)
    reason = undefined_reason(true, pred)
    if reason:
        warnings.warn(f"correlations are undefined: {reason}; reported as NaN", MetricWarning, stacklevel=2)
    with warnings.catch_warnings():
        if reason:
            warnings.simplefilter("ignore", MetricWarning)
        result: dict[str, Any] = {
            "n": int(len(true)),
            "srcc": srcc(true, pred),
            "plcc": plcc(true, pred),
            "plcc_logistic": plcc_logistic(true, pred),
            "krcc": krcc(true, pred),
        }
    result["accuracy"] = binary_accuracy(true, pred, threshold) if threshold is not None else math.nan
    result["threshold"] = threshold
    if predictions.true_dist is not None and predictions.pred_dist is not None:
        result["emd_r1"] = emd(predictions.true_dist, predictions.pred_dist, 1)
        result["emd_r2"] = emd(predictions.true_dist, predictions.pred_dist, 2)
    err = pred - true
    empty = len(true) == 0
    result.update(
        mse=math.nan if empty else float(np.mean(err**2)),
        mae=math.nan if empty else float(np.mean(np.abs(err))),
        true_mean=math.nan if empty else float(true.mean()),
        true_std=math.nan if empty else float(true.std()),
        pred_mean=math.nan if empty else float(pred.mean()),
        pred_std=math.nan if empty else float(pred.std()),
    )
    return result
