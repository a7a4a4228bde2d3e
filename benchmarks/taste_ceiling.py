"""How much a distilled personal model can gain over the label-only one: closed-form probes on the caches of a
`benchmarks/taste_curve.py` run (no training; seconds).

On the curve's pool photos, for each number of ratings N and split seed: a fixed 90 photos are held out
(never rated, never unlabelled), N of the rest are rated by the simulated photographer, the others are the
unlabelled library. Every model is the linear probe (`fit_linear_probe`: ridge, penalty by leave-one-out, on
frozen features normalised as the teacher's linear head normalises them, by the blocks of each vector), scored
by SRCC with the hidden taste on the held-out photos:

- `teacher`: on the teachers' MLSP features, fitted to the ratings (the teacher head's linear candidate);
- `teacher, no val`: the same fitted on a random 80 % of the ratings only (`CARVED_VAL`): what `iaa taste`'s
  teacher head learnt from while it carved a val split of 20 % to choose the student's epoch on (it now trains
  on every rating, so its linear head is `teacher`);
- `student probe`: on the student backbone's pooled features at its input size (the label-only warm start);
- `student ← teacher`: the same features fitted to the teacher's predictions on rated + unlabelled photos
  (what distillation can carry into the student's frozen features at best);
- `lite0@224 probe` / `lite0@224 ← teacher`: the same with the first teacher's features (the student's own
  backbone at 224 px instead of 128 px).

The paired difference with `student probe` is given as mean ± 95 % t-interval over the split seeds, and a
second table gives `lite0@224 ← teacher` − `student ← teacher` the same way (`PAIRED`: what a 224-px student
would gain over the 128-px one, both fitted to the teacher).

    python benchmarks/taste_ceiling.py --dir /tmp/taste3-bench --points 25,50,100 --seeds 10
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iaa_distill.artifacts import read_config
from iaa_distill.cli.types import seed_list
from iaa_distill.demo.photographer import hidden_taste, stars
from iaa_distill.evaluation.metrics import srcc
from iaa_distill.evaluation.seeds import t_interval
from iaa_distill.features import FeatureCache
from iaa_distill.student import Student, StudentConfig
from iaa_distill.training.head_candidates import level_widths
from iaa_distill.training.image_cache import ImageCache
from iaa_distill.training.linear_probe import fit_linear_probe

HELD_OUT = 90
CARVED_VAL = 0.2  # the val split `iaa taste` carved before it trained on every rating (`teacher, no val`)
PAIRED = ("lite0@224 ← teacher", "student ← teacher")  # the student at 224 px against it at 128 px


@dataclass
class Features:
    """One frozen feature vector per pool photo and the widths of its blocks (what the probe normalises by)."""

    x: np.ndarray
    widths: list[int]

    def fitted(self, fit_rows: np.ndarray, y: np.ndarray, held: np.ndarray) -> np.ndarray:
        """The linear probe on `fit_rows`, fitted to `y` (LOO penalty); its predictions on `held`."""
        return fit_linear_probe(self.x[fit_rows], y, self.widths).predict(self.x[held])


def caches(run: Path) -> tuple[list[str], Features, Features, Features]:
    """Pool ids, their teacher features, the student's pooled features (block widths from the run's student) and
    the first teacher's columns (lite0 at 224 px)."""
    images = ImageCache.open(next(p for p in (run / "image_cache").glob("*-train-*") if any(p.glob("pooled-*"))))
    pooled = np.load(next(images.directory.glob("pooled-*")) / "pooled.npy").astype(np.float64)
    student = Student(StudentConfig.from_dict(read_config(run / "student" / "model", "student")))
    cache = FeatureCache.open(run / "features")
    x = cache.features_for(images.ids).astype(np.float64)
    first = [int(w) for w in cache.manifest.teachers[0]["level_dims"]]
    return (list(images.ids), Features(x, level_widths(cache.manifest.teachers, cache.manifest.dim)),
            Features(pooled, student.block_widths), Features(x[:, :sum(first)], first))


def split_scores(ids: list[str], teacher: Features, student: Features, lite0: Features, count: int,
                 seed: int) -> dict[str, float]:
    """Every model's SRCC with the hidden taste on the held-out photos of one split."""
    order = np.random.default_rng([seed, 23]).permutation(len(ids))
    held, rated, library = order[:HELD_OUT], order[HELD_OUT:HELD_OUT + count], order[HELD_OUT:]
    y = np.array([max(stars(ids[i], seed), 0) for i in rated], np.float64)  # a reject is the bottom
    truth = np.array([hidden_taste(ids[i]) for i in held])
    teacher_on_library = teacher.fitted(rated, y, library)
    train = round(count * (1 - CARVED_VAL))
    found = {"teacher": teacher.fitted(rated, y, held),
             "teacher, no val": teacher.fitted(rated[:train], y[:train], held),
             "student probe": student.fitted(rated, y, held),
             "student ← teacher": student.fitted(library, teacher_on_library, held),
             "lite0@224 probe": lite0.fitted(rated, y, held),
             "lite0@224 ← teacher": lite0.fitted(library, teacher_on_library, held)}
    return {name: srcc(truth, pred) for name, pred in found.items()}


def paired(scores: list[dict[str, float]], name: str, base: str) -> tuple[float, float]:
    """`name` − `base`, paired per split: mean and half-width of its 95 % t-interval."""
    return t_interval([s[name] - s[base] for s in scores])


def row(count: int, scores: list[dict[str, float]]) -> str:
    """Markdown row: each model's mean SRCC and its paired difference with the student probe (95 % t-CI)."""
    cells = []
    for name in scores[0]:
        mean, half = paired(scores, name, "student probe")
        cells.append(f"{np.mean([s[name] for s in scores]):.3f}"
                     + ("" if name == "student probe" else f" ({mean:+.3f} ± {half:.3f})"))
    return f"| {count} | {len(scores)} | " + " | ".join(cells) + " |"


def paired_row(count: int, scores: list[dict[str, float]]) -> str:
    """Markdown row: `PAIRED`'s difference (mean ± 95 % t half-width) and its interval."""
    mean, half = paired(scores, *PAIRED)
    return f"| {count} | {len(scores)} | {mean:+.4f} ± {half:.4f} | {mean - half:+.4f} .. {mean + half:+.4f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="a taste_curve.py --dir (its run/ caches)")
    parser.add_argument("--points", type=seed_list, default="25,50,100", metavar="N,N,...")
    parser.add_argument("--seeds", type=int, default=10, help="number of splits")
    args = parser.parse_args(argv)
    ids, teacher, student, lite0 = caches(args.dir.expanduser().resolve() / "run")
    rows = {n: [split_scores(ids, teacher, student, lite0, n, s) for s in range(args.seeds)] for n in args.points}
    names = list(next(iter(rows.values()))[0])
    print(json.dumps({n: [{k: round(v, 4) for k, v in s.items()} for s in r] for n, r in rows.items()}))
    print("\n| ratings | splits | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 2) + "|")
    print("\n".join(row(n, r) for n, r in rows.items()))
    print(f"\n| ratings | splits | {PAIRED[0]} − {PAIRED[1]} | 95 % interval |\n" + "|---" * 4 + "|")
    print("\n".join(paired_row(n, r) for n, r in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
