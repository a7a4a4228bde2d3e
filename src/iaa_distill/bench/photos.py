"""Benchmark photos at realistic AVA sizes (~800x600, ~200 KB JPEG), made from scikit-image's real photographs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..demo.synthetic import load_photos


def write_benchmark_photos(folder: str | Path, count: int, width: int = 800, height: int = 600, quality: int = 95, seed: int = 0) -> list[Path]:
    """`count` JPEGs of `width` x `height`: random crops of the real photos, upscaled, with mild grain.

    Grain keeps the file size near that of real camera photos (~200 KB at 800x600), so decoding
    costs what it costs on AVA. Existing files are reused.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(p) for _, p in sorted(load_photos().items())]
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:05d}_{width}x{height}.jpg"
        paths.append(path)
        if path.exists():
            continue
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = np.asarray(src.crop((x, y, x + cw, y + ch)).resize((width, height), Image.BICUBIC), dtype=np.float32)
        img += rng.normal(0, 6.0, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return paths
