"""The closed-form ceiling of a personal model (benchmarks/taste_ceiling.py): its paired differences."""
import pytest

from benchmarks.taste_ceiling import PAIRED, paired, paired_row, row
from iaa_distill.evaluation.seeds import t_interval


def test_paired_row_gives_the_224_px_student_minus_the_128_px_one_paired_per_split():
    scores = [{PAIRED[1]: 0.80, PAIRED[0]: 0.82}, {PAIRED[1]: 0.70, PAIRED[0]: 0.71}, {PAIRED[1]: 0.90, PAIRED[0]: 0.93}]
    mean, half = paired(scores, *PAIRED)
    assert (mean, half) == pytest.approx(t_interval([0.02, 0.01, 0.03]))  # per split, not the means' difference
    assert paired_row(100, scores) == f"| 100 | 3 | +0.0200 ± {half:.4f} | {mean - half:+.4f} .. {mean + half:+.4f} |"


def test_row_keeps_each_models_difference_with_the_student_probe():
    scores = [{"student probe": 0.5, "teacher": 0.6}, {"student probe": 0.7, "teacher": 0.8}]
    assert row(25, scores) == "| 25 | 2 | 0.600 | 0.700 (+0.100 ± 0.000) |"
