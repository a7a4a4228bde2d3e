"""Stage 1: choose and train the teacher head on cached teacher features, then write the distillation targets.

The head is chosen among candidates (`head_candidates`) by cross-validation on the training split
(`head_selection`); the chosen MLP is then trained on the whole training split, the chosen linear head fitted
in closed form. Without val images (`val_fraction` 0) the chosen MLP is trained as in its CV folds (`epochs`
epochs, no early stopping), which is what the cross-validation scored; an MLP that no cross-validation chose
(one candidate) needs val images and is refused without them.

Reads only the feature cache (float16 memmap rows, converted to float32 per batch) and the dataset's
labels; no image is decoded. Lightning runs the loop: validation SRCC every epoch, the best epoch
kept, early stopping, a CSV log, and the run folder of `training.spine` (an interrupted run resumes from
`checkpoints/last.ckpt`; a rerun with other identity settings is refused).
The output folder then holds the head (`config.json` + `model.safetensors`), the targets of every
valid image in the cache (all splits) and `metrics.json`.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from ..artifacts import atomic_write_text
from ..data.records import Dataset, ids_hash
from ..data.splits import SPLIT_RECORD, split_record
from ..data.table import SplitTable, split_table
from ..errors import DatasetError, IAAError
from ..evaluation.metrics import plcc, srcc
from ..features.cache import FeatureCache
from ..loss_names import LabelLossName, check_name
from ..messages import get_logger
from ..score_space import ScoreSpace
from ..settings import identity
from ..targets import DistillationTargets
from ..teacher_head import TeacherHead, TeacherHeadConfig, run_head
from .head_loop import FeatureDataModule, TeacherHeadModule
from .head_candidates import HeadCandidate, candidate_config, fit_mlp_head, fit_ridge_head, parse_candidate
from .head_selection import choose, cross_validate
from .spine import (CHECKPOINTS, BestBySRCC, RunFolder, RunStamp, best_epoch, build_trainer,
                    check_counts, lightning_device)
from .teacher_config import TeacherTrainConfig

_log = get_logger(__name__)

__all__ = ["TeacherTrainConfig", "train_teacher_head"]

CV_MAX_IMAGES = 20_000  # above this the folds would hold every training feature in memory many times over
SELECTION_FILE = "selection.json"  # the CV scores and the choice, kept so that a resumed run does not redo them


def label_layout(dataset: Dataset) -> tuple[int | None, tuple[float, float]]:
    """(K or None, scale) of the dataset's labels; refuses unlabelled datasets."""
    labelled = [r.label for r in dataset.records if r.label is not None]
    if not labelled:
        raise DatasetError(f"dataset '{dataset.name}' has no labels; a teacher head needs labelled images")
    scale = tuple(dataset.scale or labelled[0].scale)
    return dataset.num_levels, (float(scale[0]), float(scale[1]))


def labelled_rows(dataset: Dataset, cache: FeatureCache, split: str) -> SplitTable:
    """The table of the labelled images of `split` that have valid features in the cache (rows: cache rows)."""
    valid = set(cache.valid_ids())
    records = [r for r in dataset.split(split) if r.label is not None and r.image_id in valid]
    return split_table(records, ScoreSpace(*label_layout(dataset)), cache.rows_for)


class TeacherDataModule(FeatureDataModule):
    """The head's data prepared from a dataset: `prepare_data` opens the feature cache (built by the features
    stage) and refuses one made for other images, `setup` builds the train/val/test tables of the labelled images
    with valid features (`splits`). Both are idempotent, so `train_teacher_head` calls `setup` before the trainer
    (it needs the tables for the run's identity and the head's cross-validation) and Lightning's calls do
    nothing more."""

    def __init__(self, dataset: Dataset, cache: str | Path | FeatureCache, config: TeacherTrainConfig):
        super().__init__(None, None, None, config.batch_size, config.seed)
        self.dataset, self.cache_dir = dataset, cache
        self.cache: FeatureCache | None = None
        self.splits: dict[str, SplitTable] = {}

    def prepare_data(self) -> None:
        if self.cache is not None:
            return
        cache = self.cache_dir if isinstance(self.cache_dir, FeatureCache) else FeatureCache.open(self.cache_dir)
        cache.check_matches(self.dataset)
        self.cache = cache

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        self.features = self.cache.features
        self.splits = {s: labelled_rows(self.dataset, self.cache, s) for s in ("train", "val", "test")}
        self.train, self.val = self.splits["train"], self.splits["val"]


def correlations(pred: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
    """SRCC and PLCC from `evaluation.metrics` (None where undefined, e.g. constant predictions)."""
    values = {"srcc": srcc(true, pred), "plcc": plcc(true, pred)}
    return {**{k: None if math.isnan(v) else v for k, v in values.items()}, "count": int(len(pred))}


class _RowView:
    """Lazy `features[rows]` for `run_head`: slices read only their own rows of the memmap."""

    def __init__(self, features: np.ndarray, rows: np.ndarray):
        self.features, self.rows = features, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: slice) -> np.ndarray:
        return self.features[self.rows[item]]


