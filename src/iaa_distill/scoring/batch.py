"""Score many files into one CSV or JSONL, safely: resumable, journalled, shardable with torchrun.

While scoring, each batch's results are committed (fsynced) to a JSONL journal (`storage.Journal`),
`<out>.partial` (or `<out>.rank<k>` per torchrun rank), so a killed run loses at most the batch in flight.
`resume=True` skips every path already present in the output or in a journal and keeps those rows
(failed files included: delete their rows to retry them). At the end the output is written
atomically (temp file + os.replace) and the journals are removed.

Under torchrun (WORLD_SIZE > 1) rank k scores paths[k::WORLD_SIZE]; after a barrier (gloo) rank 0
merges all journals into the output.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

from ..artifacts import atomic_write_text
from ..devices import process_group
from ..errors import IAAError
from ..storage import Journal, read_journal
from .scorer import Scorer, ScoreResult

FORMATS = ("csv", "jsonl")
BARRIER_TIMEOUT = timedelta(days=7)  # ranks may wait for the slowest shard of a very large job


def infer_format(out: Path, fmt: str | None) -> str:
    """`fmt` when given, else from the extension (.jsonl/.json -> jsonl, anything else -> csv)."""
    if fmt:
        if fmt not in FORMATS:
            raise IAAError(f"unknown output format '{fmt}' (use {' or '.join(FORMATS)})")
        return fmt
    return "jsonl" if out.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"


# -- rows ----------------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6f}"


def _num(text: str | float | None) -> float:
    if text is None or text == "":
        return math.nan
    return float(text)


def format_output(results: Iterable[ScoreResult], fmt: str, with_distribution: bool) -> str:
    """Serialise results as CSV (path, mean, std, [distribution], error) or JSONL."""
    if fmt == "jsonl":
        return "".join(json.dumps(r.to_dict()) + "\n" for r in results)
    buffer = io.StringIO()
    columns = ["path", "mean", "std"] + (["distribution"] if with_distribution else []) + ["error"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in results:
        row = [r.path, _fmt(r.mean), _fmt(r.std)]
        if with_distribution:
            row.append(" ".join(f"{p:.6f}" for p in r.distribution) if r.distribution else "")
        writer.writerow(row + [r.error])
    return buffer.getvalue()


def _from_dict(data: dict) -> ScoreResult:
    dist = data.get("distribution")
    if isinstance(dist, str):
        dist = [float(v) for v in dist.split()] or None
    return ScoreResult(str(data["path"]), _num(data.get("mean")), _num(data.get("std")), dist or None, data.get("error") or "")


def read_output(path: Path, fmt: str) -> dict[str, ScoreResult]:
    """Rows of a finished output file, by path."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")  # as atomic_write_text wrote it
    except OSError as exc:
        raise IAAError(f"{path}: cannot read existing output ({exc.strerror})") from None
    try:
        if fmt == "jsonl":
            rows = [_from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
        else:
            rows = [_from_dict(row) for row in csv.DictReader(io.StringIO(text))]
    except (KeyError, ValueError, TypeError) as exc:
        raise IAAError(f"{path}: not a {fmt} output of `iaa score` ({exc}); use another --out or --format") from None
    return {r.path: r for r in rows}


def read_results(journal_path: Path) -> dict[str, ScoreResult]:
    """Rows of a results journal; a torn last line (killed writer) and unreadable rows are ignored."""
    rows: dict[str, ScoreResult] = {}
    for entry in read_journal(journal_path):
        try:
            result = _from_dict(entry)
        except (ValueError, KeyError, TypeError):
            continue
        rows[result.path] = result
    return rows


# -- the run -------------------------------------------------------------------------------------
def _journals(out: Path) -> list[Path]:
    partial = out.with_name(out.name + ".partial")
    ranks = sorted(out.parent.glob(glob.escape(out.name) + ".rank*"))
    return ([partial] if partial.exists() else []) + ranks


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def score_to_file(
    scorer: Scorer,
    paths: Sequence[str],
    out: str | Path,
    fmt: str | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    resume: bool = False,
    sort: bool = False,
    progress: bool = False,
) -> list[ScoreResult] | None:
    """Score `paths` into `out`. Returns the rows written (rank 0), None on other torchrun ranks."""
    out = Path(out)
    fmt = infer_format(out, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    # gloo, whatever the device: the ranks only wait for each other
    with process_group(scorer.device, backend="gloo", timeout=BARRIER_TIMEOUT) as (rank, world):
        existing = _journals(out)
        if existing and not resume:
            raise IAAError(
                f"{existing[0]}: left by an interrupted run; pass --resume to continue it, or delete it to start over"
            )
        done: dict[str, ScoreResult] = {}
        if resume:
            if out.exists():
                done.update(read_output(out, fmt))
            for journal_path in existing:
                done.update(read_results(journal_path))
        _barrier(world)  # every rank has read the old state before anyone appends

        todo = [p for p in paths[rank::world] if p not in done]
        with Journal(out.with_name(out.name + (f".rank{rank}" if world > 1 else ".partial"))) as journal:
            for batch in scorer.iter_paths(todo, batch_size, num_workers, progress=progress and rank == 0):
                journal.append(*(r.to_dict() for r in batch))
        _barrier(world)
    if rank != 0:
        return None
    rows = _merge(out, fmt, paths, resume, sort)
    atomic_write_text(out, format_output(rows, fmt, with_distribution=bool(scorer.config.num_levels)))
    for journal_path in _journals(out):
        journal_path.unlink()
    return rows


def _merge(out: Path, fmt: str, paths: Sequence[str], resume: bool, sort: bool) -> list[ScoreResult]:
    """Old output rows (when resuming) + every journal; inputs in order, then older rows not among them."""
    rows: dict[str, ScoreResult] = read_output(out, fmt) if resume and out.exists() else {}
    for journal_path in _journals(out):
        rows.update(read_results(journal_path))
    ordered = [rows.pop(p) for p in paths if p in rows] + list(rows.values())
    if sort:
        ordered.sort(key=lambda r: (not r.ok, -r.mean if r.ok else 0.0))
    return ordered
