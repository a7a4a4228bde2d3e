"""PNG plots of an evaluation and of a comparison (matplotlib's Agg canvas; no display, no pyplot state)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..artifacts import atomic_file
from .metrics import fit_logistic, logistic4, undefined_reason
from .predictions import Predictions

DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def plot_title(predictions: Predictions, what: str) -> str:
    """'<model> on <dataset spec> (<split>): <what>'."""
    where = predictions.dataset or "dataset"
    return f"{predictions.model_name or 'model'} on {where}" + (f" ({predictions.split})" if predictions.split else "") + f": {what}"


def scatter_plot(predictions: Predictions, metrics: dict[str, Any], path: Path) -> Path:
    """Predicted vs true mean score, zoomed to the data, with the identity line and the fitted logistic."""
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    true, pred = predictions.true_mean, predictions.pred_mean
    ax.scatter(true, pred, s=6 if len(true) > 2000 else 12, alpha=0.35 if len(true) > 2000 else 0.7,
               edgecolors="none", label="images")
    values = np.concatenate([true, pred]) if len(true) else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    margin = 0.05 * (high - low or 1.0)
    low, high = low - margin, high + margin
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="identity")
    params = fit_logistic(true, pred) if undefined_reason(true, pred) is None else None
    if params is not None:  # the curve maps predictions onto true scores: x = logistic(pred), y = pred
        grid = np.linspace(float(pred.min()), float(pred.max()), 200)
        ax.plot(logistic4(grid, *params), grid, color="tab:red", linewidth=1.5, label="fitted logistic")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("true mean score")
    ax.set_ylabel("predicted mean score")
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.set_title(plot_title(predictions, f"SRCC {_fmt(metrics.get('srcc'))}, PLCC {_fmt(metrics.get('plcc'))} "
                                     f"(n={len(true)})"), fontsize=9)
    return _save(fig, path)


def histogram_plot(predictions: Predictions, path: Path) -> Path:
    """Histograms of the true and the predicted mean scores on shared bins chosen from n (numpy's 'auto')."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    values = np.concatenate([predictions.true_mean, predictions.pred_mean])
    bins = np.histogram_bin_edges(values, bins="auto") if len(values) and np.ptp(values) > 0 else 10
    ax.hist(predictions.true_mean, bins=bins, alpha=0.55, label="true")
    ax.hist(predictions.pred_mean, bins=bins, alpha=0.55, label="predicted")
    ax.set_xlabel("mean score")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title(plot_title(predictions, f"true and predicted mean scores (n={len(predictions)})"), fontsize=9)
    return _save(fig, path)


SRCC_AXIS = (-1.0, 1.0)  # one range for every model, so category plots of compared models line up


def category_plot(categories: Sequence[dict[str, Any]], path: Path, title: str = "SRCC per category") -> Path:
    """SRCC per category with 95% CIs, best first, on a fixed axis (too-few categories are left out)."""
    shown = sorted((c for c in categories if not c["too_few"]),
                   key=lambda c: -np.nan_to_num(c["srcc"], nan=-np.inf))
    fig = _figure(6.5, max(2.0, 0.28 * len(shown) + 1.2))
    ax = fig.add_subplot()
    values = np.array([np.nan_to_num(c["srcc"]) for c in shown], dtype=float)
    ci = np.array([c.get("srcc_ci", [math.nan, math.nan]) for c in shown], dtype=float).reshape(-1, 2)
    err = np.vstack([np.nan_to_num(values - ci[:, 0]), np.nan_to_num(ci[:, 1] - values)])
    ax.barh([f"{c['category']} (n={c['n']})" for c in shown], values, xerr=err, capsize=2)
    ax.invert_yaxis()
    ax.set_xlim(*SRCC_AXIS)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("SRCC (95% CI)")
    ax.set_title(title if shown else f"{title}: no category has enough images", fontsize=9)
    return _save(fig, path)


def difference_plot(rows: Sequence[dict[str, Any]], run_names: Sequence[str], baseline: str, path: Path) -> Path:
    """SRCC difference vs the baseline per category (and overall), one bar group per compared run, 95% CIs."""
    fig = _figure(7.0, max(2.2, 0.32 * len(rows) * max(1, len(run_names)) + 1.3))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(run_names))
    y = np.arange(len(rows))
    for j, name in enumerate(run_names):
        diffs = np.array([r["runs"][name]["diff"] for r in rows], dtype=float)
        low = np.array([r["runs"][name]["ci_low"] for r in rows], dtype=float)
        high = np.array([r["runs"][name]["ci_high"] for r in rows], dtype=float)
        err = np.vstack([np.nan_to_num(diffs - low), np.nan_to_num(high - diffs)])
        ax.barh(y + j * height, np.nan_to_num(diffs), height=height, xerr=err, capsize=2, label=name)
    ax.set_yticks(y + height * (len(run_names) - 1) / 2, [f"{r['category']} (n={r['n']})" for r in rows])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("SRCC difference vs baseline (95% bootstrap CI)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"SRCC change vs {baseline}, overall and per category", fontsize=10)
    return _save(fig, path)
