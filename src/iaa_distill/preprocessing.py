"""Image -> tensor transforms shared by teachers, students, scoring and serving.

Models see the whole photo (composition matters for aesthetics): evaluation resizes the full image
to a square `size` x `size`; training resizes to `resize` x `resize`, then takes a random
`size` x `size` crop and a random horizontal flip (the NIMA protocol; `training.datamodule` does this on
its pre-resized uint8 image cache). Tensors are RGB in [0, 1];
mean/std normalisation lives inside each model as buffers.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

from .errors import IAAError
from .imaging import DEFAULT_MAX_PIXELS, decode_image


INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")


def parse_interpolation(name: str) -> v2.InterpolationMode:
    """The resize mode called `name`; IAAError for a name the PIL and tensor paths cannot both honour."""
    if name not in INTERPOLATIONS:
        raise IAAError(f"unknown interpolation '{name}': use one of {', '.join(INTERPOLATIONS)} "
                       "(check the model's or the cache's config)")
    return v2.InterpolationMode(name)


def resize_whole(size: int, interpolation: str) -> v2.Compose:
    """PIL image -> uint8 (3, size, size) tensor: the whole image resized (antialiased), no crop."""
    return v2.Compose([v2.PILToTensor(), v2.Resize((size, size), interpolation=parse_interpolation(interpolation),
                                                   antialias=True)])


def resize_whole_batch(images: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    """(N, 3, H, W) uint8 on any device -> (N, 3, size, size) uint8: `resize_whole` for a batch of equal-size
    images, in one call (on the CPU it gives `resize_whole`'s pixels exactly)."""
    return v2.functional.resize(images, [size, size], interpolation=parse_interpolation(interpolation), antialias=True)


def eval_transform(size: int, interpolation: str = "bicubic") -> v2.Compose:
    """Whole image -> size x size float tensor in [0, 1]."""
    return v2.Compose([resize_whole(size, interpolation), v2.ToDtype(torch.float32, scale=True)])


def load_image_tensor(
    source: str | Path | bytes | Image.Image,
    size: int,
    interpolation: str = "bicubic",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Decode (reduced-size JPEG decode where possible) and resize one image for evaluation."""
    image = source if isinstance(source, Image.Image) else decode_image(source, min_side=size, max_pixels=max_pixels)
    return eval_transform(size, interpolation)(image.convert("RGB"))
