"""Shared fixtures: real photographs from scikit-image, written as small JPEGs; never any network."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_OFFLINE", "1")

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "retina", "motorcycle_left")


def _load_photos() -> dict[str, np.ndarray]:
    import skimage.data as data

    photos = {}
    for name in PHOTO_NAMES:
        try:
            img = getattr(data, name)()
        except Exception:  # some sample files need an optional download; skip those
            continue
        if img.ndim == 3 and img.shape[2] in (3, 4):
            photos[name] = np.ascontiguousarray(img[..., :3])
    return photos


@pytest.fixture(autouse=True)
def _own_user_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own user cache (ONNX exports of unwritable model folders land there), so no test
    writes into the real ~/.cache or finds another test's export."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("user-cache")))


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, np.ndarray]:
    """Real colour photographs (RGB uint8) that ship with scikit-image."""
    return _load_photos()


def write_jpegs(folder: Path, photos: dict[str, np.ndarray], count: int, size: int = 96, seed: int = 0) -> list[Path]:
    """`count` small JPEG crops of the sample photos (deterministic), for datasets in tests."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(photos)
    paths = []
    for i in range(count):
        img = photos[names[i % len(names)]]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(img[y:y + ch, x:x + cw]).resize((size, int(size * 0.75)))
        path = folder / f"{i:05d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def save_tiny_student(directory: Path, num_levels: int | None = 10, seed: int = 0, backbone: str = "test_efficientnet",
                      input_size: int = 64, **overrides) -> Path:
    """An untrained (random-weight) student, saved as a model folder; for mechanics tests only.
    `overrides`: other StudentConfig fields (e.g. pooling, feature_layer, distill_dim)."""
    import torch

    from iaa_distill.student import Student, StudentConfig

    torch.manual_seed(seed)
    config = StudentConfig.for_backbone(backbone, input_size=input_size, num_levels=num_levels,
                                        **{"feature_dim": 16, **overrides})
    model = Student(config)
    if config.feature_layer == "linear":  # standardisation as a warm start leaves it, not the identity
        model.pooled_mean.uniform_(-0.5, 0.5)
        model.pooled_std.uniform_(0.5, 2.0)
    model.save_pretrained(directory, note="random weights, untrained (test fixture)")
    return directory


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one intra-op thread, above all on a busy 2-core machine (opt in per module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight student model folder."""
    return save_tiny_student(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_photos) -> list[Path]:
    """Ten small JPEG crops of the sample photos."""
    return write_jpegs(tmp_path_factory.mktemp("photos"), sample_photos, 10, size=96)
