"""The student next to its baselines over seeds, from test-split evaluation folders: label-only baseline,
frozen-feature linear probe on the student's backbone (`baseline/probe`), teacher.

Mean test SRCC per model, paired-bootstrap 95 % CIs (`seeds.compare_seeds`) of the student's difference to
the baseline and to the probe and of its share of the teacher, and the distributions: mean EMD per model and
the median spread (std on the scale) of the predicted distributions next to the labels'.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..recipe import Recipe, probe_runs, student_runs
from ..score_space import ScoreSpace
from .compare import DEFAULT_BOOTSTRAP, bootstrap_interval, resample_counts
from .metrics import emd_per_image
from .report import load_run
from .seeds import compare_seeds


def spread(run) -> tuple[float, float, float]:
    """(mean EMD r=2, median predicted std, median label std) of one evaluation folder (NaN without votes)."""
    p = run.predictions
    emd = run.document.get("overall", {}).get("emd_r2", float("nan"))
    if p.pred_dist is None or p.true_dist is None:
        return emd, float("nan"), float("nan")
    space = ScoreSpace(p.pred_dist.shape[1], tuple(p.scale))
    return (emd, float(np.median(space.std(p.pred_dist, p.pred_mean))),
            float(np.median(space.std(p.true_dist, p.true_mean))))


def emd_difference(groups: list[list[str]], bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict | None:
    """Mean EMD (r=2) of the second group of evaluation folders minus the first's (each image's EMD averaged over
    a group's seeds), with the paired-bootstrap 95 % CI over the images; None without vote distributions."""
    per_group = []
    for dirs in groups:
        runs = [load_run(d).predictions for d in dirs]
        if any(p.pred_dist is None or p.true_dist is None for p in runs):
            return None
        per_group.append(np.mean([emd_per_image(p.true_dist, p.pred_dist, 2) for p in runs], axis=0))
    diff = per_group[1] - per_group[0]
    resampled = np.concatenate([counts @ diff / counts.sum(1) for counts in resample_counts(len(diff), bootstrap, seed)])
    return {"diff": float(diff.mean()), **bootstrap_interval(resampled)}


def student_report(recipe: Recipe, eval_dirs: dict[str, str], out: Path) -> str:
    """The Markdown summary of the runs' evaluation folders."""
    runs = student_runs(recipe)
    groups = {"baseline": [n for n, (b, _) in runs.items() if b], "student": [n for n, (b, _) in runs.items() if not b],
              "probe": [p for p in probe_runs(runs) if p in eval_dirs], "teacher": ["teacher"]}
    folders = {name: [eval_dirs[n] for n in names] for name, names in groups.items() if names}
    vs_baseline = compare_seeds([folders["baseline"], folders["student"], folders["teacher"],
                                 *([folders["probe"]] if "probe" in folders else [])], out / "vs-baseline")
    lines = [f"Test SRCC over seeds {recipe.seeds} ({vs_baseline['n']} test images):", "",
             "| model | mean SRCC | per seed | EMD | predicted std (median) | label std (median) |",
             "|---|---|---|---|---|---|"]
    for name, dirs in folders.items():
        stats = np.array([spread(load_run(d)) for d in dirs])
        group = vs_baseline["groups"][name]
        lines.append(f"| {name} | {group['mean']:.3f} | {', '.join(f'{v:.3f}' for v in group['srcc'])} | "
                     f"{np.nanmean(stats[:, 0]):.4f} | {np.nanmean(stats[:, 1]):.2f} | {np.nanmean(stats[:, 2]):.2f} |")
    student = vs_baseline["differences"]["student"]
    lines += ["", _ci("student - baseline", student["srcc"])]
    emd = emd_difference([folders["baseline"], folders["student"]])
    if emd is not None:
        lines.append(f"student - baseline: EMD (r=2) {emd['diff']:+.4f} (95% CI {emd['ci_low']:+.4f}..{emd['ci_high']:+.4f})")
    if "teacher_share" in student:
        share = student["teacher_share"]
        lines.append(f"student / teacher: {share['value']:.3f} (95% CI {share['ci_low']:.3f}..{share['ci_high']:.3f})")
    if "probe" in folders:
        vs_probe = compare_seeds([folders["probe"], folders["student"]], out / "vs-probe")
        lines.append(_ci("student - probe", vs_probe["differences"]["student"]["srcc"]))
        lines.append(_ci("probe - baseline", vs_baseline["differences"]["probe"]["srcc"]))
    return "\n".join(lines)


def _ci(label: str, d: dict) -> str:
    return f"{label}: SRCC {d['diff']:+.3f} (95% CI {d['ci_low']:+.3f}..{d['ci_high']:+.3f})"
