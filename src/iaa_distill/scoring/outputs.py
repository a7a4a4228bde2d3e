"""Checks on an output file made before any work starts: never overwrite silently, never fail at the end."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import IAAError


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
