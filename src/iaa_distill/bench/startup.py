"""How fast the command line answers: `iaa --help` and `iaa score --help` in fresh interpreters, against the
interpreter's own start-up (`python -c pass`), so the ratio holds on a busy or slow machine too."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from .timing import Report

GOALS_S = {("--help",): 0.5, ("score", "--help"): 1.0}  # the goals, in seconds on the reference machine


def _seconds(commands: list[list[str]], repeats: int) -> list[float]:
    """Median wall time of running each command to completion. The commands take turns, so a busy machine slows
    them alike and their ratios hold; one untimed round first (files into the page cache)."""
    times: list[list[float]] = [[] for _ in commands]
    for round_ in range(repeats + 1):
        for spent, argv in zip(times, commands):
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            if round_:
                spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def bench_cli(report: Report, repeats: int) -> dict[str, float]:
    """Time of each help command (ms), its ratio to `python -c pass`, and goal / seconds (>= 1: goal met)."""
    names = ["iaa " + " ".join(args) for args in GOALS_S]
    base, *seconds = _seconds([[sys.executable, "-c", "pass"]]
                              + [[sys.executable, "-m", "iaa_distill", *args] for args in GOALS_S], max(3, 2 * repeats))
    report.add("cli", "python -c pass (interpreter start-up)", 1000 * base, "ms")
    for name, spent, goal in zip(names, seconds, GOALS_S.values()):
        report.add("cli", name, 1000 * spent, "ms")
        report.ratio(f"{name} time / python -c pass time", spent, base)
        report.ratio(f"{name}: goal {goal:g} s / time", goal, spent, goal=1.0)
    return {"python -c pass": base, **dict(zip(names, seconds))}
