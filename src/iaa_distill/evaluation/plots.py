"""PNG plots of an evaluation and of a comparison (matplotlib's Agg canvas; no display, no pyplot state)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .predictions import Predictions

DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def scatter_plot(predictions: Predictions, metrics: dict[str, Any], path: Path) -> Path:
    """Predicted vs true mean score with the identity line; SRCC/PLCC in the title."""
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot()
    true, pred = predictions.true_mean, predictions.pred_mean
    ax.scatter(true, pred, s=6 if len(true) > 2000 else 12, alpha=0.35 if len(true) > 2000 else 0.7,
               edgecolors="none")
    values = np.concatenate([true, pred]) if len(true) else np.zeros(1)
    low, high = (predictions.scale if predictions.scale else (float(values.min()), float(values.max())))
    low, high = min(low, float(values.min())), max(high, float(values.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="identity")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("true mean score")
    ax.set_ylabel("predicted mean score")
    ax.legend(loc="upper left")
    ax.set_title(f"{predictions.model_name or 'model'}: SRCC {_fmt(metrics.get('srcc'))}, "
                 f"PLCC {_fmt(metrics.get('plcc'))} (n={len(true)})", fontsize=10)
    return _save(fig, path)


def histogram_plot(predictions: Predictions, path: Path) -> Path:
    """Histograms of the true and the predicted mean scores on shared bins."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    values = np.concatenate([predictions.true_mean, predictions.pred_mean])
    bins = np.linspace(values.min(), values.max(), 41) if len(values) and np.ptp(values) > 0 else 10
    ax.hist(predictions.true_mean, bins=bins, alpha=0.55, label="true")
    ax.hist(predictions.pred_mean, bins=bins, alpha=0.55, label="predicted")
    ax.set_xlabel("mean score")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title("Distribution of true and predicted mean scores", fontsize=10)
    return _save(fig, path)


def category_plot(categories: Sequence[dict[str, Any]], path: Path, title: str = "SRCC per category") -> Path:
    """Horizontal SRCC bars for the categories with enough images (too-few ones are left out)."""
    shown = [c for c in categories if not c["too_few"]]
    fig = _figure(6.5, max(2.0, 0.28 * len(shown) + 1.2))
    ax = fig.add_subplot()
    names = [f"{c['category']} (n={c['n']})" for c in shown]
    ax.barh(names, [0.0 if math.isnan(c["srcc"]) else c["srcc"] for c in shown])
    ax.invert_yaxis()
    ax.set_xlabel("SRCC")
    ax.set_title(title if shown else f"{title}: no category has enough images", fontsize=10)
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
