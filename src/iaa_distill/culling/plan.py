"""An applied cull, frozen: the decisions, the sidecar changes and the file actions, in OUT/plan.json.

The plan is written (atomically) before anything changes beside the photos. A rerun of the same command
finishes that plan instead of deciding again from what is left (a finished plan is a no-op); another
command on that folder is refused until the plan is undone. Each photo's size and modification time are
kept, so a photo changed since then is refused with its reason instead of being acted upon. `undo` moves
the photos back (removes copies and links), restores every sidecar byte-identical from the journal, and
retires the plan.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import IAAError
from . import actions
from .journal import Journal
from .rules import ERROR, PICK, Decision
from .transfer import Step, StepFailed, carry_out
from .xmp import RatingsPolicy, SidecarNaming, decode, existing_rating, rated_packet, read_sidecar, sidecar_path, wanted

PLAN, JOURNAL = "plan.json", "journal"


@dataclass(frozen=True)
class Rating:
    """One sidecar change: this rating (and the stars behind it) into this sidecar."""

    photo: str
    sidecar: str
    rating: int
    stars: int


@dataclass
class Plan:
    command: dict  # action, folder, xmp naming, ratings policy: what a rerun must repeat to finish this plan
    decisions: list[Decision]
    signatures: dict[str, str]  # photo -> "size:mtime_ns" when the plan was made
    ratings: list[Rating] = field(default_factory=list)
    units: list[actions.Unit] = field(default_factory=list)
    kept: int = 0  # sidecars whose own rating the policy keeps
    replaced: int = 0  # sidecars whose own rating the policy replaces

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


def signature(path: str) -> str:
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}"


def command(action: str | None, folder: str | None, naming: SidecarNaming | None, policy: RatingsPolicy) -> dict:
    return {"action": action, "folder": str(Path(folder).absolute()) if folder else None, "xmp": naming,
            "ratings": policy if naming else None}


def make_plan(decisions: Sequence[Decision], cmd: dict, hashes: bool = False) -> Plan:
    """What applying `decisions` would do: which sidecars get which rating, which units go where."""
    decided = [d for d in decisions if d.flag != ERROR and os.path.isfile(d.path)]
    plan = Plan(cmd, list(decisions), {d.path: signature(d.path) for d in decided})
    if cmd["xmp"]:
        for d in decided:
            if not d.xmp_rating:
                continue  # unrated (a pick list): the sidecar stays as it is
            for sidecar in _sidecars(Path(d.path), cmd["xmp"]):
                text = decode(read_sidecar(sidecar), sidecar)
                if wanted(text, cmd["ratings"], sidecar):
                    plan.ratings.append(Rating(d.path, str(sidecar), d.xmp_rating, d.rating))
                    rating, ours = existing_rating(text, sidecar)
                    plan.replaced += rating is not None and not ours and rating != d.xmp_rating
                else:
                    plan.kept += 1
    if cmd["action"]:
        picks = [d.path for d in decided if d.flag == PICK]
        written: dict[str, list[Path]] = {}
        for rating in plan.ratings:
            written.setdefault(str(Path(os.path.abspath(rating.photo))), []).append(Path(rating.sidecar))
        plan.units = actions.plan(picks, cmd["action"], cmd["folder"], hashes, written)
    return plan


def _sidecars(photo: Path, naming: SidecarNaming) -> list[Path]:
    """The sidecars that carry a unit's rating: one `IMG_1.xmp`, or `IMG_1.CR3.xmp` + `IMG_1.JPG.xmp` for each twin."""
    if naming == "stem":
        return [sidecar_path(photo, "stem")]
    twins = [p for p in actions.companions(photo) if p.suffix.lower() != actions.SIDECAR]
    return [sidecar_path(p, "ext") for p in twins]


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


def execute(plan: Plan, out: Path, say: Callable[[str], None] = lambda line: None) -> Report:
    """Carry out `plan` (or the part of it a killed run left): sidecars first, then the file actions."""
    report, journal = Report(), Journal(out / JOURNAL)
    changed = {p for p, sig in plan.signatures.items() if os.path.exists(p) and signature(p) != sig}
    for photo in sorted(changed)[:10]:
        say(f"  refused: {photo} changed since the plan was made (size or modification time); not acted upon")
    report.refused += [f"{p}: changed since the plan was made" for p in sorted(changed)]
    for rating in plan.ratings:
        sidecar = Path(rating.sidecar)
        if str(sidecar) in journal.done:
            report.already_written += 1
        elif not any(unit_key_matches(sidecar, p) for p in changed):
            old = read_sidecar(sidecar)
            journal.write(sidecar, old, rated_packet(old, rating.rating, sidecar, rating.stars))
            report.written += 1
    units = [u for u in plan.units if str(u.photo) not in changed]
    report.outcome = actions.apply(units, say)
    return report


def unit_key_matches(sidecar: Path, photo: str) -> bool:
    return actions.unit_key(photo) == (str(sidecar.parent), actions.name_stem(sidecar.name))


def undo(out: Path, say: Callable[[str], None] = lambda line: None) -> list[str]:
    """Undo the plan in `out`: photos back, copies and links removed, sidecars restored; one line per problem."""
    plan = load_plan(out)
    if plan is None:
        raise IAAError(f"{out}: no applied cull to undo (no {PLAN})")
    problems = []
    for unit in reversed(plan.units):
        for step in reversed(unit.steps):
            try:
                _take_back(step)
            except StepFailed as exc:
                problems.append(str(exc))
    problems += Journal(out / JOURNAL).restore()
    if not problems:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        os.replace(out / PLAN, out / f"plan.undone-{stamp}.json")
        if (out / JOURNAL).exists():
            os.replace(out / JOURNAL, out / f"journal.undone-{stamp}")
    return problems


def _take_back(step: Step) -> None:
    if step.action == "move":
        if os.path.lexists(step.target):
            carry_out(Step("move", step.target, step.source, step.size, step.sha256, step.link))
    elif os.path.lexists(step.target) and os.path.lexists(step.source):
        if carry_out(step) == "already":  # the copy or link is whole: it is ours to remove
            step.target.unlink()
