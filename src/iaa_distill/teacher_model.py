"""Accuracy mode: the frozen teachers and a trained teacher head as one model that scores images.

It is rebuilt from a teacher folder's config alone: the head's config records every teacher (timm
name, weights hash, input size, interpolation, MLSP levels) and whether the feature cache averaged
each image with its mirror image. The teachers are loaded with the same `load_teachers` as feature
extraction (real weights, offline) and checked against that record, so the scores are those of the
head applied to the cached features of the same images.
Input: one packed row per image (`teachers.PackedInputs`: each teacher's whole-image resize, joined),
which is what the feature cache was computed from.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import IAAError
from .score_space import ScoreSpace
from .teacher_head import TeacherHead, TeacherHeadConfig
from .teachers import PackedInputs, TeacherSet, load_teachers


@dataclass(frozen=True)
class TeacherScoringConfig:
    """What scoring with a teacher head needs, derived from its config (which is what gets saved)."""

    head: TeacherHeadConfig

    @property
    def teacher_names(self) -> list[str]:
        return [str(t["name"]) for t in self.head.teachers]

    @property
    def backbone(self) -> str:
        """The teachers, as one display name (e.g. in `iaa serve`'s model info)."""
        return "+".join(self.teacher_names)

    @property
    def input_size(self) -> int:
        """The largest teacher input: images are decoded at least this large (reduced-size JPEG decode)."""
        return max(int(t["input_size"]) for t in self.head.teachers)

    @property
    def scale(self) -> tuple[float, float]:
        return self.head.scale

    @property
    def num_levels(self) -> int | None:
        return self.head.num_levels

    @property
    def synthetic_labels(self) -> bool:
        return self.head.synthetic_labels

    @property
    def space(self) -> ScoreSpace:
        return self.head.space

    def input_transform(self) -> PackedInputs:
        """Decoded RGB image -> one packed row: every teacher's input, as the feature cache made it."""
        return PackedInputs([int(t["input_size"]) for t in self.head.teachers],
                            [str(t["interpolation"]) for t in self.head.teachers])

    @classmethod
    def from_head(cls, head: TeacherHeadConfig, source: str | Path) -> "TeacherScoringConfig":
        """The scoring config of a head config; refuses heads that do not record their teachers."""
        if not head.teachers or any("input_size" not in t or "interpolation" not in t for t in head.teachers):
            raise IAAError(f"{source}: this teacher head does not record its teachers' preprocessing; "
                           "train it again (iaa train-teacher) to score images with it")
        return cls(head)


class TeacherScorerModel(nn.Module):
    """Frozen `TeacherSet` -> `TeacherHead`. `forward(packed)` returns (raw prediction, aesthetic feature).

    A teacher collects its block outputs in per-call state, so one forward through the teachers runs at a
    time (a lock): a `Scorer` may still be called from several threads, as `iaa serve` does.
    """

    def __init__(self, teachers: TeacherSet, head: TeacherHead, source: str | Path = "teacher head"):
        super().__init__()
        self.config = TeacherScoringConfig.from_head(head.config, source)
        check_teachers(teachers, head.config, source)
        self.teachers = teachers
        self.head = head.eval()
        self._teachers_lock = threading.Lock()

    def forward(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._teachers_lock:
            features = self.teachers(packed)
        return self.head(features)

    def predict(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean score on the label scale and the predicted distribution (None for a scalar head)."""
        raw, _ = self(packed)
        return self.config.space.decode(raw)

    def train(self, mode: bool = True) -> "TeacherScorerModel":
        """Always in eval mode: nothing here is trained (frozen BatchNorm statistics and no dropout)."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, directory: str | Path, weights: dict[str, str] | None = None) -> "TeacherScorerModel":
        """A teacher folder (`iaa train-teacher`'s output) + its teachers' pretrained weights, loaded offline.

        weights: the local weights file per teacher name, for teachers whose features were extracted with one.
        """
        head = TeacherHead.from_pretrained(directory)
        config = TeacherScoringConfig.from_head(head.config, directory)
        weights = dict(weights or {})
        for spec in head.config.teachers:
            if spec.get("weights", {}).get("kind") == "file" and spec["name"] not in weights:
                raise IAAError(f"{directory}: teacher {spec['name']} was run with the local weights file "
                               f"{spec['weights'].get('file')}; pass it (weights={{'{spec['name']}': PATH}})")
        teachers = load_teachers(config.teacher_names, weights, hflip=head.config.hflip)
        return cls(teachers, head, directory)


def check_teachers(teachers: TeacherSet, head: TeacherHeadConfig, source: str | Path) -> None:
    """Refuse teachers other than those whose features the head was trained on (names, weights, preprocessing)."""
    loaded = teachers.specs()
    names = [t["name"] for t in loaded]
    recorded = [t.get("name") for t in head.teachers]
    if names != recorded:
        raise IAAError(f"{source}: the head was trained on teachers {','.join(map(str, recorded))}, "
                       f"not {','.join(names)}")
    for new, old in zip(loaded, head.teachers):
        old_hash, new_hash = old.get("weights", {}).get("sha256"), new["weights"]["sha256"]
        if old_hash and old_hash != new_hash:
            raise IAAError(f"{source}: teacher {new['name']}'s weights differ from those its features were "
                           f"extracted with (sha256 {new_hash[:12]} vs {old_hash[:12]}); give the same weights file")
        for key in sorted(new.keys() - {"name", "weights"}):  # the spec is what decides the features; weights checked above
            if key in old and old[key] != new[key]:
                raise IAAError(f"{source}: teacher {new['name']} differs from the one the head was trained on "
                               f"({key} {new[key]} vs {old[key]}); install the timm version the features were made with")
    if any(t.hflip != head.hflip for t in teachers.teachers):
        raise IAAError(f"{source}: the head's features were extracted with hflip={head.hflip}; load the teachers so")
    if teachers.dim != head.input_dim:
        raise IAAError(f"{source}: the teachers give {teachers.dim} features, the head expects {head.input_dim}")
