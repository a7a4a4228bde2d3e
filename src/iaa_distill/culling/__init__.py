"""Culling photo folders: from scores to keep/reject decisions, stars in XMP sidecars, bursts and file actions.

Names are imported on first use, so finishing or undoing an applied cull (culling.plan) loads no model code."""
from importlib import import_module

_HOMES = {"read_decisions": "decisions", "write_decisions": "decisions", "CullRules": "rules", "Decision": "rules",
          "decide": "rules", "CullResult": "run", "cull": "run"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
