"""A torch Dataset over image records that never dies on a bad image.

Each item is a dict: `index` (position in the record list), `image` (tensor from `transform`,
zeros when decoding failed), `ok` (bool) and `error` ('' or the one-line reason). Callers drop
the failed rows of a batch and report them; a long run never stops because of one file.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from ..errors import DecodeError
from ..imaging import DEFAULT_MAX_PIXELS, decode_image


class ImageFiles(torch.utils.data.Dataset):
    """Decode `paths` with the shared decoder (reduced-size JPEG decode to `min_side`) and apply `transform`."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Callable[[Image.Image], torch.Tensor],
        output_shape: tuple[int, ...],
        min_side: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.output_shape = output_shape
        self.min_side = min_side
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        try:
            image = decode_image(self.paths[index], min_side=self.min_side, max_pixels=self.max_pixels)
            return {"index": index, "image": self.transform(image), "ok": True, "error": ""}
        except DecodeError as exc:
            return {"index": index, "image": torch.zeros(self.output_shape), "ok": False, "error": str(exc)}
