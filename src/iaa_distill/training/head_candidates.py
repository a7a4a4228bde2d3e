"""Teacher-head candidates and how each is fitted on in-memory features: the MLP by gradient descent,
the linear head by closed-form reduced-rank ridge regression.

Candidate specs (the `candidates` setting of stage 1):

- `mlp`: the paper's MLP with the run's `hidden` sizes and `dropout`;
- `mlp:H1,H2:DROPOUT`: the MLP with other hidden sizes and dropout, e.g. `mlp:256:0.5`;
- `ridge:RANK`: a linear head. Multi-output ridge (penalty chosen by `RidgeCV`'s efficient leave-one-out)
  on normalised features predicts the label's training target: the centred log of the vote distribution
  (softmax inverts it exactly) or the normalised score. The fitted map is factored by SVD to rank r:
  z = normalised x @ U_r, prediction = z @ V_r + intercept.

The features are normalised for an MLSP vector, whose blocks (one network block's pooled output each) are 16 to
352 values wide: every value x becomes sign(x) sqrt|x| (power normalisation, as for pooled MLSP and Fisher
vectors), is standardised, and each block is then scaled to the same total variance, so that the ridge penalty
weighs blocks rather than their widths (with every value standardised alike, the widest, deepest blocks take
most of it). The block widths come from the feature cache's teacher entries (`level_dims`). Chosen by repeated
cross-validation on training splits (README, *A teacher that holds up on few labels*). `MLSPNormaliser` computes
it, here and in the benchmarks' linear probe (`linear_probe.fit_linear_probe`).

Both become a `TeacherHead`: the linear head is the signed square root (`TeacherHeadConfig.input_power`) ->
BatchNorm (holding the standardisation, its weights the block scales) -> Linear to [z, -z] -> ReLU -> Linear
with [V_r; -V_r], which computes z @ V_r exactly (relu(z) - relu(-z) = z). Its aesthetic feature
[relu(z), relu(-z)] (2r values, each component of z scaled to unit variance) is non-negative like the
student's projection it is distilled into; targets, evaluation and scoring need nothing new.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import RidgeCV

from ..errors import IAAError
from ..score_space import ScoreSpace
from ..teacher_head import TeacherHead, TeacherHeadConfig
from ..teachers.mlsp import block_weights, signed_power
from .head_loop import fit_rows

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 6, 15))  # penalties on standardised features
SMOOTHING = 0.01  # added to each level's share before the log, so that empty levels stay finite
RIDGE_POWER = 0.5  # the linear head's power normalisation: the signed square root of every feature value
BATCHNORM_EPS = 1e-5  # added to each variance, as the head's BatchNorm does (torch's default)
SCALE_EPS = 1e-6  # added to a floored scale, so that a constant value never divides by 0


@dataclass(frozen=True)
class HeadCandidate:
    """One head to try: `kind` mlp (hidden sizes, dropout) or ridge (rank)."""

    spec: str
    kind: str
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    rank: int = 0


def parse_candidate(spec: str, hidden: tuple[int, ...], dropout: float) -> HeadCandidate:
    """A candidate from its spec (see the module doc); `hidden`/`dropout` are the run's own MLP settings."""
    kind, _, rest = spec.strip().partition(":")
    try:
        if kind == "mlp" and not rest:
            return HeadCandidate(spec, "mlp", tuple(hidden), float(dropout))
        if kind == "mlp":
            sizes, _, drop = rest.partition(":")
            candidate = HeadCandidate(spec, "mlp", tuple(int(s) for s in sizes.split(",")), float(drop or dropout))
            if min(candidate.hidden) >= 1 and 0.0 <= candidate.dropout < 1.0:
                return candidate
        if kind == "ridge" and int(rest or 0) >= 1:
            return HeadCandidate(spec, "ridge", rank=int(rest))
    except ValueError:
        pass
    raise IAAError(f"head candidate {spec!r} is not understood; use mlp, mlp:SIZES:DROPOUT (e.g. mlp:256,64:0.5) "
                   "or ridge:RANK (e.g. ridge:4)")


def candidate_config(candidate: HeadCandidate, base: TeacherHeadConfig, output_dim: int) -> TeacherHeadConfig:
    """The head config of a candidate (a rank-r linear head is a one-layer head of width 2r without dropout)."""
    if candidate.kind == "ridge":
        return replace(base, hidden=(2 * min(candidate.rank, output_dim),), dropout=0.0, input_power=RIDGE_POWER)
    return replace(base, hidden=candidate.hidden, dropout=candidate.dropout)


