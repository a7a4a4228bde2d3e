"""File actions on the picks: copy, link (hard link, or symlink across devices) or move them into a folder.

Planned first and only carried out with `apply`; sub-folders below the photos' common folder are
kept, so equal names from different folders do not collide; a photo's XMP sidecar travels with it.
A target that already exists is left alone (a rerun after an interruption continues where it stopped).
Copies and links never change the originals.
"""
from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .xmp import SidecarNaming, sidecar_path

Action = Literal["copy", "link", "move"]
LINK_FALLBACK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)  # hard link impossible: symlink instead


@dataclass(frozen=True)
class Step:
    action: Action
    source: Path
    target: Path


def plan(photos: Sequence[str], action: Action, folder: str | Path, naming: SidecarNaming | None = None) -> list[Step]:
    """The steps that put `photos` (and their sidecars, when `naming` is given) into `folder`."""
    sources = [Path(p).resolve() for p in photos]
    if not sources:
        return []
    root = Path(os.path.commonpath([s.parent for s in sources]))
    steps = []
    for source in sources:
        target = Path(folder) / source.relative_to(root)
        steps.append(Step(action, source, target))
        sidecar = sidecar_path(source, naming) if naming else None
        if sidecar is not None and sidecar.exists():
            steps.append(Step(action, sidecar, sidecar_path(target, naming)))
    return steps


def apply(steps: Sequence[Step]) -> list[str]:
    """Carry out `steps`; returns one line per step that was skipped or fell back, with the reason."""
    notes = []
    for step in steps:
        if step.target.exists() or step.target.is_symlink():
            notes.append(f"{step.target}: already exists, left as it is")
            continue
        step.target.parent.mkdir(parents=True, exist_ok=True)
        try:
            note = _carry_out(step)
        except OSError as exc:
            note = f"{step.source}: could not {step.action} ({exc.strerror or exc}); skipped"
        if note:
            notes.append(note)
    return notes


def _carry_out(step: Step) -> str:
    if step.action == "copy":
        shutil.copy2(step.source, step.target)
    elif step.action == "move":
        shutil.move(step.source, step.target)
    else:
        try:
            os.link(step.source, step.target)
        except OSError as exc:
            if exc.errno not in LINK_FALLBACK:
                raise
            os.symlink(step.source, step.target)
            return f"{step.target}: symbolic link (no hard link possible: {exc.strerror})"
    return ""
