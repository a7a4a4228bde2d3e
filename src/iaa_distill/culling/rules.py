"""From scores to decisions in three tiers (pick, unflagged, reject), with 1-5 stars for every photo.

Rules apply in this order: within a burst only the best `burst_keep` photos can stay (the rest are
rejected as "burst"); photos scoring below `min_score`, and the worst `reject_bottom` (a count or a
percentage) of the others, are rejected; of the photos left, the best `keep_top` are picks and the rest
stay unflagged, for the photographer to look at (without `keep_top` every photo left is a pick). Stars
come from the score quintiles of this shoot, or from four ascending `star_thresholds` on the model's
scale, whatever the tier. Photos that could not be scored get no decision ("error") and are never acted upon.
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

    keep_top: str | None = setting(None, help="pick the best N photos ('50') or the best share ('20%%'); the others "
                                   "stay unflagged; default: all")
    min_score: float | None = setting(None, help="reject photos scoring below this (on the model's scale)")
    reject_bottom: str | None = setting(None, help="reject the worst N photos ('50') or the worst share ('20%%')")
    burst_keep: int = setting(1, help="photos kept per burst or near-duplicate group, best first")
    burst_gap: float = setting(2.0, help="seconds between captures (EXIF DateTimeOriginal) that still make one burst")
    burst_distance: int = setting(12, help="largest perceptual-hash distance (bits of 64) between photos of one group")
    bursts: bool = setting(True, help="group bursts and near-duplicates")
    star_thresholds: tuple[float, ...] | None = setting(
        None, help="four ascending scores where 2, 3, 4 and 5 stars begin (default: this shoot's score quintiles)")

    def __post_init__(self) -> None:
        """Refuse a bad rule before any photo is scored (NaN passes every comparison, so it is named here)."""
        keep_count(self.keep_top, 0, "--keep-top")
        keep_count(self.reject_bottom, 0, "--reject-bottom")
        numbers = {"--min-score": [self.min_score], "--burst-gap": [self.burst_gap],
                   "--star-thresholds": list(self.star_thresholds or ())}
        for option, values in numbers.items():
            if any(v is not None and not math.isfinite(v) for v in values):
                raise IAAError(f"{option}: give a finite number (got {values})")
        if self.burst_gap < 0 or self.burst_keep < 1 or not 0 <= self.burst_distance <= 64:
            raise IAAError("--burst-gap must be >= 0, --burst-keep >= 1 and --burst-distance within 0..64")
        check_star_thresholds(self.star_thresholds)


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


def keep_count(keep_top: str | None, total: int, option: str = "--keep-top") -> int:
    """How many photos `--keep-top` keeps out of `total` ('20%' -> a share, rounded up; '50' -> a count)."""
    if keep_top is None:
        return total
    text = keep_top.strip()
    try:
        value = float(text[:-1]) if text.endswith("%") else int(text)
    except ValueError:
        raise IAAError(f"{option} {keep_top!r}: give a count such as 50 or a share such as 20%") from None
    if not 0 <= value <= (100 if text.endswith("%") else math.inf):  # also refuses nan%
        raise IAAError(f"{option} {keep_top!r}: must be a count >= 0 or a share between 0% and 100%")
    return min(total, math.ceil(total * value / 100) if text.endswith("%") else int(value))


def check_star_thresholds(thresholds: Sequence[float] | None) -> None:
    """IAAError unless `thresholds` is None or four ascending scores."""
    if thresholds and (len(thresholds) != 4 or list(thresholds) != sorted(thresholds)):
        raise IAAError("--star-thresholds: give four ascending scores (where 2, 3, 4 and 5 stars begin)")


def star_ratings(scores: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """1-5 stars per score: by the four `thresholds` when given, else by this set's quintiles."""
    if len(scores) == 0:
        return np.zeros(0, dtype=int)
    if thresholds:
        check_star_thresholds(thresholds)
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
    rejects = _burst_rejects(scored, values, bursts, rules.burst_keep) if rules.bursts else {}
    if rules.min_score is not None:
        rejects.update({i: f"scores below {rules.min_score:g}" for i in scored if i not in rejects and values[i] < rules.min_score})
    contenders = sorted((i for i in scored if i not in rejects), key=lambda i: -values[i])
    worst = keep_count(rules.reject_bottom, len(contenders), "--reject-bottom") if rules.reject_bottom else 0
    rejects.update({i: f"among the worst {rules.reject_bottom}" for i in contenders[len(contenders) - worst:]})
    contenders = contenders[:len(contenders) - worst]
    kept = keep_count(rules.keep_top, len(contenders))
    unflagged = {i: f"not among the best {rules.keep_top}" for i in contenders[kept:]}
    decisions = []
    for i, path in enumerate(paths):
        if i not in stars:
            decisions.append(Decision(path, math.nan, ERROR, 0, bursts[i], errors[i] or "not scored"))
        else:
            flag = REJECT if i in rejects else UNFLAGGED if i in unflagged else PICK
            reason = rejects.get(i) or unflagged.get(i, "")
            decisions.append(Decision(path, float(values[i]), flag, stars[i], bursts[i], reason))
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
