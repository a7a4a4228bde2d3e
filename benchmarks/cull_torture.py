"""Kill `iaa cull --copy-to/--move-to --apply` with SIGKILL at random moments, rerun it, and check that no photo,
sidecar or twin is ever lost, split or left partial (issue 21).

A shoot of N photos is made: small JPEGs, every other one with a RAW twin of 1 MB (random bytes: the JPEG
is the one scored), a third with a `photo.xmp` and a third with a darktable `photo.JPG.xmp`. It is scored once
(the cull's cache), then for each case (copy and move; onto the same disk and, when a tmpfs can be mounted,
onto another disk) the same `--apply` command is started again and again on a fresh copy of the shoot, each
run killed at a random moment of its file actions, until a run ends by itself. Most rounds start from the
case's frozen plan (what a first run leaves when killed just after writing it), so their runs neither score
nor decide and the kills land in the actions; every few rounds one starts from scratch. After every kill, every file of
the shoot must be whole somewhere (at its place or in the target); after the final run:
- move: the multiset of sha256 of the photos and sidecars equals the one before, each file in one place;
- copy: the shoot is unchanged and each copy equals its source;
- the picks in the target (names and bytes) equal those of an uninterrupted run on a copy of the shoot,
  and no hidden partial file is left anywhere.

    python -m benchmarks.cull_torture --photos 300 --kills 200

The model is a random tiny student unless --model is given: the torture tests the file actions, not taste.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from iaa_distill.culling.transfer import PARTIAL

FINISHING = "finishing the cull applied earlier"  # what a rerun says before it carries out a frozen plan
SOURCE = str(Path(__file__).resolve().parents[1] / "src")
CULL = "import sys; from iaa_distill.cli import main; sys.exit(main(['cull', *sys.argv[1:]]))"
SIDECAR = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="{}"/></rdf:RDF></x:xmpmeta>\n')


def make_shoot(folder: Path, photos: int, raw_bytes: int = 1 << 20, seed: int = 0) -> None:
    """JPEGs, RAW twins for every other one, sidecars of both styles for two thirds."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(photos):
        stem = folder / f"IMG_{i:04d}"
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(f"{stem}.JPG", quality=90)
        if i % 2 == 0:
            Path(f"{stem}.CR3").write_bytes(rng.bytes(raw_bytes))
        if i % 3 == 0:
            Path(f"{stem}.xmp").write_text(SIDECAR.format(1 + i % 5))
        elif i % 3 == 1:
            Path(f"{stem}.JPG.xmp").write_text(SIDECAR.format(1 + i % 5))


def tiny_model(folder: Path) -> Path:
    import torch

    from iaa_distill.student import Student, StudentConfig

    torch.manual_seed(0)
    config = StudentConfig.for_backbone("test_efficientnet", input_size=64, num_levels=10, feature_dim=16)
    Student(config).save_pretrained(folder, note="random weights: the torture tests file actions, not taste")
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path, known: dict | None = None) -> dict[str, str]:
    """relative path -> sha256 of every file (hidden partial files included, so they are seen). With `known`,
    a file whose device, inode, size and modification time were hashed before is not read again (a rename
    keeps them; a copy or a partial file is a new inode, a write changes the time)."""
    found = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        info = p.stat()
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if known is None:
            found[p.relative_to(folder).as_posix()] = sha(p)
        else:
            found[p.relative_to(folder).as_posix()] = known[key] if key in known else known.setdefault(key, sha(p))
    return found


