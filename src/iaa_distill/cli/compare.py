"""Compare evaluation folders written by `iaa eval` on the same images (the first is the baseline):
metric differences with paired bootstrap 95% confidence intervals and p-values, the relative SRCC
change in %, and the per-category SRCC table sorted by improvement. Writes OUT/comparison.md,
comparison.html, comparison.json and comparison.png. Refuses runs evaluated on different image sets.

Across seeds: give each model's evaluation folders, one per seed, as one comma-separated RUN
(`iaa compare base-s0,base-s1,base-s2 student-s0,student-s1,student-s2 teacher`): each model's SRCC
mean ± sd over seeds, a paired bootstrap over seeds x images, the relative SRCC gain and the share of
the teacher's SRCC each model keeps, with 95% CIs (OUT/seeds.md, OUT/seeds.json)."""
from __future__ import annotations

import argparse

from .types import count, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN", nargs="+", help="evaluation folders; the first one is the baseline; "
                        "DIR,DIR,... = one model's evaluations over several seeds")
    parser.add_argument("--out", required=True, help="output folder for the comparison")
    parser.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--min-category-images", type=positive_int,
                        help="categories with fewer images are flagged (default: the baseline evaluation's)")


def run(args: argparse.Namespace) -> int:
    if any("," in r for r in args.runs):
        return _run_seeds(args)
    return _run_single(args)


def _run_seeds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.seeds import SEEDS_JSON, SEEDS_MD, compare_seeds, summary_lines

    groups = [[d for d in r.split(",") if d] for r in args.runs]
    document = compare_seeds(groups, args.out, bootstrap=args.bootstrap, seed=args.seed)
    print("\n".join(summary_lines(document)))
    print(f"wrote {Path(args.out) / SEEDS_MD}, {Path(args.out) / SEEDS_JSON}")
    return 0


def _run_single(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.compare import LABELS, compare_runs, interval_cells
    from ..evaluation.report import fmt

    document = compare_runs(args.runs, args.out, bootstrap=args.bootstrap, seed=args.seed,
                            min_category_images=args.min_category_images)
    base = document["baseline"]
    print(f"{count(document['n'], 'image')}; baseline {base}; {document['bootstrap']} paired bootstrap resamples")
    for name, diffs in document["differences"].items():
        rel = diffs["srcc_relative_change_pct"]
        print(f"{name} vs {base}: SRCC {'n/a' if rel != rel else f'{rel:+.2f} %'} relative")
        for key, label in LABELS.items():
            if key in diffs:
                d = diffs[key]
                ci, p = interval_cells(d, document["n"])
                print(f"  {label:<16} {fmt(d['baseline'])} -> {fmt(d['value'])}  diff {d['diff']:+.4f} {ci}  p{' ' if p.startswith('<') else '='}{p}")
    out = Path(args.out)
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.html'}, {out / 'comparison.json'}, "
          f"{out / 'comparison.png'}")
    return 0
