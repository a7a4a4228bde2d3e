"""Distillation targets written by stage 1 for every image: the teacher's aesthetic feature and prediction.

Stored next to the teacher head as `targets.safetensors` (+ ids in `targets.json`), so the student
never runs the teachers. Predictions are the teacher's distribution (K-level models) or its score
normalised to [0, 1] on the scale (scalar models), i.e. the same space the student's loss uses.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .artifacts import atomic_file, atomic_write_text
from .errors import IAAError
from .score_space import InScoreSpace

TARGETS_WEIGHTS = "targets.safetensors"
TARGETS_INDEX = "targets.json"


@dataclass
class DistillationTargets(InScoreSpace):
    ids: list[str]
    features: np.ndarray  # (N, F) float32: the teacher head's 2nd-layer output
    predictions: np.ndarray  # (N, K) distribution, or (N,) normalised score
    num_levels: int | None
    scale: tuple[float, float]
    source: Path | None = None  # the folder they were loaded from, named in errors about them
    dropped: dict[str, str] = field(default_factory=dict)  # images the features could not read (id -> why)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_file(directory / TARGETS_WEIGHTS) as tmp:
            save_file({
                "features": torch.from_numpy(np.ascontiguousarray(self.features, dtype=np.float32)),
                "predictions": torch.from_numpy(np.ascontiguousarray(self.predictions, dtype=np.float32)),
            }, str(tmp))
        index = {"ids": self.ids, "num_levels": self.num_levels, "scale": list(self.scale), "dropped": self.dropped}
        atomic_write_text(directory / TARGETS_INDEX, json.dumps(index) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "DistillationTargets":
        directory = Path(directory).expanduser()
        if not (directory / TARGETS_INDEX).is_file() or not (directory / TARGETS_WEIGHTS).is_file():
            raise IAAError(f"{directory}: no distillation targets (run `iaa train-teacher` first)")
        index = json.loads((directory / TARGETS_INDEX).read_text())
        tensors = load_file(str(directory / TARGETS_WEIGHTS))
        return cls(index["ids"], tensors["features"].numpy(), tensors["predictions"].numpy(),
                   index["num_levels"], tuple(index["scale"]), source=directory, dropped=index.get("dropped", {}))

    def rows_for(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id; a missing id is an error naming it (targets made for another dataset)."""
        position = {image_id: row for row, image_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise IAAError(
                f"{len(missing)} training images have no distillation target (e.g. '{missing[0]}'): "
                "the teacher head was trained on another dataset or split; rerun `iaa train-teacher`"
            )
        return np.array([position[i] for i in ids], dtype=np.int64)
