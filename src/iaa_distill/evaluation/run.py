"""Evaluate a saved model on a labelled dataset split: students through `Scorer`, teacher heads on cached features."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import model_name, read_config
from ..data.records import Dataset, ImageRecord
from ..errors import IAAError
from ..data.splits import SPLIT_FILE, SPLIT_RECORD, as_trained, load_split
from .predictions import Predictions
from .report import build_document, write_report
from .settings import EvaluationSettings


def _labelled(dataset: Dataset, split: str, model_dir: Path, config: dict[str, Any]
              ) -> tuple[list[ImageRecord], list[str]]:
    """Labelled images of `split`, and notes; train/val are the ids saved with the model (`split.json`) when it
    has them, else those of the split its config.json records (`splits.as_trained`; older models: the dataset's
    as given). IAAError for the val split of a model trained without val images (every label trained it)."""
    saved = load_split(model_dir) if split in ("train", "val") else None
    recorded = config.get("extra", {}).get(SPLIT_RECORD) if split in ("train", "val") else None
    had_no_val = not saved["val"] if saved is not None else recorded is not None and not recorded["val_images"]
    if split == "val" and had_no_val:
        raise IAAError(f"{model_dir}: trained without val images (val_fraction 0), so it has no val split to "
                       "evaluate on: evaluate on test (--split test), or retrain with --val-fraction > 0")
    if saved is not None:
        wanted = set(saved[split])
        records = [r for r in dataset.records if r.image_id in wanted and r.label is not None]
        if not records:
            raise IAAError(f"none of the {len(wanted)} {split} images in {model_dir / SPLIT_FILE} is a labelled "
                           f"image of dataset '{dataset.name}': evaluate the model on the dataset it was trained on")
        return records, []
    dataset, note = as_trained(dataset, recorded) if recorded is not None else (dataset, None)
    records = [r for r in dataset.split(split) if r.label is not None]
    if not records:
        raise IAAError(f"dataset '{dataset.name}' has no labelled images in split '{split}'")
    return records, [note] if note else []


def _teacher_names(teachers: list | None) -> list[str]:
    """Teacher names of a manifest / head config entry list (entries are dicts with a 'name' or plain names)."""
    return [str(t.get("name", t)) if isinstance(t, dict) else str(t) for t in teachers or []]


def _score_student(model_dir: Path, records: list[ImageRecord], settings: EvaluationSettings
                   ) -> tuple[list[ImageRecord], np.ndarray, np.ndarray | None, dict[str, str]]:
    from ..scoring import Scorer

    scorer = Scorer.from_pretrained(model_dir, device=settings.device, backend="torch")
    results = scorer.score_paths([str(r.path) for r in records], batch_size=settings.batch_size,
                                 num_workers=settings.num_workers, progress=settings.progress)
    kept, means, dists, excluded = [], [], [], {}
    for record, result in zip(records, results):
        if result.error or not math.isfinite(result.mean):
            excluded[record.image_id] = result.error or "no finite prediction"
            continue
        kept.append(record)
        means.append(result.mean)
        dists.append(result.distribution)
    has_dist = bool(kept) and all(d is not None for d in dists)
    return kept, np.asarray(means, dtype=np.float64), (np.asarray(dists, dtype=np.float64) if has_dist else None), \
        excluded


def _score_head(model_dir: Path, config: dict[str, Any], records: list[ImageRecord], dataset: Dataset,
                features: str | Path) -> tuple[list[ImageRecord], np.ndarray, np.ndarray | None, dict[str, str]]:
    from ..features import FeatureCache
    from ..teacher_head import TeacherHead, predict_features

    cache = FeatureCache.open(features)
    cache.check_matches(dataset)
    if int(config.get("input_dim", -1)) != cache.dim or config.get("teachers") != cache.manifest.get("teachers"):
        raise IAAError(f"{features}: features of teachers '{'+'.join(_teacher_names(cache.manifest.get('teachers')))}' "
                       f"({cache.dim} values), but the teacher head {model_dir} was trained on "
                       f"'{'+'.join(_teacher_names(config.get('teachers')))}' ({config.get('input_dim')} values)")
    head = TeacherHead.from_pretrained(model_dir)
    excluded = {r.image_id: cache.failed[r.image_id] for r in records if r.image_id in cache.failed}
    kept = [r for r in records if r.image_id not in cache.failed]
    if not kept:
        return kept, np.zeros(0), None, excluded
    mean, dist = predict_features(head, cache.features_for([r.image_id for r in kept]))
    return kept, np.asarray(mean, dtype=np.float64), None if dist is None else np.asarray(dist, np.float64), excluded


def _true_distributions(labels: list, num_levels: int | None, pred_dist: np.ndarray | None
                        ) -> tuple[np.ndarray | None, list[str]]:
    """The label vote distributions when the model predicts the same levels (for EMD), and a note when it does not."""
    if not num_levels or pred_dist is None or any(label.votes is None for label in labels):
        return None, []
    if pred_dist.shape[1] != num_levels:
        return None, [f"EMD not computed: the model predicts {pred_dist.shape[1]} levels, the labels have {num_levels}"]
    return np.stack([label.distribution() for label in labels]), []


def evaluate_model(
    model_dir: str | Path,
    dataset: Dataset | str,
    settings: EvaluationSettings | None = None,
    *,
    out: str | Path | None = None,
    features: str | Path | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Predict every labelled image of `settings.split` and compute the metrics; with `out`, write the full report.

    `name` labels the model in reports (default: its folder's name, or the run folder's for `RUN/model`).
    `dataset` is a Dataset or a `FORMAT:PATH` spec; `features` (a feature cache folder) is used by teacher
    heads and ignored for students, so one call fits every model of a run. Images that cannot be scored
    (undecodable, or failed in the feature cache) are excluded and listed under "excluded".
    Returns the metrics.json document.
    """
    settings = settings or EvaluationSettings()
    split = settings.split
    model_dir = Path(model_dir).expanduser()
    config = read_config(model_dir)
    if isinstance(dataset, str):
        from ..data.registry import open_dataset

        dataset = open_dataset(dataset)
    records, split_notes = _labelled(dataset, split, model_dir, config)
    kind = config.get("kind")
    if kind == "student":  # a student scores the images themselves; `features` is only for teacher heads
        records, pred_mean, pred_dist, excluded = _score_student(model_dir, records, settings)
        detail = {"backbone": config.get("backbone")}
    elif kind == "teacher_head":
        if features is None:
            raise IAAError(f"{model_dir} is a teacher head: pass the feature cache of this dataset (--features DIR)")
        records, pred_mean, pred_dist, excluded = _score_head(model_dir, config, records, dataset, features)
        detail = {"teachers": _teacher_names(config.get("teachers"))}
    else:
        raise IAAError(f"{model_dir}: cannot evaluate a '{kind}' artefact (expected a student or a teacher head)")
    if not records:
        raise IAAError(f"no image of split '{split}' could be scored ({len(excluded)} failed, e.g. "
                       f"{next(iter(excluded.items()), ('', ''))[0]}: {next(iter(excluded.values()), '')})")
    labels = [r.label for r in records]
    scale = tuple(dataset.scale or labels[0].scale)
    true_dist, notes = _true_distributions(labels, dataset.num_levels, pred_dist)
    notes = [*split_notes, *notes]
    model_scale = config.get("scale")
    if model_scale and tuple(map(float, model_scale)) != tuple(map(float, scale)):
        notes.append(f"the model predicts on the scale {model_scale[0]:g}..{model_scale[1]:g}, the labels are on "
                     f"{scale[0]:g}..{scale[1]:g}: correlations are comparable, accuracy/MSE/EMD are not")
    predictions = Predictions(
        [r.image_id for r in records], np.array([label.mean for label in labels]), pred_mean,
        true_dist, pred_dist,
        [r.categories for r in records], scale, dataset.num_levels, name or model_name(model_dir), dataset.name, split)
    extra = {"model_kind": kind, "model_path": str(model_dir.resolve()), **detail, "notes": notes}
    if out is None:
        return build_document(predictions, settings.threshold, settings.min_category_images, excluded, extra)
    return write_report(predictions, out, settings.threshold, settings.min_category_images, excluded, extra)
