"""Whether repeating the teacher head's cross-validation chooses better heads from few ratings: a nested CV.

On the pool photos of a `benchmarks/taste_curve.py` run (its teacher feature cache; the curve's unseen photos
are never read), for each number of ratings N and outer split: a seeded 90 pool photos are held out as the
judge (never rated), N of the others are rated by the simulated photographer (`demo/photographer.py`: stars,
a reject is the bottom). Within the N ratings two rules choose the head among `iaa taste`'s candidates:

- `single`: what `train_teacher_head` does, one 5-fold CV and the one-standard-error rule (`head_selection`);
- `repeated`: R repetitions of the 5-fold CV with other shuffles (repetition 0 is `single`'s), the same rule
  on the mean over all R x 5 folds, its standard error the sd over those folds / sqrt(5) (the scale of one
  5-fold CV, estimated from more folds).

Every candidate is then fitted on all N ratings as `iaa taste` fits it (no val split: the MLP for `epochs`
epochs) and scored by SRCC with the hidden taste on the judge photos; each rule's figure is that of its choice.
Printed per N: how often each candidate was chosen, the rules' mean judge SRCC, their paired difference
(repeated - single, mean ± 95 % t-interval over the splits) and the best candidate's (an oracle) for scale.

    python benchmarks/head_choice_cv.py --dir /tmp/taste-curve --points 25,50,100 --splits 20 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from iaa_distill.cli.types import seed_list
from iaa_distill.data.records import Label
from iaa_distill.data.xmp_ratings import SCALE
from iaa_distill.demo.photographer import hidden_taste, stars
from iaa_distill.evaluation.metrics import srcc
from iaa_distill.evaluation.seeds import t_interval
from iaa_distill.features import FeatureCache
from iaa_distill.score_space import ScoreSpace
from iaa_distill.taste.personal import TEACHER
from iaa_distill.teacher_head import TeacherHeadConfig, predict_features
from iaa_distill.training.head_candidates import fit_candidate, parse_candidate
from iaa_distill.training.head_selection import CandidateScore, choose, complexity, cross_validate, one_thread
from iaa_distill.training.teacher_config import TeacherTrainConfig

HELD_OUT = 90  # judge photos per split, as benchmarks/taste_ceiling.py holds out
REPEAT_STRIDE = 7919  # seed offset between repetitions of the CV


def pool(run: Path) -> tuple[list[str], np.ndarray, TeacherHeadConfig]:
    """The pool photos' ids, their teacher features and the head configuration of `iaa taste`'s teacher."""
    cache = FeatureCache.open(run / "features")
    ids = [i for i in cache.valid_ids() if i.startswith("pool/")]
    x = np.asarray(cache.features[cache.rows_for(ids)], np.float32)
    base = TeacherHeadConfig(input_dim=cache.dim, num_levels=None, scale=SCALE, hidden=tuple(TEACHER["hidden"]),
                             dropout=TEACHER["dropout"], teachers=cache.manifest.get("teachers", []))
    return ids, x, base


def repeated_choice(scores: list[list[CandidateScore]]) -> CandidateScore:
    """The one-standard-error choice over all repetitions' folds, with the standard error of one K-fold CV."""
    folds = len(scores[0][0].fold_srcc)
    merged = [CandidateScore(c[0].candidate, [v for s in c for v in s.fold_srcc]) for c in zip(*scores)]
    best = max(merged, key=lambda s: s.mean)
    close = [s for s in merged if s.mean >= best.mean - best.sd / np.sqrt(folds)]
    return min(close, key=lambda s: complexity(s.candidate))


def split_result(ids: list[str], x: np.ndarray, base: TeacherHeadConfig, count: int, seed: int,
                 repeats: int) -> dict:
    """Each rule's chosen candidate and every candidate's judge SRCC on one outer split."""
    order = np.random.default_rng([seed, 31]).permutation(len(ids))
    judge, rated = order[:HELD_OUT], order[HELD_OUT:HELD_OUT + count]
    space = ScoreSpace(None, SCALE)
    labels, means = space.encode_all([Label(SCALE, score=float(max(stars(ids[i], seed), 0))) for i in rated],
                                     [ids[i] for i in rated])
    train = TeacherTrainConfig(**{**TEACHER, "hidden": tuple(TEACHER["hidden"])}, seed=seed, progress=False)
    candidates = [parse_candidate(s, train.hidden, train.dropout) for s in train.candidates]
    runs = [cross_validate(candidates, x[rated], labels, means, base, replace(train, seed=seed + REPEAT_STRIDE * r),
                           train.cv_folds) for r in range(repeats)]
    truth = np.array([hidden_taste(ids[i]) for i in judge])
    judged = {}
    with one_thread():
        for c in candidates:
            predicted, _ = predict_features(fit_candidate(c, x[rated], labels, base, train), x[judge])
            judged[c.spec] = float(srcc(truth, predicted))
    return {"ratings": count, "split": seed, "single": choose(runs[0]).candidate.spec,
            "repeated": repeated_choice(runs).candidate.spec, "judge": judged}


def summary(rows: list[dict]) -> str:
    """Markdown row of one N: choices, each rule's mean judge SRCC and the paired difference."""
    single = np.array([r["judge"][r["single"]] for r in rows])
    repeated = np.array([r["judge"][r["repeated"]] for r in rows])
    oracle = np.array([max(r["judge"].values()) for r in rows])
    mean, half = t_interval(repeated - single)
    chosen = lambda rule: ", ".join(f"{s} {sum(r[rule] == s for r in rows)}" for s in rows[0]["judge"])
    return (f"| {rows[0]['ratings']} | {len(rows)} | {sum(r['single'] != r['repeated'] for r in rows)} | "
            f"{chosen('single')} | {chosen('repeated')} | {single.mean():.3f} | {repeated.mean():.3f} | "
            f"{mean:+.4f} ± {half:.4f} | {oracle.mean():.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="a taste_curve.py --dir (its run/features cache)")
    parser.add_argument("--points", type=seed_list, default="25,50,100", metavar="N,N,...")
    parser.add_argument("--splits", type=int, default=20, help="outer splits per number of ratings")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the 5-fold CV of rule `repeated`")
    parser.add_argument("--log", type=Path, help="append each split's result as a JSON line (resumes from it)")
    args = parser.parse_args(argv)
    ids, x, base = pool(args.dir.expanduser().resolve() / "run")
    done = [json.loads(line) for line in args.log.read_text().splitlines()] if args.log and args.log.exists() else []
    rows = {n: [r for r in done if r["ratings"] == n] for n in args.points}
    for n in args.points:
        for seed in range(len(rows[n]), args.splits):
            rows[n].append(split_result(ids, x, base, n, seed, args.repeats))
            if args.log:
                with args.log.open("a") as f:
                    f.write(json.dumps(rows[n][-1]) + "\n")
            print(json.dumps(rows[n][-1]), flush=True)
    print("\n| ratings | splits | choices differ | chosen by single | chosen by repeated | single | repeated "
          "| repeated − single | best candidate |\n" + "|---" * 9 + "|")
    print("\n".join(summary(rows[n]) for n in args.points if rows[n]))
    every = [r for n in args.points for r in rows[n]]
    d = np.array([r["judge"][r["repeated"]] - r["judge"][r["single"]] for r in every])
    print(f"\nall {len(d)} splits: repeated − single {d.mean():+.4f}, SE {d.std(ddof=1) / np.sqrt(len(d)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
