"""Extract the frozen teachers' multi-level pooled features of a dataset into a resumable cache.

Rerunning with the same --out continues an interrupted run; a cache made with other teachers,
preprocessing or images is refused. Under torchrun each process extracts a shard into the same cache.
"""
from __future__ import annotations

import argparse
import os

from ..errors import IAAError

SHOWN_FAILURES = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or folder:~/Photos")
    parser.add_argument("--teachers", metavar="A,B,C",
                        help="comma-separated timm model names (default: the bundled tf_efficientnet_lite0,1,2)")
    parser.add_argument("--out", required=True, metavar="CACHE", help="feature cache folder (created or resumed)")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                        help="local weights file for teacher NAME (.safetensors/.pth); repeatable")
    parser.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="data-loader worker processes (decoding)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--decoder", default="auto", choices=("auto", "pil", "torchvision"),
                        help="pil: shared decoder in the workers; torchvision: batched JPEG decoding on the device "
                             "(nvJPEG on CUDA); auto: torchvision on CUDA, pil on CPU (default)")
    parser.add_argument("--hflip", action="store_true", help="average each image's features with its mirror image's")


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
    from ..teachers import DEFAULT_TEACHERS

    teachers = [n.strip() for n in args.teachers.split(",") if n.strip()] if args.teachers else DEFAULT_TEACHERS
    if not teachers:
        raise IAAError("--teachers: give at least one timm model name")
    dataset = open_dataset(args.dataset)
    cache = extract_features(
        dataset, args.out, teachers, weights=parse_weights(args.weights), split=args.split,
        batch_size=args.batch_size, num_workers=args.workers, device=args.device, decoder=args.decoder, hflip=args.hflip,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    print(f"{cache.directory}: {len(cache.valid_ids())} of {len(cache.ids)} images, {cache.dim} features each "
          f"({', '.join(t['name'] for t in cache.manifest['teachers'])})")
    failed = list(cache.failed.items())
    for image_id, error in failed[:SHOWN_FAILURES]:
        print(f"  skipped {image_id}: {error}")
    if len(failed) > SHOWN_FAILURES:
        print(f"  ... and {len(failed) - SHOWN_FAILURES} more undecodable images (listed in the cache's manifest.json)")
    return 0
