"""Library messages go through `logging` (loggers `iaa_distill.*`, from `get_logger`), written by the process of
global rank 0 only: under torchrun or Lightning's launcher every rank runs the same code, one says it.
The library never configures output; the CLI (or a notebook) decides what is shown with `show_messages`."""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

ROOT = "iaa_distill"


def is_rank_zero() -> bool:
    """True in the process of global rank 0 (torchrun's RANK, else Lightning's NODE_RANK and LOCAL_RANK)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


class RankZero(logging.Filter):
    """Pass records only in the process of global rank 0."""

    def filter(self, record: logging.LogRecord) -> bool:
        return is_rank_zero()


def get_logger(name: str) -> logging.Logger:
    """The logger of a library module (`get_logger(__name__)`), silent on every rank but 0."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RankZero) for f in logger.filters):
        logger.addFilter(RankZero())
    return logger


class _Shown(logging.StreamHandler):
    """The handler `show_messages` installs (replaced, never stacked, on a second call); without a stream of
    its own it writes to whatever `sys.stdout` is when a message comes (captured output, a redirected one)."""

    def __init__(self, stream: TextIO | None):
        super().__init__(stream or sys.stdout)
        self.follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self.follow_stdout:
            self.stream = sys.stdout
        super().emit(record)


def show_messages(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Print the library's messages (plain text, INFO and up) to `stream` (default: the current stdout)."""
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if isinstance(h, _Shown)]:
        root.removeHandler(handler)
    handler = _Shown(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
