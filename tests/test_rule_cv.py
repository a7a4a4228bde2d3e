"""The epoch-rule benchmark (benchmarks/rule_cv.py): the rules it replays offline from recorded predictions."""
from pathlib import Path

import numpy as np

from benchmarks.rule_cv import compare, judge_records, kept_by_teacher, kept_by_val, table
from benchmarks.small_data import labelled_subset


def _recording(val_scores, teacher_scores, judge_scores, best_epoch):
    """Epochs whose val predictions reach the given val SRCC / teacher agreement ranks (by construction)."""
    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    teacher = true + rng.normal(scale=0.3, size=40)
    judge_true = rng.normal(size=30)
    epochs = []
    for epoch, (v, t, j) in enumerate(zip(val_scores, teacher_scores, judge_scores)):
        pred = v * true + t * teacher + rng.normal(scale=0.5, size=40)
        epochs.append({"epoch": epoch, "val": pred.tolist(), "judge": (j * judge_true + rng.normal(size=30)).tolist()})
    return {"val_true": true.tolist(), "teacher_val": teacher.tolist(), "judge_true": judge_true.tolist(),
            "epochs": epochs, "best_epoch": best_epoch}


def test_teacher_rule_stops_after_patience_epochs_below_the_kept_one():
    rec = _recording([1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1] * 5, 0)
    rec["teacher_val"] = rec["epochs"][1]["val"]  # epoch 1 agrees perfectly: kept
    assert kept_by_teacher(rec, patience=0) == 1
    rec["teacher_val"] = rec["epochs"][4]["val"]  # epoch 4 would agree best, but epochs 1-2 end the run first
    assert kept_by_teacher(rec, patience=2) in (0, 1, 2) and kept_by_teacher(rec, patience=0) == 4
    rec["val_true"] = rec["epochs"][3]["val"]
    assert kept_by_val(rec) == 3


def test_compare_scores_each_rules_epoch_on_the_judge_images():
    rec = _recording([1, 1, 1], [0, 0, 0], [0.1, 3.0, 3.0], best_epoch=0)
    rec["teacher_val"] = rec["epochs"][1]["val"]
    rows = compare({0: {0: rec}}, patience=2)
    assert rows[0]["val_epoch"] == 0 and rows[0]["teacher_epoch"] == 1
    assert rows[0]["teacher_judge"] > rows[0]["val_judge"] and rows[0]["judge_best_epoch"] in (1, 2)
    assert "same epoch kept in 0 of 1 runs" in table(rows)


def test_judge_images_are_the_training_labels_the_subset_dropped():
    from iaa_distill.data.records import Dataset, ImageRecord

    records = [ImageRecord(f"i{k}", Path(f"/x/i{k}.jpg"), "d", "train" if k < 20 else "val", label=float(k % 5 + 1))
               for k in range(26)]
    full = Dataset("d", Path("/x"), records, scale=(1.0, 5.0))
    subset = labelled_subset(full, 15, seed=0)
    judge = judge_records(full, subset)
    kept = {r.image_id for r in subset.split("train") if r.label is not None}
    assert len(judge) == 5 and not kept & {r.image_id for r in judge}
    assert all(r.split == "train" and r.label is not None for r in judge)
