"""Paired comparison of evaluation runs on the same images: differences vs a baseline with bootstrap CIs.

The first run is the baseline. Images are resampled jointly (the same resample for every run), so the
confidence intervals account for the correlation between the runs' errors. Each resample is a vector
of multiplicities (how often each image was drawn); rank correlation on a resample is computed from
precomputed sort orders with those weights, which equals scipy's SRCC on the resampled arrays but needs
no sorting per resample (2000 resamples of 20k images take seconds).

p-values are two-sided bootstrap p-values: 2 * min(P*(d <= 0), P*(d >= 0)) with the (k + 1) / (B + 1)
correction, capped at 1.
"""
from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_write_text
from ..errors import IAAError
from .categories import MIN_CI_IMAGES, category_rows
from .metrics import MetricWarning, binary_accuracy, emd_per_image, plcc, srcc
from .plots import difference_plot
from .predictions import Predictions
from .report import EvalRun, data_uri, fmt, fmt_p, html_page, html_table, jsonable, load_run, markdown_table

DEFAULT_BOOTSTRAP = 2000
CELLS_PER_CHUNK = 2_000_000  # resamples x images held in memory at once
HIGHER_IS_BETTER = {"srcc": True, "plcc": True, "accuracy": True, "emd_r1": False, "emd_r2": False}
MIN_RELATIVE_BASE = 0.05  # no relative change is computed against a baseline SRCC at or below this
LABELS = {"srcc": "SRCC", "plcc": "PLCC", "accuracy": "Binary accuracy", "emd_r1": "EMD (r=1)", "emd_r2": "EMD (r=2)"}


class _Ranks:
    """Sort order and tie groups of one score vector, to rank any resample of it without sorting."""

    def __init__(self, values: np.ndarray):
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        new_group = np.r_[True, ordered[1:] != ordered[:-1]]
        self.order = order
        self.ends = np.r_[np.flatnonzero(new_group)[1:], len(values)] - 1  # last sorted position of each group
        self.group = np.empty(len(values), dtype=np.int64)
        self.group[order] = np.cumsum(new_group) - 1
        self.ties = len(self.ends) < len(values)

    def centred_ranks(self, counts: np.ndarray) -> np.ndarray:
        """(B, N) average ranks (ties averaged) of each image within each resample, minus the mean rank.

        The copies of a tie group occupy ranks below+1 .. end, where `end` is the cumulative count up to
        the group's last member and `below` the previous group's `end`: their average is (below + end + 1) / 2.
        The mean rank of a resample of N draws is (N + 1) / 2, so the centred rank is (below + end - N) / 2.
        """
        end = np.cumsum(np.take(counts, self.order, axis=1), axis=1)
        if self.ties:
            end = np.take(end, self.ends, axis=1)
        centred = end - end[:, -1:]
        centred[:, 1:] += end[:, :-1]
        centred *= 0.5
        return np.take(centred, self.group, axis=1)