def ridge_targets(labels: np.ndarray, space: ScoreSpace) -> np.ndarray:
    """What the linear head regresses: centred log distributions (N, K), or normalised scores (N, 1)."""
    if not space.num_levels:
        return labels.reshape(-1, 1).astype(np.float64)
    shares = labels / labels.sum(axis=1, keepdims=True) + SMOOTHING
    logs = np.log(shares)
    return logs - logs.mean(axis=1, keepdims=True)


def level_widths(teachers: list, input_dim: int) -> list[int]:
    """Widths of the feature vector's blocks (one block's pooled output each) from the cache manifest's teacher
    entries, in vector order; the whole vector as one block when they do not record their levels."""
    widths = [int(w) for t in sorted(teachers, key=lambda t: t.get("offset", 0)) for w in t.get("level_dims", ())]
    return widths if sum(widths) == input_dim else [input_dim]


class MLSPNormaliser(TransformerMixin, BaseEstimator):
    """The normalisation of every linear fit on MLSP features (the module doc): signed `power` of each value, then
    (x - mean) / sqrt(var + `eps`) (as BatchNorm computes it; with `std_floor`, no value's scale below that share
    of the median scale, so near-constant values are not blown up), each block of `widths` (in vector order)
    scaled to the same total variance. A scikit-learn transformer, so that a ridge on it is one `Pipeline`."""

    def __init__(self, widths: Sequence[int], power: float = RIDGE_POWER, eps: float = BATCHNORM_EPS,
                 std_floor: float = 0.0):
        self.widths, self.power, self.eps, self.std_floor = widths, power, eps, std_floor

    def fit(self, x: np.ndarray, y=None) -> "MLSPNormaliser":
        powered = self._powered(x)
        if sum(self.widths) != powered.shape[1]:
            raise ValueError(f"block widths sum to {sum(self.widths)}, the features have {powered.shape[1]} values")
        self.mean_, self.var_ = powered.mean(axis=0), powered.var(axis=0)
        self.scale_ = np.sqrt(self.var_ + self.eps)
        if self.std_floor:
            self.scale_ = np.maximum(self.scale_, self.std_floor * np.median(self.scale_) + SCALE_EPS)
        self.weights_ = block_weights(list(self.widths))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (self._powered(x) - self.mean_) / self.scale_ * self.weights_

    def _powered(self, x: np.ndarray) -> np.ndarray:
        return signed_power(torch.from_numpy(np.asarray(x, dtype=np.float64)), self.power).numpy()


def fit_ridge_head(features: np.ndarray, labels: np.ndarray, config: TeacherHeadConfig) -> TeacherHead:
    """Closed-form reduced-rank ridge head (see the module doc) as a `TeacherHead` with `config`."""
    head = TeacherHead(config).eval()
    norm = head.body[0]
    normaliser = MLSPNormaliser(level_widths(config.teachers, features.shape[1]), config.input_power, norm.eps)
    standard = normaliser.fit_transform(features)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(standard, ridge_targets(labels, config.space))
    coef = np.atleast_2d(ridge.coef_).T  # (D, K)
    rank = config.hidden[0] // 2
    _, _, vt = np.linalg.svd(standard @ coef, full_matrices=False)
    v = vt[:rank].T  # (K, r): the directions of the fitted outputs that carry the most variance
    u = coef @ v  # (D, r)
    spread = np.maximum((standard @ u).std(axis=0), 1e-12)
    u, v = u / spread, v * spread
    with torch.no_grad():
        norm.running_mean.copy_(torch.from_numpy(normaliser.mean_))
        norm.running_var.copy_(torch.from_numpy(normaliser.var_))
        norm.weight.copy_(torch.from_numpy(normaliser.weights_))
        norm.bias.zero_()
        head.body[1].weight.copy_(torch.from_numpy(np.concatenate([u, -u], axis=1).T))
        head.body[1].bias.zero_()
        head.head[1].weight.copy_(torch.from_numpy(np.concatenate([v, -v], axis=1)))
        head.head[1].bias.copy_(torch.from_numpy(np.atleast_1d(ridge.intercept_)))
    return head


def fit_mlp_head(features: np.ndarray, labels: np.ndarray, config: TeacherHeadConfig, train) -> TeacherHead:
    """The MLP trained on in-memory rows by the head's own loop (`head_loop.fit_rows`: `train.epochs` epochs, no
    early stopping), as within CV folds. `train` is the run's `TeacherTrainConfig`."""
    return fit_rows(features, labels, config, train)


def fit_candidate(candidate: HeadCandidate, features: np.ndarray, labels: np.ndarray, base: TeacherHeadConfig,
                  train) -> TeacherHead:
    """Fit one candidate on (features, labels) in memory."""
    config = candidate_config(candidate, base, base.output_dim)
    if candidate.kind == "ridge":
        return fit_ridge_head(features, labels, config)
    return fit_mlp_head(features, labels, config, train)
