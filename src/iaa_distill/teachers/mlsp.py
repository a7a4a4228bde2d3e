"""One frozen teacher: a timm classifier turned into a multi-level spatially pooled (MLSP) feature extractor.

The MLSP vector is the global average pool of the output of every block, concatenated in
network order (Hou et al.; Hosu et al. 2019). Blocks are found generically:
- models with `blocks` made of stages (EfficientNet, MobileNet, ...): every block of every stage;
- models with a flat `blocks` list (ViT-like): every block (token outputs are averaged);
- other models (ResNet, ConvNeXt, Swin, ...): the modules named in timm's `feature_info`, expanded
  to their blocks when a stage holds them (`stage.blocks` or a sequence of blocks); channels-last
  (NHWC) stage outputs such as Swin's are pooled over their spatial axes.
Preprocessing comes from the model's pretrained config (input size, mean/std, interpolation);
the teacher sees the whole image resized to its input size, so one vector per image can be cached.

A linear fit on MLSP vectors normalises them first (the teacher's linear head, the student's warm start): every
value x becomes sign(x) sqrt|x| (`signed_power`, power normalisation as for pooled MLSP and Fisher vectors), is
standardised, and each block (one network block's pooled output, 16 to 352 values wide) is scaled to the same
total variance (`block_weights`), so that a ridge penalty weighs blocks rather than their widths.
"""
from __future__ import annotations

import copy
import threading

import numpy as np
import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from .weights import WeightsSource, load_pretrained


class _StopForward(Exception):
    """Raised by the last block's hook: the layers after it are not needed."""


def mlsp_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs whose pooled outputs form the MLSP vector, in network order."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks):
        if all(isinstance(stage, nn.Sequential) for stage in blocks):
            return [(f"blocks.{i}.{j}", b) for i, stage in enumerate(blocks) for j, b in enumerate(stage)]
        return [(f"blocks.{i}", b) for i, b in enumerate(blocks)]
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__}: cannot find its blocks (no `blocks` and no `feature_info`)")
    modules = dict(model.named_modules())
    found = []
    for entry in info:
        name = entry["module"]
        stage = modules[name]
        inner = getattr(stage, "blocks", None)  # ConvNeXt / Swin stages hold their blocks in `.blocks`
        if isinstance(inner, nn.Sequential) and len(inner):
            found += [(f"{name}.blocks.{i}", module) for i, module in enumerate(inner)]
            continue
        children = list(stage.named_children()) if isinstance(stage, nn.Sequential) else []
        if children:
            found += [(f"{name}.{child}", module) for child, module in children]
        else:
            found.append((name, stage))
    return found


def _pool(output: torch.Tensor | tuple, nhwc: bool = False) -> torch.Tensor:
    """Global average pool of a block output: NCHW (or NHWC, e.g. Swin) -> NC, NLC (tokens) -> NC."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim == 4:
        return output.float().mean(dim=(1, 2) if nhwc else (2, 3))
    if output.ndim == 3:
        return output.float().mean(dim=1)
    raise ValueError(f"cannot pool a block output of shape {tuple(output.shape)}")


def attach_level_pooling(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Hook every MLSP block of `model` so that `pooled_levels` collects their pooled outputs; returns the blocks.

    The hooks are one module-level function (no closure) and the collected outputs live in a per-thread
    table keyed by block, so a deep copy of the model (an EMA copy, a weightless copy on the meta device)
    pools into its own list and concurrent calls (a scoring service's threads) never mix.
    """
    blocks = mlsp_blocks(model)
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
    for i, (_, block) in enumerate(blocks):
        block._mlsp_nhwc, block._mlsp_last = nhwc, i == len(blocks) - 1
        block.register_forward_hook(_collect)
    return blocks


_ACTIVE = threading.local()  # .sinks: {id(block): list} of the pooled_levels call running in this thread


def _collect(block: nn.Module, args: tuple, output: torch.Tensor) -> None:
    sink = getattr(_ACTIVE, "sinks", {}).get(id(block))
    if sink is None:  # a plain forward pass (e.g. the ImageNet classifier): nothing to pool, no early stop
        return
    sink.append(_pool(output, block._mlsp_nhwc))
    if block._mlsp_last:
        raise _StopForward


