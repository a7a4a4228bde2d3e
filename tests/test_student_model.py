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


def test_a_linear_student_saved_without_pooled_power_scores_exactly_as_before(tmp_path):
    """Students saved before the power normalisation have no `pooled_power`: they load with none (plain
    standardisation, bit for bit), while new students take the signed square root first."""
    import json

    torch.manual_seed(0)
    config = StudentConfig.for_backbone("test_efficientnet", input_size=32, num_levels=5, scale=(1.0, 5.0),
                                        feature_dim=8)
    assert config.pooled_power == 0.5
    model = Student(config).eval()
    with torch.no_grad():
        model.pooled_mean.uniform_(-0.5, 0.5)
        model.pooled_std.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    del saved["pooled_power"]  # the config.json an earlier version wrote
    path.write_text(json.dumps(saved))
    old = Student.from_pretrained(tmp_path / "old").eval()
    assert old.config.pooled_power == 1.0
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        raw = old.raw_pooled(images)
        assert torch.equal(old.pooled(images), (raw - old.pooled_mean) / old.pooled_std)
        expected = old.head(old.project((raw - old.pooled_mean) / old.pooled_std))
        assert torch.equal(old(images)[0], expected)
        assert not torch.allclose(old(images)[0], model(images)[0])  # the new student's power changes the score


def test_signed_power_is_the_signed_square_root_with_a_finite_slope_at_zero():
    from iaa_distill.teachers.mlsp import POWER_EPS, signed_power

    x = torch.tensor([-4.0, -0.01, 0.0, 0.01, 4.0], dtype=torch.float64, requires_grad=True)
    y = signed_power(x, 0.5)
    torch.testing.assert_close(y, torch.sign(x) * x.abs().sqrt(), rtol=1e-4, atol=0.0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[2] == pytest.approx(POWER_EPS ** -0.5)
    assert (x.grad > 0).all()  # monotone: the order of the values is kept
    assert signed_power(x, 1.0) is x
