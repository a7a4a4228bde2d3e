"""Score outputs: the formats (CSV, JSONL, JSON, a terminal table), one writer that streams them, reading a
finished file back, and the checks on an output file made before any work starts (never overwrite silently,
never fail at the end).

Every format carries the fields of `Result` (CSV: path, mean, std, [distribution], error; no embedding,
which has its own file, `iaa score --embeddings`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from ..errors import IAAError
from .result import Result

FORMATS = ("csv", "jsonl", "json")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}  # anything else: csv


def infer_format(out: Path, fmt: str | None) -> str:
    """`fmt` when given, else from the extension (.jsonl/.ndjson -> jsonl, .json -> json, anything else -> csv)."""
    if fmt:
        if fmt not in FORMATS:
            raise IAAError(f"unknown output format '{fmt}' (use {', '.join(FORMATS)})")
        return fmt
    return EXTENSIONS.get(out.suffix.lower(), "csv")


def _fmt(value: float, digits: int = 6) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


class ResultWriter:
    """Writes results to a text stream batch by batch in one format: csv, jsonl, json (one array) or table."""

    def __init__(self, stream: TextIO, fmt: str, with_distribution: bool):
        self.stream, self.fmt, self.with_distribution = stream, fmt, with_distribution
        self.rows = 0
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None

    def write(self, results: Iterable[Result]) -> None:
        for r in results:
            if self.rows == 0:
                self._header()
            self.rows += 1
            if self._csv is not None:
                dist = " ".join(f"{p:.6f}" for p in r.distribution) if r.distribution else ""
                self._csv.writerow([r.path, _fmt(r.mean), _fmt(r.std)] + ([dist] if self.with_distribution else [])
                                   + [r.error])
            elif self.fmt == "table":
                reason = f"  ({r.error.removeprefix(f'{r.path}: ')})" if r.error else ""
                self.stream.write(f"{_fmt(r.mean, 3) if r.ok else 'failed':>8} {_fmt(r.std, 3):>6}  {r.path}{reason}\n")
            else:
                row = json.dumps(r.to_dict())
                self.stream.write(row + "\n" if self.fmt == "jsonl" else ("" if self.rows == 1 else ",\n") + row)
        self.stream.flush()

    def _header(self) -> None:
        if self._csv is not None:
            self._csv.writerow(["path", "mean", "std"] + (["distribution"] if self.with_distribution else []) + ["error"])
        elif self.fmt == "table":
            self.stream.write(f"{'score':>8} {'std':>6}  path\n")
        elif self.fmt == "json":
            self.stream.write("[")

    def close(self) -> None:
        """Finish the output (an empty CSV still gets its header, a JSON array its brackets)."""
        if self.rows == 0 and self.fmt != "jsonl":
            self._header()
        if self.fmt == "json":
            self.stream.write("]\n")
        self.stream.flush()


def format_output(results: Iterable[Result], fmt: str, with_distribution: bool) -> str:
    """All `results` as one string in `fmt`."""
    buffer = io.StringIO()
    writer = ResultWriter(buffer, fmt, with_distribution)
    writer.write(results)
    writer.close()
    return buffer.getvalue()


def read_output(path: Path, fmt: str) -> dict[str, Result]:
    """Rows of a finished output file, by path."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")  # as atomic_write_text wrote it
    except OSError as exc:
        raise IAAError(f"{path}: cannot read existing output ({exc.strerror})") from None
    try:
        if fmt == "jsonl":
            rows = [Result.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
        elif fmt == "json":
            rows = [Result.from_dict(entry) for entry in json.loads(text)]
        else:
            rows = [Result.from_dict(row) for row in csv.DictReader(io.StringIO(text))]
    except (KeyError, ValueError, TypeError) as exc:
        raise IAAError(f"{path}: not a {fmt} output of `iaa score` ({exc}); use another --out or --format") from None
    return {r.path: r for r in rows}


def check_output_file(path: str | Path, *, resume: bool = False, overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse an existing `path` unless `resume` or `overwrite`; make sure it can be written (raises IAAError)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IAAError(f"{path}: is a folder; give {option} a file name, e.g. {path / 'scores.csv'}")
    if path.exists() and not (resume or overwrite):
        raise IAAError(f"{path}: already exists; pass --resume to continue it or --overwrite to replace it")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise IAAError(f"{path}: cannot be created, {existing} is a file, not a folder; choose another {option}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
        if path.exists():
            with open(path, "a"):
                pass
    except OSError as exc:
        where = exc.filename or parent
        raise IAAError(f"{path}: cannot write here ({where}: {exc.strerror or exc}); choose another {option}") from None
    return path
