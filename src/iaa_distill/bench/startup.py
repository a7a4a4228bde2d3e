"""How fast the command line answers: `iaa --help` and `iaa score --help` in fresh interpreters, against the
interpreter's own start-up (`python -c pass`), so the ratio holds on a busy or slow machine too."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from .timing import Report

GOALS_S = {("--help",): 0.5, ("score", "--help"): 1.0}  # the goals, in seconds on the reference machine


def _seconds(argv: list[str], repeats: int) -> float:
    """Median wall time of running `argv` to completion (one untimed run first: files into the page cache)."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_cli(report: Report, repeats: int) -> dict[str, float]:
    """Time of each help command (ms), its ratio to `python -c pass`, and goal / seconds (>= 1: goal met)."""
    repeats = max(3, repeats)
    base = _seconds([sys.executable, "-c", "pass"], repeats)
    report.add("cli", "python -c pass (interpreter start-up)", 1000 * base, "ms")
    figures = {"python": base}
    for args, goal in GOALS_S.items():
        name = "iaa " + " ".join(args)
        seconds = _seconds([sys.executable, "-m", "iaa_distill", *args], repeats)
        report.add("cli", name, 1000 * seconds, "ms")
        report.ratio(f"{name} time / python -c pass time", seconds, base)
        report.ratio(f"{name}: goal {goal:g} s / time", goal, seconds, goal=1.0)
        figures[name] = seconds
    return figures
