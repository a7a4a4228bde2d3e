"""Bursts and near-duplicates: photos taken within seconds of each other that look alike.

Photos are ordered by capture time (photos without one by name, after the others); two neighbours
join one group when their perceptual hashes differ by at most `distance` bits and they were taken at
most `gap` seconds apart (photos without a capture time group with each other by looks alone). Groups are named B1, B2, ... in that order.
"""
from __future__ import annotations

from collections.abc import Sequence

import imagehash

from .survey import PhotoFacts


def similar(a: PhotoFacts, b: PhotoFacts, gap: float, distance: int) -> bool:
    """True when `a` and `b` (neighbours in capture order) belong to one burst."""
    if not a.phash or not b.phash:
        return False
    if (a.taken is None) != (b.taken is None):
        return False
    if a.taken is not None and abs(b.taken - a.taken) > gap:
        return False
    return imagehash.hex_to_hash(a.phash) - imagehash.hex_to_hash(b.phash) <= distance


def group_bursts(facts: Sequence[PhotoFacts], gap: float = 2.0, distance: int = 12) -> list[str]:
    """The group id of each photo ('' for a photo that stands alone), in the order given."""
    order = sorted(range(len(facts)), key=lambda i: (facts[i].taken is None, facts[i].taken or 0.0, facts[i].path))
    runs: list[list[int]] = []
    for i in order:
        if runs and similar(facts[runs[-1][-1]], facts[i], gap, distance):
            runs[-1].append(i)
        else:
            runs.append([i])
    ids = [""] * len(facts)
    for number, members in enumerate((r for r in runs if len(r) > 1), 1):
        for i in members:
            ids[i] = f"B{number}"
    return ids
