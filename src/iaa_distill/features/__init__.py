"""Teacher features of a dataset in a resumable, memory-mapped cache (`iaa features`).

Names resolve on first use, so `features.settings` (read by the CLI to build its options) does not
import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"FeatureCache": ".cache", "extract_features": ".extract", "ExtractionSettings": ".settings"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
