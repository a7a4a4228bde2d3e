"""The culling section of `iaa bench`: `iaa cull` end to end on camera-size photos, with each stage's share and
the limit of the machine for that path, and `iaa score` on the same photos.

Photos are 12 MP JPEGs (4000x3000) generated like the other benchmark photos, each twice: as a camera writes it,
with an MPF Large Thumbnail (1920x1440) that the decoder reads instead of the 12 MP image, and without one (the
same primary bytes: a photo exported or edited without its preview), decoded at 1/8. The model is the default
student (tf_efficientnet_lite0) on the default engine (`--backend auto`). Stages: scoring with the thumbnails
(+ perceptual hash and capture time) from the same decode, thumbnails left over, decisions (bursts and rules),
gallery. The limit: the workers' rate alone (reduced-size decode + thumbnail of the same photos) and the model's
compute rate alone; the two share the same cores, so the cull can reach min(decode, compute) only when one is
far faster, and 1 / (1/decode + 1/compute) when neither runs beside the other. The figure for 1,000 photos is
extrapolated from `count`. The scores' drift between a preview and the full decode of the same photos is printed
(SRCC and mean |score difference|). The actions of `iaa cull --apply` (XMP sidecars, copy, move) are timed apart.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .photos import write_benchmark_photos, write_camera_photos
from .sections import _student_dir
from .stages import binding_stage, read_rate, shared_core_limit
from .timing import Report, images_per_second

CAMERA_SIZE = (4000, 3000)  # 12 MP
PREVIEW_SIDE = 1920  # the MPF preview's long side (1616 to 1920 on most cameras)
QUICK_CULL_PHOTOS = 6
GOAL_SECONDS_PER_1000 = 20.0
VARIANTS = ("with MPF preview", "no preview")


def bench_culling(report: Report, folder: Path, workers: int, device: str, count: int = 200) -> dict[str, float]:
    """Time one cull and one `iaa score` of `count` generated camera-size photos with and without an MPF
    preview, the stages that bound them, and the preview's score drift."""
    from ..scoring import Scorer

    batch_size = max(1, min(32, count // (2 * max(1, workers))))  # every worker gets batches to decode
    plain = write_benchmark_photos(folder / "camera", count, *CAMERA_SIZE, quality=90)
    photos = {VARIANTS[0]: [str(p) for p in write_camera_photos(folder / "camera-preview", plain, PREVIEW_SIDE)],
              VARIANTS[1]: [str(p) for p in plain]}
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _student_dir(Path(tmp), "tf_efficientnet_lite0", pretrained=True)
        torch_threads = torch.get_num_threads()
        scorer = Scorer.from_pretrained(model_dir, device=device)  # as iaa cull: the engine's threads, every core
        where = f"{workers} workers, {scorer.backend.name} on every core"
        size = scorer.config.input_size
        scorer.predict_batch(torch.rand(batch_size, 3, size, size))  # warm-up: the first cull is not the slower
        decisions = {}
        for variant, paths in photos.items():
            rates_of, decisions[variant] = _cull(report, variant, scorer, model_dir, paths, Path(tmp) / variant,
                                                 workers, batch_size, where)
            rates.update({f"{variant}: {k}": v for k, v in rates_of.items()})
        rates.update(_fewer_threads(report, model_dir, device, photos[VARIANTS[0]], Path(tmp), workers, batch_size,
                                   rates[f"{VARIANTS[0]}: photos_per_second"]))
        torch.set_num_threads(torch_threads)  # the limits and iaa score: the model on every core
        full = Scorer.from_pretrained(model_dir, device=device)  # as iaa score
        compute = _compute(report, full, batch_size)
        scores = {}
        for variant, paths in photos.items():
            limits = _limits(report, variant, full, paths, Path(tmp) / f"limits {variant}", workers, batch_size)
            rates.update({f"{variant}: {k}": v for k, v in limits.items()}, compute=compute)
            _bound(report, variant, rates[f"{variant}: photos_per_second"],
                   {"decode": limits["decode"], "compute": compute}, batch_size)
            rates[f"{variant}: iaa score"], scores[variant] = _score(
                report, variant, full, paths, workers, batch_size, {"read": limits["read"], "compute": compute})
        rates.update(_drift(report, *scores.values()))
        rates.update(_actions(report, decisions[VARIANTS[0]], Path(tmp) / "actions"))
    return rates


def _cull(report: Report, variant: str, scorer, model_dir: Path, photos: list[str], out: Path, workers: int,
          batch_size: int, where: str) -> tuple[dict[str, float], list]:
    """One `cull()` of `photos`: its rate, each stage's share and the time per 1,000 photos."""
    from ..culling import cull

    start = time.perf_counter()
    result = cull(photos, scorer, model_dir, out, batch_size=batch_size, workers=workers)
    total = time.perf_counter() - start
    count = len(photos)
    label = f"{count} photos of {CAMERA_SIZE[0]}x{CAMERA_SIZE[1]}, {variant}"
    rate = report.add("culling", f"iaa cull end to end, thumbnails included ({label}; {where})", count / total)
    for stage, seconds in result.seconds.items():
        report.add("culling", f"share of {stage} ({variant})", 100 * seconds / total, "%")
    seconds = report.add("culling", f"1,000 camera photos, extrapolated ({variant})", 1000 * total / count, "s")
    report.ratio(f"culling: goal {GOAL_SECONDS_PER_1000:g} s per 1,000 photos / measured ({variant})",
                 GOAL_SECONDS_PER_1000, seconds, goal=1.0)
    return {"photos_per_second": rate, "seconds_per_1000": seconds, **result.seconds}, result.decisions


def _fewer_threads(report: Report, model_dir: Path, device: str, photos: list[str], tmp: Path, workers: int,
                   batch_size: int, rate: float) -> dict[str, float]:
    """The cull of camera JPEGs with the model on only the cores the decoding workers leave (`threads_beside`,
    `iaa cull --threads N`), when that is fewer than every core: which of the two shares the cores better."""
    from ..scoring import Scorer
    from ..scoring.scorer import threads_beside

    threads = threads_beside(workers)
    if threads >= threads_beside(0):  # every core already
        return {}
    scorer = Scorer.from_pretrained(model_dir, device=device, threads=threads)
    variant = f"{VARIANTS[0]}, --threads {threads}"
    rates, _ = _cull(report, variant, scorer, model_dir, photos, tmp / variant, workers, batch_size,
                     f"{workers} workers, {scorer.backend.name} on {threads} threads")
    report.ratio(f"culling: the model on every core vs --threads {threads}, the cores the workers leave "
                 f"({VARIANTS[0]}; above 1: every core is faster)", rate, rates["photos_per_second"])
    return {f"{variant}: {k}": v for k, v in rates.items()}


def _bound(report: Report, variant: str, rate: float, stages: dict[str, float], batch_size: int) -> None:
    binding_stage(report, f"iaa cull, batch {batch_size}, {variant}", stages, rate, 0.8)
    shared_core_limit(report, f"iaa cull, {variant}", stages, rate)


def _score(report: Report, variant: str, scorer, photos: list[str], workers: int, batch_size: int,
           stages: dict[str, float]) -> tuple[float, np.ndarray]:
    """`iaa score` of `photos` at the default settings and `batch_size`, against its binding stage (the read
    stage decodes at the model's size only)."""
    start = time.perf_counter()
    results = scorer.score_paths(photos, batch_size=batch_size, num_workers=workers)
    rate = report.add("culling", f"iaa score end to end ({variant}, batch {batch_size}, {workers} workers)",
                      len(photos) / (time.perf_counter() - start))
    binding_stage(report, f"iaa score of camera photos, batch {batch_size}, {variant}", stages, rate, 0.8)
    if scorer.device.type == "cpu":
        shared_core_limit(report, f"iaa score of camera photos, {variant}", stages, rate)
    return rate, np.array([r.mean for r in results])


def _drift(report: Report, preview: np.ndarray, full: np.ndarray) -> dict[str, float]:
    """How far scores from the MPF preview are from those of the full decode of the same photos."""
    from ..evaluation.metrics import srcc

    return {"preview srcc": report.add("culling", "preview vs full decode: SRCC of the scores (same photos)",
                                       srcc(full, preview), ""),
            "preview mad": report.add("culling", "preview vs full decode: mean |score difference|",
                                      float(np.abs(preview - full).mean()), "")}


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


def _limits(report: Report, variant: str, scorer, photos: list[str], thumbs: Path, workers: int,
            batch_size: int) -> dict[str, float]:
    """The workers' rates: reduced-size decode at the model's size (iaa score's read), at the cull's size, and
    the cull's decode + thumbnail, hash and capture time."""
    from ..culling.survey import Surveyor
    from ..inputs import BatchReader

    thumbs.mkdir(parents=True)
    batches = [list(range(s, min(s + batch_size, len(photos)))) for s in range(0, len(photos), batch_size)]
    size = scorer.config.input_size
    where = f"{workers} workers" if workers else "main process"
    read = report.add("culling", f"reduced-size decode at {size} px, iaa score's read ({where}, {variant})",
                      read_rate(BatchReader(photos, batches, size), workers, 1))
    cull_side = max(size, Surveyor(thumbs, 400).min_side)
    report.add("culling", f"reduced-size decode at {cull_side} px alone ({where}, {variant})",
               read_rate(BatchReader(photos, batches, cull_side), workers, 1))
    decode = report.add("culling", f"stage decode: reduced-size decode + thumbnail, hash, capture time ({where}, "
                        f"{variant})", read_rate(BatchReader(photos, batches, size, visit=Surveyor(thumbs, 400)),
                                                 workers, 1))
    return {"read": read, "decode": decode}


def _compute(report: Report, scorer, batch_size: int) -> float:
    size = scorer.config.input_size
    batch = torch.rand(batch_size, 3, size, size)
    return report.add("culling", f"stage compute: default student, {scorer.backend.name}, batch {batch_size}",
                      images_per_second(lambda: len(scorer.predict_batch(batch)[0]), repeats=2))


def _link(photo: Path, folder: Path) -> Path:
    """A hard link of `photo` in `folder` (a copy across file systems)."""
    target = folder / photo.name
    try:
        os.link(photo, target)
    except OSError:
        shutil.copy2(photo, target)
    return target