def cull(args: list[str], kill_after: float | None, armed_by: Path | str | None = None) -> tuple[int | None, float, float]:
    """Run `iaa cull ARGS`; kill it with SIGKILL `kill_after` s after it is armed (at once when `armed_by` is None):
    when the file `armed_by` exists, or when its message `armed_by` appears on stderr.
    Returns (exit code, or None when killed; seconds in all; seconds until it was armed)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": SOURCE, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CULL, *args, "--workers", "0", "--no-progress"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    said = threading.Event()

    def read() -> None:
        for line in child.stderr:
            lines.append(line)
            if isinstance(armed_by, str) and armed_by in line:
                said.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    armed = (lambda: said.is_set()) if isinstance(armed_by, str) else (lambda: armed_by is None or armed_by.exists())
    while child.poll() is None and not armed():
        time.sleep(0.01)
    armed_at = time.perf_counter()
    try:
        child.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join()
        return None, time.perf_counter() - started, armed_at - started
    reader.join()
    if child.returncode:
        raise SystemExit(f"iaa cull failed by itself ({child.returncode}):\n{''.join(lines)}")
    return child.returncode, time.perf_counter() - started, armed_at - started


def carried(target: Path) -> int:
    """Files whole in the target (hidden partial files aside)."""
    return sum(1 for p in target.rglob("*") if p.is_file() and PARTIAL not in p.name) if target.exists() else 0


def whole_somewhere(before: dict[str, str], shoot: Path, target: Path, known: dict) -> list[str]:
    """Files of the shoot that are whole neither at their place nor anywhere in the target."""
    there = Counter(snapshot(shoot, known).values()) + Counter(snapshot(target, known).values() if target.exists() else [])
    return [name for name, digest in before.items() if not there[digest]]


def fresh_case(root: Path, name: str, plan: Path | None = None) -> tuple[Path, Path]:
    """A copy of the scored reference shoot and of its cull folder (scores and thumbnails), without a plan or
    with `plan` (the frozen plan of this case's first run: as a first run leaves it when killed right after)."""
    shoot, out = root / f"shoot-{name}", root / f"cull-{name}"
    for folder in (shoot, out):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(root / "reference-shoot", shoot)  # copy2: sizes and mtimes kept, so the plan still holds
    shutil.copytree(root / "reference-cull", out, ignore=shutil.ignore_patterns("plan.json", "journal"))
    for file in ("scores.csv", "decisions.csv", "thumbs/index.json"):
        path = out / file
        path.write_text(path.read_text().replace(str(root / "reference-shoot"), str(shoot)))
    if plan is not None:
        shutil.copy2(plan, out / "plan.json")
    return shoot, out


def names(*folders: Path) -> list[str]:
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob("*"))


