"""Warm start of a student (linear probe, then fine-tune): the layers after its backbone fitted in closed form
on the frozen pooled features, before any gradient step.

One pass of the pretrained backbone (eval mode, each cached image resized whole to the input size, as when
scoring) gives the pooled vector of every training image. On those rows:

1. normalisation, the teacher's linear head's (`head_candidates.MLSPNormaliser`, with a floor on the scale): the
   student's signed power of every value (`pooled_power`), per-dimension mean/std, each block (`Student.block_widths`)
   scaled to the same total variance -> the `pooled_mean`/`pooled_std` buffers (std divided by the block weight);
2. projection: the top `feature_dim` principal directions of the standardised vectors, each scaled to unit
   variance. With fewer images than `feature_dim` they span every image, so the ridge below loses nothing;
3. prediction layer: ridge (penalty by `RidgeCV`'s leave-one-out; by 5-fold CV over source images when rows
   share one: an image and its augmented views, `data.views`, would leak into each other's left-out row) to the
   head's raw target: the centred log
   distribution, which softmax inverts, or the normalised score (`head_candidates.ridge_targets`, as the
   teacher's linear head). Distilled student: each image's target blends its label (weight 1 / labelled
   images) and the teacher's prediction (weight beta / all images, unlabelled ones included): the weights of
   the training loss. Baseline: labels only, so it stays the paper's label-only baseline (and is the
   frozen-feature linear probe on the student's backbone). With vote distributions the fitted logits are then
   multiplied by the factor (0.5-4) whose softmax has the least EMD on the val split (`sharpen`), so the
   predicted spread matches the labels' (ridge on smoothed log shares predicts wider distributions);
4. distillation projector (distilled student): ridge to the teacher's standardised aesthetic feature.

Ridge is solved on the principal coordinates before their scaling and folded into the layers: the model
computes exactly the ridge prediction. Nothing here is random.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold

from ..evaluation.metrics import plcc, srcc
from ..losses import emd_loss
from ..progress import progress_bar
from ..score_space import ScoreSpace
from ..storage import (MANIFEST_FILE, Manifest, RowCache, RowWriter, finish_rows,
                       pending_batches, read_progress, resume_or_create_rows)
from ..student import Student
from .head_candidates import RIDGE_ALPHAS, MLSPNormaliser, ridge_targets
from .image_cache import ImageCache

_EPS = 1e-6
STD_FLOOR = 0.01  # of the median standard deviation of the pooled values
GROUP_FOLDS = 5  # folds of the penalty's CV when rows share a source image


@dataclass
class WarmStartData:
    """The rows the layers are fitted on: labelled images first, then unlabelled ones (distillation only)."""

    cache_path: object  # a uint8 (N, S, S, 3) image cache (.npy)
    rows: np.ndarray  # row of each image in the cache
    labels: np.ndarray  # (n_labelled, K) or (n_labelled,) encoded labels
    teacher_features: np.ndarray | None = None  # (N, F) standardised, every row; None: no projector to fit
    teacher_predictions: np.ndarray | None = None  # (N, K) or (N,)
    groups: np.ndarray | None = None  # (N,) source image of each row (`data.views.source_groups`); None: all differ


def cached_images(cache_path, rows: np.ndarray, size: int, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Float RGB [0, 1] batches (B, 3, size, size) of cached images, resized whole when cached at another size."""
    pixels = np.load(cache_path, mmap_mode="r")
    for start in range(0, len(rows), batch_size):
        batch = torch.from_numpy(np.stack([pixels[r] for r in rows[start:start + batch_size]]))
        images = batch.permute(0, 3, 1, 2).float().div_(255)
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True,
                                   align_corners=False).clamp_(0, 1)
        yield images.contiguous(memory_format=torch.channels_last)


@dataclass
class PooledManifest(Manifest):
    """`manifest.json` of a pooled-feature cache: the backbone it was computed with and the image rows it covers."""

    IDENTITY = ("backbone", "images", "dim")

    backbone: str = ""  # `_backbone_key`: weights, pooling and input size
    images: str = ""  # fingerprint of the image cache whose rows these are (`ImageCacheManifest`)
    dim: int = 0
    complete: bool = False
    failed: dict[str, str] = field(default_factory=dict)


