"""The culling section of `iaa bench`: `iaa cull` end to end on camera-size photos, with each stage's share.

Photos are 12 MP JPEGs (4000x3000) generated like the other benchmark photos; the model is the default
student (tf_efficientnet_lite0). Stages: scoring, thumbnails (+ perceptual hash and capture time),
decisions (bursts and rules), gallery. The figure for 1,000 photos is extrapolated from `count`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .photos import write_benchmark_photos
from .sections import _student_dir
from .timing import Report

CAMERA_SIZE = (4000, 3000)  # 12 MP
CULL_PHOTOS, QUICK_CULL_PHOTOS = 200, 6


def bench_culling(report: Report, folder: Path, workers: int, device: str, quick: bool = False) -> dict[str, float]:
    """Time one cull of generated camera-size photos; thumbnails must not cost more than scoring."""
    from ..culling import cull
    from ..scoring import Scorer

    count = QUICK_CULL_PHOTOS if quick else CULL_PHOTOS
    photos = [str(p) for p in write_benchmark_photos(folder / "camera", count, *CAMERA_SIZE, quality=90)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _student_dir(Path(tmp), "tf_efficientnet_lite0", pretrained=True)
        scorer = Scorer.from_pretrained(model_dir, device=device)
        start = time.perf_counter()
        result = cull(photos, scorer, model_dir, Path(tmp) / "cull", batch_size=32, workers=workers)
        total = time.perf_counter() - start
    where = f"{count} photos of {CAMERA_SIZE[0]}x{CAMERA_SIZE[1]}, {workers} workers"
    report.add("culling", f"iaa cull end to end, thumbnails included ({where})", count / total)
    for stage, seconds in result.seconds.items():
        report.add("culling", f"share of {stage}", 100 * seconds / total, "%")
    minutes = report.add("culling", "1,000 camera photos, extrapolated", 1000 * total / count / 60, "min")
    report.ratio("thumbnail speed vs scoring speed (must not cost more)", result.seconds["scoring"],
                 result.seconds["thumbnails"], goal=1.0)
    return {"photos_per_second": count / total, "minutes_per_1000": minutes, **result.seconds}
