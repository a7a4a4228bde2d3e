"""Score photos with a trained student, or a teacher folder (accuracy mode: the frozen teachers + the
teacher head, slower): files, folders (recursive) and glob patterns.

Where results go: without --out (or with --out -) to stdout, as a short table when stdout is a terminal
and as JSONL (one JSON object per line) when it is piped or redirected; --format csv, jsonl or json
chooses for either. --out FILE writes a file (format from --format, else its extension: .jsonl, .json,
else CSV), journalled while scoring: --resume continues a killed run or skips files already in it, and
under torchrun each process scores a shard and rank 0 writes the merged file.

Fields: path, mean (score on the model's scale), std (spread of the predicted distribution; empty for
scalar models), distribution (level probabilities, K-level models only), embedding (JSON only, with
--embeddings; CSV never), error (why a file could not be scored). --embeddings FILE also writes each
photo's aesthetic feature keyed by path (.npy or .safetensors). --html adds a self-contained gallery.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .types import add_batch_options, add_engine_options, count, positive_int

if TYPE_CHECKING:
    from ..scoring import Result, Scorer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..imaging import DEFAULT_MAX_PIXELS

    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, folders (also folder:PATH) or glob patterns ('**' allowed)")
    parser.add_argument("--model", required=True, metavar="DIR", help="trained student folder (config.json + model.safetensors), a teacher folder "
                        "(iaa train-teacher's output: accuracy mode, slower), or a hub name org/name (local cache first)")
    parser.add_argument("--revision", help="branch, tag or commit of a hub --model (default: main; pin a commit for a definite model)")
    parser.add_argument("--out", metavar="FILE", help="output file, '-' for stdout (default: stdout: a table on a terminal, "
                        "else JSONL); an existing file needs --resume or --overwrite")
    parser.add_argument("--format", choices=("csv", "jsonl", "json"),
                        help="output format (default: from --out's extension, else csv; on stdout: table or JSONL)")
    parser.add_argument("--embeddings", metavar="FILE", help="also write each photo's aesthetic feature keyed by path "
                        "(.npy structured array or .safetensors)")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML gallery sorted by score; "
                        "an existing one needs --resume or --overwrite")
    add_batch_options(parser)
    add_engine_options(parser)
    parser.add_argument("--threads", type=positive_int, help="CPU inference threads (default: the engine's own choice)")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="largest image in pixels; larger ones are refused as possible decompression bombs "
                        "(default: %(default)s)")
    written = parser.add_mutually_exclusive_group()
    written.add_argument("--resume", action="store_true", help="keep rows already in --out or its journal and score only the rest")
    written.add_argument("--overwrite", action="store_true", help="replace an existing --out or --embeddings file")
    parser.add_argument("--sort", action="store_true", help="sort rows by score, best first (failed files last)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import SYNTHETIC_NOTE, labels_are_synthetic
    from ..errors import IAAError
    from ..scoring import Scorer
    from ..scoring.paths import collect_inputs
    from ..scoring.outputs import check_output_file

    to_stdout = args.out in (None, "-")
    if to_stdout and args.resume:
        raise IAAError("--resume continues an output file; give it with --out FILE")
    if not to_stdout:
        check_output_file(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.embeddings:
        from ..scoring.embeddings import check_embedding_path

        check_output_file(check_embedding_path(args.embeddings), resume=args.resume, overwrite=args.overwrite,
                          option="--embeddings")
    if args.html:
        check_output_file(args.html, resume=args.resume, overwrite=args.overwrite, option="--html")
    inputs = collect_inputs(args.paths)
    for line in inputs.skipped:
        print(f"iaa: {line}", file=sys.stderr)
    scorer = Scorer.from_pretrained(args.model, device=args.device, backend=args.backend, onnx_path=args.onnx,
                                    threads=args.threads, max_pixels=args.max_pixels, revision=args.revision)
    rows = _score(args, scorer, inputs.paths, to_stdout)
    if rows is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    failed = sum(not r.ok for r in rows)
    print(f"scored {count(len(rows) - failed, 'image')}, {failed} failed" + ("" if to_stdout else f" -> {args.out}"),
          file=sys.stderr)
    synthetic = labels_are_synthetic(scorer.config)
    if synthetic:
        print(f"note: this model was {SYNTHETIC_NOTE}", file=sys.stderr)
    if args.embeddings:
        from ..scoring.embeddings import save_embeddings

        written = save_embeddings(rows, args.embeddings)
        print(f"embeddings of {count(written, 'image')} -> {args.embeddings}", file=sys.stderr)
    if args.html:
        from ..scoring.gallery import write_gallery

        write_gallery(rows, args.html, scorer.config.scale, title=f"iaa score: {scorer.name}",
                      synthetic=synthetic)
        print(f"gallery -> {args.html}", file=sys.stderr)
    if rows and failed == len(rows):  # `iaa score broken.jpg && ...` must not go on as if it had a score
        print(f"iaa: error: no file could be scored ({count(failed, 'file')} failed)", file=sys.stderr)
        return 1
    return 0


def _score(args: argparse.Namespace, scorer: Scorer, paths: list[str], to_stdout: bool) -> list[Result] | None:
    """Score into --out, or to stdout (a table on a terminal, else JSONL, unless --format says)."""
    from ..scoring.batch import score_to_file, score_to_stream

    options = dict(batch_size=args.batch_size, num_workers=args.workers, sort=args.sort,
                   progress=not args.no_progress, embed=bool(args.embeddings))
    if to_stdout:
        fmt = args.format or ("table" if sys.stdout.isatty() else "jsonl")
        return score_to_stream(scorer, paths, sys.stdout, fmt, **options)
    return score_to_file(scorer, paths, args.out, fmt=args.format, resume=args.resume, **options)
