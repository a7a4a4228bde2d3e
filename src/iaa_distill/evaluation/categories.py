"""Per-category results: n, SRCC and PLCC for each category string (AVA tag, TAD66K theme, CSV column...).

Categories with fewer than `min_images` images are flagged `too_few` and kept out of headline
tables and charts, so a correlation over a handful of images is never reported as if meaningful.
Each SRCC comes with a 95% confidence interval (Fisher z with the Bonett-Wright standard error for
Spearman's rho) when the category has at least `MIN_CI_IMAGES` images.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any

from .metrics import MetricWarning, plcc, srcc
from .predictions import Predictions
from .settings import DEFAULT_MIN_IMAGES

MIN_CI_IMAGES = 20  # fewer images: no confidence interval or p-value (a handful of images misleads)


def srcc_interval(rho: float, n: int) -> tuple[float, float]:
    """95% CI of Spearman's rho over n images (Bonett & Wright 2000); NaN below MIN_CI_IMAGES or for NaN rho."""
    if n < MIN_CI_IMAGES or not math.isfinite(rho):
        return math.nan, math.nan
    centre = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = 1.96 * math.sqrt((1 + rho * rho / 2) / (n - 3))
    return math.tanh(centre - half), math.tanh(centre + half)


def category_rows(predictions: Predictions) -> dict[str, list[int]]:
    """Row indices of each category, sorted by category name."""
    rows: dict[str, list[int]] = defaultdict(list)
    for row, cats in enumerate(predictions.categories):
        for cat in dict.fromkeys(cats):
            rows[cat].append(row)
    return dict(sorted(rows.items()))


def per_category(predictions: Predictions, min_images: int = DEFAULT_MIN_IMAGES) -> list[dict[str, Any]]:
    """One dict per category: category, n, srcc, srcc_ci (95%), plcc, too_few (sorted by category name)."""
    results = []
    for cat, rows in category_rows(predictions).items():
        too_few = len(rows) < min_images
        true, pred = predictions.true_mean[rows], predictions.pred_mean[rows]
        with warnings.catch_warnings():
            if too_few:  # flagged anyway; no warning noise for tiny categories
                warnings.simplefilter("ignore", MetricWarning)
            rho = srcc(true, pred)
            results.append({"category": cat, "n": len(rows), "srcc": rho, "srcc_ci": list(srcc_interval(rho, len(rows))),
                            "plcc": plcc(true, pred), "too_few": too_few})
    return results
