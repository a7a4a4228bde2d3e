"""One file into its place, so that a kill at any moment leaves it untouched at the source or whole at the target.

A copy is written to a hidden temporary name beside the target (`.NAME.iaa-partial`), flushed to disk,
checked (size, and sha256 when asked), then renamed into place; on any error the partial file is
removed. A move is a rename on the same disk and, across disks, that verified copy followed by the removal
of the source. A symbolic link is carried as a link (pointing where it pointed), never by moving or copying
the file it points to. A target that already exists is accepted only when it equals the source (or, after a
move, the size and hash recorded in the plan); anything else is refused, never overwritten.
"""
from __future__ import annotations

import errno
import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..hashing import CHUNK, file_sha256

Action = Literal["copy", "link", "move"]
PARTIAL = ".iaa-partial"
LINK_FALLBACK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)  # hard link impossible: symlink instead


class StepFailed(Exception):
    """A file could not be put in place; the message is the one-line reason."""


class DiskFull(StepFailed):
    """The target disk has no space left: every later step would fail as well."""


@dataclass(frozen=True)
class Step:
    """One file: where it is, where it goes, and what the plan saw of it (size, sha256 when asked)."""

    action: Action
    source: Path
    target: Path
    size: int | None = None  # None: a symbolic link, or a sidecar this cull writes before the action
    sha256: str = ""
    link: bool = False  # the source is a symbolic link, carried as a link


def partial_name(target: Path) -> Path:
    return target.with_name(f".{target.name}{PARTIAL}")


def carry_out(step: Step) -> str:
    """Put `step.source` in place; returns 'done', 'symlink' (a link whose hard link was impossible: another
    disk, or a file system without them) or 'already' (found whole in place), or raises StepFailed."""
    source, target = step.source, step.target
    if os.path.lexists(target):
        if not _whole(step):
            raise StepFailed(f"{target}: another file is already there; both left as they are")
        if step.action == "move" and os.path.lexists(source):
            _remove_source(step)  # killed between the copy and the removal of the source
            return "done"
        return "already"
    if not os.path.lexists(source):
        raise StepFailed(f"{source}: no longer there (and not in {target.parent})")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            _carry_link(step)
        elif step.action == "link":
            return _hard_link(source, target)
        elif step.action == "move" and _renamed(source, target):
            pass
        else:
            _verified_copy(step)
            if step.action == "move":
                _remove_source(step)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"{target.parent}: the disk is full; nothing partial was left, free some space and "
                           "run the same command again") from None
        raise StepFailed(f"{source}: could not {step.action} to {target} ({exc.strerror or exc})") from None
    return "done"


def _whole(step: Step) -> bool:
    """True when the existing target is this step's file, whole (size and modification time as the copy set
    them, else the same bytes; the plan's size and hash once a move removed the source)."""
    source, target, here = step.source, step.target, os.path.lexists(step.source)
    if step.link:
        return target.is_symlink() and (not here or _link_destination(source) == _link_destination(target))
    if step.action == "link" and here:
        return _same_inode(source, target) or target.is_symlink() and _link_destination(target) == str(source.absolute())
    if target.is_symlink() or not target.is_file():
        return False
    found = target.stat()
    if not here:
        return step.size is None or found.st_size == step.size and (not step.sha256 or file_sha256(target) == step.sha256)
    original = source.stat()
    if found.st_size != original.st_size or step.sha256 and file_sha256(target) != step.sha256:
        return False
    return found.st_mtime_ns == original.st_mtime_ns or filecmp.cmp(source, target, shallow=False)


def _same_inode(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link_destination(link: Path) -> str:
    """Where a symbolic link points, as an absolute path (a relative link is read from its own folder)."""
    return os.path.normpath(os.path.join(link.parent, os.readlink(link)))


def _carry_link(step: Step) -> None:
    os.symlink(_link_destination(step.source), step.target)
    if step.action == "move":
        _remove_source(step)


def _hard_link(source: Path, target: Path) -> str:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in LINK_FALLBACK:
            raise
        os.symlink(source.absolute(), target)
        return "symlink"
    return "done"


def _renamed(source: Path, target: Path) -> bool:
    """Rename on the same disk (atomic); False when the target is on another disk."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise
    _sync_folder(target.parent)
    return True


def _verified_copy(step: Step) -> None:
    """Copy to a partial name, flush, check size (and hash), rename into place; the partial file never stays."""
    source, target, tmp = step.source, step.target, partial_name(step.target)
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, tmp)
        expected = source.stat().st_size
        if tmp.stat().st_size != expected:
            raise StepFailed(f"{target}: the copy has {tmp.stat().st_size} bytes, the source {expected}; removed")
        if step.sha256 and file_sha256(tmp) != step.sha256:
            raise StepFailed(f"{target}: the copy's sha256 differs from the photo's; removed")
        if os.path.lexists(target):
            raise StepFailed(f"{target}: another file appeared there; left as it is")
        os.rename(tmp, target)
        _sync_folder(target.parent)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()


def _remove_source(step: Step) -> None:
    """Remove the source of a move once its target is whole; when that is impossible, undo the copy."""
    try:
        step.source.unlink()
    except OSError as exc:
        step.target.unlink()  # never leave a silent copy behind a move that did not happen
        raise StepFailed(f"{step.source}: cannot be removed ({exc.strerror or exc}), so it was not moved; "
                         "its copy was taken back") from None
    _sync_folder(step.source.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a kill or power loss cannot bring the old entry back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
