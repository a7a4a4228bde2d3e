"""An applied cull, frozen: the decisions, the sidecar changes and the file actions, in OUT/plan.json.

The plan is written (atomically) before anything changes beside the photos. A rerun of the same command
finishes that plan instead of deciding again from what is left (a finished plan is a no-op); another
command on that folder is refused until the plan is undone. Each photo's size and modification time are
kept, so a photo changed since then is refused with its reason instead of being acted upon. `undo` moves
the photos back (removes copies and links), restores every sidecar byte-identical from the journal, and
retires the plan.
"""
from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import IAAError
from ..progress import progress_bar
from . import actions
from .embedded import can_embed, embedded_text, write_embedded_rating
from .journal import Journal, signature
from .rules import ERROR, PICK, Decision
from .transfer import Step, StepFailed, carry_out
from .xmp import RatingsPolicy, SidecarNaming, XmpPlace, decode, existing_rating, rated_packet, read_sidecar, sidecar_path, wanted

PLAN, JOURNAL = "plan.json", "journal"


@dataclass(frozen=True)
class Rating:
    """One rating change: this rating (and the stars behind it) into this sidecar, or into the XMP embedded
    in this file of the photo's unit (`embedded`)."""

    photo: str
    sidecar: str
    rating: int
    stars: int
    embedded: bool = False


