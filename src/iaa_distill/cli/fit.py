"""Run every stage from one YAML recipe: teacher features -> teacher head -> distilled student ->
label-only baseline -> evaluation reports -> comparison. Stages whose outputs are up to date are
skipped; interrupted stages resume. See configs/ava.yaml for the paper's AVA protocol."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="RECIPE.yaml", help="the recipe (see configs/)")
    parser.add_argument("--dataset", help="override the recipe's dataset (FORMAT:PATH, e.g. ava:/data/AVA)")
    parser.add_argument("--out", help="override the recipe's output folder")


def run(args: argparse.Namespace) -> int:
    from ..recipe import Recipe, run_recipe

    recipe = Recipe.load(args.config, dataset=args.dataset, out=args.out)
    result = run_recipe(recipe)
    print("\nElapsed per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items()))
    if result["comparison"]:
        print(f"Comparison: {recipe.out / 'comparison' / 'comparison.md'}")
    return 0