def torture(action: str, place: Path, root: Path, model: Path, kills: int, reference: dict[str, str],
            rng: random.Random, stop_at: float, first_every: int, within: float) -> dict:
    """Rounds of kill-and-rerun on a fresh copy of the shoot, each until a run ends by itself, until `kills`
    kills; the invariants are checked after every kill and after every round.

    The first round runs whole: it decides, freezes its plan and times this case's actions. Every
    `first_every`-th round starts the same way, from no plan, and its first run is killed at a random moment
    of its actions once its plan exists. The other rounds start from that frozen plan (the state a first run
    leaves when killed just after writing it), so no run of theirs decides or scores. A run is killed at a random
    moment of the actions it has left (the case's action time times the share of the picks' files not yet in
    the target, plus a fifth, and at most `within` s), counted from when it starts them: its plan written, or
    its message that it finishes a frozen plan. So a round's kills fall at random points all along its actions.
    After each kill the check that every file is whole somewhere hashes only new or changed files (by inode,
    size and time); the checks after each round hash every file."""
    figures = {"case": f"{action} -> {place.name}", "kills": 0, "mid_action": 0, "runs": 0, "rounds": 0,
               "first_runs_killed": 0, "seconds": 0.0, "lost": 0}
    checks: dict[str, bool] = {}
    name, acting, frozen = f"{action}-{place.name}", 0.2, None
    while (figures["kills"] < kills and time.time() < stop_at) or figures["rounds"] < 2:
        calibrating = not figures["rounds"]
        from_scratch = calibrating or figures["rounds"] % first_every == 0
        shoot, out = fresh_case(root, name, None if from_scratch else frozen)
        target = place / name
        shutil.rmtree(target, ignore_errors=True)
        before, known = snapshot(shoot), {}
        args = [str(shoot), "--model", str(model), "--out", str(out), "--keep-top", "50%", f"--{action}-to", str(target),
                "--apply"]
        started = time.perf_counter()
        while True:
            planned = (out / "plan.json").exists()  # a first run decides, then writes the plan: kill it after that
            share = carried(target) / len(reference)
            delay = None if calibrating or figures["kills"] >= kills or time.time() > stop_at else \
                rng.uniform(0.0, min(acting * (1.2 - share), within))  # within the actions this run has left
            files = names(shoot, target)
            code, seconds, armed = cull(args, delay, FINISHING if planned else out / "plan.json")
            if calibrating or code is not None and planned and not share:  # it did every action of the plan
                acting = max(seconds - armed, 0.2)
            if calibrating:
                frozen = root / f"plan-{name}.json"
                shutil.copy2(out / "plan.json", frozen)
            figures["runs"] += 1
            if code is not None:
                break
            figures["kills"] += 1
            figures["first_runs_killed"] += not planned
            figures["mid_action"] += names(shoot, target) != files  # it had moved or copied something
            figures["lost"] += len(whole_somewhere(before, shoot, target, known))
        figures["seconds"] += time.perf_counter() - started
        figures["rounds"] += 1
        for check, ok in invariants(action, before, snapshot(shoot), snapshot(target), reference).items():
            checks[check] = checks.get(check, True) and ok
        print(f"  {figures['case']}: round {figures['rounds']}, {figures['kills']} kills so far "
              f"({figures['mid_action']} mid-action), {'all invariants hold' if all(checks.values()) else 'FAILED'}",
              flush=True)
    checks["every file whole after every kill"] = not figures["lost"]
    return {**figures, "checks": checks}


def invariants(action: str, before: dict[str, str], shoot: dict[str, str], target: dict[str, str],
               reference: dict[str, str]) -> dict[str, bool]:
    partial = [n for n in [*shoot, *target] if PARTIAL in n or n.endswith(".tmp")]
    checks = {"no partial file left": not partial, "picks equal an uninterrupted run": target == reference}
    if action == "move":
        checks["sha256 multiset unchanged"] = Counter(before.values()) == Counter([*shoot.values(), *target.values()])
        checks["each file in exactly one place"] = len(shoot) + len(target) == len(before)
    else:
        checks["shoot unchanged"] = shoot == before
        checks["copies equal their sources"] = all(before.get(n) == d for n, d in target.items())
    return checks


