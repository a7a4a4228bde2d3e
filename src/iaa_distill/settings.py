"""Settings that know what they are: every field of a settings dataclass is either *identity*
(changes the result: learning rate, teachers, seed, image size) or *execution* (how fast or where
it runs: workers, inference batch size, device, progress bars).

Mark execution fields with `execution()`; every other field is identity (`setting()` gives one its
command-line help, see `cli/options.py`). `low`/`high` (inclusive) or `above` (exclusive) give a numeric
field its range, checked at parse time (`cli/options.py`) and in recipes (`check_ranges`). Stage keys, run folders
and cache manifests hash `identity(settings)` only, so changing the number of workers or the device
never invalidates finished work.

    @dataclass
    class TrainConfig:
        lr: float = 1e-3                          # identity
        num_workers: int = execution(4)           # execution
"""
from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any

from .errors import IAAError

EXECUTION = "iaa_execution"
RANGE = "iaa_range"


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: `low` <= value <= `high` (inclusive), value > `above`."""

    low: float | None = None
    high: float | None = None
    above: float | None = None

    def accepts(self, value: float) -> bool:
        return (value == value and (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
                and (self.above is None or value > self.above))

    def describe(self, kind: type = float) -> str:
        """'an integer >= 1', 'a number > 0', 'a number in [0, 1]'."""
        noun = "an integer" if kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{noun} in [{self.low:g}, {self.high:g}]"
        parts = [f">= {self.low:g}" if self.low is not None else "", f"> {self.above:g}" if self.above is not None
                 else "", f"<= {self.high:g}" if self.high is not None else ""]
        return " ".join([noun, *[p for p in parts if p]])


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, help: str = "", group: str = "",
            low: float | None = None, high: float | None = None, above: float | None = None) -> Any:
    """An identity field (changes the result) with its command-line help, option group and range."""
    return _field(default, default_factory, {"help": help, "group": group}, Range(low, high, above))


def execution(default: Any = MISSING, *, default_factory: Any = MISSING, help: str = "", group: str = "",
              low: float | None = None, high: float | None = None, above: float | None = None) -> Any:
    """A dataclass field that does not change the result (workers, device, progress, inference batch size)."""
    return _field(default, default_factory, {EXECUTION: True, "help": help, "group": group}, Range(low, high, above))


def _field(default: Any, default_factory: Any, metadata: dict[str, Any], limits: Range) -> Any:
    if limits != Range():
        metadata[RANGE] = limits
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def field_range(f: Field) -> Range | None:
    """The range of a numeric field declared with low/high/above, else None."""
    return f.metadata.get(RANGE)


def check_ranges(settings: Any, where: str = "") -> Any:
    """`settings`, or an IAAError naming the first field outside its range (`where` prefixes the name)."""
    for f in fields(settings):
        limits, value = field_range(f), getattr(settings, f.name)
        if limits is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and not limits.accepts(value):
            kind = int if str(f.type).split("|")[0].strip() == "int" else float
            raise IAAError(f"{where}{f.name} must be {limits.describe(kind)}, got {value!r}")
    return settings


def checked_values(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`values` for the fields of settings dataclass `cls` (a recipe's section), each of its field's type, or an
    IAAError naming the first that is not (`where` prefixes the name). A float written `1e-4` (YAML reads it
    as text) becomes a number; types this check does not know (paths, `Any`) pass as they are."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        if name not in hints:
            continue
        ok, out[name] = _typed(hints[name], value)
        if not ok:
            raise IAAError(f"{where}{name} must be {_type_name(hints[name])}, got {value!r}")
    return out


def _typed(kind: Any, value: Any) -> tuple[bool, Any]:
    """(whether `value` is of type `kind`, the value; a float's text `1e-4` as its number)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, typed = _typed(option, value)
            if ok:
                return True, typed
        return False, value
    if kind is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in args, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if kind is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        element = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_typed(element, v)[0] for v in value), value
    if origin is dict or kind is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(kind: Any) -> str:
    """'a number', 'an integer', 'true or false', "one of 'emd', 'mse'", 'a list of strings' ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ') if args else 'value'}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, "a mapping" if origin is dict or kind is dict else str(kind))


def is_execution(f: Field) -> bool:
    """True for a field declared with `execution()`."""
    return bool(f.metadata.get(EXECUTION))


def execution_names(cls_or_obj: Any) -> frozenset[str]:
    """Names of the execution fields of a settings dataclass (class or instance)."""
    return frozenset(f.name for f in fields(cls_or_obj) if is_execution(f))


def identity(settings: Any) -> dict[str, Any]:
    """The identity fields of a settings dataclass as a JSON-ready dict (nested dataclasses recursed)."""
    if not is_dataclass(settings):
        raise TypeError(f"expected a settings dataclass, got {type(settings).__name__}")
    out = {}
    for f in fields(settings):
        if is_execution(f):
            continue
        value = getattr(settings, f.name)
        out[f.name] = identity(value) if is_dataclass(value) else value
    return json.loads(json.dumps(out, default=str))


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-ready parts (settings dataclasses contribute their identity only)."""
    return short_hash([identity(p) if is_dataclass(p) and not isinstance(p, type) else p for p in parts])


def short_hash(document: Any) -> str:
    """The one content hash of a JSON-ready document (16 hex digits): stage keys, run and manifest fingerprints."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Readable `key old -> new` lines for every differing key of two (nested) settings dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key} {a!r} -> {b!r}")
    return lines
