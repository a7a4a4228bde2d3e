"""Inspect datasets named as FORMAT:PATH (ava, tad66k, aadb, koniq, csv, folder, xmp, decisions, darktable), e.g. `iaa data check ava:/data/AVA`."""
from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from ..errors import IAAError
from .types import add_split_options, non_negative_int

if TYPE_CHECKING:
    from ..data.check import DataCheckReport

CHECK_HELP = "count listed/found/missing (and, with --decode, undecodable) images per split, with label statistics"
TOP_CATEGORIES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    check = sub.add_parser("check", help=CHECK_HELP, description=CHECK_HELP.capitalize() + "; exit 0 when usable, 1 when not.")
    check.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA, csv:labels.csv?scale=1,10, folder:~/Photos")
    check.add_argument("--decode", action="store_true", help="also decode every found image (slow on big sets)")
    check.add_argument("--workers", type=non_negative_int, default=min(8, os.cpu_count() or 1), help="decoding processes (default: %(default)s)")
    add_split_options(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..data.check import check_dataset

    dataset = open_dataset(args.dataset, val_fraction=args.val_fraction, seed=args.seed)
    report = check_dataset(dataset, decode=args.decode, workers=args.workers, progress=not (args.json or args.no_progress),
                           need_val=args.val_fraction > 0)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    if not report.usable:
        raise IAAError(report.refusal(args.dataset))
    return 0


def format_report(report: DataCheckReport) -> str:
    """A readable per-split table with categories, notes and the verdict."""
    labels = "unlabelled"
    if report.scale is not None:
        kind = f"{report.num_levels} vote levels" if report.num_levels else "scalar scores"
        labels = f"{kind} on {report.scale[0]:g}..{report.scale[1]:g}"
    lines = [f"{report.dataset} at {report.root} ({labels})", ""]
    header = ["split", "listed", "found", "missing"] + (["undecodable"] if report.decoded else [])
    if report.scale is not None:
        header += ["mean score", "std"] + (["votes/image (min-max)"] if report.num_levels else [])
    rows = [header]
    for s in report.splits:
        row = [s.name, f"{s.listed:,}", f"{s.found:,}", f"{s.missing:,}"] + ([f"{s.undecodable:,}"] if report.decoded else [])
        if report.scale is not None:
            row += [_num(s.score_mean), _num(s.score_std)]
            if report.num_levels:
                row.append("-" if s.votes_mean is None else f"{s.votes_mean:.1f} ({s.votes_min:g}-{s.votes_max:g})")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    for s in report.splits:
        if s.categories:
            top = ", ".join(f"{k} {v:,}" for k, v in list(s.categories.items())[:TOP_CATEGORIES])
            more = len(s.categories) - TOP_CATEGORIES
            lines.append(f"categories ({s.name}): {top}" + (f", ... {more} more" if more > 0 else ""))
        for example in s.missing_examples:
            lines.append(f"missing ({s.name}): {example}")
        for example in s.undecodable_examples:
            lines.append(f"undecodable ({s.name}): {example}")
    lines += [f"note: {n}" for n in report.notes] + [f"warning: {w}" for w in report.warnings]
    lines.append("usable: yes" if report.usable else f"usable: NO ({'; '.join(report.reasons)})")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
