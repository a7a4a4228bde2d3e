"""What an evaluation is made of (identity) and how it runs (execution): `evaluate_model`'s settings, the
`evaluation` section of a recipe and the options of `iaa eval`. A light module (no torch), so the CLI can show
the defaults quickly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..settings import execution, setting

DEFAULT_MIN_IMAGES = 30  # categories with fewer images are flagged, not reported


@dataclass
class EvaluationSettings:
    """Settings of `evaluate_model` (a recipe's `evaluation` section, `iaa eval`'s options)."""

    split: Literal["test", "val", "train", "all"] = setting("test", help="the labelled split to evaluate on")
    min_category_images: int = setting(DEFAULT_MIN_IMAGES, help="categories with fewer images are flagged, not "
                                       "reported", low=1)
    threshold: float | None = setting(None, help="score threshold of binary accuracy (default: 5 on the 1..10 "
                                      "scale, else the scale's middle)")
    batch_size: int = execution(64, help="images per forward pass", low=1)
    num_workers: int = execution(2, help="image decoding worker processes", low=0)
    device: str = execution("auto", help="where the model runs: auto, cpu, cuda, cuda:1 ...")
    progress: bool = execution(True, help="show a progress bar (on a terminal)")
