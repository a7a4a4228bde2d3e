"""The score space of a dataset and of every model trained on it: K ordered vote levels or a scalar score.

Conventions, used by losses, both models, the distillation targets, evaluation and scoring:

- a K-level model's raw output is logits over the levels; softmax gives the distribution and the mean
  score is sum(p_k * level_k), its spread the distribution's standard deviation on the scale;
- a scalar model's raw output is the score normalised to [0, 1] on `scale`; it has no distribution.

The training target of a label (`encode`) and the distillation target of a raw output (`target`) are in
this same space: a vote distribution (K-level) or the normalised score (scalar).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data.records import Label, level_values
from .errors import IAAError


@dataclass(frozen=True)
class ScoreSpace:
    """K ordered levels equally spaced over `scale` (num_levels=None: a scalar score on `scale`)."""

    num_levels: int | None
    scale: tuple[float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))

    @property
    def levels(self) -> np.ndarray:
        """Score of each level (K-level) or the (min, max) of the scale (scalar)."""
        return level_values(self.num_levels, self.scale) if self.num_levels else np.asarray(self.scale)

    @property
    def output_dim(self) -> int:
        return self.num_levels or 1

    def normalise(self, score: np.ndarray | float) -> np.ndarray | float:
        """Score on the scale -> [0, 1]."""
        low, high = self.scale
        return (score - low) / (high - low)

    def encode(self, label: Label, image_id: str = "") -> np.ndarray:
        """The training target of one label: its vote distribution (K-level) or normalised mean (scalar)."""
        if not self.num_levels:
            return np.float32(self.normalise(label.mean))
        if label.num_levels != self.num_levels:
            raise IAAError(f"image '{image_id}': its label has {label.num_levels or 'no'} vote levels, the rest of "
                           f"the dataset {self.num_levels}; fix that row of the label file")
        return label.distribution().astype(np.float32)

    def encode_all(self, labels: Sequence[Label], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Training targets (N, K) or (N,) and mean scores (N,) of labelled images."""
        targets = [self.encode(label, image_id) for label, image_id in zip(labels, ids)]
        shape = (len(targets), self.num_levels) if self.num_levels else (len(targets),)
        means = np.array([label.mean for label in labels], dtype=np.float32)
        return np.asarray(targets, dtype=np.float32).reshape(shape), means

    def decode(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw model output -> (mean score on the scale, distribution or None)."""
        if self.num_levels:
            dist = torch.softmax(raw.float(), dim=-1)
            return self.target_mean(dist), dist
        return self.target_mean(raw.squeeze(-1)), None

    def target_mean(self, target: torch.Tensor) -> torch.Tensor:
        """Mean score on the scale of targets: (N, K) distributions (K-level) or (N,) normalised scores (scalar)."""
        levels = torch.as_tensor(self.levels, dtype=torch.float32, device=target.device)
        if self.num_levels:
            return target.float() @ levels
        return levels[0] + target.float() * (levels[-1] - levels[0])

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        """Mean score on the scale of a raw model output."""
        return self.decode(raw)[0]

    def std(self, dist: np.ndarray | None, mean: np.ndarray) -> np.ndarray:
        """Standard deviation on the scale of (N, K) distributions around `mean` (NaN without distributions)."""
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        if dist is None or not self.num_levels:
            return np.full(len(mean), np.nan)
        p = np.asarray(dist, dtype=np.float64)
        p = p / p.sum(axis=1, keepdims=True)
        var = (p * (self.levels[None, :] - mean[:, None]) ** 2).sum(axis=1)
        return np.sqrt(np.maximum(var, 0.0))

    def target(self, raw: np.ndarray) -> np.ndarray:
        """The distillation target of raw outputs: distributions (K-level) or normalised scores (scalar)."""
        if self.num_levels:
            return torch.softmax(torch.from_numpy(raw).float(), dim=-1).numpy()
        return raw.reshape(-1).astype(np.float32)

    @staticmethod
    def normalised_mean(dist: torch.Tensor) -> torch.Tensor:
        """Mean of (B, K) distributions with the levels placed at 0, 1/(K-1), ..., 1."""
        positions = torch.linspace(0.0, 1.0, dist.shape[-1], device=dist.device)
        return dist.float() @ positions


class InScoreSpace:
    """For model configs with `num_levels` and `scale` fields: their score space and output size."""

    num_levels: int | None
    scale: tuple[float, float]

    @property
    def space(self) -> ScoreSpace:
        """The score space of the labels and the outputs."""
        return ScoreSpace(self.num_levels, self.scale)

    @property
    def output_dim(self) -> int:
        return self.space.output_dim
