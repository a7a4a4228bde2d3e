"""Command-line options generated from settings dataclasses, so no option is retyped by hand.

Each field becomes `--field-name` (underscores to dashes; `num_workers` is `--workers` everywhere),
its type and default come from the dataclass, its help from the field's `metadata["help"]`
(`settings.setting(..., help=...)` / `settings.execution(..., help=...)`), and `Literal` types
become choices. Booleans get `--x/--no-x`; `X | None` fields default to None; tuples take several values.
A field's range (`settings.setting(..., low=, high=, above=)`) is checked at parse time.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from ..settings import field_range
from .types import bounded

RENAMED = {"num_workers": "workers"}  # one spelling of each option across subcommands


def option_name(field_name: str) -> str:
    """`num_workers` -> `--workers`, `batch_size` -> `--batch-size`."""
    return "--" + RENAMED.get(field_name, field_name).replace("_", "-")


def _parser_for(kind: Any) -> tuple[dict[str, Any], Any]:
    """argparse keywords (type/choices/nargs) for a field type, and the type with `None` removed."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _parser_for(rest[0])
        if set(rest) == {int, str}:  # e.g. devices: 4 or "auto"
            return {"type": lambda text: int(text) if text.lstrip("-").isdigit() else text}, str
        return {"type": rest[0]}, rest[0]
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}, kind
    if origin is tuple:
        return {"nargs": "+", "type": args[0]}, kind
    if origin is list:
        return {"nargs": "+", "type": args[0] if args else str}, kind
    return {"type": kind}, kind


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                exclude: tuple[str, ...] = (), groups: dict[str, argparse._ArgumentGroup] | None = None) -> None:
    """Add one option per field of settings dataclass `cls` (fields in `exclude` skipped).

    `groups` maps a field's `metadata["group"]` to an argument group (others go to `parser`).
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        target = (groups or {}).get(f.metadata.get("group", ""), parser)
        help_text = f.metadata.get("help", "")
        keywords, base = _parser_for(hints[f.name])
        limits = field_range(f)
        if limits is not None and base in (int, float):
            keywords["type"] = bounded(base, limits.low, limits.high, limits.describe(base), limits.above)
        if base is bool:
            target.add_argument(option_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=f"{help_text} (default: {'on' if default else 'off'})".strip())
            continue
        if isinstance(default, tuple):
            default = list(default)
        shown = "" if default is None else f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"
        if "choices" not in keywords:
            keywords["metavar"] = RENAMED.get(f.name, f.name).upper()
        target.add_argument(option_name(f.name), dest=f.name, default=default, help=f"{help_text}{shown}".strip(),
                            **keywords)


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build `cls` from parsed options (fields not on the command line keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(_parser_for(hints[name])[1]) is tuple:
            values[name] = tuple(value)
    values.update(overrides)
    return cls(**values)