def pooled_levels(model: nn.Module, blocks: list[tuple[str, nn.Module]], images: torch.Tensor) -> list[torch.Tensor]:
    """Each MLSP block's pooled output for normalised `images`; the forward pass stops after the last block."""
    sink: list[torch.Tensor] = []
    outer = getattr(_ACTIVE, "sinks", {})
    _ACTIVE.sinks = {**outer, **{id(block): sink for _, block in blocks}}
    try:
        model(images)
    except _StopForward:
        pass
    finally:
        _ACTIVE.sinks = outer
    return sink


@torch.no_grad()
def level_dims(model: nn.Module, input_size: int) -> list[int]:
    """Channels of each MLSP level of a hooked `model`, from a weightless copy run on the meta device: shapes
    only, no computation (a real forward pass here cost seconds of start-up per teacher)."""
    shadow = copy.deepcopy(model).to("meta").eval()
    probe = torch.zeros(1, 3, input_size, input_size, device="meta")
    return [int(p.shape[1]) for p in pooled_levels(shadow, mlsp_blocks(shadow), probe)]


POWER_EPS = 1e-6  # keeps the slope of the signed power finite at 0 (pooled values are about 0.003-6 in size)


def signed_power(x: torch.Tensor, power: float) -> torch.Tensor:
    """x (|x| + eps)^(power - 1) elementwise: sign(x) |x|^power for |x| >> `POWER_EPS` (relative difference
    eps / 2|x| at power 0.5), with a finite slope at 0 (eps^(power - 1)), so fine-tuning through it stays
    stable; `x` itself when power is 1."""
    return x if power == 1.0 else x * (x.abs() + POWER_EPS).pow(power - 1.0)


def block_weights(widths: list[int]) -> np.ndarray:
    """Per-value scale of standardised features that gives every block the same total variance (their sum stays
    the vector's width, so the penalty grid keeps its meaning)."""
    total = sum(widths)
    return np.concatenate([np.full(w, np.sqrt(total / (len(widths) * w))) for w in widths])


class Teacher(nn.Module):
    """A frozen timm backbone returning its MLSP vector for RGB images in [0, 1] at `input_size`."""

    def __init__(self, name: str, model: nn.Module, weights: WeightsSource, hflip: bool = False):
        super().__init__()
        self.name = name
        # channels-last runs the depthwise convolutions of EfficientNets faster (1.3-2x measured on CPU)
        self.model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.weights = weights
        self.hflip = hflip
        cfg = resolve_model_data_config(model)
        self.input_size = int(cfg["input_size"][-1])
        self.interpolation = str(cfg["interpolation"])
        self.register_buffer("mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1))
        self._blocks = attach_level_pooling(self.model)
        self.level_dims = level_dims(self.model, self.input_size)
        self.dim = sum(self.level_dims)

    @classmethod
    def create(cls, name: str, weights: str | None = None, hflip: bool = False) -> "Teacher":
        """Build timm model `name` and load its pretrained weights offline first (never random)."""
        model = timm.create_model(name, pretrained=False)
        source = load_pretrained(model, name, weights)
        return cls(name, model, source, hflip=hflip)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        normalized = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return normalized.contiguous(memory_format=torch.channels_last)

    def _levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        return pooled_levels(self.model, self._blocks, self._normalize(images))

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's own ImageNet logits for images in [0, 1] (to check that the weights are real)."""
        return self.model(self._normalize(images))

    def train(self, mode: bool = True) -> "Teacher":
        """A teacher stays in eval mode (frozen BatchNorm statistics) whatever its parent does."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, S, S) RGB in [0, 1], S = `input_size` -> (B, dim) float32 MLSP features."""
        features = torch.cat(self._levels(images), dim=1)
        if self.hflip:
            features = (features + torch.cat(self._levels(images.flip(-1)), dim=1)) / 2
        return features

    def spec(self) -> dict:
        """Everything that determines this teacher's features (recorded in cache manifests)."""
        return {
            "name": self.name,
            "weights": {"kind": self.weights.kind, "file": self.weights.location.rsplit("/", 1)[-1],
                        "sha256": self.weights.sha256},
            "input_size": self.input_size,
            "mean": [round(float(v), 6) for v in self.mean.flatten()],
            "std": [round(float(v), 6) for v in self.std.flatten()],
            "interpolation": self.interpolation,
            "levels": [name for name, _ in self._blocks],
            "level_dims": self.level_dims,
            "dim": self.dim,
        }
