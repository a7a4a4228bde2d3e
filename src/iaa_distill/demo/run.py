"""`iaa demo`: build the synthetic-label dataset, run every stage of the method on it, score held-out photos."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..recipe import Recipe, run_recipe
from ..teachers import DEFAULT_TEACHERS
from .synthetic import build_synthetic_dataset, build_unlabeled_photos

# unlabelled photos per labelled photo: three times the labelled training split (70 % of the labelled photos)
UNLABELED_PER_LABELLED = 2.1

SYNTHETIC_WARNING = (
    "NOTE: the demo's labels are SYNTHETIC (graded photographic degradations of scikit-image's sample photos, "
    "scored by a documented formula), not human ratings. They show the pipeline working; real results need "
    "AVA, TAD66K, AADB, KonIQ-10k or your own ratings (see the README)."
)


def demo_recipe(out: Path, csv_path: Path, quick: bool, seed: int, unlabeled: Path | None = None) -> Recipe:
    """Small but real settings: the three bundled teachers, a lite0 student from ImageNet weights,
    and the unlabelled photos in `unlabeled` (if given) for the distilled student."""
    return Recipe(
        dataset=f"csv:{csv_path}",
        unlabeled=[f"folder:{unlabeled}"] if unlabeled else [],
        out=out / "run",
        seed=seed,
        features={"teachers": list(DEFAULT_TEACHERS), "batch_size": 16, "num_workers": 2},
        # the paper's MLP against the linear head, 40 MLP epochs: on the demo's photos the 5-fold CV on train chooses
        # the closed-form `ridge:4` (CV SRCC 0.84 against the MLP's 0.78; 0.81 at 80 epochs). The default's third
        # candidate, mlp:256:0.5, scored 0.53 +- 0.07 there (0.47 in --quick), and its folds cost about half the
        # stage; the chosen head is fitted on the whole training split alone, so the teacher is byte-identical
        teacher={"epochs": 40, "batch_size": 32, "patience": 15, "hidden": (256, 128), "dropout": 0.2,
                 "candidates": ("mlp", "ridge:4")},
        student={
            # epoch 0 is the closed-form probe, then frozen, partial and full fine-tuning (--quick: frozen, partial).
            # A shorter recipe (partial, full; no frozen epoch) fits the 6-minute budget but scored lower on val at
            # seed 0 (0.890 against 0.895), so the demo keeps this one. 224 px, lite0's own size, not 192: the
            # closed-form fits on the frozen backbone read no test label and all prefer it (5-fold CV on train
            # 0.841 vs 0.812, agreement with the teacher on held-out unlabelled photos 0.987 vs 0.976)
            "backbone": "tf_efficientnet_lite0", "input_size": 128 if quick else 224, "epochs": 2 if quick else 4,
            "batch_size": 16, "num_workers": 2, "warmup_epochs": 0.5, "patience": 10,
            # chosen on the val split (mean over seeds 0-2, see the README): 3 unlabelled photos per labelled one
            # for 4 epochs beat 1 for 6 epochs (SRCC 0.811 vs 0.781) at the demo's time budget
            "unlabeled_ratio": 3.0,
            # the epoch is kept by agreement with the teacher on a held-out quarter of the unlabelled photos (171
            # on the demo) instead of SRCC on 37 val labels: the baseline, without the teacher, keeps choosing on val.
            # Two epochs in a row below the kept one's agreement end the recipe: in every measured run (3 seeds,
            # the demo and its 150-label subset) fine-tuning lowered the agreement (0.98 to 0.86-0.94) and the
            # warm start was kept, so the full epochs only cost time
            "recipe_rule": "teacher", "agreement_patience": 2,
        },
        evaluation={"split": "test", "batch_size": 32, "num_workers": 2, "min_category_images": 5},
    )


def demo_photos(out: Path, quick: bool, seed: int, log=print) -> tuple[Path, Path]:
    """The demo's rated photos (OUT/dataset/labels.csv) and unlabelled photos (OUT/unlabeled), built when
    missing; returns both paths."""
    csv_path, unlabeled = out / "dataset" / "labels.csv", out / "unlabeled"
    per_photo = 12 if quick else 36
    if not csv_path.is_file():
        log(f"[dataset] building synthetic-label photos -> {csv_path.parent}")
        build_synthetic_dataset(out / "dataset", images_per_photo=per_photo, seed=seed)
    if not unlabeled.is_dir():  # their labels are never written: the student only learns them from the teacher
        log(f"[dataset] building unlabelled photos (labels held back) -> {unlabeled}")
        build_unlabeled_photos(unlabeled, round(UNLABELED_PER_LABELLED * per_photo), seed=seed)
    return csv_path, unlabeled


def run_demo(out: str | Path = "iaa-demo", quick: bool = False, seed: int = 0, log=print) -> dict[str, Any]:
    """Run the demo into `out`; returns the stage timings, folders and the comparison document."""
    return _run(Path(out).expanduser().resolve(), quick, seed, log)  # the Trainer builder keeps Lightning quiet


def _run(out: Path, quick: bool, seed: int, log) -> dict[str, Any]:
    from ..artifacts import labels_are_synthetic
    from ..scoring import Scorer
    from ..scoring.batch import score_to_file
    from ..scoring.gallery import write_gallery

    log(SYNTHETIC_WARNING)
    start = time.perf_counter()
    csv_path, unlabeled = demo_photos(out, quick, seed, log)
    dataset_time = time.perf_counter() - start
    recipe = demo_recipe(out, csv_path, quick, seed, unlabeled)
    recipe.save(out / "recipe.yaml")  # `iaa fit --config OUT/recipe.yaml --seeds 0,1,2` reruns it over seeds
    result = run_recipe(recipe, progress=False, log=log)

    t0 = time.perf_counter()
    model_dir = Path(result["folders"]["student"]) / "model"
    held_out = [str(r.path) for r in result["dataset"].split("test")]
    scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="torch")
    scores = score_to_file(scorer, held_out, out / "scores.csv", batch_size=32, num_workers=2, sort=True)
    gallery = write_gallery(scores, out / "gallery.html", scale=scorer.config.scale, synthetic=labels_are_synthetic(scorer.config))
    timings = {"dataset": dataset_time, **result["timings"], "score": time.perf_counter() - t0}
    total = time.perf_counter() - start
    _summary(log, out, result, timings, total, model_dir, gallery)
    return {**result, "timings": timings, "total_seconds": total, "model": str(model_dir), "gallery": str(gallery)}


def _summary(log, out: Path, result: dict, timings: dict, total: float, model_dir: Path, gallery: Path) -> None:
    log("\nElapsed per stage:")
    for name, seconds in timings.items():
        log(f"  {name:<16} {seconds:7.1f} s" + ("  (up to date, skipped)" if seconds == 0 else ""))
    log(f"  {'total':<16} {total:7.1f} s")
    comparison = result.get("comparison")
    if comparison:
        log(f"\nTest split, {comparison['n']} images (synthetic labels):")
        for name, values in comparison["overall"].items():
            log(f"  {name:<10} SRCC {values['srcc']:.3f}  PLCC {values['plcc']:.3f}  accuracy {values['accuracy']:.3f}")
        for name, diff in comparison["differences"].items():
            d = diff["srcc"]
            log(f"  {name} vs {comparison['baseline']}: SRCC {d['diff']:+.3f} "
                f"(95% CI {d['ci_low']:+.3f}..{d['ci_high']:+.3f}, p={d['p_value']:.3f})")
    folders = result["folders"]
    log("\nOutputs:")
    log(f"  dataset            {out / 'dataset'}  (+ unlabelled photos in {out / 'unlabeled'})")
    log(f"  recipe             {out / 'recipe.yaml'}   (over seeds: iaa fit --config {out / 'recipe.yaml'} --seeds 0,1,2)")
    log(f"  teacher features   {folders['features']}")
    log(f"  teacher head       {folders['teacher']}")
    log(f"  student model      {model_dir}   (use: iaa score PHOTOS --model {model_dir})")
    log(f"  baseline model     {Path(folders['baseline']) / 'model'}")
    log(f"  evaluation reports {', '.join(str(Path(p) / 'report.html') for p in folders['eval'].values())}")
    log(f"  comparison         {Path(folders['comparison']) / 'comparison.md'}")
    log(f"  held-out scores    {out / 'scores.csv'}")
    log(f"  culling gallery    {gallery}")
    log("\n" + SYNTHETIC_WARNING)
