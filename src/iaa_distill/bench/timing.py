"""Timing helpers: warm-up runs excluded, median of repeats, results as (figure, unit) rows."""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field

from ..messages import get_logger


@dataclass
class Result:
    """One measured figure: `value` in `unit`, with how it was measured."""

    section: str
    name: str
    value: float
    unit: str
    note: str = ""


def _log(line: str) -> None:
    get_logger("iaa_distill.bench").info(line)


@dataclass
class Report:
    """The bench's figures and ratios; each line is handed to `show` as it is measured (the CLI prints it)."""

    machine: dict
    results: list[Result] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)
    show: Callable[[str], None] = _log

    def add(self, section: str, name: str, value: float, unit: str = "img/s", note: str = "") -> float:
        self.results.append(Result(section, name, float(value), unit, note))
        digits = 1 if unit else 4  # rates and times; SRCC, drifts and other plain numbers get 4 decimals
        self.show(f"  {section:<10} {name:<58} {value:>10.{digits}f} {unit} {note}")
        return value

    def ratio(self, name: str, numerator: float, denominator: float, goal: float | None = None, note: str = "",
              verdict: str | None = None) -> float:
        """Record numerator / denominator; `verdict` overrides the goal's met / NOT met (a measurement error)."""
        value = numerator / denominator if denominator else float("nan")
        verdict = verdict or ("" if goal is None else ("met" if value >= goal else "NOT met"))
        self.ratios.append({"name": name, "value": value, "goal": goal, "verdict": verdict, "note": note})
        goal_text = f" ({verdict})" if goal is None and verdict else ("" if goal is None else f" (goal >= {goal:g}: {verdict})")
        self.show(f"  ratio      {name:<58} {value:>10.2f}x{goal_text} {note}")
        return value


def images_per_second(run: Callable[[], int], repeats: int = 3, warmup: int = 1) -> float:
    """Median img/s of `run()` (which returns how many images it processed) over `repeats` timed calls."""
    for _ in range(warmup):
        run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def median_fresh_run_seconds(run: Callable[[Path], object], repeats: int) -> float:
    """Median wall time of `run(folder)` over max(1, repeats - 1) runs, each into a fresh temporary folder."""
    times = []
    for _ in range(max(1, repeats - 1)):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run(Path(tmp))
            times.append(time.perf_counter() - start)
    return float(statistics.median(times))
