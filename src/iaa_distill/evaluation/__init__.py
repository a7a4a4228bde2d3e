"""Evaluation as the IAA literature reports it: metrics, per-category results, reports, run comparisons."""
from .categories import per_category
from .compare import compare_runs
from .metrics import MetricWarning, compute_metrics
from .predictions import Predictions
from .report import EvalRun, load_run, write_report
from .run import evaluate_model

__all__ = [
    "EvalRun",
    "MetricWarning",
    "Predictions",
    "compare_runs",
    "compute_metrics",
    "evaluate_model",
    "load_run",
    "per_category",
    "write_report",
]
