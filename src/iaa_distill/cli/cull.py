"""Cull photo folders: score them (cached), then decide which photos to keep and which to reject.

Rules: --keep-top (a count or a share), --min-score, and per burst --burst-keep (bursts and
near-duplicates grouped by capture time and perceptual hash). --out DIR keeps scores.csv (changing a
rule does not rescore), decisions.csv, gallery.html (cull by keyboard, export decisions) and thumbs/.
--xmp writes stars (1-5) and rejects (-1) into XMP sidecars; --copy-to, --link-to or --move-to act on
the picks. Nothing outside --out changes without --apply (a dry run lists what would happen); originals
are never modified. --decisions FILE --apply re-applies a decision list exported from the gallery.
"""
from __future__ import annotations

import argparse
import sys

from .types import bounded, add_batch_options, add_engine_options

thumb_size = bounded(int, 32, None, "an integer >= 32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..culling.rules import CullRules
    from .options import add_options

    parser.add_argument("paths", nargs="*", metavar="PATH", help="photo files, folders or glob patterns ('**' allowed)")
    parser.add_argument("--model", metavar="DIR", help="trained student folder, or a teacher folder (accuracy mode); needed unless --decisions is given")
    parser.add_argument("--out", default="cull", metavar="DIR", help="folder for scores, decisions, gallery and thumbnails (default: cull)")
    add_options(parser.add_argument_group("rules"), CullRules)
    side = parser.add_argument_group("side effects (dry run unless --apply)")
    side.add_argument("--xmp", action="store_true", help="write stars and rejects as xmp:Rating into sidecars beside the photos")
    side.add_argument("--xmp-name", choices=("stem", "ext"), default="stem",
                      help="sidecar name: photo.xmp (stem: Lightroom, Capture One) or photo.ext.xmp (ext: darktable, digiKam)")
    action = side.add_mutually_exclusive_group()
    action.add_argument("--copy-to", metavar="DIR", help="copy the picks into DIR")
    action.add_argument("--link-to", metavar="DIR", help="hard-link the picks into DIR (symbolic links across devices)")
    action.add_argument("--move-to", metavar="DIR", help="move the picks into DIR")
    side.add_argument("--apply", action="store_true", help="carry out --xmp and the file action (default: only list them)")
    side.add_argument("--decisions", metavar="FILE", help="use this decision list (gallery export, CSV or TXT) instead of scoring")
    run_group = parser.add_argument_group("execution")
    run_group.add_argument("--thumb-size", type=thumb_size, default=400,
                           help="longest side of gallery thumbnails in pixels, at least 32 (default: 400)")
    add_batch_options(run_group)
    add_engine_options(run_group, backend=False)
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _decide(args: argparse.Namespace) -> list:
    """Score and decide by the rules (or read a decision list); prints the summary."""
    from ..artifacts import SYNTHETIC_NOTE, model_name
    from ..culling.decisions import read_decisions
    from ..culling.rules import CullRules
    from ..culling.run import cull, skipped_files
    from ..errors import IAAError
    from ..scoring import Scorer
    from ..scoring.paths import collect_inputs
    from .options import config_from_args

    if args.decisions:
        decisions = read_decisions(args.decisions)
        _say(f"{len(decisions)} decisions read from {args.decisions}")
        return decisions
    if not args.paths or not args.model:
        raise IAAError("give the photos to cull and --model DIR (or --decisions FILE to re-apply a decision list)")
    skipped = skipped_files(args.paths)
    if skipped:
        _say(f"skipped files that are not photos: {', '.join(skipped)}")
    inputs = collect_inputs(args.paths)
    for line in inputs.skipped:
        _say(f"  {line}")
    paths = inputs.paths
    scorer = Scorer.from_pretrained(args.model, device=args.device)
    result = cull(paths, scorer, args.model, args.out, config_from_args(CullRules, args), thumb_size=args.thumb_size,
                  batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress and sys.stderr.isatty(),
                  title=f"iaa cull: {model_name(args.model)}")
    if result.synthetic:
        _say(f"note: model {model_name(args.model)} was {SYNTHETIC_NOTE}")
    _summarise(result.decisions)
    _say("  " + ", ".join(f"{name} -> {path}" for name, path in result.files.items()))
    return result.decisions


def _summarise(decisions: list) -> None:
    from collections import Counter

    flags = Counter(d.flag for d in decisions)
    groups = {d.burst for d in decisions if d.burst}
    _say(f"{len(decisions)} photos: {flags['pick']} picks, {flags['reject']} rejects, {flags['error']} failed; "
         f"{len(groups)} bursts or near-duplicate groups ({sum(1 for d in decisions if d.burst)} photos)")
    for d in [d for d in decisions if d.flag == "error"][:10]:
        _say(f"  failed: {d.reason}")


def _write_sidecars(args: argparse.Namespace, decided: list) -> None:
    """xmp:Rating for each rated or rejected photo that exists (an unrated one keeps its sidecar as it is)."""
    from pathlib import Path

    from ..culling.xmp import check_unique_sidecars, write_rating

    missing = [d.path for d in decided if not Path(d.path).is_file()]
    absent = set(missing)
    rated = [d for d in decided if d.xmp_rating and d.path not in absent]
    check_unique_sidecars([d.path for d in rated], args.xmp_name)
    for d in rated if args.apply else []:
        write_rating(d.path, d.xmp_rating, args.xmp_name)
    for path in missing[:10]:
        _say(f"  {path}: no such photo, no sidecar written")
    name = "photo.xmp" if args.xmp_name == "stem" else "photo.ext.xmp"
    _say(f"{'' if args.apply else 'would '}write xmp:Rating into {len(rated)} sidecars ({name})"
         + ("" if args.apply else "; add --apply to write them"))


def _act(args: argparse.Namespace, kind: str, folder: str, decided: list) -> None:
    """Copy, link or move the picks (with their sidecars when --xmp) into `folder`, or list the plan."""
    from ..culling import actions

    picks = [d.path for d in decided if d.flag == "pick"]
    steps = actions.plan(picks, kind, folder, args.xmp_name if args.xmp else None)
    notes = actions.apply(steps) if args.apply else [f"{s.action} {s.source} -> {s.target}" for s in steps[:20]]
    notes += [] if args.apply or len(steps) <= 20 else [f"... and {len(steps) - 20} more"]
    for note in notes:
        _say(f"  {note}")
    _say(f"{'' if args.apply else 'would '}{kind} {len(picks)} picks into {folder}" + ("" if args.apply else "; add --apply to do it"))


def run(args: argparse.Namespace) -> int:
    decided = [d for d in _decide(args) if d.flag != "error"]
    if args.xmp:
        _write_sidecars(args, decided)
    for kind, folder in (("copy", args.copy_to), ("link", args.link_to), ("move", args.move_to)):
        if folder:
            _act(args, kind, folder, decided)
    return 0
