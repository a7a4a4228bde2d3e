"""Measure every speed goal on this machine: how fast `iaa --help` answers (vs `python -c pass`), image decoding (full vs reduced-size), teacher
extraction vs its decode limit, student training from files vs compute only, `iaa score` with
PyTorch and ONNX Runtime at batch 1 and the best batch vs the NIMA architecture, and the full AVA
pipeline estimated from those rates. Prints figures and ratios; writes bench.json and bench.md."""
from __future__ import annotations

import argparse

from .types import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench", help="output folder for photos, bench.json and bench.md (default: ./bench)")
    parser.add_argument("--photos", type=positive_int, default=96, help="number of generated 800x600 JPEG photos (default: 96)")
    parser.add_argument("--sections", default="cli,decode,teachers,cache,training,scoring",
                        help="comma-separated subset of cli,decode,teachers,cache,training,scoring,culling")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device to measure on (default: auto)")
    parser.add_argument("--workers", type=non_negative_int, help="DataLoader workers (default: CPU count, at most 16)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repeats per figure; the median is reported (default: 3)")
    parser.add_argument("--ava-epochs", type=positive_int, default=15, help="student epochs assumed in the AVA estimate (default: 15)")
    parser.add_argument("--cull-photos", type=positive_int, default=200,
                        help="generated 12 MP camera photos of the culling section (default: 200)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of every section (figures not for reporting)")


def run(args: argparse.Namespace) -> int:
    from ..bench.run import SECTIONS, run_bench
    from ..errors import IAAError

    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise IAAError(f"unknown bench sections {unknown} (known: {', '.join(SECTIONS)})")
    run_bench(args.out, args.photos, sections, args.device, args.workers, args.repeats, args.quick, args.ava_epochs,
              cull_photos=args.cull_photos, show=lambda line: print(line, flush=True))
    return 0
