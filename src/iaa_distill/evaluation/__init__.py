"""Evaluation as the IAA literature reports it: metrics, per-category results, reports, run comparisons.

Names resolve on first use, so `evaluation.settings` (read by the CLI to build its options) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"EvalRun": ".report", "EvaluationSettings": ".settings", "MetricWarning": ".metrics",
          "Predictions": ".predictions", "compare_runs": ".compare", "compute_metrics": ".metrics",
          "evaluate_model": ".run", "load_run": ".report", "per_category": ".categories", "write_report": ".report"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
