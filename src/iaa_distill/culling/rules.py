"""From scores to decisions: which photos are picks, which are rejects, and how many stars each gets.

Rules apply in this order: within a burst only the best `burst_keep` photos can stay (the rest are
rejected as "burst"); of the photos left, `keep_top` (a count or a percentage) and `min_score` decide
the picks; every other photo is rejected. Stars (1-5) come from the score quintiles of this shoot, or
from four ascending `star_thresholds` on the model's scale. Photos that could not be scored get no
decision ("error") and are never acted upon.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import IAAError
from ..settings import setting

PICK, REJECT, UNFLAGGED, ERROR = "pick", "reject", "unflagged", "error"
REJECT_RATING = -1  # Lightroom's xmp:Rating for a rejected photo


@dataclass(frozen=True)
class CullRules:
    """The rules of one cull; changing them re-decides from the cached scores without rescoring."""

    keep_top: str | None = setting(None, help="keep the best N photos ('50') or the best share ('20%%'); default: all")
    min_score: float | None = setting(None, help="reject photos scoring below this (on the model's scale)")
    burst_keep: int = setting(1, help="photos kept per burst or near-duplicate group, best first")
    burst_gap: float = setting(2.0, help="seconds between captures (EXIF DateTimeOriginal) that still make one burst")
    burst_distance: int = setting(12, help="largest perceptual-hash distance (bits of 64) between photos of one group")
    bursts: bool = setting(True, help="group bursts and near-duplicates")
    star_thresholds: tuple[float, ...] | None = setting(
        None, help="four ascending scores where 2, 3, 4 and 5 stars begin (default: this shoot's score quintiles)")


@dataclass(frozen=True)
class Decision:
    """What the cull decided for one photo."""

    path: str
    score: float
    flag: str  # pick, reject, unflagged or error
    rating: int  # 1-5 stars, REJECT_RATING for rejects, 0 when unrated
    burst: str  # group id ('' when the photo stands alone)
    reason: str

    @property
    def xmp_rating(self) -> int:
        return REJECT_RATING if self.flag == REJECT else self.rating


def keep_count(keep_top: str | None, total: int) -> int:
    """How many photos `--keep-top` keeps out of `total` ('20%' -> a share, rounded up; '50' -> a count)."""
    if keep_top is None:
        return total
    text = keep_top.strip()
    try:
        value = float(text[:-1]) if text.endswith("%") else int(text)
    except ValueError:
        raise IAAError(f"--keep-top {keep_top!r}: give a count such as 50 or a share such as 20%") from None
    if value < 0 or (text.endswith("%") and value > 100):
        raise IAAError(f"--keep-top {keep_top!r}: must be a count >= 0 or a share between 0% and 100%")
    return min(total, math.ceil(total * value / 100) if text.endswith("%") else int(value))


def star_ratings(scores: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """1-5 stars per score: by the four `thresholds` when given, else by this set's quintiles."""
    if len(scores) == 0:
        return np.zeros(0, dtype=int)
    if thresholds:
        if len(thresholds) != 4 or list(thresholds) != sorted(thresholds):
            raise IAAError("--star-thresholds: give four ascending scores (where 2, 3, 4 and 5 stars begin)")
        cuts = np.asarray(thresholds, dtype=np.float64)
        return 1 + np.searchsorted(cuts, scores, side="right")
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable")  # 0 = worst
    return 1 + (ranks * 5) // len(scores)


def decide(paths: Sequence[str], scores: Sequence[float], bursts: Sequence[str], rules: CullRules,
           errors: Sequence[str] = ()) -> list[Decision]:
    """One decision per path, in the order given; NaN scores (with their `errors`) are not decided."""
    values = np.asarray(scores, dtype=np.float64)
    errors = list(errors) or [""] * len(paths)
    scored = [i for i in range(len(paths)) if math.isfinite(values[i])]
    stars = dict(zip(scored, star_ratings(values[scored], rules.star_thresholds).tolist()))
    reasons = _burst_rejects(scored, values, bursts, rules.burst_keep) if rules.bursts else {}
    contenders = sorted((i for i in scored if i not in reasons), key=lambda i: -values[i])
    kept = keep_count(rules.keep_top, len(contenders))
    for place, i in enumerate(contenders):
        if place >= kept:
            reasons[i] = f"not among the best {rules.keep_top}"
        elif rules.min_score is not None and values[i] < rules.min_score:
            reasons[i] = f"scores below {rules.min_score:g}"
    decisions = []
    for i, path in enumerate(paths):
        if i not in stars:
            decisions.append(Decision(path, math.nan, ERROR, 0, bursts[i], errors[i] or "not scored"))
        else:
            flag = REJECT if i in reasons else PICK
            decisions.append(Decision(path, float(values[i]), flag, stars[i], bursts[i], reasons.get(i, "")))
    return decisions


def _burst_rejects(scored: list[int], values: np.ndarray, bursts: Sequence[str], keep: int) -> dict[int, str]:
    """Photos of a burst beyond its best `keep`, with the reason."""
    members: dict[str, list[int]] = {}
    for i in scored:
        if bursts[i]:
            members.setdefault(bursts[i], []).append(i)
    rejects = {}
    for group, indices in members.items():
        for i in sorted(indices, key=lambda i: -values[i])[keep:]:
            rejects[i] = f"burst {group}: {len(indices)} similar shots, {keep} kept"
    return rejects
