"""A small labelled dataset built from real photographs that ship with scikit-image.

The labels are SYNTHETIC: each image is a crop of a real photo with one photographic
degradation at a graded strength, and its score is a documented function of that degradation,
not a human rating. It exists so that the whole method can be seen working without a dataset;
real results need AVA, TAD66K, AADB, KonIQ or your own ratings.

Score model (1..10 scale): every clean crop starts at 7.0 plus a fixed per-photo offset in
[-0.5, 0.5] and a small jitter (sd 0.15); each degradation subtracts `PENALTY[kind] * strength`
for strength 0..3 (0 = clean). Votes over the 10 levels are drawn from a discretised normal
around that mean (sd 1.3, 200 voters, seeded), as in AVA. Written as a generic CSV
(`image, votes_1..votes_10, split, category`) that `csv:PATH` reads.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ..data.records import SYNTHETIC_MARKER

# photo name -> (loader attribute in skimage.data, category)
PHOTOS = {
    "astronaut": ("astronaut", "portrait"),
    "chelsea": ("chelsea", "animal"),
    "coffee": ("coffee", "food"),
    "rocket": ("rocket", "vehicle"),
    "motorcycle": ("stereo_motorcycle", "vehicle"),
    "hubble": ("hubble_deep_field", "space"),
    "retina": ("retina", "science"),
    "cells": ("immunohistochemistry", "science"),
    "camera": ("camera", "portrait"),
}
PENALTY = {
    "clean": 0.0,
    "blur": 1.0,
    "noise": 0.9,
    "underexposed": 0.8,
    "overexposed": 0.8,
    "colour_cast": 0.6,
    "jpeg": 0.9,
    "tilt": 0.5,
    "bad_crop": 0.6,
}
LEVELS = 10
VOTERS = 200


@dataclass(frozen=True)
class SyntheticImage:
    name: str
    photo: str
    category: str
    kind: str
    strength: int
    mean: float
    votes: tuple[int, ...]
    split: str


def load_photos() -> dict[str, np.ndarray]:
    """The real photographs as RGB uint8 arrays (those that scikit-image can load offline)."""
    import skimage.data as data

    photos = {}
    for name, (attr, _) in PHOTOS.items():
        try:
            img = getattr(data, attr)()
        except Exception:  # a sample that needs a download: not available offline
            continue
        img = img[0] if isinstance(img, tuple) else img
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        photos[name] = np.ascontiguousarray(img[..., :3])
    return photos


def degrade(image: Image.Image, kind: str, strength: int, rng: np.random.Generator) -> Image.Image:
    """Apply one photographic degradation at strength 0..3 (0 returns the image unchanged)."""
    if strength == 0 or kind == "clean":
        return image
    s = strength
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=0.012 * min(image.size) * s))
    if kind == "noise":
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + rng.normal(0, 12.0 * s, arr.shape)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "underexposed":
        return ImageEnhance.Brightness(image).enhance(1.0 - 0.22 * s)
    if kind == "overexposed":
        return ImageEnhance.Brightness(image).enhance(1.0 + 0.35 * s)
    if kind == "colour_cast":
        arr = np.asarray(image, dtype=np.float32)
        cast = np.array([1.0 + 0.12 * s, 1.0, 1.0 - 0.12 * s], dtype=np.float32)
        return Image.fromarray(np.clip(arr * cast, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=(30, 12, 5)[s - 1])
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "tilt":
        w, h = image.size
        rotated = image.rotate(4.0 * s, resample=Image.BICUBIC, expand=False)
        margin = 0.05 * s  # trims most of the black corners; the horizon stays tilted
        box = (int(w * margin), int(h * margin), int(w * (1 - margin)), int(h * (1 - margin)))
        return rotated.crop(box).resize(image.size, Image.BICUBIC)
    if kind == "bad_crop":
        w, h = image.size
        keep = 1.0 - 0.18 * s  # an off-centre crop that cuts the subject, pushed to a corner
        return image.crop((int(w * (1 - keep)), int(h * (1 - keep)), w, h)).resize(image.size)
    raise ValueError(f"unknown degradation {kind!r}")


def votes_for(mean: float, rng: np.random.Generator) -> tuple[int, ...]:
    """AVA-like vote counts over 10 levels around `mean` (discretised normal, sd 1.3)."""
    levels = np.arange(1, LEVELS + 1)
    p = np.exp(-0.5 * ((levels - mean) / 1.3) ** 2)
    counts = rng.multinomial(VOTERS, p / p.sum())
    return tuple(int(c) for c in counts)


def _generate(out: Path, images_per_photo: int, size: int, rng: np.random.Generator,
              split_fractions: tuple[float, float, float]) -> list[SyntheticImage]:
    """Write the degraded crops into `out` and return them with their (synthetic) labels."""
    out.mkdir(parents=True, exist_ok=True)
    photos = load_photos()
    kinds = list(PENALTY)
    offsets = {name: float(off) for name, off in zip(sorted(photos), np.linspace(-0.5, 0.5, len(photos)))}
    items: list[SyntheticImage] = []
    for photo, pixels in sorted(photos.items()):
        base = Image.fromarray(pixels)
        for i in range(images_per_photo):
            kind = kinds[i % len(kinds)]
            strength = 0 if kind == "clean" else int(rng.integers(1, 4))
            crop = _composed_crop(base, rng).resize((size, size * 3 // 4), Image.BICUBIC)
            image = degrade(crop, kind, strength, rng)
            mean = float(np.clip(7.0 + offsets[photo] + rng.normal(0, 0.15) - PENALTY[kind] * strength, 1.0, 10.0))
            name = f"{photo}_{i:03d}_{kind}{strength}.jpg"
            image.save(out / name, quality=92)
            split = _pick_split(rng, split_fractions)
            items.append(SyntheticImage(name, photo, PHOTOS[photo][1], kind, strength, mean, votes_for(mean, rng), split))
    return items


def build_synthetic_dataset(
    out: str | Path,
    images_per_photo: int = 36,
    size: int = 256,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Path:
    """Write `images/*.jpg` and `labels.csv` under `out`; returns the CSV path (read it as `csv:PATH`)."""
    out = Path(out)
    items = _generate(out / "images", images_per_photo, size, np.random.default_rng(seed), split_fractions)
    csv_path = out / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *[f"votes_{k}" for k in range(1, LEVELS + 1)], "split", "category"])
        for item in items:
            writer.writerow([f"images/{item.name}", *item.votes, item.split, item.category])
    (out / SYNTHETIC_MARKER).write_text(
        "The labels in labels.csv are SYNTHETIC: a formula of the degradation applied to each photo (see\n"
        "iaa_distill/demo/synthetic.py), not human ratings. Models trained on them are marked as such.\n")
    return csv_path


def build_unlabeled_photos(out: str | Path, images_per_photo: int, size: int = 256, seed: int = 1) -> Path:
    """More photos from the same generator, with their labels held back (never written): `out` is a plain
    folder of JPEGs (read it as `folder:PATH`), like a user's own unrated photos. Returns `out`."""
    out = Path(out)
    _generate(out, images_per_photo, size, np.random.default_rng([seed, 1]), (1.0, 0.0, 0.0))
    return out


def _composed_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A well-composed crop: 75-100 % of the frame, roughly centred, 4:3."""
    w, h = image.size
    frac = rng.uniform(0.75, 1.0)
    cw = int(min(w, h * 4 / 3) * frac)
    ch = int(cw * 3 / 4)
    x = int((w - cw) * rng.uniform(0.3, 0.7))
    y = int((h - ch) * rng.uniform(0.3, 0.7))
    return image.crop((x, y, x + cw, y + ch))


def _pick_split(rng: np.random.Generator, fractions: tuple[float, float, float]) -> str:
    return str(rng.choice(["train", "val", "test"], p=np.asarray(fractions) / sum(fractions)))
