"""argparse `type=` helpers (every numeric option is checked at parse time, exit 2), the options that scoring
commands share (one spelling, one check), and message wording."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def bounded(kind: type, low: float | None, high: float | None, what: str,
            above: float | None = None) -> Callable[[str], int | float]:
    """A parser of `kind` values within [low, high] (and > `above`) whose error says `what` is expected."""
    from ..settings import Range

    limits = Range(low, high, above)

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not limits.accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = bounded(int, 1, None, "an integer >= 1")
non_negative_int = bounded(int, 0, None, "an integer >= 0")
port = bounded(int, 0, 65535, "a port number (0..65535)")
positive_float = bounded(float, 1e-12, float("inf"), "a number > 0")
fraction = bounded(float, 0.0, 1.0, "a fraction in [0, 1]")


def seed_list(text: str) -> list[int]:
    """Comma-separated integers such as 0,1,2 (an argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None


def add_batch_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--batch-size and --workers as every command that scores files spells and checks them."""
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                        help="decoding processes (default: min(4, CPUs))")


def add_engine_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, backend: bool = True) -> None:
    """--device, and --backend/--onnx where the command can run an exported model."""
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    if backend:
        parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                            help="inference engine; auto: ONNX Runtime on the CPU (the model's export, made once and "
                                 "cached beside it), PyTorch on a GPU (default: auto)")
        parser.add_argument("--onnx", metavar="FILE", help="ONNX file for --backend onnx or auto (default: DIR/model.onnx "
                                                           "for onnx, the cached export for auto)")


def count(n: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def add_split_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, seed: bool = True) -> None:
    """--val-fraction (and --seed where the command has no seed of its own): how `open_dataset` carves val."""
    from ..data.splits import DEFAULT_VAL_FRACTION

    parser.add_argument("--val-fraction", type=fraction, default=DEFAULT_VAL_FRACTION,
                        help="share of the found train images carved out as val when the dataset has no val list "
                        f"(default: {DEFAULT_VAL_FRACTION})")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of the carved splits (default: 0)")