def embedded_torture(root: Path, photos: int, kills: int, rng: random.Random) -> dict:
    """kill -9 during `iaa cull --xmp --xmp-into embedded --move-to` (ratings written into the JPEGs' embedded
    XMP through exiftool, the RAW twins' into sidecars, then the picks moved) and during its `--undo`, on a
    shoot of `photos`, rounds until `kills` kills, each run killed at a random moment of an uninterrupted
    run's length (from its message that it finishes the frozen plan; an undo from its start, once a round).
    After every kill each file of the shoot is whole somewhere,
    as its old bytes or as an uninterrupted run wrote it (never partial); after each apply the shoot and the
    picks equal the uninterrupted run's; after each undo the shoot is byte-identical to before, the picks gone."""
    make_shoot(root / "embed-reference-shoot", photos, raw_bytes=4096, seed=1)
    rows = [f"{p},{'pick' if i % 2 else 'reject'},{1 + i % 5}"
            for i, p in enumerate(sorted((root / "embed-reference-shoot").glob("*.JPG")))]
    (root / "embed-decisions.csv").write_text("path,flag,rating\n" + "\n".join(rows) + "\n")
    shoot, out, target = root / "embed-shoot", root / "embed-cull", root / "embed-picks"
    figures = {"case": "embedded XMP + move, and undo", "kills": 0, "mid_action": 0, "runs": 0, "rounds": 0,
               "seconds": 0.0, "lost": 0}
    checks: dict[str, bool] = {}
    frozen, new, reference, acting = None, {}, {}, {"apply": 1.0, "undo": 1.0}  # the first round runs whole
    while figures["kills"] < kills or figures["rounds"] < 2:
        for folder in (shoot, out, target):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(root / "embed-reference-shoot", shoot)
        if frozen:
            out.mkdir()
            shutil.copy2(frozen, out / "plan.json")
        before, started, known = snapshot(shoot), time.perf_counter(), {}
        listed = (root / "embed-decisions.csv").read_text().replace(str(root / "embed-reference-shoot"), str(shoot))
        (root / "embed-decisions-case.csv").write_text(listed)
        apply = [str(shoot), "--decisions", str(root / "embed-decisions-case.csv"), "--out", str(out), "--xmp",
                 "--xmp-into", "embedded", "--move-to", str(target), "--apply"]
        undo_killed = False  # an undo is killed once a round: it is short, and reruns would die in their start-up
        for phase, args in (("apply", apply), ("undo", ["--undo", str(out)])):
            while True:
                state = {**snapshot(shoot, known), **{f"picks/{n}": d for n, d in snapshot(target, known).items()}}
                killing = figures["rounds"] > 0 and figures["kills"] < kills and (phase == "apply" or not undo_killed)
                code, seconds, armed = cull(args, rng.uniform(0.0, acting[phase]) if killing else None,
                                            None if phase == "undo" else FINISHING if frozen else out / "plan.json")
                figures["runs"] += 1
                if code is not None:
                    acting[phase] = max(acting[phase], seconds - armed) if killing else seconds - armed
                    break
                figures["kills"] += 1
                undo_killed = undo_killed or phase == "undo"
                found = {**{f"shoot/{n}": d for n, d in snapshot(shoot).items()},
                         **{f"picks/{n}": d for n, d in snapshot(target).items()}}
                figures["mid_action"] += state != {n.removeprefix("shoot/"): d for n, d in found.items()}  # it wrote
                whole = Counter(found.values())
                figures["lost"] += sum(not (whole[d] or whole[new.get(n, d)]) for n, d in before.items())
                allowed = set(before.values()) | set(reference.values())  # old, or as the uninterrupted run left it
                figures["lost"] += sum(PARTIAL not in n and d not in allowed for n, d in found.items())
            after = {**{f"shoot/{n}": d for n, d in snapshot(shoot).items()}, **{f"picks/{n}": d for n, d in snapshot(target).items()}}
            if frozen is None and phase == "apply":  # the uninterrupted run: what every later apply must give
                reference, frozen = after, root / "embed-plan.json"
                shutil.copy2(out / "plan.json", frozen)
                new = {n: after.get(f"shoot/{n}") or after.get(f"picks/{n}") or d for n, d in before.items()}
            ok = after == reference if phase == "apply" else snapshot(shoot) == before and not snapshot(target)
            check = "apply equals an uninterrupted run" if phase == "apply" else "undo restores the shoot byte for byte"
            checks[check] = checks.get(check, True) and ok
        figures["seconds"] += time.perf_counter() - started
        figures["rounds"] += 1
        print(f"  {figures['case']}: round {figures['rounds']}, {figures['kills']} kills so far "
              f"({figures['mid_action']} mid-action; an apply's actions {acting['apply']:.1f} s, an undo "
              f"{acting['undo']:.1f} s), {'all invariants hold' if all(checks.values()) else 'FAILED'}", flush=True)
    checks["every file old or new, whole, after every kill"] = not figures["lost"]
    return {**figures, "first_runs_killed": 0, "checks": checks}


