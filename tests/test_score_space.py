"""The score space against hand computations: levels, encode, decode, mean, std, normalise, targets."""
import math

import numpy as np
import pytest
import torch

from iaa_distill.data.records import Label
from iaa_distill.errors import IAAError
from iaa_distill.score_space import ScoreSpace


def test_k_level_round_trip_against_hand_computation():
    space = ScoreSpace(3, (1, 5))  # levels 1, 3, 5
    np.testing.assert_allclose(space.levels, [1.0, 3.0, 5.0])
    label = Label(scale=(1.0, 5.0), votes=(1.0, 2.0, 1.0))
    np.testing.assert_allclose(space.encode(label), [0.25, 0.5, 0.25])
    # decode: logits of the label's own distribution give it back, mean 1*.25 + 3*.5 + 5*.25 = 3
    raw = torch.log(torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]]))
    mean, dist = space.decode(raw)
    np.testing.assert_allclose(dist.numpy(), [[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(mean.numpy(), [3.0, 0.5 + 0.75 + 1.25], rtol=1e-6)
    # std of the second: E[(x - 2.5)^2] = .5 * 2.25 + .25 * .25 + .25 * 6.25 = 2.75
    std = space.std(dist.numpy(), mean.numpy())
    np.testing.assert_allclose(std, [math.sqrt(2.0), math.sqrt(2.75)], rtol=1e-6)
    np.testing.assert_allclose(space.target(raw.numpy()), dist.numpy(), rtol=1e-6)
    targets, means = space.encode_all([label, label], ["a", "b"])
    assert targets.shape == (2, 3) and targets.dtype == np.float32 and means.tolist() == [3.0, 3.0]


def test_scalar_round_trip_against_hand_computation():
    space = ScoreSpace(None, (0, 100))
    assert space.output_dim == 1 and space.normalise(25.0) == 0.25
    assert float(space.encode(Label(scale=(0.0, 100.0), score=80.0))) == pytest.approx(0.8)
    mean, dist = space.decode(torch.tensor([[0.25], [0.8]]))
    assert dist is None and mean.tolist() == pytest.approx([25.0, 80.0])
    assert np.isnan(space.std(None, mean.numpy())).all()
    np.testing.assert_allclose(space.target(np.array([[0.25], [0.8]], dtype=np.float32)), [0.25, 0.8])


def test_encode_names_the_image_with_other_levels():
    with pytest.raises(IAAError, match="image 'x.jpg': its label has 2 vote levels, the rest of the dataset 3"):
        ScoreSpace(3, (1, 5)).encode(Label(scale=(1.0, 5.0), votes=(1.0, 2.0)), "x.jpg")


def test_models_save_the_score_space_and_old_configs_load():
    from iaa_distill.student import StudentConfig
    from iaa_distill.teacher_head import TeacherHeadConfig

    old = {"backbone": "test_efficientnet", "num_levels": 5, "scale": [0, 4]}  # a config.json of an earlier version
    assert StudentConfig.from_dict(old).space == ScoreSpace(5, (0.0, 4.0))
    assert TeacherHeadConfig.from_dict({"input_dim": 8, "num_levels": None, "scale": [0, 1]}).space.num_levels is None
