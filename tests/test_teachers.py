"""Teachers: bundled weights are real ImageNet classifiers; MLSP features have the documented layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from iaa_distill.errors import IAAError, WeightsNotFoundError
from iaa_distill.teachers import DEFAULT_TEACHERS, PackedInputs, Teacher, load_teachers
from iaa_distill.hashing import file_sha256
from iaa_distill.teachers.weights import bundled_weights_path

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def write_tiny_weights(folder: Path, name: str = "test_efficientnet", seed: int = 0) -> Path:
    """A state dict of a tiny timm model with deterministic random weights, as a local weights file."""
    torch.manual_seed(seed)
    path = folder / f"{name}.safetensors"
    save_file(timm.create_model(name, pretrained=False).state_dict(), str(path))
    return path


def _teacher_input(photo: np.ndarray, teacher: Teacher) -> torch.Tensor:
    transform = PackedInputs([teacher.input_size], [teacher.interpolation])
    return transform(Image.fromarray(photo)).reshape(1, 3, teacher.input_size, teacher.input_size)


@pytest.fixture(scope="module")
def bundled() -> list[Teacher]:
    return list(load_teachers(DEFAULT_TEACHERS).teachers)


def test_bundled_teachers_classify_real_photos(bundled, sample_photos):
    for teacher in bundled:
        assert teacher.weights.kind == "bundled"
        images = torch.cat([_teacher_input(sample_photos[n], teacher) for n in ("chelsea", "coffee")])
        cat, coffee = teacher.classify(images).argmax(dim=1).tolist()
        assert cat in CAT_CLASSES, f"{teacher.name}: chelsea -> class {cat}"
        assert coffee in COFFEE_CLASSES, f"{teacher.name}: coffee -> class {coffee}"


def test_lite0_logits_equal_reference_package(bundled, sample_photos):
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    lite0 = bundled[0]
    reference = reference_pkg.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(bundled_weights_path("tf_efficientnet_lite0"), map_location="cpu",
                                         weights_only=True))
    reference.eval()
    images = torch.cat([_teacher_input(sample_photos[n], lite0) for n in ("chelsea", "coffee")])
    with torch.no_grad():
        expected = reference((images - 0.5) / 0.5)
    assert torch.allclose(lite0.classify(images), expected, atol=1e-3, rtol=1e-4)


def test_mlsp_pools_every_block(bundled):
    lite0 = bundled[0]
    blocks = [b for stage in lite0.model.blocks for b in stage]
    channels = [b.conv_pwl.out_channels if hasattr(b, "conv_pwl") else b.conv_pw.out_channels for b in blocks]
    assert lite0.level_dims == channels and len(channels) == 16
    assert lite0.dim == sum(channels) == 1808
    images = torch.rand(2, 3, 224, 224)
    features = lite0(images)
    assert features.shape == (2, 1808)
    # the last level is the global average pool of the last block's output (before the 1280-channel head)
    normalized = (images - 0.5) / 0.5
    last_stage = lite0.model.forward_intermediates(normalized, indices=1, intermediates_only=True)[-1]
    assert torch.allclose(features[:, -320:], last_stage.mean(dim=(2, 3)), atol=1e-5)
    # the model's classifier still works after feature extraction (hooks are inert outside `forward`)
    assert lite0.classify(images).shape == (2, 1000)


def test_teacher_set_concatenates_and_records_specs(tmp_path):
    weights = write_tiny_weights(tmp_path)
    resnet = write_tiny_weights(tmp_path, "resnet10t")
    teachers = load_teachers(["test_efficientnet", "resnet10t"],
                             {"test_efficientnet": str(weights), "resnet10t": str(resnet)})
    effnet, res = teachers.teachers
    assert res.level_dims == [64, 64, 128, 256, 512]  # stem + every residual block
    photo = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8))
    transform = PackedInputs([t.input_size for t in teachers.teachers], [t.interpolation for t in teachers.teachers])
    packed = transform(photo)[None]
    features = teachers(packed)
    assert features.shape == (1, effnet.dim + res.dim) == (1, teachers.dim)
    parts = teachers.unpack(packed)
    assert [p.shape[-1] for p in parts] == [160, 176]
    assert torch.equal(features[:, :effnet.dim], effnet(parts[0]))
    specs = teachers.specs()
    assert specs[1]["offset"] == effnet.dim
    assert specs[0]["weights"] == {"kind": "file", "file": weights.name, "sha256": file_sha256(weights)}
    assert specs[0]["mean"] == [0.485, 0.456, 0.406] and specs[0]["interpolation"] == "bicubic"


def test_hflip_averages_mirror_image(tmp_path):
    weights = str(write_tiny_weights(tmp_path))
    plain = load_teachers(["test_efficientnet"], {"test_efficientnet": weights}).teachers[0]
    flipped = load_teachers(["test_efficientnet"], {"test_efficientnet": weights}, hflip=True).teachers[0]
    images = torch.rand(2, 3, 160, 160)
    expected = (plain(images) + plain(images.flip(-1))) / 2
    assert torch.allclose(flipped(images), expected, atol=1e-6)
    assert not torch.allclose(plain(images), expected, atol=1e-4)


def test_teacher_stays_frozen_in_eval_mode(tmp_path):
    teachers = load_teachers(["test_efficientnet"], {"test_efficientnet": str(write_tiny_weights(tmp_path))})
    teachers.train()
    assert not teachers.teachers[0].model.training
    assert not any(p.requires_grad for p in teachers.parameters())


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsNotFoundError, match="nope.safetensors"):
        load_teachers(["test_efficientnet"], {"test_efficientnet": str(missing)})


def test_bad_teacher_names_are_clear_errors(tmp_path):
    with pytest.raises(IAAError, match="not_a_model"):
        load_teachers(["not_a_model"])
    with pytest.raises(IAAError, match="resnet10t"):
        load_teachers(["test_efficientnet"], {"resnet10t": str(tmp_path / "x.pth")})


@pytest.mark.parametrize("name, levels", [("swin_tiny_patch4_window7_224", 12), ("convnext_atto", 12)])
def test_mlsp_pools_every_block_of_stage_based_models(name, levels):
    """Structure only (random weights, never used as a teacher): every block, channels pooled correctly."""
    from iaa_distill.teachers.weights import WeightsSource

    model = timm.create_model(name, pretrained=False)
    teacher = Teacher(name, model, WeightsSource("test", "random", ""))
    assert len(teacher.level_dims) == levels
    assert teacher.level_dims[-1] == model.num_features  # the channel axis was pooled, not a spatial one
    out = teacher(torch.rand(1, 3, teacher.input_size, teacher.input_size))
    assert out.shape == (1, teacher.dim)
