"""What `iaa score` scores: files, folders (also as `folder:PATH`) and glob patterns, expanded into image files.

Only regular files are scored: FIFOs, sockets, devices and broken links are skipped and reported (reading a
FIFO would block forever). Each file is listed once, by its real path, however many links lead to it, and
`**` never follows a symlinked folder, so a symlink loop cannot multiply files or hang the search.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Sequence

from ..data.folder import read_folder
from ..errors import IAAError
from ..imaging import is_image_file

FOLDER_PREFIX = "folder:"


@dataclass
class Inputs:
    """Image files to score, and one line for each path that was skipped."""

    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def collect_inputs(specs: Sequence[str]) -> Inputs:
    """Files as given, folders searched recursively (hidden entries skipped), glob patterns expanded."""
    inputs, seen = Inputs(), set()
    for spec in specs:
        for path in _expand(spec):
            if not path.is_file():
                reason = "broken link" if path.is_symlink() and not path.exists() else "not a regular file"
                inputs.skipped.append(f"{path}: {reason}, skipped")
                continue
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                inputs.paths.append(str(path))
    if not inputs.paths:
        raise IAAError(f"no image files found in: {' '.join(specs)}")
    return inputs


def _expand(spec: str) -> Iterable[Path]:
    """Candidate files of one spec (not yet checked to be regular files)."""
    if spec.startswith(FOLDER_PREFIX):
        folder = Path(spec[len(FOLDER_PREFIX):]).expanduser()
        if not folder.is_dir():
            raise IAAError(f"{spec}: {folder} is not a folder")
        return _images_under(folder)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _images_under(path)
    if path.exists() or path.is_symlink():
        return [path]
    if glob.has_magic(spec):
        return _glob(path)
    raise IAAError(f"{spec}: no such file or folder")


def _glob(pattern: Path) -> list[Path]:
    """Matches of a glob pattern (hidden entries skipped); `**` does not follow symlinked folders (pathlib's rule)."""
    parts = pattern.parts
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:first_magic]) if first_magic else Path(".")
    found: list[Path] = []
    for match in sorted(root.glob(str(Path(*parts[first_magic:])))):
        if any(part.startswith(".") for part in match.relative_to(root).parts):
            continue  # hidden files and folders, as the shell and `glob` skip them
        if match.is_dir():
            found.extend(_images_under(match))
        elif is_image_file(match):
            found.append(match)
    return found


def _images_under(folder: Path) -> list[Path]:
    """The images a `folder:` dataset lists (hidden files and folders skipped, symlinked folders not followed)."""
    return [record.path for record in read_folder(folder).records]
