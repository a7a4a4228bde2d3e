"""Learning curve of `iaa taste`: agreement with a simulated photographer's hidden taste on unseen photos.

A library of the demo generator's photos (`DIR/library/pool`) and a fixed set of unseen photos
(`DIR/library/unseen`, rated once, the test split via `xmp:...?holdout=unseen`) are built once. For every
number of ratings N and seed S the simulated photographer (`iaa_distill.demo.photographer`: prefers some
subjects, warm light, hates tilt; NOT the demo's label formula) rates a seeded sample of N pool photos
through real XMP sidecars written by exiftool, and the personal model is trained exactly as `iaa taste`
trains it (`fit_taste`), in one output folder: the feature cache of the library is extracted once and
reused by every point (only the labels change). The unrated pool photos are the unlabelled data; with
`--without-unrated` a second student per point trains without them. Next to the distilled student: the
label-only baseline, the CV-chosen teacher head and a frozen-feature linear probe (`fit_linear_probe`: ridge on
the teacher features normalised as the teacher's linear head normalises them, penalty by 5-fold CV on the rated
photos). Agreement = SRCC with the hidden taste (no rating noise) on the unseen photos;
mean and a 95 % t-interval over seeds, and the student-minus-baseline difference over seeds.

    python benchmarks/taste_curve.py --dir iaa-taste-curve --points 50,100,200,25 --seeds 0,1,2 --without-unrated

`--probe-only` trains nothing: it computes the `linear probe` column of the points already in curve.jsonl again
(the same ratings, the run's feature cache), for a change of the probe alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

from iaa_distill.artifacts import atomic_write_text
from iaa_distill.memory import keep_freed_memory
from iaa_distill.cli.types import seed_list
from iaa_distill.demo.photographer import hidden_taste, rate_with_exiftool, unrate
from iaa_distill.demo.synthetic import build_unlabeled_photos
from iaa_distill.evaluation.metrics import srcc
from iaa_distill.evaluation.predictions import Predictions
from iaa_distill.evaluation.seeds import t_interval
from iaa_distill.training.linear_probe import fit_linear_probe
from iaa_distill.evaluation.report import PER_IMAGE_NAME
from iaa_distill.taste.personal import fit_taste, taste_recipe

MODELS = ("student", "student, no unrated", "baseline", "backbone probe", "teacher", "linear probe")


def library(folder: Path, pool_per_photo: int, unseen_per_photo: int) -> tuple[list[Path], list[Path]]:
    """The pool photos (to be rated or left unrated) and the unseen photos (rated once, for the test)."""
    pool, unseen = folder / "pool", folder / "unseen"
    if not pool.is_dir():
        build_unlabeled_photos(pool, pool_per_photo, seed=0)
    if not unseen.is_dir():
        build_unlabeled_photos(unseen, unseen_per_photo, seed=7)
        rate_with_exiftool(sorted(unseen.glob("*.jpg")))
    return sorted(pool.glob("*.jpg")), sorted(unseen.glob("*.jpg"))


def hidden_srcc(eval_dir: Path) -> float:
    """SRCC of a model's scores on the unseen photos with the hidden taste (before rating noise and stars)."""
    predictions = Predictions.from_csv(eval_dir / PER_IMAGE_NAME)
    return srcc(np.array([hidden_taste(i) for i in predictions.ids]), predictions.pred_mean)


def probe_srcc(dataset, features_dir: Path, seed: int) -> float:
    """Frozen-feature linear probe: ridge on the normalised teacher features of the rated train+val photos."""
    from iaa_distill.features import FeatureCache
    from iaa_distill.training.head_candidates import level_widths
    from iaa_distill.training.teacher import labelled_rows

    cache = FeatureCache.open(features_dir)
    train = [labelled_rows(dataset, cache, s) for s in ("train", "val")]
    test = labelled_rows(dataset, cache, "test")
    x = np.concatenate([np.asarray(cache.features[t.rows], np.float64) for t in train])
    y = np.concatenate([t.means for t in train])
    model = fit_linear_probe(x, y, level_widths(cache.manifest.teachers, cache.manifest.dim), cv_seed=seed)
    truth = np.array([hidden_taste(i) for i in test.ids])
    return srcc(truth, model.predict(np.asarray(cache.features[test.rows], np.float64)))


def rate_sample(lib: Path, pool: list[Path], count: int, seed: int) -> str:
    """The photographer rates N pool photos drawn by `seed` (and no other); returns the dataset spec."""
    unrate(lib / "pool")
    chosen = np.random.default_rng(seed).choice(len(pool), size=count, replace=False)
    rate_with_exiftool([pool[i] for i in sorted(chosen)], seed=seed)
    return f"xmp:{lib}?holdout=unseen"


