"""The decisions file: one row per photo (path, score, flag, rating, burst, reason).

`iaa cull` writes it; the gallery exports the same columns after culling by hand; `iaa cull
--decisions FILE --apply` reads either back. A .txt file is also read: one path per line, all picks.
A relative path is read from the list's own folder. `allowed` keeps only entries that are photo files
inside the given folders; every other entry is refused with a one-line reason.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..artifacts import atomic_write_text
from ..data.parsing import read_text
from ..errors import IAAError
from ..imaging import IMAGE_EXTENSIONS
from .rules import ERROR, PICK, REJECT, UNFLAGGED, Decision

COLUMNS = ("path", "score", "flag", "rating", "burst", "reason")
FLAGS = (PICK, REJECT, UNFLAGGED, ERROR)


def format_decisions(decisions: Sequence[Decision]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for d in decisions:
        score = f"{d.score:.6f}" if math.isfinite(d.score) else ""
        writer.writerow([d.path, score, d.flag, d.rating, d.burst, d.reason])
    return buffer.getvalue()


def write_decisions(decisions: Sequence[Decision], out: str | Path) -> Path:
    out = Path(out)
    atomic_write_text(out, format_decisions(decisions))
    return out


def read_decisions(path: str | Path) -> list[Decision]:
    """Decisions from a CSV with at least `path` and `flag` columns, or a .txt list of picked paths."""
    path = Path(path)
    if os.path.exists(path) and not path.is_file():
        raise IAAError(f"{path}: not a regular file (a folder, FIFO or device); give a decisions CSV or TXT file")
    text = read_text(path)
    if path.suffix.lower() == ".txt":
        rows = [Decision(line.strip(), math.nan, PICK, 0, "", "listed") for line in text.splitlines() if line.strip()]
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"path", "flag"} <= set(reader.fieldnames):
            raise IAAError(f"{path}: a decisions CSV needs 'path' and 'flag' columns (as `iaa cull` and the gallery write)")
        rows = [_row(path, line, row) for line, row in enumerate(reader, 2)]
    base = path.absolute().parent
    return [replace(d, path=os.path.normpath(base / d.path)) for d in rows]


def allowed(decisions: Sequence[Decision], folders: Sequence[str | Path], source: str | Path) -> tuple[list[Decision], list[str]]:
    """The entries that are photo files inside `folders`, and one line for each entry refused."""
    roots = [os.path.realpath(f) for f in folders]
    kept, refused = [], []
    for d in decisions:
        real = os.path.realpath(os.path.dirname(d.path)) + os.sep + os.path.basename(d.path)
        if os.path.isdir(d.path) or Path(d.path).suffix.lower() not in IMAGE_EXTENSIONS:
            refused.append(f"{source}: {d.path} is not a photo file; refused")
        elif not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            refused.append(f"{source}: {d.path} is outside {', '.join(map(str, folders))}; refused "
                           "(give its folder as PATH to act on it)")
        else:
            kept.append(d)
    return kept, refused


def _row(source: Path, line: int, row: dict[str, str]) -> Decision:
    flag = (row.get("flag") or UNFLAGGED).strip().lower()
    if flag not in FLAGS or not (row.get("path") or "").strip():
        raise IAAError(f"{source}, line {line}: needs a path and a flag among {', '.join(FLAGS)} (got {flag!r})")
    try:
        rating = int(row.get("rating") or 0)
        score = float(row["score"]) if row.get("score") else math.nan
    except ValueError:
        raise IAAError(f"{source}, line {line}: rating must be a whole number and score a number") from None
    if not -1 <= rating <= 5:
        raise IAAError(f"{source}, line {line}: rating {rating} is outside -1..5")
    return Decision(row["path"].strip(), score, flag, rating, (row.get("burst") or "").strip(), row.get("reason") or "")
