"""Which epoch a distilled student without unlabelled photos should keep: the best val SRCC, or the best agreement
with the teacher on the val images; judged on labelled training images that neither train nor choose.

On the demo (`small_data.demo_data`), each labelled subset (`small_data.labelled_subset`: `--train-images` of the
213 training images keep their labels) is set up as `small_data.py --no-unlabeled` sets it up: the same labels
file, recipe and folder (`small_data.subset_recipe`), so `small_data.py` and `iaa fit --config
DIR/small-data-150-subsetS-no-unlabeled/recipe.yaml` reuse the teacher trained here. Then one distilled student
per seed with the demo's settings but `recipe_rule: best` (so that no agreement with the teacher ends a run: every
epoch is trained; in OUT/rule_cv/student-seedN), and a callback records at every epoch (epoch 0, the warm start,
included) the student's mean scores on the val images and on the judge images: the training images whose labels
the subset dropped (63 on the demo).
Offline, from those recordings, two rules choose an epoch:

- `val SRCC`: the highest SRCC with the val labels (rule `best`, what such a run keeps today);
- `teacher on val`: the highest SRCC with the teacher's predictions on the same val images, with the recipe's
  `agreement_patience` ending the run as it ends a run that agrees on held-out unlabelled photos.

Each kept epoch is scored by SRCC with the judge images' labels; the table gives, per subset and seed, the epoch
each rule keeps, its judge SRCC and the paired difference (teacher on val - val SRCC), then its mean, standard
error and 95 % t-interval over every run. The test split is never read. The recordings are kept
(`OUT/rule_cv/seedN.json`), so a rerun only reports; a student folder without its recording is refused.

    python -m benchmarks.rule_cv --demo-dir iaa-small-data --train-images 150 --subset-seeds 0,1 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.small_data import demo_data, labelled_subset, subset_folder, subset_recipe
from iaa_distill.cli.types import seed_list
from iaa_distill.data.records import Dataset, ImageRecord
from iaa_distill.errors import IAAError
from iaa_distill.evaluation.metrics import srcc
from iaa_distill.evaluation.seeds import t_interval
from iaa_distill.recipe import Recipe, StageRunner, run_teacher_stages, stage_keys, stage_settings, student_runs
from iaa_distill.training.image_cache import ensure_image_cache
from iaa_distill.training.student import train_student
from iaa_distill.training.warm_start import cached_images, predict_raw

RECORDINGS = "rule_cv"  # OUT/rule_cv/seedN.json


class EpochPredictions(Callback):
    """Records the validated model's mean scores on the val images (the module's `val_predictions`) and on the
    `judge` images: epoch 0 (the warm start) when fitting starts, then after each validation. `header` holds the
    val images' labels and teacher predictions (mean scores) and the judge images' labels."""

    def __init__(self, judge: Sequence[ImageRecord], cache_root: Path, num_workers: int):
        self.judge, self.cache_root, self.num_workers = list(judge), cache_root, num_workers
        self.header: dict[str, Any] = {}
        self.epochs: list[dict[str, Any]] = []
        self._judge_cache: tuple[Path, np.ndarray] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        val, space = trainer.datamodule.val, pl_module.space
        size = pl_module.model.config.input_size
        cache = ensure_image_cache(self.judge, size, interpolation=pl_module.model.config.interpolation,
                                   root=self.cache_root, name="judge", num_workers=self.num_workers)
        self._judge_cache = cache.path, cache.rows_for([r.image_id for r in self.judge])
        teacher = space.target_mean(torch.from_numpy(np.asarray(val.predictions, np.float32))).double().numpy()
        self.header = {"val_ids": list(val.ids), "val_true": np.asarray(val.means).tolist(),
                       "teacher_val": teacher.tolist(), "judge_ids": [r.image_id for r in self.judge],
                       "judge_true": space.encode_all([r.label for r in self.judge],
                                                      [r.image_id for r in self.judge])[1].tolist()}
        self._record(0, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer.current_epoch + 1, pl_module)

    def _record(self, epoch: int, pl_module: pl.LightningModule) -> None:
        was_training, model = pl_module.training, pl_module.eval_model
        raw = predict_raw(model, cached_images(*self._judge_cache, model.config.input_size))
        pred, true = (np.asarray(v, np.float64) for v in pl_module.val_predictions)
        if not np.allclose(true, self.header["val_true"], atol=1e-4):
            raise IAAError("the val predictions are not in the val table's order")
        self.epochs.append({"epoch": epoch, "val": pred.tolist(),
                            "judge": pl_module.space.mean(raw).double().numpy().tolist()})
        pl_module.train(was_training)


def judge_records(full: Dataset, subset: Dataset) -> list[ImageRecord]:
    """The labelled training images of `full` whose labels `subset` dropped (they neither train nor choose)."""
    kept = {r.image_id for r in subset.split("train") if r.label is not None}
    return [r for r in full.split("train") if r.label is not None and r.image_id not in kept]


def record_students(recipe: Recipe, judge: list[ImageRecord]) -> dict[int, dict[str, Any]]:
    """Features (seeded) and teacher of `recipe` as `run_recipe` runs them (same folders and stage keys), then one
    distilled student per seed under rule `best`; returns each seed's recording (read back when it exists)."""
    stages = stage_settings(recipe, progress=False)
    dataset = recipe.training_dataset()
    runs = {name: seed for name, (baseline, seed) in student_runs(recipe).items() if not baseline}
    keys = stage_keys(dataset, stages, student_runs(recipe))
    out = recipe.out
    dataset = run_teacher_stages(dataset, stages, keys, StageRunner(out), out)
    recordings, folder = {}, out.parent / RECORDINGS
    for name, seed in runs.items():
        path, run = folder / f"seed{seed}.json", folder / name
        if not path.is_file():
            if run.exists():
                raise IAAError(f"{run}: trained without its recording ({path}); delete the folder to train it again")
            recorder = EpochPredictions(judge, out / "image_cache", stages.student.num_workers)
            start = time.perf_counter()
            train_student(dataset, run, replace(stages.student, seed=seed, recipe_rule="best"),
                          targets_dir=out / "teacher", image_cache_dir=out / "image_cache", callbacks=[recorder])
            metrics = json.loads((run / "metrics.json").read_text())
            path.write_text(json.dumps({**recorder.header, "epochs": recorder.epochs, "best_epoch":
                                        metrics["best_epoch"], "seconds": round(time.perf_counter() - start)}) + "\n")
        recordings[seed] = json.loads(path.read_text())
    return recordings


