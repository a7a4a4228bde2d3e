"""Progress of a long stage: a bar on a terminal, one line when the stage ends otherwise (logs, pipes, CI)."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def on_terminal() -> bool:
    """Whether stderr, where progress goes, is an interactive terminal."""
    return sys.stderr.isatty()


class _Count:
    """Counts what a bar would show."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


@contextmanager
def progress_bar(total: int, stage: str, enabled: bool = True, unit: str = "img") -> Iterator[Any]:
    """A tqdm bar for `stage` on a terminal; elsewhere nothing while it runs and one line at its end
    ("scoring: 120/120 img in 3.2 s"). enabled=False shows neither. Yields an object with `update(n)`."""
    if enabled and on_terminal():
        from tqdm import tqdm

        with tqdm(total=total, unit=unit, desc=stage, dynamic_ncols=True, smoothing=0.05) as bar:
            yield bar
        return
    count, start = _Count(), time.perf_counter()
    yield count
    if enabled:
        print(f"{stage}: {count.n:,}/{total:,} {unit} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