def _correlation(sxy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, scale_x: np.ndarray,
                 scale_y: np.ndarray) -> np.ndarray:
    """sxy / sqrt(sxx syy), NaN where x or y is (numerically) constant within the resample."""
    defined = (sxx > 1e-12 * scale_x) & (syy > 1e-12 * scale_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    return np.where(defined, np.clip(r, -1.0, 1.0), np.nan)


def _resampled_pearson(x: np.ndarray, y: np.ndarray, counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Pearson correlation of two (N,) vectors on each resample (rows of `counts` are multiplicities)."""
    x = x - x.mean()  # centring first keeps the sums well conditioned
    y = y - y.mean()
    sums = counts @ np.stack([x, y, x * x, y * y, x * y], axis=1) / total[:, None]
    mx, my, xx, yy, xy = sums.T
    return _correlation(xy - mx * my, xx - mx * mx, yy - my * my, xx, yy)


def _resampled_spearman(true_ranks: np.ndarray, true_ss: np.ndarray, ranks: np.ndarray,
                        counts: np.ndarray) -> np.ndarray:
    """Spearman correlation = Pearson correlation of the centred ranks (their weighted mean is 0)."""
    ss = np.einsum("ij,ij,ij->i", counts, ranks, ranks)
    cross = np.einsum("ij,ij,ij->i", counts, true_ranks, ranks)
    scale = np.square(counts.sum(axis=1)) ** 1.5  # ~ N^3, the size of a rank sum of squares
    return _correlation(cross, true_ss, ss, scale, scale)


def resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of (B_chunk, n) multiplicities; row b counts how often each image is in resample b."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, CELLS_PER_CHUNK // max(n, 1)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def resampled_metrics(
    counts: np.ndarray,
    true: np.ndarray,
    preds: Sequence[np.ndarray],
    threshold: float | None = None,
    emds: Sequence[dict[str, np.ndarray]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """For each run: {metric: (B,) values on each resample} (srcc, plcc, accuracy, and per-image means in `emds`)."""
    true_ranks = _Ranks(true).centred_ranks(counts)
    true_ss = np.einsum("ij,ij,ij->i", counts, true_ranks, true_ranks)
    total = counts.sum(axis=1)
    results = []
    for r, pred in enumerate(preds):
        values = {
            "srcc": _resampled_spearman(true_ranks, true_ss, _Ranks(pred).centred_ranks(counts), counts),
            "plcc": _resampled_pearson(true, pred, counts, total),
        }
        if threshold is not None:
            values["accuracy"] = counts @ ((true >= threshold) == (pred >= threshold)).astype(np.float64) / total
        for key, per_image in (emds[r] if emds else {}).items():
            values[key] = counts @ per_image / total
        results.append(values)
    return results


def _bootstrap(true, preds, threshold, emds, n_boot, seed) -> list[dict[str, np.ndarray]]:
    parts: list[list[dict[str, np.ndarray]]] = [
        resampled_metrics(c, true, preds, threshold, emds) for c in resample_counts(len(true), n_boot, seed)
    ]
    return [{k: np.concatenate([p[r][k] for p in parts]) for k in parts[0][r]} for r in range(len(preds))]


def bootstrap_interval(diffs: np.ndarray) -> dict[str, float]:
    """95% percentile CI and two-sided bootstrap p-value of resampled differences (NaN resamples dropped)."""
    d = diffs[np.isfinite(diffs)]
    if len(d) == 0:
        return {"ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    low, high = np.percentile(d, [2.5, 97.5])
    k = min(np.sum(d <= 0), np.sum(d >= 0))
    return {"ci_low": float(low), "ci_high": float(high), "p_value": float(min(1.0, 2 * (k + 1) / (len(d) + 1)))}


def relative_change(value: float, base: float) -> float:
    """100 x (value - base) / base; NaN (not reported) for a baseline SRCC at or below MIN_RELATIVE_BASE, where
    a ratio says nothing (a baseline of 0.01 turns +0.08 into "+788 %")."""
    usable = math.isfinite(base) and math.isfinite(value) and base > MIN_RELATIVE_BASE
    return 100.0 * (value - base) / base if usable else math.nan


def significantly_worse(diff: dict[str, Any]) -> bool:
    """True when a difference goes the wrong way and its 95 % interval excludes zero."""
    high, low = diff.get("ci_high", math.nan), diff.get("ci_low", math.nan)
    return bool(high < 0) if diff["higher_is_better"] else bool(low > 0)


def _point(true: np.ndarray, pred: np.ndarray, threshold, emd: dict[str, np.ndarray]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        values = {"srcc": srcc(true, pred), "plcc": plcc(true, pred)}
    if threshold is not None:
        values["accuracy"] = binary_accuracy(true, pred, threshold)
    values.update({k: float(v.mean()) for k, v in emd.items()})
    return values


def check_same_images(runs: Sequence[EvalRun]) -> None:
    """IAAError unless every run holds the same image ids (and the same true scores) as the first."""
    base = runs[0]
    base_ids = sorted(base.predictions.ids)
    for run in runs[1:]:
        ids = sorted(run.predictions.ids)
        if ids != base_ids:
            only_run = len(set(ids) - set(base_ids))
            only_base = len(set(base_ids) - set(ids))
            raise IAAError(
                f"{run.path} and {base.path} were evaluated on different image sets "
                f"({only_run} image(s) only in the first, {only_base} only in the second; "
                f"{len(ids)} vs {len(base_ids)} images): evaluate both on the same dataset split")
        aligned = run.predictions.reordered(base.predictions.ids)
        if not np.allclose(aligned.true_mean, base.predictions.true_mean, rtol=0, atol=1e-6):
            bad = int(np.sum(~np.isclose(aligned.true_mean, base.predictions.true_mean, rtol=0, atol=1e-6)))
            raise IAAError(f"{run.path} and {base.path} have the same images but different true scores for "
                           f"{bad} of them: they were evaluated against different labels")


def _unique_names(runs: Sequence[EvalRun]) -> list[str]:
    names, seen = [], {}
    for run in runs:
        name = run.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return names


def _emds(pred: Predictions, base: Predictions, with_emd: bool) -> dict[str, np.ndarray]:
    if not with_emd:
        return {}
    return {f"emd_r{r}": emd_per_image(base.true_dist, pred.pred_dist, r) for r in (1, 2)}


@dataclass
class _Setup:
    """What every comparison of a subset of images needs: true scores, each run's predictions and per-image EMDs."""

    true: np.ndarray
    preds: list[np.ndarray]
    emds: list[dict[str, np.ndarray]]
    names: list[str]
    threshold: float | None
    bootstrap: int
    seed: int


def _compare_rows(setup: _Setup, rows: np.ndarray | None, seed_offset: int) -> dict[str, Any]:
    """Point values of every run and paired-bootstrap differences vs the baseline on `rows` (None: all images)."""
    sel = slice(None) if rows is None else rows
    t = setup.true[sel]
    pr = [p[sel] for p in setup.preds]
    em = [{k: v[sel] for k, v in e.items()} for e in setup.emds]
    points = [_point(t, p, setup.threshold, e) for p, e in zip(pr, em)]
    samples = (_bootstrap(t, pr, setup.threshold, em, setup.bootstrap, setup.seed + seed_offset)
               if len(t) >= MIN_CI_IMAGES else None)
    result = {"values": dict(zip(setup.names, points)), "differences": {}}
    for j in range(1, len(pr)):
        diffs = {}
        for key, value in points[j].items():
            interval = (bootstrap_interval(samples[j][key] - samples[0][key]) if samples is not None
                        else {"ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan})
            diffs[key] = {"baseline": points[0][key], "value": value, "diff": value - points[0][key],
                          "higher_is_better": HIGHER_IS_BETTER[key], **interval}
        diffs["srcc_relative_change_pct"] = relative_change(points[j]["srcc"], points[0]["srcc"])
        diffs["significantly_worse"] = [key for key in points[j] if significantly_worse(diffs[key])]
        result["differences"][setup.names[j]] = diffs
    return result


def _compare_categories(setup: _Setup, rows_by_category: dict[str, list[int]], min_images: int) -> list[dict[str, Any]]:
    """Per-category SRCC of every run vs the baseline; bootstrap CIs only for categories with `min_images` or more."""
    names, categories = setup.names, []
    for offset, (cat, rows) in enumerate(rows_by_category.items(), 1):
        too_few = len(rows) < min_images
        if too_few:
            points = [_point(setup.true[rows], p[rows], None, {}) for p in setup.preds]
            runs_cat = {names[j]: {"srcc": points[j]["srcc"], "diff": points[j]["srcc"] - points[0]["srcc"],
                                   "relative_pct": relative_change(points[j]["srcc"], points[0]["srcc"]),
                                   "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
                        for j in range(1, len(names))}
            base_srcc = points[0]["srcc"]
        else:
            res = _compare_rows(setup, np.asarray(rows), offset)
            base_srcc = res["values"][names[0]]["srcc"]
            runs_cat = {name: {"srcc": d["srcc"]["value"], "diff": d["srcc"]["diff"],
                               "relative_pct": d["srcc_relative_change_pct"], "ci_low": d["srcc"]["ci_low"],
                               "ci_high": d["srcc"]["ci_high"], "p_value": d["srcc"]["p_value"]}
                        for name, d in res["differences"].items()}
        categories.append({"category": cat, "n": len(rows), "too_few": too_few, "baseline_srcc": base_srcc,
                           "runs": runs_cat})
    return categories


def compare_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_category_images: int | None = None,
) -> dict[str, Any]:
    """Compare evaluation folders (first = baseline); writes comparison.md/.json/.png and returns the document."""
    if len(run_dirs) < 2:
        raise IAAError("compare needs at least two evaluation folders (the first one is the baseline)")
    if bootstrap < 1:
        raise IAAError(f"--bootstrap must be at least 1, got {bootstrap}")
    runs = [load_run(d) for d in run_dirs]
    check_same_images(runs)
    base = runs[0].predictions
    preds = [run.predictions.reordered(base.ids) for run in runs]
    names = _unique_names(runs)
    if min_category_images is None:
        min_category_images = int(runs[0].document.get("min_category_images", 30))
    threshold = runs[0].document.get("overall", {}).get("threshold")
    with_emd = base.true_dist is not None and all(p.pred_dist is not None and p.pred_dist.shape == base.true_dist.shape
                                                   for p in preds)
    setup = _Setup(base.true_mean, [p.pred_mean for p in preds], [_emds(p, base, with_emd) for p in preds], names,
                   threshold, bootstrap, seed)
    overall = _compare_rows(setup, None, 0)
    categories = _compare_categories(setup, category_rows(base), min_category_images)
    first = names[1]
    categories.sort(key=lambda c: (c["too_few"], -np.nan_to_num(c["runs"][first]["diff"], nan=-np.inf)))
    document = {
        "baseline": names[0],
        "runs": [{"name": n, "path": str(r.path), "dataset": r.document.get("dataset"),
                  "split": r.document.get("split")} for n, r in zip(names, runs)],
        "n": len(base),
        "bootstrap": bootstrap,
        "seed": seed,
        "confidence": 0.95,
        "threshold": threshold,
        "min_category_images": min_category_images,
        "overall": overall["values"],
        "differences": overall["differences"],
        "per_category": categories,
    }
    _write(document, Path(out), names)
    return document


def _write(document: dict[str, Any], out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    chart_rows = [{"category": "overall", "n": document["n"],
                   "runs": {n: document["differences"][n]["srcc"] for n in names[1:]}}]
    chart_rows += [c for c in document["per_category"] if not c["too_few"]]
    difference_plot(chart_rows, names[1:], names[0], out / "comparison.png")
    atomic_write_text(out / "comparison.json", json.dumps(jsonable(document), indent=2) + "\n")
    sections = comparison_sections(document, names)
    title = f"Comparison against {names[0]}"
    md = [f"# {title}\n"]
    body = [f"<h1>{html.escape(title)}</h1>\n"]
    for heading, text, headers, rows in sections:
        md.append(f"\n## {heading}\n\n{text}\n\n" + (markdown_table(headers, rows) if rows else ""))
        body.append(f"<h2>{html.escape(heading)}</h2>\n<p>{html.escape(text)}</p>\n"
                    + (html_table(headers, rows) if rows else ""))
    md.append("\n![SRCC differences](comparison.png)\n")
    body.append(f"<h2>SRCC differences</h2>\n<img alt=\"SRCC differences (forest plot)\" "
                f"src=\"{data_uri(out / 'comparison.png')}\">\n")
    atomic_write_text(out / "comparison.md", "".join(md))
    atomic_write_text(out / "comparison.html", html_page(title, "".join(body)))


def _signed(value: float, digits: int = 4, suffix: str = "") -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}{suffix}"


def _relative_text(value: float, why: bool = True) -> str:
    if math.isfinite(value):
        return _signed(value, 2, " %")
    return f"n/a (baseline SRCC <= {MIN_RELATIVE_BASE})" if why else "n/a"


def interval_cells(d: dict[str, float], n: int) -> list[str]:
    """The '95% CI' and 'p' cells of one difference: 'too few' below MIN_CI_IMAGES images."""
    if n < MIN_CI_IMAGES:
        return [f"too few (n < {MIN_CI_IMAGES})", "too few"]
    return [f"[{_signed(d['ci_low'])}, {_signed(d['ci_high'])}]", fmt_p(d["p_value"])]


def comparison_sections(document: dict[str, Any], names: list[str]) -> list[tuple[str, str, list[str], list]]:
    """(heading, text, headers, rows) of the comparison report."""
    metrics = [k for k in LABELS if k in document["overall"][names[0]]]
    intro = (f"{document['n']} images; baseline: {names[0]}. Paired bootstrap over images "
             f"({document['bootstrap']} resamples, seed {document['seed']}), 95% percentile intervals, "
             "two-sided bootstrap p-values.")
    sections = [("Headline metrics", intro, ["Metric", *names],
                 [[LABELS[k], *(fmt(document["overall"][n][k]) for n in names)] for k in metrics])]
    for name in names[1:]:
        diffs = document["differences"][name]
        rows = [[LABELS[k] + ("" if diffs[k]["higher_is_better"] else " (lower is better)"),
                 fmt(diffs[k]["baseline"]), fmt(diffs[k]["value"]),
                 _signed(diffs[k]["diff"]) + (" (worse)" if significantly_worse(diffs[k]) else ""),
                 *interval_cells(diffs[k], document["n"])]
                for k in metrics]
        text = f"Relative SRCC change: {_relative_text(diffs['srcc_relative_change_pct'])}."
        worse = [f"{LABELS[k]} ({_signed(diffs[k]['diff'])})" for k in diffs.get("significantly_worse", [])]
        if worse:
            text += f" Significantly worse than {names[0]} (95 % interval excludes 0): {', '.join(worse)}."
        sections.append((f"{name} vs {names[0]}", text,
                         ["Metric", names[0], name, "Difference", "95% CI", "p"], rows))
    headers = ["Category", "n", f"{names[0]} SRCC"]
    for name in names[1:]:
        headers += [f"{name} SRCC", "Difference", "Relative", "95% CI", "p"]

    def row(c):
        cells = [c["category"], c["n"], fmt(c["baseline_srcc"])]
        for name in names[1:]:
            r = c["runs"][name]
            cells += [fmt(r["srcc"]), _signed(r["diff"]), _relative_text(r["relative_pct"], why=False),
                      *(interval_cells(r, c["n"]) if not c["too_few"] else ["too few", "too few"])]
        return cells

    shown = [row(c) for c in document["per_category"] if not c["too_few"]]
    few = [row(c) for c in document["per_category"] if c["too_few"]]
    if shown:
        sections.append(("Per-category SRCC", f"Sorted by the SRCC improvement of {names[1]}; categories with at "
                         f"least {document['min_category_images']} images.", headers, shown))
    if few:
        sections.append(("Categories with too few images", f"Fewer than {document['min_category_images']} "
                         "images: not meaningful, listed for completeness only.", headers, few))
    return sections
