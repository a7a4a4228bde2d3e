"""Stage 1 model: the teacher head on the concatenated multi-level features of the frozen teachers.

features -> (signed power, the linear head's) -> BatchNorm -> FC -> ReLU -> Dropout -> FC -> ReLU (= the "aesthetic feature")
-> Dropout -> FC (K logits, or one normalised score for scalar labels).
Its config records which teachers and which feature cache it was trained on, so that a head
is never applied to features of another layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .artifacts import SavedModel, dataclass_from_json
from .score_space import InScoreSpace
from .teachers.mlsp import signed_power

KIND = "teacher_head"


@dataclass
class TeacherHeadConfig(InScoreSpace):
    """Rebuilds a teacher head; saved as config.json next to its weights."""

    input_dim: int
    num_levels: int | None = 10
    scale: tuple[float, float] = (1.0, 10.0)
    hidden: tuple[int, ...] = (1024, 256)
    dropout: float = 0.25
    teachers: list = field(default_factory=list)  # the feature cache manifest's teacher entries
    hflip: bool = False  # the cache averaged each image's features with its mirror image's
    cache_fingerprint: str = ""
    dataset_fingerprint: str = ""
    synthetic_labels: bool = False  # trained on labels made by a formula (the demo's), not human ratings
    input_power: float = 1.0  # each feature value x becomes sign(x) |x|^p first (0.5: the linear head's signed sqrt)

    @classmethod
    def from_dict(cls, data: dict) -> "TeacherHeadConfig":
        return dataclass_from_json(cls, data, ("scale", "hidden"))

    @property
    def feature_dim(self) -> int:
        """Size of the aesthetic feature (the last hidden layer), which the student's projection matches."""
        return self.hidden[-1]


class TeacherHead(SavedModel, nn.Module):
    """BatchNorm + MLP over cached teacher features. `forward` returns (raw prediction, aesthetic feature)."""

    KIND = KIND
    CONFIG = TeacherHeadConfig

    def __init__(self, config: TeacherHeadConfig):
        super().__init__()
        if not config.hidden:
            raise ValueError("the teacher head needs at least one hidden layer")
        self.config = config
        layers: list[nn.Module] = [nn.BatchNorm1d(config.input_dim)]
        width = config.input_dim
        for i, size in enumerate(config.hidden):
            if i:
                layers.append(nn.Dropout(config.dropout))
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, config.output_dim))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aesthetic = self.body(signed_power(features.float(), self.config.input_power))
        return self.head(aesthetic), aesthetic


@torch.inference_mode()
def run_head(head: TeacherHead, features: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Raw predictions (N, K or 1) and aesthetic features (N, F) in eval mode, in chunks.

    `features` may be a float16 memmap; each chunk is read and converted to float32 on its own.
    """
    head.eval()
    device = next(head.parameters()).device
    raws, aesthetics = [], []
    for start in range(0, len(features), batch_size):
        chunk = torch.from_numpy(np.asarray(features[start:start + batch_size], dtype=np.float32)).to(device)
        raw, aesthetic = head(chunk)
        raws.append(raw.float().cpu().numpy())
        aesthetics.append(aesthetic.float().cpu().numpy())
    if not raws:
        return np.zeros((0, head.config.output_dim), np.float32), np.zeros((0, head.config.feature_dim), np.float32)
    return np.concatenate(raws), np.concatenate(aesthetics)


def predict_features(
    head: TeacherHead, features: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean score on the label scale (N,) and the predicted distribution (N, K), or None for scalar heads."""
    raw, _ = run_head(head, features, batch_size)
    mean, dist = head.config.space.decode(torch.from_numpy(raw))
    return mean.numpy(), None if dist is None else dist.numpy()
