"""argparse `type=` helpers (every numeric option is checked at parse time, exit 2) and message wording."""
from __future__ import annotations

import argparse
from collections.abc import Callable


def _bounded(kind: type, low: float | None, high: float | None, what: str) -> Callable[[str], int | float]:
    """A parser of `kind` values within [low, high] whose error says `what` is expected."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, 1, None, "an integer >= 1")
non_negative_int = _bounded(int, 0, None, "an integer >= 0")
port = _bounded(int, 0, 65535, "a port number (0..65535)")
positive_float = _bounded(float, 1e-12, float("inf"), "a number > 0")
fraction = _bounded(float, 0.0, 1.0, "a fraction in [0, 1]")


def count(n: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