def point(lib: Path, pool: list[Path], out: Path, count: int, seed: int, sets: list[str], without: bool) -> dict:
    """One point of the curve: N ratings drawn by `seed`, the models trained as `iaa taste` trains them."""
    spec = rate_sample(lib, pool, count, seed)
    start = time.perf_counter()
    result = fit_taste(taste_recipe(spec, out, seed, sets, compare=True), progress=False, log=lambda line: None)
    eval_dirs = {k: Path(v) for k, v in result["folders"]["eval"].items()}
    found = {"ratings": count, "seed": seed, "seconds": time.perf_counter() - start,
             "student": hidden_srcc(eval_dirs["student"]), "baseline": hidden_srcc(eval_dirs["baseline"]),
             "teacher": hidden_srcc(eval_dirs["teacher"]),
             "linear probe": probe_srcc(result["dataset"], Path(result["folders"]["features"]), seed),
             "timings": {k: round(v, 1) for k, v in result["timings"].items()}}
    if "probe" in eval_dirs:  # the baseline's warm start: the closed-form probe on the student's frozen backbone
        found["backbone probe"] = hidden_srcc(eval_dirs["probe"])
    found["recipes"] = {name: chosen_recipe(Path(result["folders"][name])) for name in ("student", "baseline")}
    found["recipes"]["teacher"] = json.loads((Path(result["folders"]["teacher"]) / "metrics.json").read_text())[
        "head"]["chosen"]
    if without:
        plain = fit_taste(taste_recipe(spec, out, seed, [*sets, "student.unlabeled_ratio=0", "baseline=false"]),
                          progress=False, log=lambda line: None)
        found["student, no unrated"] = hidden_srcc(Path(plain["folders"]["eval"]["student"]))
        found["recipes"]["student, no unrated"] = chosen_recipe(Path(plain["folders"]["student"]))
    return found


def remeasure_probe(lib: Path, pool: list[Path], out: Path, row: dict, sets: list[str]) -> dict:
    """`row` of the curve with its `linear probe` computed again by today's code: the same ratings, the run's
    feature cache, no training."""
    spec = rate_sample(lib, pool, row["ratings"], row["seed"])
    dataset = taste_recipe(spec, out, row["seed"], sets, compare=True).training_dataset()
    return {**row, "linear probe": probe_srcc(dataset, out / "features", row["seed"])}


def chosen_recipe(run: Path) -> str:
    """The recipe (and epoch) chosen for a student run: `probe@0` is the warm start itself; `, teacher on N` when
    the agreement with the teacher on N held-out unrated photos chose it (`recipe_rule: teacher`; without enough
    unrated photos that rule falls back to the val split, and nothing is added)."""
    metrics = json.loads((run / "metrics.json").read_text())
    held_out = metrics["recipe"].get("held_out")
    return f"{metrics['recipe']['chosen']}@{metrics['best_epoch']}" + (f", teacher on {held_out}" if held_out else "")


def table(rows: list[dict]) -> str:
    """Markdown: mean ± 95 % CI over seeds of each model per number of ratings, and student - baseline."""
    models = [m for m in MODELS if any(m in r for r in rows)]
    lines = ["| ratings | seeds | " + " | ".join(models) + " | student − baseline | student − no unrated |",
             "|---" * (len(models) + 4) + "|"]
    for count in sorted({r["ratings"] for r in rows}):
        here = [r for r in rows if r["ratings"] == count]
        cells = [cell([r[m] for r in here if m in r]) for m in models]
        unrated = [r["student"] - r[MODELS[1]] for r in here if MODELS[1] in r]
        lines.append(f"| {count} | {len(here)} | " + " | ".join(cells)
                     + f" | {cell([r['student'] - r['baseline'] for r in here], '+.3f')} | {cell(unrated, '+.3f')} |")
    return "\n".join(lines)


def cell(values: list[float], fmt: str = ".3f") -> str:
    """Mean ± 95 % CI over seeds; the value alone for one seed (no interval), '–' for none."""
    if not values:
        return "–"
    mean, half = t_interval(values)
    return f"{mean:{fmt}} ± {half:.3f}" if len(values) > 1 else f"{mean:{fmt}} (1 seed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("iaa-taste-curve"), help="library, runs and results")
    parser.add_argument("--points", type=seed_list, default="25,50,100,200", metavar="N,N,...")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2", metavar="S,S,...")
    parser.add_argument("--pool-per-photo", type=int, default=30, help="pool photos per demo subject (9 subjects)")
    parser.add_argument("--unseen-per-photo", type=int, default=20, help="unseen test photos per demo subject "
                        "(SRCC's own sampling noise shrinks with more; they are rated once, and only scored)")
    parser.add_argument("--without-unrated", action="store_true", help="also train a student without the unrated")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="SECTION.KEY=VALUE",
                        help="override a setting of the taste recipe (small students: student.epochs=3)")
    parser.add_argument("--probe-only", action="store_true", help="train nothing: compute the `linear probe` of "
                        "the points already measured (of --points and --seeds) again from the features, and rewrite "
                        "curve.jsonl with it")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as `iaa taste` runs (fewer page faults; the same numbers)
    folder = args.dir.expanduser().resolve()
    pool, _ = library(folder / "library", args.pool_per_photo, args.unseen_per_photo)
    results = folder / "curve.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    done = {(r["ratings"], r["seed"]) for r in rows}
    if args.probe_only:
        rows = [remeasure_probe(folder / "library", pool, folder / "run", r, args.sets)
                if r["ratings"] in args.points and r["seed"] in args.seeds else r for r in rows]
        atomic_write_text(results, "".join(json.dumps(r) + "\n" for r in rows))
        done = {(r["ratings"], r["seed"]) for r in rows} | set(product(args.points, args.seeds))
    for count in args.points:
        for seed in args.seeds:
            if (count, seed) in done:
                continue
            row = point(folder / "library", pool, folder / "run", count, seed, args.sets, args.without_unrated)
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    text = table(rows)
    (folder / "curve.md").write_text(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
