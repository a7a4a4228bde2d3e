"""Cull photo folders: score them (cached), then sort them into picks, unflagged and rejects, with stars.

Rules: --keep-top (picks), --min-score and --reject-bottom (rejects), and per burst --burst-keep (bursts
and near-duplicates grouped by capture time and perceptual hash). --out DIR keeps scores.csv (changing a
rule does not rescore), decisions.csv, gallery.html (cull by keyboard, export decisions) and thumbs/.
--xmp writes stars (1-5) and rejects (-1) into XMP sidecars (--xmp-into embedded|both: into the XMP
embedded in JPEG, TIFF and DNG files, where Lightroom reads it), keeping the photographer's own ratings
unless --ratings says otherwise; --copy-to, --link-to or --move-to carry the picks with their twins and
sidecars. Nothing outside --out changes without --apply (a dry run lists what would happen); the first
--apply freezes its plan in --out, a rerun finishes it, --undo OUT takes it all back. --decisions FILE
--apply re-applies a decision list exported from the gallery.
"""
from __future__ import annotations

import argparse
import sys

from .types import bounded, add_batch_options, add_engine_options, positive_int

thumb_size = bounded(int, 32, None, "an integer >= 32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..culling.rules import CullRules
    from .options import add_options

    parser.add_argument("paths", nargs="*", metavar="PATH", help="photo files, folders or glob patterns ('**' allowed)")
    parser.add_argument("--model", metavar="DIR", help="trained student folder, or a teacher folder (accuracy mode); needed unless --decisions is given")
    parser.add_argument("--out", metavar="DIR", help="folder for scores, decisions, gallery, thumbnails and the record of an "
                        "applied cull (default: cull; with --decisions LIST.csv: LIST.cull)")
    add_options(parser.add_argument_group("rules"), CullRules)
    side = parser.add_argument_group("side effects (dry run unless --apply)")
    side.add_argument("--xmp", action="store_true", help="write stars and rejects as xmp:Rating into sidecars beside the photos")
    side.add_argument("--xmp-name", choices=("stem", "ext"), default="stem",
                      help="sidecar name: photo.xmp (stem: Lightroom, Capture One) or photo.ext.xmp (ext: darktable, digiKam)")
    side.add_argument("--xmp-into", choices=("sidecar", "embedded", "both"), default="sidecar",
                      help="with --xmp: write into sidecars (default), into the XMP embedded in JPEG, TIFF and DNG "
                      "files (what Lightroom reads for them; needs exiftool; other RAWs still get a sidecar), or both")
    action = side.add_mutually_exclusive_group()
    action.add_argument("--copy-to", metavar="DIR", help="copy the picks into DIR")
    action.add_argument("--link-to", metavar="DIR", help="hard-link the picks into DIR (symbolic links across devices)")
    action.add_argument("--move-to", metavar="DIR", help="move the picks into DIR")
    side.add_argument("--apply", action="store_true", help="carry out --xmp and the file action (default: only list them)")
    side.add_argument("--ratings", choices=("keep", "fill", "replace"), default="keep",
                      help="a rating this tool did not write: keep it (default), fill only unrated photos, or replace it")
    side.add_argument("--verify", choices=("size", "sha256"), default="size",
                      help="check each copied file by its size (default) or also by its sha256 (reads every photo twice)")
    side.add_argument("--decisions", metavar="FILE", help="use this decision list (gallery export, CSV or TXT) instead of scoring")
    side.add_argument("--undo", metavar="OUT", help="undo the cull applied with --out OUT: photos back, sidecars restored")
    run_group = parser.add_argument_group("execution")
    run_group.add_argument("--thumb-size", type=thumb_size, default=400,
                           help="longest side of gallery thumbnails in pixels, at least 32 (default: 400)")
    add_batch_options(run_group)
    add_engine_options(run_group)
    run_group.add_argument("--threads", type=positive_int, help="CPU inference threads (default: one per core, as "
                           "iaa score; idle ones sleep rather than spin, so the decoding workers get the cores "
                           "whenever the model waits)")
    run_group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _decide(args: argparse.Namespace, out) -> list:
    """Score and decide by the rules (or read a decision list); prints the summary."""
    from ..artifacts import SYNTHETIC_NOTE, model_name
    from pathlib import Path

    from ..culling.decisions import allowed, read_decisions
    from ..culling.rules import CullRules
    from ..culling.run import cull, skipped_files
    from ..errors import IAAError
    from ..scoring import Scorer
    from ..scoring.paths import collect_inputs
    from .options import config_from_args

    rules = config_from_args(CullRules, args)  # a bad rule is refused before anything is read or scored
    if args.decisions:
        decisions, refused = allowed(read_decisions(args.decisions), args.paths or [Path(args.decisions).absolute().parent],
                                     args.decisions)
        for line in refused:
            _say(f"  {line}")
        _say(f"{len(decisions)} decisions read from {args.decisions}" + (f", {len(refused)} refused" if refused else ""))
        return decisions
    if not args.paths or not args.model:
        raise IAAError("give the photos to cull and --model DIR (or --decisions FILE to re-apply a decision list)")
    skipped = skipped_files(args.paths)
    if skipped:
        _say(f"skipped files that are not photos: {', '.join(skipped)}")
    inputs = collect_inputs(args.paths)
    for line in inputs.skipped:
        _say(f"  {line}")
    paths = _outside(inputs.paths, [out, args.copy_to, args.link_to, args.move_to])
    scorer = Scorer.from_pretrained(args.model, device=args.device, backend=args.backend, onnx_path=args.onnx,
                                    threads=args.threads)
    result = cull(paths, scorer, args.model, out, rules, thumb_size=args.thumb_size,
                  batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress,
                  title=f"iaa cull: {model_name(args.model)}")
    if result.synthetic:
        _say(f"note: model {model_name(args.model)} was {SYNTHETIC_NOTE}")
    _summarise(result.decisions)
    _say("  " + ", ".join(f"{name} -> {path}" for name, path in result.files.items()))
    return result.decisions


def _outside(paths: list[str], folders: list) -> list[str]:
    """`paths` without those inside --out or the action's target folder (a rerun must not cull its own output)."""
    import os

    inside = [os.path.realpath(f) + os.sep for f in folders if f]
    kept = [p for p in paths if not any(os.path.realpath(p).startswith(f) for f in inside)]
    if len(kept) < len(paths):
        _say(f"  {len(paths) - len(kept)} files inside --out or the target folder left out of the cull")
    return kept


def _summarise(decisions: list) -> None:
    from collections import Counter

    flags = Counter(d.flag for d in decisions)
    groups = {d.burst for d in decisions if d.burst}
    _say(f"{len(decisions)} photos: {flags['pick']} picks, {flags['reject']} rejects, {flags['error']} failed; "
         f"{len(groups)} bursts or near-duplicate groups ({sum(1 for d in decisions if d.burst)} photos)")
    for d in [d for d in decisions if d.flag == "error"][:10]:
        _say(f"  failed: {d.reason}")


def _plan_command(args: argparse.Namespace) -> dict:
    from ..culling.plan import command

    kind, folder = next(((k, f) for k, f in (("copy", args.copy_to), ("link", args.link_to), ("move", args.move_to)) if f),
                        (None, None))
    if args.xmp_into != "sidecar" and not args.xmp:
        from ..errors import IAAError

        raise IAAError(f"--xmp-into {args.xmp_into} says where --xmp writes ratings; add --xmp")
    return command(kind, folder, args.xmp_name if args.xmp else None, args.ratings, args.xmp_into)


def _dry_run(plan, say=_say) -> None:
    """What --apply would do."""
    cmd = plan.command
    if cmd["xmp"]:
        name = "photo.xmp" if cmd["xmp"] == "stem" else "photo.ext.xmp"
        kept = f"; {plan.kept} keep the photographer's own rating" if plan.kept else ""
        replaced = f"; {plan.replaced} of them change the photographer's own rating" if plan.replaced else ""
        say(f"would write xmp:Rating into {_where(plan.ratings)} ({name}, --ratings {cmd['ratings']}){replaced}{kept}")
    if cmd["action"]:
        for unit in plan.units[:20]:
            say(f"  {cmd['action']} {unit.photo} -> {unit.steps[0].target}" + (f" (+{len(unit.steps) - 1} files)" if len(unit.steps) > 1 else ""))
        if len(plan.units) > 20:
            say(f"  ... and {len(plan.units) - 20} more")
        for unit in plan.units:
            if unit.note:
                say(f"  {unit.note}")
        say(f"would {cmd['action']} {len(plan.units)} picks into {cmd['folder']}")
    say("add --apply to do it (a rerun of an applied cull finishes it; whole files are not carried twice)")


def _where(ratings) -> str:
    embedded = sum(r.embedded for r in ratings)
    return f"{len(ratings) - embedded} sidecars" + (f" and the XMP embedded in {embedded} photos" if embedded else "")


def _apply(plan, out, fresh: bool, progress: bool) -> int:
    """Carry out the plan (saving it first when new); the summary counts what was done. 1 when anything failed."""
    from ..culling.plan import execute, save_plan

    if fresh:
        save_plan(out, plan)
    else:
        _say(f"finishing the cull applied earlier (decisions frozen in {out / 'plan.json'})")
    for unit in plan.units:
        if unit.note:
            _say(f"  {unit.note}")
    report = execute(plan, out, _say, progress)
    cmd, outcome = plan.command, report.outcome
    if cmd["xmp"]:
        kept = f", {plan.kept} kept the photographer's own rating" if plan.kept else ""
        _say(f"xmp:Rating written into {report.written} of {_where(plan.ratings)} ({report.already_written} already done{kept})")
    if cmd["action"]:
        _say(f"{cmd['action']}: {outcome.done} picks done now ({outcome.files} files), {outcome.already} already in "
             f"place, {len(outcome.failed)} failed, of {len(plan.units)} in {cmd['folder']}")
    if outcome.stopped:
        _say(f"stopped: {outcome.stopped}")
    if report.failed:
        _say(f"{len(report.failed)} actions failed; fix the cause and run the same command again")
    _say(f"to undo all of it: iaa cull --undo {out}")
    return 1 if report.failed else 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..culling.plan import load_plan, make_plan, undo
    from ..errors import IAAError

    if args.undo:
        problems = undo(Path(args.undo), _say)
        for line in problems:
            _say(f"  {line}")
        _say(f"undo: {'done' if not problems else f'{len(problems)} problems; fix them and run --undo again'}")
        return 1 if problems else 0
    out = Path(args.out) if args.out else _default_out(args)
    cmd = _plan_command(args)
    frozen = load_plan(out)
    if frozen is not None and not args.apply:
        _say(f"{out}: a cull was applied here ({_describe(frozen.command)}); its frozen plan:")
        _dry_run(frozen)
        return 0
    if frozen is not None:
        if frozen.command != cmd:
            raise IAAError(f"{out}: holds a cull applied with other options ({_describe(frozen.command)}); rerun that "
                           f"command to finish it, undo it with `iaa cull --undo {out}`, or use another --out")
        return _apply(frozen, out, fresh=False, progress=not args.no_progress)
    plan = make_plan(_decide(args, out), cmd, args.verify == "sha256")
    if not (cmd["xmp"] or cmd["action"]):
        return 0
    if not args.apply:
        _dry_run(plan)
        return 0
    return _apply(plan, out, fresh=True, progress=not args.no_progress)


def _describe(cmd: dict) -> str:
    parts = [f"--{cmd['action']}-to {cmd['folder']}"] if cmd["action"] else []
    into = f" --xmp-into {cmd['into']}" if cmd.get("into") else ""
    return " ".join(parts + ([f"--xmp --xmp-name {cmd['xmp']}{into} --ratings {cmd['ratings']}"] if cmd["xmp"] else [])) or "no actions"


def _default_out(args: argparse.Namespace):
    """`cull` in the working folder; for --decisions LIST.csv, LIST.cull beside the list."""
    from pathlib import Path

    return Path(args.decisions).absolute().with_suffix(".cull") if args.decisions else Path("cull")
