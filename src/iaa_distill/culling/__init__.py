"""Culling photo folders: from scores to keep/reject decisions, stars in XMP sidecars, bursts and file actions."""
from .decisions import read_decisions, write_decisions
from .rules import CullRules, Decision, decide
from .run import CullResult, cull

__all__ = ["CullResult", "CullRules", "Decision", "cull", "decide", "read_decisions", "write_decisions"]