class PooledCache(RowCache):
    """The frozen backbone's raw pooled vector of every row of an image cache (float32, same rows)."""

    ARRAY, KIND, HINT = "pooled.npy", "pooled-feature cache", "delete the folder to compute it again"


def pooled_features(model: Student, data: WarmStartData, progress: bool = True) -> np.ndarray:
    """(N, D) raw pooled vectors of the frozen backbone for `data`'s rows (the standardisation buffers are not
    applied). Computed once for every image of the cache and kept beside it as a row cache (`pooled-KEY/`, KEY:
    the backbone's weights, pooling and input size; resumable), so the baseline, the student and other seeds
    reuse them. progress: a bar on a terminal (`progress.progress_bar`) while the pass runs."""
    images = ImageCache.open(Path(data.cache_path).parent)
    ids = images.ids
    folder = images.directory / f"pooled-{_backbone_key(model)}"
    manifest = PooledManifest(backbone=folder.name[len("pooled-"):], images=images.manifest.fingerprint(),
                              dim=int(model.pooled_mean.numel()))
    built = resume_or_create_rows(folder, manifest, ids, PooledCache.ARRAY, (len(ids), manifest.dim), np.float32)
    if not built.complete:
        _fill_pooled(model, Path(data.cache_path), folder, len(ids), progress)
        built = finish_rows(folder, PooledManifest.read(folder / MANIFEST_FILE, ""))
    return np.asarray(PooledCache.read_rows(folder, built, (manifest.dim,)).array[data.rows], np.float64)


@torch.no_grad()
def _fill_pooled(model: Student, cache_path: Path, folder: Path, count: int, progress: bool,
                 batch_size: int = 32) -> None:
    """Every row of the image cache at `cache_path` not committed yet, in fixed batches (eval mode)."""
    was_training = model.training
    model.eval()
    done, _ = read_progress(folder, count)
    batches = pending_batches(range(count), done, batch_size)
    with RowWriter(folder, PooledCache.ARRAY) as writer, \
            progress_bar(sum(map(len, batches)), "warm start (backbone features)", progress) as bar:
        for batch in batches:
            pixels = next(cached_images(cache_path, np.asarray(batch), model.config.input_size, batch_size=len(batch)))
            writer.write(batch, model.raw_pooled(pixels).float().numpy(), {})
            bar.update(len(batch))
    model.train(was_training)


def _backbone_key(model: Student) -> str:
    digest = hashlib.sha256(f"{model.config.pooling}:{model.config.input_size}".encode())
    for name, tensor in model.backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _ridge(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, groups: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients (D, T), intercept (T,) and the penalty chosen by leave-one-out, or by `GROUP_FOLDS`-fold CV
    over `groups` when some rows share a group."""
    grouped = groups is not None and len(np.unique(groups)) < len(groups)
    cv = list(GroupKFold(min(GROUP_FOLDS, len(np.unique(groups)))).split(x, groups=groups)) if grouped else None
    fit = RidgeCV(alphas=RIDGE_ALPHAS, cv=cv).fit(x, y, sample_weight=weights)
    return np.atleast_2d(fit.coef_).T, np.atleast_1d(fit.intercept_), float(fit.alpha_)


def _head_targets(data: WarmStartData, space: ScoreSpace, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row target of the prediction layer and its weight (mean 1); see the module doc."""
    labels = ridge_targets(np.asarray(data.labels, np.float64), space)
    if data.teacher_predictions is None or not beta:
        return labels, np.ones(len(labels))
    teacher = ridge_targets(np.asarray(data.teacher_predictions, np.float64), space)
    n, n_labelled = len(teacher), len(labels)
    w_label, w_teacher = 1.0 / n_labelled, beta / n
    weights = np.full(n, w_teacher)
    weights[:n_labelled] += w_label
    targets = teacher.copy()
    targets[:n_labelled] = (w_label * labels + w_teacher * teacher[:n_labelled]) / (w_label + w_teacher)
    return targets, weights * n / weights.sum()


def fit_warm_start(model: Student, pooled: np.ndarray, data: WarmStartData, beta: float = 1.0) -> dict:
    """Set the standardisation, projection, prediction layer and distillation projector of `model` (see the
    module doc) from the raw pooled vectors of `data`'s rows; returns what was chosen."""
    distilled = data.teacher_predictions is not None
    rows = pooled if distilled else pooled[:len(data.labels)]
    normaliser = MLSPNormaliser(model.block_widths, model.config.pooled_power, eps=0.0, std_floor=STD_FLOOR)
    z = normaliser.fit_transform(rows)
    mean, std = normaliser.mean_, normaliser.scale_ / normaliser.weights_  # the model's pooled_mean / pooled_std
    k = model.config.feature_dim
    eigenvalues, vectors = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:k]
    components = vectors[:, order] * (eigenvalues[order] > _EPS * max(eigenvalues.max(), 1.0))  # (D, <=k)
    coords = z @ components  # principal coordinates, unscaled (ridge keeps its meaning on them)
    scale = np.maximum(coords.std(0), _EPS)
    targets, weights = _head_targets(data, model.config.space, beta)
    groups = None if data.groups is None else data.groups[:len(rows)]
    coef, intercept, alpha = _ridge(coords[:len(targets)], targets, weights,
                                    None if groups is None else groups[:len(targets)])
    report = {"rows": len(rows), "pooled_dim": int(z.shape[1]), "components": int((scale > _EPS).sum()),
              "head_penalty": alpha}
    with torch.no_grad():
        model.pooled_mean.copy_(torch.from_numpy(mean))
        model.pooled_std.copy_(torch.from_numpy(std))
        _set_linear(model.project[0], (components / scale).T, np.zeros(components.shape[1]))
        _set_linear(model.head[1], coef.T * scale, intercept)
        if data.teacher_features is not None and model.distill is not None:
            d_coef, d_intercept, d_alpha = _ridge(coords, np.asarray(data.teacher_features, np.float64), None, groups)
            _set_linear(model.distill, d_coef.T * scale, d_intercept)
            report["feature_penalty"] = d_alpha
    return report


