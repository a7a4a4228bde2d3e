"""Per-category results: n, SRCC and PLCC for each category string (AVA tag, TAD66K theme, CSV column...).

Categories with fewer than `min_images` images are flagged `too_few` and kept out of headline
tables and charts, so a correlation over a handful of images is never reported as if meaningful.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

from .metrics import MetricWarning, plcc, srcc
from .predictions import Predictions

DEFAULT_MIN_IMAGES = 30


def category_rows(predictions: Predictions) -> dict[str, list[int]]:
    """Row indices of each category, sorted by category name."""
    rows: dict[str, list[int]] = defaultdict(list)
    for row, cats in enumerate(predictions.categories):
        for cat in dict.fromkeys(cats):
            rows[cat].append(row)
    return dict(sorted(rows.items()))


def per_category(predictions: Predictions, min_images: int = DEFAULT_MIN_IMAGES) -> list[dict[str, Any]]:
    """One dict per category: category, n, srcc, plcc, too_few (sorted by category name)."""
    results = []
    for cat, rows in category_rows(predictions).items():
        too_few = len(rows) < min_images
        true, pred = predictions.true_mean[rows], predictions.pred_mean[rows]
        with warnings.catch_warnings():
            if too_few:  # flagged anyway; no warning noise for tiny categories
                warnings.simplefilter("ignore", MetricWarning)
            results.append({"category": cat, "n": len(rows), "srcc": srcc(true, pred),
                            "plcc": plcc(true, pred), "too_few": too_few})
    return results
