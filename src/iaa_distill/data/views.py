"""Augmented views of the labelled training images: inputs for the teacher to label when a run has no others.

Distillation helps when the teacher scores images the student did not fit to labels. Without unlabelled
photos there are none: on its own training images the teacher's score is its in-sample fit of the labels, so
the distillation target adds almost nothing to them. Function matching (Beyer et al., CVPR 2022, "Knowledge
distillation: a good teacher is patient and consistent") makes such inputs: augmented views of the training
images, which the teacher scores and the student is distilled on like unlabelled photos. Opt-in (`count` 0 by
default): on the demo's 150 labels without unlabelled photos they lowered the validation signals (README,
*Students on 150 labels*).

Each view is a crop of a source image keeping a seeded share of its area (at least `min_area`, the aspect
ratio kept, so the composition changes little), mirrored with probability 1/2. Views are JPEG files under the
run's `views/<key>/` (KEY: the settings' fingerprint, so a cache made from other views never matches their
paths), each written atomically and reused when it exists, each drawn from a generator seeded by the settings,
the view's number and the source's id (the same view on every rerun, whatever the order). They join the
dataset as records of split `unlabeled` with ids `views/<k>/<source id>`; `view_source` maps a view's id back,
so rows of one image (the image and its views) are held out together wherever a choice is made on held-out
rows. An unreadable source image gets no views (a note says so).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..artifacts import atomic_file
from ..errors import IAAError
from ..imaging import decode_image
from ..settings import fingerprint, setting
from .records import Dataset, ImageRecord
from .unlabeled import UNLABELED_SPLIT

VIEW_PREFIX = "views/"
AUTO_VIEWS = 2  # views per training image under `count: auto` when the run has no unlabelled photos
JPEG_QUALITY = 95
VIEW_SIDE = 512  # short side a view is shrunk to at most: more than any teacher's or student's input size


@dataclass
class ViewSettings:
    """The recipe's `views:` section: augmented views of the training images for the student's distillation."""

    # off by default: on the demo's 150-label subset they lowered every validation signal (see the README)
    count: int | str = setting(0, help="views per labelled training image (0: none); auto: "
                               f"{AUTO_VIEWS} when the run has no unlabelled photos, none otherwise")
    min_area: float = setting(0.5, help="least share of the image's area a view keeps", above=0.0, high=1.0)
    seed: int = setting(0, help="seed of the crops and flips")

    def views_per_image(self, has_unlabeled: bool) -> int:
        """How many views each training image gets (IAAError for a count that is neither `auto` nor >= 0)."""
        if self.count == "auto":
            return 0 if has_unlabeled else AUTO_VIEWS
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise IAAError(f"recipe section 'views': count must be 'auto' or an integer >= 0, got {self.count!r}")
        return self.count


def view_id(k: int, source_id: str) -> str:
    """The id of the `k`-th view of image `source_id`."""
    return f"{VIEW_PREFIX}{k}/{source_id}"


def view_source(image_id: str) -> str:
    """The id of the image a view was made from (any other id: itself): the group held-out rows are drawn by."""
    return image_id.split("/", 2)[2] if image_id.startswith(VIEW_PREFIX) else image_id


def with_views(dataset: Dataset, folder: Path, settings: ViewSettings) -> Dataset:
    """`dataset` plus `settings`' views of its labelled training images as unlabelled records (itself if none)."""
    count = settings.views_per_image(bool(dataset.split(UNLABELED_SPLIT)))
    sources = [r for r in dataset.split("train") if r.label is not None]
    if not count or not sources:
        return dataset
    folder = Path(folder) / fingerprint("views", replace(settings, count=count))  # `auto` = its number
    added, unreadable = [], []
    for source in sources:
        try:
            paths = write_views(source, folder, settings, count)
        except (OSError, ValueError, IAAError) as error:
            unreadable.append(f"{source.path} ({str(error).splitlines()[0]})")
            continue
        added += [ImageRecord(image_id=view_id(k, source.image_id), path=path, dataset=source.dataset,
                              split=UNLABELED_SPLIT, categories=source.categories) for k, path in enumerate(paths)]
    notes = [*dataset.notes, f"views: {count} per labelled training image ({len(added)} in {folder})"]
    notes += [f"views: no views of unreadable {name}" for name in unreadable]
    return replace(dataset, records=[*dataset.records, *added], notes=notes, listed_fingerprint="")


def write_views(source: ImageRecord, folder: Path, settings: ViewSettings, count: int) -> list[Path]:
    """The paths of the first `count` views of `source`, each written (atomically) unless it exists."""
    name = hashlib.sha256(source.image_id.encode()).hexdigest()[:20]
    paths = [folder / f"{name}-{k}.jpg" for k in range(count)]
    missing = [k for k, path in enumerate(paths) if not path.is_file()]
    if missing:
        image = decode_image(source.path, min_side=VIEW_SIDE)
        folder.mkdir(parents=True, exist_ok=True)
        for k in missing:
            view = augmented_view(image, view_rng(settings.seed, k, source.image_id), settings.min_area)
            with atomic_file(paths[k], durable=False) as temp:  # made again when missing: no fsync per view
                view.save(temp, format="JPEG", quality=JPEG_QUALITY)
    return paths


def view_rng(seed: int, k: int, source_id: str) -> np.random.Generator:
    """The generator of view `k` of `source_id`: the same whatever else the run holds."""
    digest = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, k, digest])


def augmented_view(image: Image.Image, rng: np.random.Generator, min_area: float) -> Image.Image:
    """A crop of `image` keeping an area share drawn from [min_area, 1] (its aspect ratio kept) at a random
    place, mirrored left-right with probability 1/2, shrunk to a short side of at most `VIEW_SIDE`."""
    share = rng.uniform(min_area, 1.0)
    width, height = image.size
    w, h = max(1, round(width * share ** 0.5)), max(1, round(height * share ** 0.5))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    view = image.crop((left, top, left + w, top + h))
    if min(view.size) > VIEW_SIDE:
        factor = VIEW_SIDE / min(view.size)
        view = view.resize((round(view.width * factor), round(view.height * factor)), Image.Resampling.LANCZOS)
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


def source_groups(ids: Sequence[str]) -> np.ndarray:
    """The source image of each id as a group number (`view_source`): an image and its views share one."""
    return np.unique([view_source(i) for i in ids], return_inverse=True)[1]
