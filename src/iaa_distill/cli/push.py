"""Publish a model folder on the Hugging Face Hub (huggingface_hub; log in first with `hf auth login`, or set
HF_TOKEN). The folder gets a README.md model card when it has none: what the model is, its training data, its
validation metrics (and test metrics with --metrics), and the synthetic-label warning for a demo model. Others
then load it by name: Scorer.from_pretrained("org/name", revision=...) or iaa score PHOTOS --model org/name.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="DIR", help="model folder (config.json + model.safetensors)")
    parser.add_argument("repo_id", metavar="ORG/NAME", help="hub model to create or update")
    parser.add_argument("--revision", help="branch to push to (created when missing; default: main)")
    parser.add_argument("--private", action="store_true", help="create the hub model as private")
    parser.add_argument("--metrics", metavar="FILE", help="an evaluation's metrics.json (iaa eval) for the card's test figures")
    parser.add_argument("--message", help="commit message (default: iaa push DIR)")


def run(args: argparse.Namespace) -> int:
    from ..errors import IAAError
    from ..scoring.hub import REPO_ID, push_to_hub

    if not REPO_ID.fullmatch(args.repo_id):
        raise IAAError(f"{args.repo_id}: not a hub model name; use ORG/NAME")
    commit, wrote_card = push_to_hub(args.model, args.repo_id, revision=args.revision, private=args.private or None,
                                     metrics=args.metrics, message=args.message)
    if wrote_card:
        print(f"model card -> {args.model}/README.md", file=sys.stderr)
    print(f"pushed {args.model} -> {args.repo_id} (commit {commit})", file=sys.stderr)
    return 0
