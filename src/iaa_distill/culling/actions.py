"""File actions on the picks: copy, link (hard link, or symlink across devices) or move them into a folder.

A photo travels as one unit with every file that shares its name apart from the extension: its RAW or
JPEG twin (`IMG_1.CR3` + `IMG_1.JPG`) and both sidecar styles (`IMG_1.xmp`, `IMG_1.CR3.xmp`). Sub-folders
below the photos' common folder are kept. A unit is never placed beside a foreign file of its name: when
the target folder already holds another file named like it, the whole unit gets the first free suffix
(`IMG_1-1.CR3`, `IMG_1-1.JPG`, `IMG_1-1.xmp`) and the plan says so. Each file is carried by `transfer`
(verified, atomic); planned first, carried out only with `apply`. Copies and links never change the originals.
"""
from __future__ import annotations

import filecmp
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..hashing import file_sha256
from ..imaging import IMAGE_EXTENSIONS, is_raw_file
from .transfer import Action, DiskFull, Step, StepFailed, carry_out

SIDECAR = ".xmp"


@dataclass(frozen=True)
class Unit:
    """One picked photo and the files that travel with it; `note` tells when its name had to change."""

    photo: Path
    steps: tuple[Step, ...]
    note: str = ""


@dataclass
class Outcome:
    """What `apply` did, counted in units (photos) and files."""

    done: int = 0  # units carried out now
    already: int = 0  # units found whole in place
    files: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: str = ""  # why the rest was not tried (a full disk)


def name_stem(name: str) -> str | None:
    """The photo name a file belongs to ('IMG_1' for IMG_1.CR3, IMG_1.xmp, IMG_1.CR3.xmp); None for other files."""
    base, ext = os.path.splitext(name)
    if ext.lower() == SIDECAR:
        inner, inner_ext = os.path.splitext(base)
        return inner if inner_ext.lower() in IMAGE_EXTENSIONS else base
    return base if ext.lower() in IMAGE_EXTENSIONS else None


def unit_key(photo: str | Path) -> tuple[str, str]:
    """Photos with equal keys (same folder, same name but the extension) are one unit."""
    path = Path(os.path.abspath(photo))
    return str(path.parent), path.stem


@lru_cache(maxsize=4096)
def _listing(folder: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(folder)))
    except OSError:
        return ()


def lead_photos(photos: Sequence[str]) -> list[str]:
    """One photo per unit, in the order given: of twins, a non-RAW one (what an editor shows), else the first."""
    chosen: dict[tuple[str, str], str] = {}
    for photo in photos:
        key = unit_key(photo)
        if key not in chosen or is_raw_file(Path(chosen[key])) and not is_raw_file(Path(photo)):
            chosen[key] = photo
    leads = set(chosen.values())
    return [p for p in photos if p in leads]


def companions(photo: Path) -> list[Path]:
    """The photo and every file beside it that belongs to it (twins, sidecars), photo first."""
    names = [n for n in _listing(str(photo.parent)) if n != photo.name and name_stem(n) == photo.stem]
    return [photo, *(photo.parent / n for n in names)]


def plan(photos: Sequence[str], action: Action, folder: str | Path, hashes: bool = False,
         extra: dict[str, list[Path]] | None = None) -> list[Unit]:
    """The units that put `photos` (with their twins and sidecars, and the `extra` files of a photo that do
    not exist yet: sidecars written first) into `folder`, names free of clashes."""
    _listing.cache_clear()
    by_unit = {unit_key(p): Path(os.path.abspath(p)) for p in reversed(photos)}  # links stay links: no resolve()
    sources = list(dict.fromkeys(by_unit[unit_key(p)] for p in photos))  # a twin listed too joins its unit
    if not sources:
        return []
    root = Path(os.path.commonpath([s.parent for s in sources]))
    claimed: set[Path] = set()
    units = []
    for photo in sources:
        files = companions(photo) if os.path.lexists(photo) else [photo]
        files += [f for f in (extra or {}).get(str(photo), []) if f not in files]
        where = Path(folder).absolute() / photo.parent.relative_to(root)
        suffix = _free_suffix(photo.stem, files, where, claimed)
        steps = tuple(_step(action, f, where / (photo.stem + suffix + f.name[len(photo.stem):]), hashes) for f in files)
        claimed.update(s.target for s in steps)
        note = f"{photo}: {where} already holds another {photo.stem}.*, so it goes in as {photo.stem}{suffix}" if suffix else ""
        units.append(Unit(photo, steps, note))
    return units


def _step(action: Action, source: Path, target: Path, hashes: bool) -> Step:
    if source.is_symlink():
        return Step(action, source, target, link=True)
    if not source.exists():
        return Step(action, source, target)
    return Step(action, source, target, source.stat().st_size, file_sha256(source) if hashes else "")


def _free_suffix(stem: str, files: list[Path], where: Path, claimed: set[Path]) -> str:
    """'' when the unit's names are free in `where` (or hold this very unit), else the first free '-N'."""
    present = [n for n in _listing(str(where)) if name_stem(n) is not None]
    for number in range(10_000):
        suffix = f"-{number}" if number else ""
        targets = {where / (stem + suffix + f.name[len(stem):]): f for f in files}
        taken = [where / n for n in present if name_stem(n) == stem + suffix] + [t for t in targets if t in claimed]
        if all(t in targets and _same_file(targets[t], t) for t in taken):
            return suffix
    raise StepFailed(f"{where}: no free name for {stem}")


def _same_file(source: Path, target: Path) -> bool:
    """True when `target` already is `source` (an earlier run put it there)."""
    try:
        return os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)
    except OSError:
        return False


def apply(units: Sequence[Unit], say: Callable[[str], None] = lambda line: None,
          tick: Callable[[], None] = lambda: None) -> Outcome:
    """Carry out `units`; a unit counts as done only when every one of its files is whole in place. `tick()` is
    called as each unit begins (progress)."""
    outcome = Outcome()
    for unit in units:
        tick()
        try:
            results = [carry_out(step) for step in unit.steps]
        except DiskFull as exc:
            outcome.failed.append(str(exc))
            outcome.stopped = str(exc)
            break
        except StepFailed as exc:
            outcome.failed.append(str(exc))
            say(f"  failed: {exc}")
            continue
        linked = [s.target for s, r in zip(unit.steps, results) if r == "symlink"]
        for target in linked:
            say(f"  {target}: a symbolic link to its photo (no hard link is possible there, e.g. on another disk); "
                "it breaks if the photo moves")
        results = ["done" if r == "symlink" else r for r in results]
        outcome.files += results.count("done")
        if "done" in results:
            outcome.done += 1
        else:
            outcome.already += 1
    return outcome
