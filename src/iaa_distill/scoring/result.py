"""`Result`: one scored image, the same record in the Python API, the JSONL/JSON output and the HTTP answer.

Kept free of torch so that output formatting (and `iaa score --help`) stays light.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Result:
    """One scored image.

    path: the file's path (or the name given for an in-memory image).
    mean: predicted mean score on the model's scale (NaN when the image failed).
    std: standard deviation of the predicted distribution over the score levels; NaN for scalar
        models (they predict no distribution) and for failed images.
    distribution: probabilities of the K levels (None for scalar models and failures).
    error: '' on success, else the one-line reason.
    embedding: the aesthetic feature (float32, the model's feature size) when asked for
        (`Scorer.score(..., embed=True)`), else None.
    """

    path: str
    mean: float
    std: float
    distribution: list[float] | None
    error: str = ""
    embedding: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (NaN becomes None, the embedding a list)."""
        return {
            "path": self.path,
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "distribution": self.distribution,
            "embedding": None if self.embedding is None else [float(v) for v in self.embedding],
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """The inverse of `to_dict`; also reads CSV rows (numbers as text, the distribution space-separated)."""
        dist = data.get("distribution")
        if isinstance(dist, str):
            dist = [float(v) for v in dist.split()]
        embedding = data.get("embedding")
        return cls(str(data["path"]), _number(data.get("mean")), _number(data.get("std")),
                   [float(v) for v in dist] if dist else None, data.get("error") or "",
                   None if embedding is None else np.asarray(embedding, dtype=np.float32))

    @classmethod
    def failure(cls, path: str, error: str) -> "Result":
        return cls(path, math.nan, math.nan, None, error)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: str | float | None) -> float:
    return math.nan if value is None or value == "" else float(value)