def kept_by_val(recording: dict[str, Any]) -> int:
    """The epoch rule `best` keeps, from the recorded scores: the first with the highest val SRCC (a check of the
    run's own `best_epoch`, which the comparison uses)."""
    scores = [srcc(recording["val_true"], e["val"]) for e in recording["epochs"]]
    return recording["epochs"][int(np.argmax(scores))]["epoch"]


def kept_by_teacher(recording: dict[str, Any], patience: int) -> int:
    """The epoch kept by agreement (SRCC) with the teacher on the val images; with `patience` N the run ends once
    N epochs in a row (from the kept one) agree less, as `RecipeChoice` ends it."""
    kept, best = 0, -math.inf
    for entry in recording["epochs"]:
        agreement = srcc(recording["teacher_val"], entry["val"])
        if agreement > best:
            kept, best = entry["epoch"], agreement
        if patience and entry["epoch"] - kept >= patience:
            break
    return kept


def judge_srcc(recording: dict[str, Any], epoch: int) -> float:
    """SRCC of `epoch`'s scores on the judge images with their labels."""
    return srcc(recording["judge_true"], next(e for e in recording["epochs"] if e["epoch"] == epoch)["judge"])


def compare(recordings: dict[int, dict[int, dict[str, Any]]], patience: int) -> list[dict[str, Any]]:
    """Per subset and seed: the epoch each rule keeps and its judge SRCC."""
    rows = []
    for subset, runs in recordings.items():
        for seed, rec in runs.items():
            val, teacher = rec["best_epoch"], kept_by_teacher(rec, patience)
            if kept_by_val(rec) != val:  # the run's own choice decides; a recomputation that differs is reported
                print(f"subset {subset} seed {seed}: the run kept epoch {val} by val SRCC, the recorded scores say "
                      f"{kept_by_val(rec)}", flush=True)
            rows.append({"subset": subset, "seed": seed, "val_epoch": val, "teacher_epoch": teacher,
                         "val_judge": judge_srcc(rec, val), "teacher_judge": judge_srcc(rec, teacher),
                         "judge_best_epoch": max(rec["epochs"], key=lambda e: judge_srcc(rec, e["epoch"]))["epoch"],
                         "judge_images": len(rec["judge_true"]), "seconds": rec.get("seconds")})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The comparison as Markdown: one line per run, then the paired difference over every run and per subset."""
    lines = ["| subset | seed | val SRCC: epoch, judge SRCC | teacher on val: epoch, judge SRCC | difference | "
             "judge's own best epoch |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['subset']} | {r['seed']} | {r['val_epoch']}, {r['val_judge']:.4f} | {r['teacher_epoch']}, "
                     f"{r['teacher_judge']:.4f} | {r['teacher_judge'] - r['val_judge']:+.4f} | "
                     f"{r['judge_best_epoch']} |")
    d = np.array([r["teacher_judge"] - r["val_judge"] for r in rows])
    mean, half = t_interval(d)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    lines += ["", f"Teacher on val - val SRCC, judge SRCC over {len(d)} runs: mean {mean:+.4f}, SE {se:.4f}, 95 % "
              f"t-interval {mean - half:+.4f}..{mean + half:+.4f}; same epoch kept in "
              f"{sum(r['val_epoch'] == r['teacher_epoch'] for r in rows)} of {len(rows)} runs"]
    for subset in dict.fromkeys(r["subset"] for r in rows):
        part = [r["teacher_judge"] - r["val_judge"] for r in rows if r["subset"] == subset]
        lines.append(f"- subset {subset}: mean difference {np.mean(part):+.4f} over {len(part)} seeds "
                     f"({rows[0]['judge_images']} judge images)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("iaa-small-data"), help="demo dataset and feature cache")
    parser.add_argument("--train-images", type=int, default=150, help="labelled training images kept")
    parser.add_argument("--subset-seeds", type=seed_list, default="0,1", metavar="S,S,...",
                        help="seeds that draw the labelled subsets")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2", metavar="S,S,...", help="student training seeds")
    args = parser.parse_args(argv)
    folder = args.demo_dir.expanduser().resolve()
    try:
        full, cache, _ = demo_data(folder)
        recordings, patience = {}, 0
        for subset_seed in args.subset_seeds:
            subset = labelled_subset(full, args.train_images, subset_seed)
            out = subset_folder(folder, args.train_images, subset_seed, unlabeled=False)
            recipe = subset_recipe(folder, subset, cache, out, args.seeds, unlabeled=False)
            patience = stage_settings(recipe, progress=False).student.agreement_patience
            recordings[subset_seed] = record_students(recipe, judge_records(full, subset))
        rows = compare(recordings, patience)
    except IAAError as error:
        print(f"rule_cv: error: {error}", file=sys.stderr)
        return 1
    text = table(rows)
    name = f"rule_cv-{args.train_images}-subsets{'-'.join(map(str, args.subset_seeds))}"
    (folder / f"{name}.json").write_text(json.dumps({"patience": patience, "runs": rows}, indent=2) + "\n")
    (folder / f"{name}.md").write_text(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
