"""Run the whole method end to end on a small dataset built from real photographs that ship with
scikit-image (graded blur, noise, exposure, colour, JPEG, tilt and crop degradations with SYNTHETIC
labels): teacher features -> stage-1 teacher head -> distilled student and label-only baseline ->
evaluation and comparison -> scoring of held-out photos with an HTML gallery. CPU, minutes."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="iaa-demo", help="output folder (default: ./iaa-demo); a rerun reuses finished stages")
    parser.add_argument("--quick", action="store_true", help="smaller dataset, images and schedule (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset, splits and training (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0
