"""The accuracy-mode figures of `iaa bench`'s scoring section: a teacher folder scored from JPEG files.

The folder holds a teacher head over the default teachers (real ImageNet weights, head weights random:
the head is a few matrix products, so its weights do not change the speed). Printed next to the
student's figures, with the speed price of accuracy mode as a ratio.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .timing import Report, images_per_second


def _teacher_dir(root: Path, teachers: list[str]) -> Path:
    from ..teacher_head import TeacherHead, TeacherHeadConfig
    from ..teachers import load_teachers

    teacher_set = load_teachers(teachers)
    config = TeacherHeadConfig(input_dim=teacher_set.dim, teachers=teacher_set.specs())
    return TeacherHead(config).save_pretrained(root / "teacher")


def bench_teacher_scoring(report: Report, photos: list[Path], workers: int, device: str,
                          batch_sizes: tuple[int, ...], student: dict[str, float]) -> dict[str, float]:
    """img/s of `iaa score --model TEACHER_DIR` end to end (torch) and its ratio to the student's best rate."""
    from ..scoring import Scorer
    from ..teachers import DEFAULT_TEACHERS

    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.from_pretrained(_teacher_dir(Path(tmp), list(DEFAULT_TEACHERS)), device=device)
        label = f"teacher scorer ({scorer.config.backbone} + head, accuracy mode) torch"
        scorer.score_paths(photos[: min(len(photos), 32)], batch_size=max(batch_sizes), num_workers=workers)  # warm-up
        for bs in batch_sizes:
            rates[f"batch {bs}"] = report.add("scoring", f"{label}, batch {bs}", images_per_second(
                lambda b=bs: len(scorer.score_paths(photos, batch_size=b, num_workers=workers)), repeats=2, warmup=0))
    best = max(rates.values())
    fastest_student = max(v for k, v in student.items() if k.startswith("student") and k.endswith("best"))
    report.ratio("student vs teacher scorer (the speed price of accuracy mode)", fastest_student, best)
    return {**rates, "best": best}
