import numpy as np
import pytest
import torch

from iaa_distill.losses import (
    emd_loss,
    feature_distillation_loss,
    label_loss,
    output_distillation_loss,
    pairwise_rank_loss,
    regression_loss,
)


def numpy_emd(p: np.ndarray, q: np.ndarray, r: float = 2) -> float:
    """NIMA's EMD written out directly, one sample at a time."""
    values = []
    for pi, qi in zip(p, q):
        total = 0.0
        cdf_p = cdf_q = 0.0
        for k in range(len(pi)):
            cdf_p += pi[k]
            cdf_q += qi[k]
            total += abs(cdf_p - cdf_q) ** r
        values.append((total / len(pi)) ** (1 / r))
    return float(np.mean(values))


def random_dists(rows: int, levels: int, seed: int) -> torch.Tensor:
    return torch.softmax(torch.randn(rows, levels, generator=torch.Generator().manual_seed(seed)) * 2, dim=-1)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_emd_matches_numpy_reference(r):
    p, q = random_dists(6, 10, 0), random_dists(6, 10, 1)
    assert emd_loss(p, q, r=r).item() == pytest.approx(numpy_emd(p.numpy(), q.numpy(), r), rel=1e-5)


def test_emd_known_value_and_properties():
    # All mass on level 1 vs all on level 10: CDFs differ by 1 on 9 of 10 levels -> sqrt(9/10).
    p, q = torch.eye(10)[:1], torch.eye(10)[-1:]
    assert emd_loss(p, q).item() == pytest.approx(np.sqrt(0.9), rel=1e-6)
    a, b = random_dists(5, 10, 2), random_dists(5, 10, 3)
    assert emd_loss(a, a).item() == 0.0
    assert emd_loss(a, b).item() == pytest.approx(emd_loss(b, a).item(), rel=1e-6)
    assert emd_loss(a, b).item() > 0


def test_emd_gradients_finite_even_at_zero():
    logits = torch.randn(4, 10, requires_grad=True)
    target = torch.softmax(logits.detach(), dim=-1)
    target[:2] = random_dists(2, 10, 4)  # half the batch identical, half different
    emd_loss(torch.softmax(logits, dim=-1), target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[2:].abs().sum() == 0  # identical rows: zero gradient, not NaN
    assert logits.grad[:2].abs().sum() > 0


def test_non_finite_inputs_are_not_masked():
    nan = torch.full((2, 10), float("nan"))
    assert torch.isnan(emd_loss(nan, random_dists(2, 10, 5)))
    assert torch.isnan(label_loss(torch.tensor([[float("nan")], [0.5]]), torch.tensor([0.2, 0.4]), None))
    assert torch.isnan(pairwise_rank_loss(torch.tensor([float("nan"), 0.1]), torch.tensor([0.0, 1.0])))


def test_regression_losses():
    pred, target = torch.tensor([[0.2], [0.9]]), torch.tensor([0.4, 0.5])
    assert regression_loss(pred, target, "mse").item() == pytest.approx((0.04 + 0.16) / 2)
    assert regression_loss(pred, target, "l1").item() == pytest.approx((0.2 + 0.4) / 2)
    with pytest.raises(ValueError):
        regression_loss(pred, target, "huber")


def test_pairwise_rank_loss():
    target = torch.tensor([0.1, 0.5, 0.9])
    assert pairwise_rank_loss(torch.tensor([1.0, 2.0, 3.0]), target).item() == 0.0  # correctly ordered
    # Reversed: pairs (1,0), (2,0), (2,1) have pred differences -1, -2, -1.
    assert pairwise_rank_loss(torch.tensor([3.0, 2.0, 1.0]), target).item() == pytest.approx(4 / 3)
    assert pairwise_rank_loss(torch.tensor([1.0, 2.0, 3.0]), target, margin=1.5).item() == pytest.approx(1 / 3)  # 0.5 + 0 + 0.5
    pred = torch.tensor([0.3, 0.1], requires_grad=True)
    loss = pairwise_rank_loss(pred, torch.tensor([0.5, 0.5]))  # no ordered pair: zero, still differentiable
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_label_loss_k_level_and_scalar():
    logits = torch.randn(8, 10, requires_grad=True)
    votes = random_dists(8, 10, 6)
    loss = label_loss(logits, votes, 10)
    assert loss.item() == pytest.approx(emd_loss(torch.softmax(logits, -1), votes).item())
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # mse on a K-level model regresses the normalised mean of the distribution
    positions = torch.linspace(0, 1, 10)
    expected = ((torch.softmax(logits, -1) @ positions - votes @ positions) ** 2).mean()
    assert label_loss(logits, votes, 10, kind="mse").item() == pytest.approx(expected.item(), rel=1e-5)

    raw, scores = torch.tensor([[0.2], [0.6], [0.4]]), torch.tensor([0.3, 0.5, 0.4])
    assert label_loss(raw, scores, None, kind="l1").item() == pytest.approx(0.1 * 2 / 3, rel=1e-5)
    assert label_loss(raw, scores, None, kind="emd").item() == label_loss(raw, scores, None, kind="mse").item()
    with_rank = label_loss(raw, scores, None, kind="mse", rank_weight=2.0)
    expected = regression_loss(raw, scores) + 2.0 * pairwise_rank_loss(raw.squeeze(1), scores)
    assert with_rank.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError):
        label_loss(raw, scores, None, kind="hinge")


def test_distillation_losses():
    student, teacher = torch.randn(4, 16, requires_grad=True), torch.randn(4, 16)
    assert feature_distillation_loss(student, teacher).item() == pytest.approx(((student - teacher) ** 2).mean().item())
    assert feature_distillation_loss(teacher, teacher, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation_loss(teacher, -teacher, kind="cosine").item() == pytest.approx(2.0, abs=1e-6)
    feature_distillation_loss(student, teacher, kind="cosine").backward()
    assert torch.isfinite(student.grad).all()

    logits, teacher_dist = torch.randn(4, 10), random_dists(4, 10, 7)
    assert output_distillation_loss(logits, teacher_dist, 10).item() == pytest.approx(
        numpy_emd(torch.softmax(logits, -1).numpy(), teacher_dist.numpy()), rel=1e-5)
    raw, teacher_score = torch.tensor([[0.1], [0.7]]), torch.tensor([0.3, 0.7])
    assert output_distillation_loss(raw, teacher_score, None).item() == pytest.approx(0.02)
