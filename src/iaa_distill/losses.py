"""Losses of both stages: ground truth (EMD or regression [+ rank]), feature and output distillation.

Conventions of `score_space.ScoreSpace`: a K-level model's raw output is logits over the
K ordered levels (softmax gives the distribution); a scalar model's raw output is the score normalised
to [0, 1] on the label scale. Non-finite inputs are never masked, so the trainer can detect them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .score_space import ScoreSpace

_TINY = 1e-12


def emd_loss(pred_dist: torch.Tensor, true_dist: torch.Tensor, r: float = 2) -> torch.Tensor:
    """NIMA's earth mover's distance between (B, K) distributions over ordered levels.

    Per sample (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r), averaged over the batch. The root has a finite
    (zero) gradient where both CDFs coincide.
    """
    cdf_diff = torch.cumsum(pred_dist.float(), dim=-1) - torch.cumsum(true_dist.float(), dim=-1)
    power_mean = cdf_diff.abs().pow(r).mean(dim=-1)
    per_sample = torch.where(power_mean == 0, torch.zeros_like(power_mean),
                             power_mean.clamp_min(_TINY).pow(1.0 / r))
    return per_sample.mean()


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """MSE or L1 between predicted and true scores (same space, e.g. normalised to [0, 1])."""
    pred = pred.float().reshape(target.shape)
    if kind == "mse":
        return F.mse_loss(pred, target.float())
    if kind == "l1":
        return F.l1_loss(pred, target.float())
    raise ValueError(f"unknown regression loss '{kind}' (expected 'mse' or 'l1')")


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Hinge on every ordered pair: for target_i > target_j, mean of max(0, margin - (pred_i - pred_j)).

    Zero (still in the graph) when the batch has no pair with different targets.
    """
    pred, target = pred.float().reshape(-1), target.float().reshape(-1)
    ordered = target[:, None] > target[None, :]
    hinge = F.relu(margin - (pred[:, None] - pred[None, :]))
    if not ordered.any():
        return pred.sum() * 0.0
    return hinge[ordered].mean()


def label_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    num_levels: int | None,
    kind: str = "emd",
    rank_weight: float = 0.0,
) -> torch.Tensor:
    """Ground-truth loss of a raw prediction.

    K-level models (`target` = (B, K) vote distribution): 'emd' is EMD (r=2) on softmax(raw);
    'mse'/'l1' regress the distribution's normalised mean instead.
    Scalar models (`target` = (B,) score normalised to [0, 1]): 'mse'/'l1' on raw; there is no
    distribution, so 'emd' (the default for voted data) means MSE there.
    `rank_weight` > 0 adds a pairwise rank loss on the (normalised) mean scores.
    """
    if kind not in ("emd", "mse", "l1"):
        raise ValueError(f"unknown label loss '{kind}' (expected 'emd', 'mse' or 'l1')")
    if num_levels:
        pred_dist = torch.softmax(raw.float(), dim=-1)
        pred_mean, true_mean = ScoreSpace.normalised_mean(pred_dist), ScoreSpace.normalised_mean(target)
        loss = emd_loss(pred_dist, target) if kind == "emd" else regression_loss(pred_mean, true_mean, kind)
    else:
        pred_mean, true_mean = raw.float().reshape(-1), target.float().reshape(-1)
        loss = regression_loss(pred_mean, true_mean, "mse" if kind == "emd" else kind)
    if rank_weight:
        loss = loss + rank_weight * pairwise_rank_loss(pred_mean, true_mean)
    return loss


def feature_distillation_loss(
    student_feature: torch.Tensor, teacher_feature: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Student projection vs the teacher's aesthetic feature: MSE, or 1 - cosine similarity."""
    student_feature, teacher_feature = student_feature.float(), teacher_feature.float()
    if kind == "mse":
        return F.mse_loss(student_feature, teacher_feature)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student_feature, teacher_feature, dim=-1)).mean()
    raise ValueError(f"unknown feature distillation loss '{kind}' (expected 'mse' or 'cosine')")


def output_distillation_loss(
    raw_student: torch.Tensor, teacher_prediction: torch.Tensor, num_levels: int | None
) -> torch.Tensor:
    """Student prediction vs the teacher's: EMD between distributions (K-level), MSE on the normalised score (scalar)."""
    if num_levels:
        return emd_loss(torch.softmax(raw_student.float(), dim=-1), teacher_prediction)
    return regression_loss(raw_student, teacher_prediction, "mse")
