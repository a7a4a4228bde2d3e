"""The names of the losses, as `Literal` types: the one place a new loss name is added (settings, CLI choices
and validation read them from here; `losses.py` implements them). Light: no torch import."""
from __future__ import annotations

from typing import Literal, get_args

from .errors import IAAError

LabelLossName = Literal["emd", "mse", "l1"]  # 'emd' on vote distributions; means MSE for scalar labels
FeatureLossName = Literal["mse", "cosine"]


def check_name(value: str, names: object, what: str) -> None:
    """Refuse `value` unless it is one of the `Literal` type `names`."""
    allowed = get_args(names)
    if value not in allowed:
        raise IAAError(f"unknown {what} '{value}' (expected {', '.join(allowed)})")
