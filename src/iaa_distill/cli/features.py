"""Extract the frozen teachers' multi-level pooled features of a dataset into a resumable cache.

Rerunning with the same --out continues an interrupted run; a cache made with other teachers,
preprocessing or images is refused. Under torchrun each process extracts a shard into the same cache.
"""
from __future__ import annotations

import argparse

from ..errors import IAAError

SHOWN_FAILURES = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..features.settings import ExtractionSettings
    from .options import add_options

    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or folder:~/Photos")
    parser.add_argument("--out", required=True, metavar="CACHE", help="feature cache folder (created or resumed)")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                        help="local weights file for teacher NAME (.safetensors/.pth); repeatable")
    add_options(parser, ExtractionSettings, exclude=("weights",))


def parse_weights(items: list[str]) -> dict[str, str]:
    weights = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise IAAError(f"--weights {item!r}: expected NAME=PATH")
        weights[name.strip()] = path.strip()
    return weights


def run(args: argparse.Namespace) -> int:
    from ..data.registry import open_dataset
    from ..features import extract_features
    from ..features.settings import ExtractionSettings
    from ..messages import is_rank_zero
    from .options import config_from_args

    teachers = tuple(n.strip() for item in args.teachers for n in item.split(",") if n.strip())
    if not teachers:
        raise IAAError("--teachers: give at least one timm model name")
    settings = config_from_args(ExtractionSettings, args, teachers=teachers, weights=parse_weights(args.weights))
    cache = extract_features(open_dataset(args.dataset), args.out, settings)
    if not is_rank_zero():  # under torchrun, rank 0 reports
        return 0
    print(f"{cache.directory}: {len(cache.valid_ids())} of {len(cache.ids)} images, {cache.dim} features each "
          f"({', '.join(t['name'] for t in cache.manifest['teachers'])})")
    failed = list(cache.failed.items())
    for image_id, error in failed[:SHOWN_FAILURES]:
        print(f"  skipped {image_id}: {error}")
    if len(failed) > SHOWN_FAILURES:
        print(f"  ... and {len(failed) - SHOWN_FAILURES} more undecodable images (listed in the cache's manifest.json)")
    return 0
