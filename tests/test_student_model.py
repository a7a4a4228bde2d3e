"""The student model and its config: preprocessing derived from timm, save/load, score mapping."""
from __future__ import annotations

import pytest
import torch

from iaa_distill.errors import IAAError
from iaa_distill.score_space import ScoreSpace
from iaa_distill.student import Student, StudentConfig


def test_config_derives_preprocessing_from_timm_and_keeps_the_crop_ratio():
    config = StudentConfig.for_backbone("tf_efficientnet_lite0")
    assert (config.input_size, config.train_resize) == (224, 256)
    assert config.mean == (0.5, 0.5, 0.5) and config.interpolation == "bicubic"
    smaller = StudentConfig.for_backbone("tf_efficientnet_lite0", input_size=192)
    assert smaller.train_resize == 219  # 192 * 256 / 224: train crops keep the evaluation's scale
    assert StudentConfig.for_backbone("resnet10t", input_size=64, train_resize=80).train_resize == 80


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = Student(StudentConfig.for_backbone("resnet10t", input_size=32, feature_dim=8)).eval()
    model.save_pretrained(tmp_path / "m", note="test")
    loaded = Student.from_pretrained(tmp_path / "m")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.predict(images)[0], loaded.predict(images)[0])
    assert loaded.config.extra["note"] == "test"
    with pytest.raises(IAAError, match="not a model folder"):
        Student.from_pretrained(tmp_path)


def test_score_space_decodes_distributions_and_scalars():
    raw = torch.full((1, 10), -30.0)
    raw[0, 6] = 30.0  # all mass on level 7
    mean, dist = ScoreSpace(10, (1.0, 10.0)).decode(raw)
    assert mean.item() == pytest.approx(7.0) and dist.sum().item() == pytest.approx(1.0)
    mean, dist = ScoreSpace(None, (0.0, 4.0)).decode(torch.tensor([[0.25]]))
    assert mean.item() == pytest.approx(1.0) and dist is None