@dataclass
class Plan:
    command: dict  # action, folder, xmp naming, ratings policy: what a rerun must repeat to finish this plan
    decisions: list[Decision]
    signatures: dict[str, str]  # photo (and each file rated in its embedded XMP) -> "size:mtime_ns" then
    ratings: list[Rating] = field(default_factory=list)
    units: list[actions.Unit] = field(default_factory=list)
    kept: int = 0  # sidecars (and embedded packets) whose own rating the policy keeps
    replaced: int = 0  # sidecars (and embedded packets) whose own rating the policy replaces

    def to_json(self) -> str:
        units = [{"photo": str(u.photo), "note": u.note, "steps": [_step_json(s) for s in u.steps]} for u in self.units]
        return json.dumps({"command": self.command, "decisions": [asdict(d) for d in self.decisions],
                           "signatures": self.signatures, "ratings": [asdict(r) for r in self.ratings],
                           "units": units, "kept": self.kept, "replaced": self.replaced}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        units = [actions.Unit(Path(u["photo"]), tuple(_step(s) for s in u["steps"]), u["note"]) for u in data["units"]]
        return cls(data["command"], [Decision(**d) for d in data["decisions"]], data["signatures"],
                   [Rating(**r) for r in data["ratings"]], units, data["kept"], data["replaced"])


def _step_json(step: Step) -> dict:
    return {**asdict(step), "source": str(step.source), "target": str(step.target)}


def _step(data: dict) -> Step:
    return Step(data["action"], Path(data["source"]), Path(data["target"]), data["size"], data["sha256"], data["link"])


def command(action: str | None, folder: str | None, naming: SidecarNaming | None, policy: RatingsPolicy,
            into: XmpPlace = "sidecar") -> dict:
    """What defines a plan; `into` is named only when it is not the sidecar (plans made before it still match)."""
    cmd = {"action": action, "folder": str(Path(folder).absolute()) if folder else None, "xmp": naming,
           "ratings": policy if naming else None}
    return {**cmd, "into": into} if naming and into != "sidecar" else cmd


def make_plan(decisions: Sequence[Decision], cmd: dict, hashes: bool = False) -> Plan:
    """What applying `decisions` would do: which sidecars get which rating, which units go where."""
    decided = [d for d in decisions if d.flag != ERROR and os.path.isfile(d.path)]
    plan = Plan(cmd, list(decisions), {d.path: signature(d.path) for d in decided})
    if cmd["xmp"]:
        for d in decided:
            if not d.xmp_rating:
                continue  # unrated (a pick list): the sidecar stays as it is
            for target, embedded in _rating_targets(Path(d.path), cmd["xmp"], cmd.get("into", "sidecar")):
                text = embedded_text(target) if embedded else decode(read_sidecar(target), target)
                if wanted(text, cmd["ratings"], target):
                    plan.ratings.append(Rating(d.path, str(target), d.xmp_rating, d.rating, embedded))
                    if embedded:
                        plan.signatures[str(target)] = signature(target)
                    found = existing_rating(text, target)
                    plan.replaced += found.rated and not found.ours and found.value != d.xmp_rating
                else:
                    plan.kept += 1
    if cmd["action"]:
        picks = [d.path for d in decided if d.flag == PICK]
        written: dict[str, list[Path]] = {}
        for rating in plan.ratings:
            written.setdefault(str(Path(os.path.abspath(rating.photo))), []).append(Path(rating.sidecar))
        plan.units = actions.plan(picks, cmd["action"], cmd["folder"], hashes, written)
    return plan


def _rating_targets(photo: Path, naming: SidecarNaming, into: XmpPlace) -> list[tuple[Path, bool]]:
    """Where a unit's rating goes, (file, embedded?): sidecars (one `IMG_1.xmp`, or `IMG_1.CR3.xmp` +
    `IMG_1.JPG.xmp` for each twin) and/or the XMP embedded in each twin that can hold it (JPEG, TIFF, DNG).
    With `into` "embedded", twins that cannot (other RAWs, PNG, HEIC...) still get their sidecar."""
    twins = [p for p in actions.companions(photo) if p.suffix.lower() != actions.SIDECAR]
    inside = [Path(os.path.abspath(p)) for p in twins if can_embed(p)] if into != "sidecar" else []
    bare = [p for p in twins if Path(os.path.abspath(p)) not in inside] if into == "embedded" else twins
    if naming == "stem":
        sidecars = [sidecar_path(photo, "stem")] if bare else []
    else:
        sidecars = [sidecar_path(p, "ext") for p in bare]
    return [(s, False) for s in sidecars] + [(p, True) for p in inside]


def load_plan(out: Path) -> Plan | None:
    path = out / PLAN
    if not path.exists():
        return None
    try:
        return Plan.from_json(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except (ValueError, KeyError, TypeError) as exc:
        raise IAAError(f"{path}: not a readable plan ({exc}); it is the record of an applied cull, keep it") from None


def save_plan(out: Path, plan: Plan) -> None:
    from ..artifacts import atomic_write_text  # imports torch: only when a plan is made, after scoring anyway

    atomic_write_text(out / PLAN, plan.to_json())


@dataclass
class Report:
    """What carrying out a plan did."""

    written: int = 0
    already_written: int = 0
    outcome: actions.Outcome = field(default_factory=actions.Outcome)
    refused: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return self.refused + self.outcome.failed


def execute(plan: Plan, out: Path, say: Callable[[str], None] = lambda line: None, progress: bool = False) -> Report:
    """Carry out `plan` (or the part of it a killed run left): ratings first, then the file actions. A file
    changed since the plan (other than by this cull's own journalled write) holds back its whole unit.
    progress: a bar (or one line off a terminal) for the ratings and for the file action."""
    report, journal = Report(), Journal(out / JOURNAL)
    changed = sorted(p for p, sig in plan.signatures.items()
                     if os.path.exists(p) and signature(p) != sig and not journal.holds(Path(os.path.abspath(p))))
    for photo in changed[:10]:
        say(f"  refused: {photo} changed since the plan was made (size or modification time); not acted upon")
    report.refused += [f"{p}: changed since the plan was made" for p in changed]
    held = {actions.unit_key(p) for p in changed}
    with progress_bar(len(plan.ratings), "xmp ratings", progress and bool(plan.ratings), unit="photo") as bar:
        _write_ratings(plan, journal, report, held, say, bar.update)
    units = [u for u in _as_written(plan.units, journal) if actions.unit_key(u.photo) not in held]
    stage = str(plan.command.get("action") or "files")
    with progress_bar(len(units), stage, progress and bool(units), unit="photo") as bar:
        report.outcome = actions.apply(units, say, bar.update)
    return report


def _write_ratings(plan: Plan, journal: Journal, report: Report, held: set, say: Callable[[str], None],
                   tick: Callable[[], None]) -> None:
    for rating in plan.ratings:
        tick()
        target = Path(rating.sidecar)
        if str(target) in journal.done:
            report.already_written += 1
        elif actions.unit_key(rating.photo) not in held:
            try:
                _write_rating(rating, journal)
            except (IAAError, OSError) as exc:  # one file that cannot be rated: the others still are
                line = str(exc) if isinstance(exc, IAAError) else \
                    f"{target}: could not write the rating ({exc.strerror or exc}); it is unchanged"
                say(f"  failed: {line}")
                report.refused.append(line)
                if getattr(exc, "errno", None) == errno.ENOSPC:
                    say(f"  stopped writing ratings: the disk of {target.parent} is full; free some space and "
                        "run the same command again")
                    break
                continue
            report.written += 1


def _write_rating(rating: Rating, journal: Journal) -> None:
    target = Path(rating.sidecar)
    if not rating.embedded:
        old = read_sidecar(target)
        journal.write(target, old, rated_packet(old, rating.rating, target, rating.stars))
    elif journal.holds(target):
        journal.finish(target)  # killed after its rename, before its "done" line
    else:
        write_embedded_rating(target, rating.rating, journal, rating.stars)


def _as_written(units: Sequence[actions.Unit], journal: Journal) -> list[actions.Unit]:
    """`units` with the size and hash of each file rated in its embedded XMP as this cull wrote it."""
    def step(s: Step) -> Step:
        key = str(s.source)
        new = journal.new.get(key) if key in journal.photos and key in journal.done else None
        return replace(s, size=new["size"], sha256=s.sha256 and new["sha256"]) if new else s

    return [replace(u, steps=tuple(step(s) for s in u.steps)) for u in units]


def undo(out: Path, say: Callable[[str], None] = lambda line: None) -> list[str]:
    """Undo the plan in `out`: photos back, copies and links removed, sidecars restored; one line per problem."""
    plan = load_plan(out)
    if plan is None and list(out.glob("plan.undone-*.json")):
        say(f"{out}: its cull was undone already; nothing left to undo")  # a rerun of an undo killed at its end
        return []
    if plan is None:
        raise IAAError(f"{out}: no applied cull to undo (no {PLAN})")
    problems, journal = [], Journal(out / JOURNAL)
    for unit in reversed(_as_written(plan.units, journal)):
        for step in reversed(unit.steps):
            try:
                _take_back(step)
            except StepFailed as exc:
                problems.append(str(exc))
    problems += journal.restore()
    if not problems:
        stamp = time.strftime("%Y%m%d-%H%M%S")  # the journal first: a kill between leaves a plan to undo again,
        if (out / JOURNAL).exists():  # never a spent journal that a new cull on this folder would take as its own
            os.replace(out / JOURNAL, out / f"journal.undone-{stamp}")
        os.replace(out / PLAN, out / f"plan.undone-{stamp}.json")
    return problems


def _take_back(step: Step) -> None:
    if step.action == "move":
        if os.path.lexists(step.target):
            carry_out(Step("move", step.target, step.source, step.size, step.sha256, step.link))
    elif os.path.lexists(step.target) and os.path.lexists(step.source):
        if carry_out(step) == "already":  # the copy or link is whole: it is ours to remove
            step.target.unlink()
