"""Run every stage from one YAML recipe: teacher features -> teacher head -> distilled student ->
label-only baseline -> evaluation reports -> comparison. Stages whose outputs are up to date are
skipped; interrupted stages resume. See configs/ava.yaml for the paper's AVA protocol.
`--seeds 0,1,2` trains the student and the baseline once per seed (features, teacher and the split, carved
with the recipe's `seed`, shared) and compares them across seeds (comparison/seeds.md: mean ± sd, paired bootstrap over seeds x images)."""
from __future__ import annotations

import argparse

from .types import fraction, seed_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="RECIPE.yaml", help="the recipe (see configs/)")
    parser.add_argument("--dataset", help="override the recipe's dataset (FORMAT:PATH, e.g. ava:/data/AVA)")
    parser.add_argument("--out", help="override the recipe's output folder")
    parser.add_argument("--seeds", type=seed_list, metavar="S,S,...",
                        help="override the recipe's seeds: one student and baseline per seed, e.g. 0,1,2")
    parser.add_argument("--val-fraction", type=fraction, metavar="F",
                        help="override the recipe's val_fraction: share of the found train images carved out as val "
                        "when the dataset has no val list")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="sets",
                        help="override one recipe setting, e.g. --set student.alpha=0.3 (repeatable; VALUE is YAML)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from ..recipe import Recipe, run_recipe

    recipe = Recipe.load(args.config, args.sets, dataset=args.dataset, out=args.out, seeds=args.seeds,
                         val_fraction=args.val_fraction)
    result = run_recipe(recipe, progress=not args.no_progress)
    print("\n" + "\n".join(summary_lines(recipe, result)))
    return 0


def student_recipe_lines(folders: dict) -> list[str]:
    """Each distilled student's recipe choice and share of the teacher on val (`training.student_recipe`)."""
    import json
    from pathlib import Path

    from ..training.student_recipe import choice_lines

    lines = []
    for name, folder in folders.items():
        path = Path(folder) / "metrics.json" if name.startswith("student") else None
        if path is not None and path.is_file():
            metrics = json.loads(path.read_text())
            if metrics.get("recipe"):
                lines += [f"{name}: {line}" for line in choice_lines(metrics)]
    return lines


def summary_lines(recipe, result: dict) -> list[str]:
    """What a finished `iaa fit` says: the headline SRCC/PLCC of every model, the teacher head's choice, the
    dropped images and where the reports are."""
    import json
    from pathlib import Path

    from ..training.head_selection import describe_choice

    folders = result["folders"]
    lines = [f"Models on the {result['split']} split:"]
    for name, folder in folders["eval"].items():
        document = json.loads((Path(folder) / "metrics.json").read_text())
        overall = document["overall"]
        lines.append(f"  {name:<16} SRCC {overall['srcc']:.3f}  PLCC {overall['plcc']:.3f}  "
                     f"({document['n']} images; {Path(folder) / 'report.md'})")
    teacher = json.loads((Path(folders["teacher"]) / "metrics.json").read_text())
    lines.append(f"Teacher head: {describe_choice(teacher['head'])}")
    lines += student_recipe_lines(folders)
    dropped = result["dropped"]
    if dropped["count"]:
        lines.append(f"{dropped['count']} images dropped (missing or undecodable), listed in {dropped['list']}")
    lines.append("Elapsed per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items()))
    if result["comparison"]:
        report = "seeds.md" if len(recipe.seeds) > 1 else "comparison.md"
        lines.append(f"Comparison: {recipe.out / 'comparison' / report}")
    return lines
