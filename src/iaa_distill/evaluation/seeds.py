"""Claims across seeds: models trained once per seed, evaluated on the same images, compared as groups.

Each group is one model trained with several seeds (e.g. the distilled student with seeds 0, 1, 2);
the first group is the baseline; a single folder is a group of one (e.g. the teacher, shared by all seeds).
Reported: every group's SRCC mean ± sd over its seeds, and a paired bootstrap over seeds x images: each
resample draws the images once, scores every seed's run on that draw and averages each group's SRCC over
its seeds. From the same resamples come the difference to the baseline (95 % percentile CI, two-sided
bootstrap p-value), the relative SRCC gain in % and, when a group is named `teacher`, the share of the
teacher's SRCC each other group keeps (group SRCC / teacher SRCC), both with their CIs.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..artifacts import atomic_write_text
from ..errors import IAAError
from .compare import (
    DEFAULT_BOOTSTRAP,
    MIN_RELATIVE_BASE,
    bootstrap_interval,
    check_same_images,
    resample_counts,
    relative_change,
    resampled_metrics,
)
from .metrics import srcc
from .report import jsonable, load_run, markdown_table

TEACHER = "teacher"
SEEDS_JSON, SEEDS_MD = "seeds.json", "seeds.md"


def t_interval(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval of `values` (e.g. one figure per seed; 0 for a single value)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def _percentiles(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"ci_low": math.nan, "ci_high": math.nan}
    low, high = np.percentile(v, [2.5, 97.5])
    return {"ci_low": float(low), "ci_high": float(high)}


def _group_means(srccs: list[np.ndarray], sizes: list[int]) -> list[np.ndarray]:
    """Per-run resampled SRCCs -> each group's mean over its runs (runs listed group after group)."""
    ends = np.cumsum(sizes)
    return [np.mean(srccs[end - size:end], axis=0) for size, end in zip(sizes, ends)]


def compare_seeds(groups: Sequence[Sequence[str | Path]], out: str | Path, bootstrap: int = DEFAULT_BOOTSTRAP,
                  seed: int = 0) -> dict[str, Any]:
    """Compare groups of evaluation folders (one per seed; the first group is the baseline); writes
    OUT/seeds.json and OUT/seeds.md and returns the document."""
    if len(groups) < 2 or not all(groups):
        raise IAAError("a comparison across seeds needs at least two groups of evaluation folders "
                       "(the first group is the baseline)")
    runs = [[load_run(d) for d in group] for group in groups]
    flat = [run for group in runs for run in group]
    check_same_images(flat)
    base = flat[0].predictions
    true = base.true_mean
    preds = [run.predictions.reordered(base.ids).pred_mean for run in flat]
    names = [group[0].name for group in runs]
    if len(set(names)) < len(names):
        raise IAAError(f"groups must be different models, got {names}: list each model's seeds as one group")
    sizes = [len(group) for group in runs]
    point_srcc = [np.array([srcc(true, p)]) for p in preds]
    points = _group_means(point_srcc, sizes)
    samples: list[list[np.ndarray]] = [[] for _ in preds]
    for counts in resample_counts(len(true), bootstrap, seed):
        for r, values in enumerate(resampled_metrics(counts, true, preds)):
            samples[r].append(values["srcc"])
    resampled = _group_means([np.concatenate(s) for s in samples], sizes)
    document = {"n": len(true), "bootstrap": bootstrap, "seed": seed, "confidence": 0.95, "baseline": names[0],
                "groups": {}, "differences": {}}
    for name, group, end in zip(names, runs, np.cumsum(sizes)):
        values = [float(v[0]) for v in point_srcc[end - len(group):end]]
        document["groups"][name] = {"runs": [str(r.path) for r in group], "srcc": values,
                                    "mean": float(np.mean(values)),
                                    "sd": float(np.std(values, ddof=1)) if len(group) > 1 else math.nan}
    teacher = names.index(TEACHER) if TEACHER in names else None
    for j in range(1, len(names)):
        diff = {"diff": float(points[j][0] - points[0][0]), **bootstrap_interval(resampled[j] - resampled[0])}
        base = resampled[0].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # resamples with a baseline <= MIN_RELATIVE_BASE: NaN
            ratios = np.where(base > MIN_RELATIVE_BASE, 100.0 * (resampled[j] - base) / base, np.nan)
        value = relative_change(float(points[j][0]), float(points[0][0]))
        relative = {"value": value, **_percentiles(ratios if math.isfinite(value) else ratios[:0])}
        entry = {"srcc": diff, "relative_gain_pct": relative}
        if teacher is not None and j != teacher:
            entry["teacher_share"] = {"value": float(points[j][0] / points[teacher][0]),
                                      **_percentiles(resampled[j] / resampled[teacher])}
        document["differences"][names[j]] = entry
    _write(document, Path(out))
    return document


def _cell(entry: dict[str, float], digits: int = 4, suffix: str = "") -> str:
    return (f"{entry.get('diff', entry.get('value')):+.{digits}f}{suffix} "
            f"[{entry['ci_low']:+.{digits}f}, {entry['ci_high']:+.{digits}f}]")


def _relative_cell(entry: dict[str, float]) -> str:
    if not math.isfinite(entry["value"]):
        return f"n/a (baseline SRCC <= {MIN_RELATIVE_BASE})"
    return _cell(entry, 2, " %")


def summary_lines(document: dict[str, Any]) -> list[str]:
    """The comparison across seeds as printed lines (also the body of seeds.md)."""
    lines = [f"{document['n']} images; baseline {document['baseline']}; paired bootstrap over seeds x images "
             f"({document['bootstrap']} resamples), 95 % percentile intervals"]
    for name, group in document["groups"].items():
        sd = "n/a" if math.isnan(group["sd"]) else f"{group['sd']:.4f}"
        lines.append(f"  {name:<10} SRCC {group['mean']:.4f} ± {sd} over {len(group['srcc'])} seed(s)")
    for name, entry in document["differences"].items():
        line = (f"  {name} vs {document['baseline']}: SRCC {_cell(entry['srcc'])} p={entry['srcc']['p_value']:.3f}, "
                f"relative {_relative_cell(entry['relative_gain_pct'])}")
        if "teacher_share" in entry:
            line += f", keeps {_cell(entry['teacher_share'], 3)} of the teacher's SRCC"
        lines.append(line)
    return lines


def _write(document: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SEEDS_JSON, json.dumps(jsonable(document), indent=2) + "\n")
    rows = [[name, f"{g['mean']:.4f}", "n/a" if math.isnan(g["sd"]) else f"{g['sd']:.4f}", len(g["srcc"])]
            for name, g in document["groups"].items()]
    text = "\n".join(summary_lines(document))
    atomic_write_text(out / SEEDS_MD, "# Comparison across seeds\n\n" + markdown_table(
        ["Model", "SRCC mean", "SRCC sd", "Seeds"], rows) + "\n```\n" + text + "\n```\n")
