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


def _best_rate(report: Report, label: str, scorer, photos: list[Path], workers: int,
               batch_sizes: tuple[int, ...]) -> float:
    """The best img/s over `batch_sizes` of scoring `photos` from their files (after a warm-up on a few)."""
    scorer.score_paths(photos[: min(len(photos), 32)], batch_size=max(batch_sizes), num_workers=workers)
    return max(report.add("scoring", f"{label}, batch {bs}", images_per_second(
        lambda b=bs: len(scorer.score_paths(photos, batch_size=b, num_workers=workers)), repeats=2, warmup=0))
        for bs in batch_sizes)


def bench_teacher_scoring(report: Report, photos: list[Path], workers: int, device: str, batch_sizes: tuple[int, ...],
                          student: dict[str, float], onnx: bool = True) -> dict[str, float]:
    """img/s of `iaa score --model TEACHER_DIR` end to end (torch; onnxruntime too on CPU) and, per engine, the
    student's best rate over the teacher's (`student`: `bench_scoring`'s rates)."""
    from ..scoring import Scorer
    from ..scoring.onnx_export import export_onnx
    from ..teachers import DEFAULT_TEACHERS

    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _teacher_dir(Path(tmp), list(DEFAULT_TEACHERS))
        scorers = {"torch": Scorer.from_pretrained(folder, device=device, backend="torch")}
        if onnx and device == "cpu":
            onnx_path = export_onnx(folder, Path(tmp) / "teacher.onnx")
            scorers["onnxruntime"] = Scorer.from_pretrained(folder, device=device, backend="onnx", onnx_path=onnx_path)
        for engine, scorer in scorers.items():
            label = f"teacher scorer ({scorer.config.backbone} + head) {engine}"
            rates[engine] = _best_rate(report, label, scorer, photos, workers, batch_sizes)
            if f"student {engine} best" in student:
                report.ratio(f"student vs teacher scorer, {engine} (the speed price of accuracy mode)",
                             student[f"student {engine} best"], rates[engine])
    return rates
