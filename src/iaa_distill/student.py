"""Stage 2 model: one end-to-end timm backbone that predicts aesthetics and mimics the teacher's aesthetic feature.

Layout `linear` (every new student): backbone -> pooled vector -> normalised -> linear projection to the student's aesthetic feature (`feature_dim`, 256 by default) -> prediction layer.
The pooled vector is MLSP (`pooling: mlsp`, the global average pool of every block, concatenated as the
teachers do, `teachers.mlsp`; the forward pass stops after the last block) or timm's pooled last map (`last`).
A linear distillation projector (`distill`, `distill_dim` outputs) maps the student's feature to the
teacher's standardised aesthetic feature; it is used by the feature-distillation loss only, never when scoring.
The feature has a fixed width whatever the teacher head (a `ridge:4` head's feature has 2 values on scalar
labels) and no ReLU, so the closed-form warm start (`training.warm_start`: PCA projection, ridge layers)
sets it exactly and no unit can die. Normalised as the teacher's linear head normalises its MLSP features
(`teachers.mlsp`): the signed square root of every value (`pooled_power` 0.5; students saved without the field
have 1, no power), then standardised by the per-dimension mean/std buffers, whose std the warm start divides by
the block weights that give each block the same total variance.

Layout `relu` (student folders of earlier versions, loaded as saved): pooled last map -> Linear to the
teacher's feature size + ReLU (the distilled feature itself) -> prediction layer.

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
from .teachers.mlsp import attach_level_pooling, level_dims, pooled_levels, signed_power

KIND = "student"
POOLINGS = ("mlsp", "last")
FEATURE_LAYERS = ("linear", "relu")


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
    # the defaults below rebuild the students of earlier versions; `for_backbone` builds the current layout
    pooling: str = "last"  # last: timm's pooled last feature map; mlsp: every block pooled (as the teachers)
    feature_layer: str = "relu"  # relu: Linear + ReLU (earlier versions); linear: standardised input, linear feature
    distill_dim: int = 0  # outputs of the distillation projector (the teacher's feature size); 0: none
    pooled_power: float = 1.0  # layout linear: each pooled value x becomes sign(x) |x|^p before the standardisation
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
            pooling="mlsp", feature_layer="linear", pooled_power=0.5,
        )
        base.update(overrides)
        if "train_resize" not in overrides:  # keep the 256/224 ratio for an overridden input size
            base["train_resize"] = int(round(base["input_size"] * 256 / 224))
        return cls(**base)

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        config = dataclass_from_json(cls, data, ("scale", "mean", "std"))
        if config.pooling not in POOLINGS or config.feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"unknown pooling {config.pooling!r} or feature layer {config.feature_layer!r}")
        return config


class Student(SavedModel, nn.Module):
    """Backbone -> aesthetic feature -> prediction. `forward` returns (prediction, feature)."""

    KIND = KIND
    CONFIG = StudentConfig

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0)
        self.blocks = attach_level_pooling(self.backbone) if config.pooling == "mlsp" else []
        # the widths of the pooled vector's blocks: every MLSP level, or the last map as one block
        self.block_widths = (level_dims(self.backbone, config.input_size) if self.blocks
                             else [self.backbone.num_features])
        pooled_dim = sum(self.block_widths)
        linear = config.feature_layer == "linear"
        if linear:  # set by the warm start; identity until then
            self.register_buffer("pooled_mean", torch.zeros(pooled_dim))
            self.register_buffer("pooled_std", torch.ones(pooled_dim))
        self.project = nn.Sequential(nn.Linear(pooled_dim, config.feature_dim), nn.Identity() if linear else nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.output_dim))
        self.distill = nn.Linear(config.feature_dim, config.distill_dim) if config.distill_dim else None
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def raw_pooled(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) RGB in [0, 1] -> the backbone's pooled vector (MLSP or the last map)."""
        x = (images - self.pixel_mean) / self.pixel_std
        return torch.cat(pooled_levels(self.backbone, self.blocks, x), dim=1) if self.blocks else self.backbone(x)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled vector, normalised in layout `linear`."""
        return self.normalise(self.raw_pooled(images))

    def normalise(self, pooled: torch.Tensor) -> torch.Tensor:
        """Raw pooled vectors (B, D) -> signed power, standardised (layout `linear`; others: as they are)."""
        if self.config.feature_layer != "linear":
            return pooled
        return (signed_power(pooled, self.config.pooled_power) - self.pooled_mean) / self.pooled_std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) RGB in [0, 1]. Returns raw prediction (logits or score) and the aesthetic feature."""
        feature = self.project(self.pooled(images))
        return self.head(feature), feature

    def distilled_feature(self, feature: torch.Tensor) -> torch.Tensor:
        """What the feature-distillation loss compares with the teacher's (standardised) feature."""
        return feature if self.distill is None else self.distill(feature)

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