def other_disk(root: Path) -> Path | None:
    """A fresh tmpfs under `root` (root only), else None."""
    disk = root / "other-disk"
    disk.mkdir()
    if os.geteuid() != 0:
        return None
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(disk)], capture_output=True)
    return disk if done.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300, help="photos in the shoot (default: 300)")
    parser.add_argument("--kills", type=int, default=200, help="kills in all, shared by the cases (default: 200)")
    parser.add_argument("--model", help="model folder (default: a random tiny student)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--first-every", type=int, default=8, metavar="N",
                        help="every N-th round starts without a plan, its first run deciding and being killed after "
                        "freezing its plan; the others start from that frozen plan (default: 8)")
    parser.add_argument("--within", type=float, default=3.0, metavar="S",
                        help="a run is killed at most S seconds into its actions (default: 3)")
    parser.add_argument("--embedded-kills", type=int, default=0, metavar="K",
                        help="also kill -9 `--xmp --xmp-into embedded --move-to` and its --undo K times (default: 0)")
    parser.add_argument("--embedded-photos", type=int, default=24, metavar="N",
                        help="photos in the embedded case's shoot (exiftool rewrites each JPEG; default: 24)")
    parser.add_argument("--max-minutes", type=float, default=float("inf"),
                        help="share of time for the cases: a case starts no new round after its share (the figures "
                        "then say how many kills were made)")
    args = parser.parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="cull-torture-"))
    root.mkdir(parents=True, exist_ok=True)
    rng, disk = random.Random(args.seed), other_disk(root)
    try:
        model = Path(args.model) if args.model else tiny_model(root / "model")
        make_shoot(root / "reference-shoot", args.photos, seed=args.seed)
        _, scoring, _ = cull([str(root / "reference-shoot"), "--model", str(model), "--out", str(root / "reference-cull"),
                           "--keep-top", "50%"], None)  # scores and thumbnails, cached for every case
        shoot, out = fresh_case(root, "timing")
        _, longest, deciding = cull([str(shoot), "--model", str(model), "--out", str(out), "--keep-top", "50%",
                                     "--copy-to", str(root / "reference"), "--apply"], None, out / "plan.json")
        _, rerun, _ = cull([str(shoot), "--model", str(model), "--out", str(out), "--keep-top", "50%", "--copy-to",
                         str(root / "reference"), "--apply"], None)
        reference = snapshot(root / "reference")
        cases = [("copy", root / "same"), ("move", root / "same")] + ([("copy", disk), ("move", disk)] if disk else [])
        results, begin = [], time.time()
        for number, (action, place) in enumerate(cases):
            kills = args.kills // len(cases) + (number < args.kills % len(cases))
            results.append(torture(action, place, root, model, kills, reference, rng,
                                   begin + (number + 1) * 60 * args.max_minutes / len(cases), args.first_every, args.within))
            report(results[-1])
        if args.embedded_kills:
            results.append(embedded_torture(root, args.embedded_photos, args.embedded_kills, rng))
            report(results[-1])
        print(f"{args.photos} photos ({(args.photos + 1) // 2} RAW+JPEG pairs, sidecars of both styles); scoring once "
              f"{scoring:.1f} s, an uninterrupted --copy-to --apply {longest:.1f} s ({longest - deciding:.1f} s of it after the plan), its rerun {rerun:.1f} s; {sum(r['kills'] for r in results)} "
              f"kills, {sum(r['runs'] for r in results)} runs in {sum(r['rounds'] for r in results)} rounds, "
              f"{sum(r['seconds'] for r in results):.0f} s; other disk: {'a tmpfs' if disk else 'none (cannot mount)'}")
        failed = [f"{r['case']}: {c}" for r in results for c, ok in r["checks"].items() if not ok]
        print("all invariants hold" if not failed else f"FAILED: {'; '.join(failed)}")
        return 1 if failed else 0
    finally:
        if disk:
            subprocess.run(["umount", str(disk)], check=False)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def report(result: dict) -> None:
    checks = ", ".join(f"{c}: {'yes' if ok else 'NO'}" for c, ok in result["checks"].items())
    print(f"{result['case']}: {result['kills']} kills ({result['mid_action']} mid-action, {result['first_runs_killed']} of "
          f"first runs after their plan), {result['runs']} runs in {result['rounds']} rounds, "
          f"{result['seconds']:.0f} s; {checks}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
