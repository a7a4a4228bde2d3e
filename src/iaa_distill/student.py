"""Stage 2 model: one end-to-end timm backbone that predicts aesthetics and mimics the teacher's aesthetic feature.

backbone (pooled) -> projection to the teacher's aesthetic-feature size (+ReLU) -> prediction layer.
The prediction is a K-level score distribution (softmax) when the labels have votes, else a scalar score.
Normalisation constants are buffers, so the model takes RGB in [0, 1] and exports to ONNX with them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn

from .artifacts import SavedModel, dataclass_from_json
from .score_space import InScoreSpace

KIND = "student"


@dataclass
class StudentConfig(InScoreSpace):
    """Everything that rebuilds a student and its preprocessing; saved as config.json next to the weights."""

    backbone: str = "tf_efficientnet_lite0"
    num_levels: int | None = 10
    scale: tuple[float, float] = (1.0, 10.0)
    feature_dim: int = 256
    dropout: float = 0.0
    input_size: int = 224
    train_resize: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    backbone_weights: str = ""
    synthetic_labels: bool = False  # trained on labels made by a formula (the demo's), not human ratings
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_backbone(cls, backbone: str, **overrides) -> "StudentConfig":
        """Preprocessing derived from timm's pretrained config of `backbone`, never re-typed."""
        cfg = timm.get_pretrained_cfg(backbone)
        cfg = cfg.to_dict() if cfg is not None else {}
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        base = dict(
            backbone=backbone,
            input_size=size,
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            interpolation=cfg.get("interpolation", "bicubic"),
        )
        base.update(overrides)
        if "train_resize" not in overrides:  # keep the 256/224 ratio for an overridden input size
            base["train_resize"] = int(round(base["input_size"] * 256 / 224))
        return cls(**base)

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        return dataclass_from_json(cls, data, ("scale", "mean", "std"))


class Student(SavedModel, nn.Module):
    """Backbone -> aesthetic feature -> prediction. `forward` returns (prediction, feature)."""

    KIND = KIND
    CONFIG = StudentConfig

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0)
        self.project = nn.Sequential(nn.Linear(self.backbone.num_features, config.feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.output_dim))
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) RGB in [0, 1]. Returns raw prediction (logits or score) and the aesthetic feature."""
        feature = self.project(self.backbone((images - self.pixel_mean) / self.pixel_std))
        return self.head(feature), feature

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean score on the label scale and the predicted distribution (None for a scalar model)."""
        raw, _ = self(images)
        return self.config.space.decode(raw)

    @classmethod
    def create(cls, config: StudentConfig, pretrained: bool = True, weights: str | None = None) -> "Student":
        """A new student whose backbone starts from ImageNet weights (offline-first, see teachers.weights)."""
        model = cls(config)
        if pretrained:
            from .teachers.weights import load_pretrained

            source = load_pretrained(model.backbone, config.backbone, weights)
            model.config.backbone_weights = f"{source.kind}:{Path(source.location).name}"
        return model

