"""The culling section of `iaa bench`: `iaa cull` end to end on camera-size photos, with each stage's share and
the limit of the machine for that path.

Photos are 12 MP JPEGs (4000x3000) generated like the other benchmark photos; the model is the default
student (tf_efficientnet_lite0) on the default engine (`--backend auto`). Stages: scoring with the thumbnails
(+ perceptual hash and capture time) from the same decode, thumbnails left over, decisions (bursts and rules),
gallery. The limit: the workers' rate alone (reduced-size decode + thumbnail of the same photos) and the model's
compute rate alone; the two share the same cores, so the cull can reach min(decode, compute) only when one is
far faster, and 1 / (1/decode + 1/compute) when neither runs beside the other. The figure for 1,000 photos is
extrapolated from `count`. The actions of `iaa cull --apply` (XMP sidecars, copy, move) are timed apart.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .photos import write_benchmark_photos
from .sections import _student_dir
from .stages import binding_stage, read_rate
from .timing import Report, images_per_second

CAMERA_SIZE = (4000, 3000)  # 12 MP
QUICK_CULL_PHOTOS = 6
GOAL_SECONDS_PER_1000 = 20.0


def bench_culling(report: Report, folder: Path, workers: int, device: str, count: int = 200) -> dict[str, float]:
    """Time one cull of `count` generated camera-size photos and the two stages that bound it."""
    from ..culling import cull
    from ..scoring import Scorer
    from ..scoring.scorer import threads_beside

    batch_size = max(1, min(32, count // (2 * max(1, workers))))  # every worker gets batches to decode

    photos = [str(p) for p in write_benchmark_photos(folder / "camera", count, *CAMERA_SIZE, quality=90)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _student_dir(Path(tmp), "tf_efficientnet_lite0", pretrained=True)
        torch_threads = torch.get_num_threads()
        scorer = Scorer.from_pretrained(model_dir, device=device, threads=threads_beside(workers))  # as iaa cull
        start = time.perf_counter()
        result = cull(photos, scorer, model_dir, Path(tmp) / "cull", batch_size=batch_size, workers=workers)
        total = time.perf_counter() - start
        torch.set_num_threads(torch_threads)  # the limits: the model on every core
        stages = _limits(report, Scorer.from_pretrained(model_dir, device=device), photos, Path(tmp) / "limits",
                         workers, batch_size)
        actions = _actions(report, result.decisions, Path(tmp) / "actions")
    where = (f"{count} photos of {CAMERA_SIZE[0]}x{CAMERA_SIZE[1]}, {workers} workers, {scorer.backend.name} "
             f"on {threads_beside(workers)} threads")
    rate = report.add("culling", f"iaa cull end to end, thumbnails included ({where})", count / total)
    for stage, seconds in result.seconds.items():
        report.add("culling", f"share of {stage}", 100 * seconds / total, "%")
    seconds = report.add("culling", "1,000 camera photos, extrapolated", 1000 * total / count, "s")
    report.ratio(f"culling: goal {GOAL_SECONDS_PER_1000:g} s per 1,000 photos / measured", GOAL_SECONDS_PER_1000,
                 seconds, goal=1.0)
    binding_stage(report, f"iaa cull, batch {batch_size}", stages, rate, 0.8)
    shared = 1 / sum(1 / v for v in stages.values())
    report.ratio("iaa cull vs 1 / (1/decode + 1/compute) (decode and compute on the same cores, one after the other)",
                 rate, shared)
    return {"photos_per_second": rate, "seconds_per_1000": seconds, **result.seconds, **stages, **actions}


def _actions(report: Report, decisions: list, root: Path) -> dict[str, float]:
    """`iaa cull --apply`'s side effects, outside the cull's timing: XMP sidecars for every rated photo, then
    copying and moving the picks. They act on hard links of the photos (the benchmark's own files stay)."""
    from dataclasses import replace

    from ..culling.plan import command, execute, make_plan

    shoot = root / "shoot"
    shoot.mkdir(parents=True)
    linked = [replace(d, path=str(_link(Path(d.path), shoot))) for d in decisions]
    rates = {}
    for step, (name, cmd) in enumerate((("xmp sidecars", command(None, None, "stem", "replace")),
                                        ("copy", command("copy", str(root / "copied"), None, "keep")),
                                        ("move", command("move", str(root / "moved"), None, "keep")))):
        plan = make_plan(linked, cmd)
        count = len(plan.ratings) + len(plan.units)
        (root / f"out-{step}").mkdir()
        start = time.perf_counter()
        execute(plan, root / f"out-{step}")
        rates[f"action {name}"] = report.add("culling", f"action: {name} ({count} photos)",
                                             count / (time.perf_counter() - start), "photos/s")
    return rates


def _limits(report: Report, scorer, photos: list[str], thumbs: Path, workers: int, batch_size: int) -> dict[str, float]:
    """The workers' rate (reduced-size decode + thumbnail, hash and capture time) and the model's compute rate."""
    from ..culling.survey import Surveyor
    from ..inputs import BatchReader

    thumbs.mkdir(parents=True)
    batches = [list(range(s, min(s + batch_size, len(photos)))) for s in range(0, len(photos), batch_size)]
    size = scorer.config.input_size
    decode_only = BatchReader(photos, batches, max(size, Surveyor(thumbs, 400).min_side))
    with_thumbs = BatchReader(photos, batches, size, visit=Surveyor(thumbs, 400))
    where = f"{workers} workers" if workers else "main process"
    report.add("culling", f"reduced-size decode alone ({where})", read_rate(decode_only, workers, 1))
    decode = report.add("culling", f"stage decode: reduced-size decode + thumbnail, hash, capture time ({where})",
                        read_rate(with_thumbs, workers, 1))
    batch = torch.rand(batch_size, 3, size, size)
    compute = report.add("culling", f"stage compute: default student, {scorer.backend.name}, batch {batch_size}",
                         images_per_second(lambda: len(scorer.predict_batch(batch)[0]), repeats=2))
    return {"decode": decode, "compute": compute}


def _link(photo: Path, folder: Path) -> Path:
    """A hard link of `photo` in `folder` (a copy across file systems)."""
    target = folder / photo.name
    try:
        os.link(photo, target)
    except OSError:
        shutil.copy2(photo, target)
    return target