def _checked_outputs(head: TeacherHead, cache: FeatureCache, ids: list[str], rows: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    raw, aesthetic = run_head(head, _RowView(cache.features, rows))
    finite = np.isfinite(raw).all(axis=1) & np.isfinite(aesthetic).all(axis=1)
    if not finite.all():
        raise IAAError(f"the teacher head's output for image '{ids[int(np.argmin(finite))]}' is not finite; "
                       "its cached features are damaged: extract features again into a new folder")
    return raw, aesthetic


def _head_config(dataset: Dataset, cache: FeatureCache, config: TeacherTrainConfig) -> TeacherHeadConfig:
    num_levels, scale = label_layout(dataset)
    return TeacherHeadConfig(
        input_dim=cache.dim, num_levels=num_levels, scale=scale, hidden=tuple(config.hidden),
        dropout=config.dropout, teachers=cache.manifest.get("teachers", []), hflip=bool(cache.manifest.get("hflip")),
        cache_fingerprint=cache.manifest.fingerprint(), dataset_fingerprint=dataset.fingerprint(),
        synthetic_labels=dataset.synthetic_labels,
    )


def _save_head(out: Path, split: dict, module: TeacherHeadModule, entry: dict) -> None:
    """The best head so far into `out`; split: `data.splits.split_record`, kept in its config.json."""
    module.head.save_pretrained(out, **{SPLIT_RECORD: split})


def _fit(run: RunFolder, config: TeacherTrainConfig, head_config: TeacherHeadConfig, data: TeacherDataModule,
         resume: Path | None, split: dict) -> pl.Trainer:
    """Train (or resume from `resume`) the MLP head; the best epoch's head is saved into the run folder."""
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = TeacherHeadModule(asdict(head_config), {**asdict(config), "hidden": list(config.hidden)})
    accelerator, devices = lightning_device(config.device)
    hardware = {"accelerator": accelerator, "devices": devices, "precision": config.precision,
                "progress": config.progress}
    trainer = build_trainer(
        run.out, hardware, max_epochs=config.epochs, patience=config.patience,
        callbacks=[BestBySRCC(run.out, partial(_save_head, run.out, split), config.batch_size),
                   RunStamp(run.fingerprint)],
        log_every_n_steps=max(1, min(50, len(data.train) // config.batch_size)),
    )
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    return trainer


def _write_targets(out: Path, cache: FeatureCache, space: ScoreSpace) -> tuple[list[str], np.ndarray]:
    """Targets of every valid image in the cache from the best head; returns the ids and raw outputs."""
    head = TeacherHead.from_pretrained(out).cpu().eval()
    valid = cache.valid_ids()
    raw, aesthetic = _checked_outputs(head, cache, valid, cache.rows_for(valid))
    DistillationTargets(valid, aesthetic, space.target(raw), space.num_levels, space.scale,
                        dropped=dict(cache.failed)).save(out)
    return valid, raw


def _features_of(cache: FeatureCache, split: SplitTable) -> np.ndarray:
    """The split's cached features as float32, in the split's order."""
    return np.asarray(cache.features[split.rows], dtype=np.float32)


def _cross_validated(num_candidates: int, num_train: int) -> bool:
    """Whether cross-validation chooses the head: several candidates, at most `CV_MAX_IMAGES` training images."""
    return num_candidates > 1 and num_train <= CV_MAX_IMAGES


def _select_head(run: RunFolder, config: TeacherTrainConfig, head_config: TeacherHeadConfig, cache: FeatureCache,
                 train: SplitTable) -> tuple[HeadCandidate, dict[str, Any]]:
    """The chosen candidate and the record of the choice (CV on the training split only, kept in `selection.json`)."""
    candidates = [parse_candidate(s, tuple(config.hidden), config.dropout) for s in config.candidates]
    if not candidates:
        raise IAAError("no head candidates given; pass at least one, e.g. --candidates mlp")
    saved = run.out / SELECTION_FILE
    if saved.is_file():
        record = json.loads(saved.read_text())
    elif not _cross_validated(len(candidates), len(train)):
        if len(candidates) > 1:
            _log.info(f"{len(train)} training images: no cross-validation of the head above {CV_MAX_IMAGES} (an MLP "
                      f"holds up there); training the first candidate, {candidates[0].spec}")
        record = {"chosen": candidates[0].spec, "candidates": [], "cv_folds": 0, "cv_split": None}
    else:
        _log.info(f"choosing the teacher head by {config.cv_folds}-fold cross-validation on {len(train)} training "
                  f"images among {', '.join(c.spec for c in candidates)}")
        features = _features_of(cache, train)
        scores = cross_validate(candidates, features, train.labels, train.means, head_config, config, config.cv_folds)
        record = {"chosen": choose(scores).candidate.spec, "candidates": [s.as_dict() for s in scores],
                  "cv_folds": config.cv_folds, "cv_split": "train", "cv_images": len(train),
                  "rule": "the simplest candidate within one standard error of the best mean CV SRCC"}
        atomic_write_text(saved, json.dumps(record, indent=2) + "\n")
    chosen = next(c for c in candidates if c.spec == record["chosen"])
    return chosen, {**record, "kind": chosen.kind}


def _refuse_unvalidated_mlp(name: str, config: TeacherTrainConfig, num_train: int) -> None:
    """Without val images: refuse when no cross-validation will choose the head and the one trained is an MLP
    (nothing would then stop it or vouch for its epochs)."""
    first = parse_candidate(config.candidates[0], tuple(config.hidden), config.dropout) if config.candidates else None
    if not _cross_validated(len(config.candidates), num_train) and first is not None and first.kind == "mlp":
        raise IAAError(f"dataset '{name}': no val images, and the MLP head {first.spec!r} is not chosen by "
                       "cross-validation: add val images (val_fraction above 0), give several candidates "
                       "(e.g. mlp,ridge:4) or a linear one (ridge:4)")


def _fit_ridge(run: RunFolder, head_config: TeacherHeadConfig, cache: FeatureCache, splits: list[SplitTable],
               split: dict) -> None:
    """Fit the linear head on every image of `splits` (train, or train and val) and save it into the run folder
    (split: `data.splits.split_record`)."""
    features = np.concatenate([_features_of(cache, part) for part in splits])
    labels = np.concatenate([part.labels for part in splits])
    fit_ridge_head(features, labels, head_config).save_pretrained(run.out, **{SPLIT_RECORD: split})


def _metrics(run: RunFolder, epochs_trained: int, raw: np.ndarray, valid: list[str],
             splits: dict[str, SplitTable], head_config: TeacherHeadConfig, config: TeacherTrainConfig
             ) -> dict[str, Any]:
    space = head_config.space
    position = {image_id: i for i, image_id in enumerate(valid)}
    metrics: dict[str, Any] = {}
    for name in ("val", "test"):
        split = splits[name]
        mean = space.mean(torch.from_numpy(raw[[position[i] for i in split.ids]])).numpy() if len(split) else None
        metrics[name] = correlations(mean, split.means) if len(split) else None
    history = run.history()
    metrics.update(
        best_epoch=best_epoch(history)["epoch"] if history else None,
        epochs_trained=epochs_trained,
        train_images=len(splits["train"]), targets=len(valid), num_levels=space.num_levels, scale=list(space.scale),
        loss=config.loss, teachers=[t.get("name") for t in head_config.teachers],
        cache_fingerprint=head_config.cache_fingerprint, config=json.loads(json.dumps(asdict(config))),
    )
    return metrics


def train_teacher_head(
    dataset: Dataset, cache_dir: str | Path | FeatureCache, out: str | Path, config: TeacherTrainConfig | None = None
) -> dict[str, Any]:
    """Choose the head by cross-validation on the training split, train it on `cache_dir`'s features of
    `dataset`, and write head, targets and metrics into `out`.

    Returns the metrics (also in `out/metrics.json`): val/test SRCC and PLCC of the chosen head (the MLP's best
    epoch) and, under `head`, the candidates, their CV SRCC (mean, sd, per fold) and the choice.
    """
    config = config or TeacherTrainConfig()
    check_name(config.loss, LabelLossName, "loss")
    if config.epochs < 1 or config.batch_size < 2:
        raise IAAError("epochs must be at least 1 and batch size at least 2")
    data = TeacherDataModule(dataset, cache_dir, config)
    data.setup()
    cache, splits, train, val = data.cache, data.splits, data.train, data.val
    check_counts(dataset.name, len(train), len(val), 0, 2, val_optional=True)
    if not len(val):
        _refuse_unvalidated_mlp(dataset.name, config, len(train))
    head_config = _head_config(dataset, cache, config)
    run = RunFolder(out, {"train": identity(config), "head": asdict(head_config),
                          "train_ids": ids_hash(train.ids), "val_ids": ids_hash(val.ids)})
    finished = run.finished()
    if finished is not None:
        _log.info(f"{run.out}: already trained; nothing to do")
        return finished
    resume = run.start(train.ids, val.ids)
    chosen, selection = _select_head(run, config, head_config, cache, train)
    head_config = candidate_config(chosen, head_config, head_config.output_dim)
    epochs_trained, split = 0, split_record(dataset, len(val.ids))
    if chosen.kind == "ridge":
        _fit_ridge(run, head_config, cache, [train, val] if config.linear_on_val else [train], split)
    elif not len(val):  # as in its CV folds: every training image, `epochs` epochs, no early stopping
        fit_mlp_head(_features_of(cache, train), train.labels, head_config, config).save_pretrained(
            run.out, **{SPLIT_RECORD: split})
        epochs_trained = config.epochs
    else:
        epochs_trained = _fit(run, config, head_config, data, resume, split).current_epoch
    valid, raw = _write_targets(run.out, cache, head_config.space)
    metrics = {**_metrics(run, epochs_trained, raw, valid, splits, head_config, config), "head": selection}
    run.write_metrics(metrics)
    shutil.rmtree(run.out / CHECKPOINTS, ignore_errors=True)  # the head artefact is the best epoch
    return metrics
