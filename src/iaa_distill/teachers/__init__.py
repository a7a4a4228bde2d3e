"""Frozen pre-trained object-classification teachers and their multi-level pooled features."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn

from ..errors import IAAError
from ..features.settings import DEFAULT_TEACHERS
from ..preprocessing import eval_transform
from .mlsp import Teacher, mlsp_blocks
from .weights import WeightsSource, load_pretrained


__all__ = ["DEFAULT_TEACHERS", "PackedInputs", "Teacher", "TeacherSet", "WeightsSource", "load_pretrained", "load_teachers", "mlsp_blocks"]


class PackedInputs:
    """Picklable image transform for data-loader workers: one decoded image -> every teacher's input, joined.

    Each teacher's input is the whole image resized to its own size with its own interpolation, in [0, 1],
    flattened; `TeacherSet.unpack` splits a batch of these again.
    """

    def __init__(self, sizes: Sequence[int], interpolations: Sequence[str]):
        self.sizes = list(sizes)
        self.interpolations = list(interpolations)
        self._transforms = [eval_transform(s, i) for s, i in zip(self.sizes, self.interpolations)]

    @property
    def numel(self) -> int:
        return sum(3 * s * s for s in self.sizes)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.cat([transform(image).flatten() for transform in self._transforms])


class TeacherSet(nn.Module):
    """Several teachers whose MLSP vectors are concatenated; each image is decoded once for all of them.

    `forward` takes one input per teacher, or a packed batch (`PackedInputs`: every teacher's input joined
    into one tensor, so data-loader workers can prepare them) that it splits again, and returns the
    concatenated features (B, dim).
    """

    def __init__(self, teachers: Sequence[Teacher]):
        super().__init__()
        if not teachers:
            raise IAAError("at least one teacher is needed")
        self.teachers = nn.ModuleList(teachers)

    @property
    def dim(self) -> int:
        return sum(t.dim for t in self.teachers)

    @property
    def max_input_size(self) -> int:
        return max(t.input_size for t in self.teachers)

    def unpack(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """(B, PackedInputs.numel) -> one (B, 3, S, S) tensor per teacher."""
        sizes = [t.input_size for t in self.teachers]
        parts = packed.split([3 * s * s for s in sizes], dim=1)
        return [p.reshape(-1, 3, s, s) for p, s in zip(parts, sizes)]

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Packed batch (B, PackedInputs.numel), or one (B, 3, S, S) input per teacher -> (B, dim) float32."""
        if isinstance(inputs, torch.Tensor):
            inputs = self.unpack(inputs) if inputs.ndim == 2 else [inputs]
        if len(inputs) != len(self.teachers):
            raise ValueError(f"expected {len(self.teachers)} inputs (one per teacher), got {len(inputs)}")
        return torch.cat([teacher(x) for teacher, x in zip(self.teachers, inputs)], dim=1)

    def specs(self) -> list[dict]:
        """Each teacher's spec with its column offset in the concatenated vector."""
        specs, offset = [], 0
        for teacher in self.teachers:
            specs.append({**teacher.spec(), "offset": offset})
            offset += teacher.dim
        return specs


def load_teachers(
    names: Sequence[str],
    weights: dict[str, str] | None = None,
    device: str | torch.device = "cpu",
    hflip: bool = False,
) -> TeacherSet:
    """Build frozen teachers by timm name with real pretrained weights (offline first; see `weights.py`).

    weights: optional local state-dict file per teacher name; names not listed are resolved from the
    bundled packages or the local cache. Raises `WeightsNotFoundError` rather than use random weights.
    """
    names = list(names)
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise IAAError(f"--weights given for {', '.join(unknown)}, which is not among the teachers ({', '.join(names)})")
    if len(set(names)) != len(names):
        raise IAAError(f"a teacher is listed twice: {', '.join(names)}")
    import timm

    for name in names:
        if not timm.is_model(name):
            raise IAAError(f"unknown teacher '{name}': not a timm model name (see timm.list_models())")
    teachers = [Teacher.create(name, weights.get(name), hflip=hflip) for name in names]
    return TeacherSet(teachers).to(device)