@torch.no_grad()
def predict_raw(model: Student, batches: Iterator[torch.Tensor]) -> torch.Tensor:
    """Raw outputs of `model` in eval mode on image batches."""
    model.eval()
    return torch.cat([model(images)[0].float() for images in batches])


def validation_entry(space: ScoreSpace, raw: torch.Tensor, labels: np.ndarray, means: np.ndarray, loss) -> dict:
    """Val SRCC/PLCC/loss of raw outputs, and the median predicted and true spread (K-level labels) on the
    scale; `loss(raw, labels)` is the training's label loss."""
    mean, dist = space.decode(raw)
    pred = mean.double().numpy()
    entry = {"val_srcc": srcc(means, pred), "val_plcc": plcc(means, pred),
             "val_loss": float(loss(raw, torch.from_numpy(np.asarray(labels, np.float32))))}
    if dist is not None:
        entry["val_pred_std_median"] = float(np.median(space.std(dist.double().numpy(), pred)))
        entry["val_label_std_median"] = float(np.median(space.std(np.asarray(labels), means)))
    return {k: (-1.0 if isinstance(v, float) and not np.isfinite(v) else v) for k, v in entry.items()}


def sharpen(model: Student, raw: torch.Tensor, labels: np.ndarray) -> tuple[torch.Tensor, float]:
    """Multiply the prediction layer of a K-level `model` by the factor (0.5-4) whose softmax of the val
    logits `raw` has the least EMD to the val vote distributions `labels`; returns the new logits and the
    factor. Ridge on smoothed log shares predicts wider distributions than the votes (on the demo a median
    std of 1.6-1.7 against the labels' 1.3). The means move a little (their order hardly); epoch 0 is
    validated after this step."""
    targets = torch.from_numpy(np.asarray(labels, np.float32))
    grid = np.round(np.arange(0.5, 4.001, 0.05), 2)
    emds = [float(emd_loss(torch.softmax(raw * float(g), dim=-1), targets)) for g in grid]
    factor = float(grid[int(np.argmin(emds))])
    with torch.no_grad():
        model.head[1].weight.mul_(factor)
        model.head[1].bias.mul_(factor)
    return raw * factor, factor


def _set_linear(layer: torch.nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    """Copy `weight` (out, in) and `bias` into `layer`; output rows beyond them are zero."""
    w = torch.zeros_like(layer.weight)
    b = torch.zeros_like(layer.bias)
    w[:weight.shape[0], :weight.shape[1]] = torch.from_numpy(weight)
    b[:len(bias)] = torch.from_numpy(bias)
    layer.weight.copy_(w)
    layer.bias.copy_(b)
