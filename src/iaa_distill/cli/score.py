"""Score photos with a trained student, or a teacher folder (accuracy mode: the frozen teachers + the
teacher head, slower): files, folders (recursive) and glob patterns -> CSV or JSONL.

Columns: path, mean (score on the model's scale), std (spread of the predicted distribution; empty
for scalar models), distribution (space-separated level probabilities, K-level models only), error
(why a file could not be scored). Results are journalled while scoring; --resume continues a killed
run or skips files already in the output. Under torchrun each process scores a shard and rank 0
writes the merged output. --html adds a self-contained culling gallery.
"""
from __future__ import annotations

import argparse
import sys

from .types import add_batch_options, add_engine_options, count, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..imaging import DEFAULT_MAX_PIXELS

    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, folders (also folder:PATH) or glob patterns ('**' allowed)")
    parser.add_argument("--model", required=True, metavar="DIR", help="trained student folder (config.json + model.safetensors), or a teacher folder "
                        "(iaa train-teacher's output: accuracy mode, slower)")
    parser.add_argument("--out", default="scores.csv", help="output file (default: scores.csv); an existing one needs --resume or --overwrite")
    parser.add_argument("--format", choices=("csv", "jsonl"), help="output format (default: from --out's extension, else csv)")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML gallery sorted by score; an existing one needs --resume or --overwrite")
    add_batch_options(parser)
    add_engine_options(parser)
    parser.add_argument("--threads", type=positive_int, help="CPU inference threads (default: the engine's own choice)")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="largest image in pixels; larger ones are refused as possible decompression bombs "
                        "(default: %(default)s)")
    written = parser.add_mutually_exclusive_group()
    written.add_argument("--resume", action="store_true", help="keep rows already in --out or its journal and score only the rest")
    written.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--sort", action="store_true", help="sort rows by score, best first (failed files last)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import SYNTHETIC_NOTE, labels_are_synthetic, model_name
    from ..scoring import Scorer
    from ..scoring.batch import score_to_file
    from ..scoring.paths import collect_inputs
    from ..scoring.outputs import check_output_file

    check_output_file(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.html:
        check_output_file(args.html, resume=args.resume, overwrite=args.overwrite, option="--html")
    inputs = collect_inputs(args.paths)
    for line in inputs.skipped:
        print(f"iaa: {line}", file=sys.stderr)
    scorer = Scorer.from_pretrained(args.model, device=args.device, backend=args.backend, onnx_path=args.onnx,
                                    threads=args.threads, max_pixels=args.max_pixels)
    rows = score_to_file(
        scorer, inputs.paths, args.out, fmt=args.format, batch_size=args.batch_size, num_workers=args.workers,
        resume=args.resume, sort=args.sort, progress=not args.no_progress and sys.stderr.isatty(),
    )
    if rows is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    failed = sum(not r.ok for r in rows)
    print(f"scored {count(len(rows) - failed, 'image')}, {failed} failed -> {args.out}", file=sys.stderr)
    synthetic = labels_are_synthetic(scorer.config)
    if synthetic:
        print(f"note: this model was {SYNTHETIC_NOTE}", file=sys.stderr)
    if args.html:
        from ..scoring.gallery import write_gallery

        write_gallery(rows, args.html, scorer.config.scale, title=f"iaa score: {model_name(args.model)}",
                      synthetic=synthetic)
        print(f"gallery -> {args.html}", file=sys.stderr)
    return 0
