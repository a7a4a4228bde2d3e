"""Choose the teacher head by K-fold cross-validation on the training split only.

Every candidate is fitted on K-1 folds of the training images and scored by the SRCC of its mean score on
the held-out fold. With a few hundred images the folds are small and their SRCCs spread widely, so the
choice follows the one-standard-error rule: the simplest candidate (a linear head before any MLP, a smaller
MLP before a larger one) whose mean SRCC is within one standard error (sd / sqrt(K)) of the best mean. The
validation split is left to early stopping and the test split is never read.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold

from ..errors import IAAError
from ..evaluation.metrics import MetricWarning, srcc
from ..progress import progress_bar
from ..teacher_head import TeacherHeadConfig, predict_features
from .head_candidates import HeadCandidate, fit_candidate


@dataclass
class CandidateScore:
    """A candidate's SRCC on each held-out fold."""

    candidate: HeadCandidate
    fold_srcc: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_srcc))

    @property
    def sd(self) -> float:
        return float(np.std(self.fold_srcc, ddof=1)) if len(self.fold_srcc) > 1 else 0.0

    @property
    def standard_error(self) -> float:
        return self.sd / math.sqrt(len(self.fold_srcc))

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.candidate.spec, "kind": self.candidate.kind, "srcc_mean": self.mean,
                "srcc_sd": self.sd, "fold_srcc": self.fold_srcc}


def folds(count: int, num_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit positions, held-out positions) of each fold, shuffled by `seed`."""
    if count < 2 * num_folds:
        raise IAAError(f"only {count} labelled training images for {num_folds}-fold cross-validation of the head; "
                       "pass fewer --cv-folds or a single --candidates")
    return list(KFold(num_folds, shuffle=True, random_state=seed).split(np.arange(count)))


def _fold_srcc(candidate: HeadCandidate, data: tuple[np.ndarray, np.ndarray, np.ndarray], fold: tuple,
               base: TeacherHeadConfig, train) -> float:
    features, labels, means = data
    fit, held_out = fold
    with torch.random.fork_rng():
        head = fit_candidate(candidate, features[fit], labels[fit], base, train)
    predicted, _ = predict_features(head, features[held_out])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        value = srcc(means[held_out], predicted)
    return -1.0 if math.isnan(value) else float(value)


def cross_validate(candidates: Sequence[HeadCandidate], features: np.ndarray, labels: np.ndarray,
                   means: np.ndarray, base: TeacherHeadConfig, train, num_folds: int) -> list[CandidateScore]:
    """Each candidate's held-out SRCC on every fold of (features, labels, means): training images only.

    `train` is the run's `TeacherTrainConfig`; its seed draws the folds and the MLPs' initialisation, its
    `progress` shows a bar over the candidate x fold fits.
    """
    splits = folds(len(features), num_folds, train.seed)
    data = (np.asarray(features, np.float32), labels, means)
    scores = []
    with one_thread(), progress_bar(len(candidates) * len(splits), "teacher head (cross-validation)",
                                    train.progress, unit="fit") as bar:
        for c in candidates:
            fold_srcc = []
            for i, fold in enumerate(splits):
                fold_srcc.append(_fold_srcc(c, data, fold, base, replace(train, seed=train.seed + i)))
                bar.update()
            scores.append(CandidateScore(c, fold_srcc))
    return scores


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread: the folds' many tiny steps are 10-20x slower when threads wait on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def complexity(candidate: HeadCandidate) -> tuple[int, int]:
    """Sort key, simplest first: linear heads by rank, then MLPs by hidden units."""
    return (0, candidate.rank) if candidate.kind == "ridge" else (1, sum(candidate.hidden))


def choose(scores: Sequence[CandidateScore]) -> CandidateScore:
    """The simplest candidate within one standard error of the best mean CV SRCC (the earlier one on a tie)."""
    best = max(scores, key=lambda s: s.mean)
    close = [s for s in scores if s.mean >= best.mean - best.standard_error]
    return min(close, key=lambda s: complexity(s.candidate))


def describe_choice(record: dict[str, Any]) -> str:
    """One line: the chosen head and, when cross-validated, every candidate's CV SRCC (mean ± sd over folds)."""
    if not record.get("candidates"):
        return f"{record['chosen']} (the only candidate)"
    scores = ", ".join(f"{c['spec']} {c['srcc_mean']:.3f} ± {c['srcc_sd']:.3f}" for c in record["candidates"])
    return (f"{record['chosen']} chosen by {record['cv_folds']}-fold CV SRCC on the training split, one-standard-"
            f"error rule ({scores})")
