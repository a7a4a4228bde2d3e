"""Score many files into one CSV, JSONL or JSON file, safely: resumable, journalled, shardable with torchrun.

While scoring, each batch's results are committed (fsynced) to a JSONL journal (`storage.Journal`),
`<out>.partial` (or `<out>.rank<k>` per torchrun rank), so a killed run loses at most the batch in flight.
`resume=True` skips every path already present in the output or in a journal and keeps those rows
(failed files included: delete their rows to retry them). At the end the output is written
atomically (temp file + os.replace) and the journals are removed.

Under torchrun (WORLD_SIZE > 1) rank k scores paths[k::WORLD_SIZE]; after a barrier (gloo) rank 0
merges all journals into the output.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from ..artifacts import atomic_write_text
from ..devices import process_group
from ..errors import IAAError
from ..inputs import Visit
from ..storage import Journal, read_journal
from .outputs import ResultWriter, format_output, infer_format, read_output
from .result import Result
from .scorer import Scorer

BARRIER_TIMEOUT = timedelta(days=7)  # ranks may wait for the slowest shard of a very large job


def read_results(journal_path: Path) -> dict[str, Result]:
    """Rows of a results journal; a torn last line (killed writer) and unreadable rows are ignored."""
    rows: dict[str, Result] = {}
    for entry in read_journal(journal_path):
        try:
            result = Result.from_dict(entry)
        except (ValueError, KeyError, TypeError):
            continue
        rows[result.path] = result
    return rows


# -- the run -------------------------------------------------------------------------------------
def journal_paths(out: Path) -> list[Path]:
    """The journals an interrupted run of `score_to_file` into `out` left (resumed by `resume=True`)."""
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
    embed: bool = False,
    visit: Visit | None = None,
    stage: str = "scoring",
) -> list[Result] | None:
    """Score `paths` into `out`. Returns the rows written (rank 0), None on other torchrun ranks.

    embed=True keeps each row's embedding in the returned rows (and the journal); rows kept from an old
    output, which holds no embeddings, are scored again. `visit` and `stage`: see `Scorer.iter_paths` (only the
    photos scored now are visited)."""
    out = Path(out)
    fmt = infer_format(out, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    # gloo, whatever the device: the ranks only wait for each other
    with process_group(scorer.device, backend="gloo", timeout=BARRIER_TIMEOUT) as (rank, world):
        existing = journal_paths(out)
        if existing and not resume:
            raise IAAError(
                f"{existing[0]}: left by an interrupted run; pass --resume to continue it, or delete it to start over"
            )
        done: dict[str, Result] = {}
        if resume:
            if out.exists():
                done.update(read_output(out, fmt))
            for journal_path in existing:
                done.update(read_results(journal_path))
        _barrier(world)  # every rank has read the old state before anyone appends

        todo = [p for p in paths[rank::world] if p not in done or (embed and done[p].ok and done[p].embedding is None)]
        with Journal(out.with_name(out.name + (f".rank{rank}" if world > 1 else ".partial"))) as journal:
            for batch in scorer.iter_paths(todo, batch_size, num_workers, progress=progress and rank == 0, embed=embed,
                                           visit=visit, stage=stage):
                journal.append(*(r.to_dict() for r in batch))
        _barrier(world)
    if rank != 0:
        return None
    rows = _merge(out, fmt, paths, resume, sort)
    atomic_write_text(out, format_output(rows, fmt, with_distribution=bool(scorer.config.num_levels)))
    for journal_path in journal_paths(out):
        journal_path.unlink()
    return rows


def score_to_stream(
    scorer: Scorer,
    paths: Sequence[str],
    stream: TextIO,
    fmt: str,
    batch_size: int = 32,
    num_workers: int = 2,
    sort: bool = False,
    progress: bool = False,
    embed: bool = False,
) -> list[Result]:
    """Score `paths` and write the results to `stream` (stdout) in `fmt` (csv, jsonl, json or table), batch by
    batch as they come (all at the end when sorting, and for the terminal's table, which the progress bar
    would otherwise cut into). Nothing is journalled: use `score_to_file` to resume."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise IAAError("under torchrun give --out FILE: rank 0 merges every process's shard into it")
    writer = ResultWriter(stream, fmt, with_distribution=bool(scorer.config.num_levels))
    rows: list[Result] = []
    at_end = sort or fmt == "table"
    for batch in scorer.iter_paths(paths, batch_size, num_workers, progress=progress, embed=embed):
        rows.extend(batch)
        if not at_end:
            writer.write(batch)
    if at_end:
        rows = sort_by_score(rows) if sort else rows
        writer.write(rows)
    writer.close()
    return rows


def sort_by_score(rows: Sequence[Result]) -> list[Result]:
    """Best first, failed files last."""
    return sorted(rows, key=lambda r: (not r.ok, -r.mean if r.ok else 0.0))


def _merge(out: Path, fmt: str, paths: Sequence[str], resume: bool, sort: bool) -> list[Result]:
    """Old output rows (when resuming) + every journal; inputs in order, then older rows not among them."""
    rows: dict[str, Result] = read_output(out, fmt) if resume and out.exists() else {}
    for journal_path in journal_paths(out):
        rows.update(read_results(journal_path))
    ordered = [rows.pop(p) for p in paths if p in rows] + list(rows.values())
    return sort_by_score(ordered) if sort else ordered
