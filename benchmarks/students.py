"""The student against its baselines over seeds: label-only baseline, frozen-feature probe, teacher.

Runs (or resumes: every finished stage is skipped) a recipe with one student and one baseline per seed,
e.g. the demo's `recipe.yaml`, whose baselines' warm starts are the frozen-feature linear probes on the
student's backbone (`baseline/probe`). Prints, from the test-split evaluation folders:

mean test SRCC per model over the seeds with paired-bootstrap 95 % CIs of the student's difference to the
baseline and to the probe and of its share of the teacher, mean EMD and the median predicted spread next to
the labels' (`evaluation.student_report`).

Every choice inside the runs was made on validation data (the teacher head by CV on train, the student's
epoch and recipe on val); the test split is read only here, to report.

    python benchmarks/students.py --config iaa-demo/recipe.yaml --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iaa_distill.cli.types import seed_list
from iaa_distill.errors import IAAError
from iaa_distill.evaluation.student_report import student_report
from iaa_distill.recipe import Recipe, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a recipe, e.g. an `iaa demo` folder's recipe.yaml")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2", metavar="S,S,...", help="training seeds")
    args = parser.parse_args(argv)
    try:
        recipe = Recipe.load(args.config, seeds=args.seeds)
        result = run_recipe(recipe, progress=False)
    except IAAError as error:
        print(f"students: error: {error}", file=sys.stderr)
        return 1
    text = student_report(recipe, result["folders"]["eval"], Path(result["folders"]["comparison"]))
    (Path(result["folders"]["comparison"]) / "students.md").write_text(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
