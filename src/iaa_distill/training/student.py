"""Stage 2: train one end-to-end timm student with ground truth + feature and output distillation.

loss = label_loss(GT) + alpha * feature_distillation(student feature, teacher aesthetic feature)
                      + beta  * output_distillation(student prediction, teacher prediction)

Teacher targets come from stage 1's `DistillationTargets`; teachers never run here. The baseline
is the identical run with alpha = beta = 0 (same seed, initialisation, data order, crops, flips
and schedule), so the two differ only in the distillation terms.

Unlabelled images (records of the `unlabeled` split, see `data.unlabeled`) add
`unlabeled_ratio` x batch size images to every distilled train batch; they carry only the two
distillation terms (their GT term is masked out). The labelled part of each batch stays the
baseline's, which ignores unlabelled images.

Before the first step the layers after the backbone are fitted in closed form on its frozen features
(`training.warm_start`) and that model is validated as epoch 0; how much of the backbone then trains, epoch by
epoch, and which recipe the val split chose is `training.student_recipe`.

Under `recipe_rule: teacher` a distilled run keeps the epoch that agrees best with the teacher on held-out
unlabelled photos, or, with none to hold out, on the val images (`training.student_recipe`). Without val images
(`val_fraction` 0, so that every label trains) an epoch is chosen only by agreement with the teacher on held-out
unlabelled photos (`recipe_rule: teacher`): nothing is validated and nothing stops early on
val SRCC. A run without that signal (the label-only baseline, or too few unlabelled photos to hold out) keeps its
warm start, epoch 0, whose one choice (the ridge penalty) is made by leave-one-out on the training labels, and
trains no epoch; without a warm start either, it is refused.

Plumbing is Lightning: AdamW with separate backbone/head learning rates and no decay on
biases/norms (timm's param groups), linear warm-up + cosine decay per step (LambdaLR), gradient
clipping, optional EMA of the weights (torch AveragedModel, used for validation and the saved
model), bf16 autocast on GPU, channels_last, optional torch.compile, DDP across GPUs/nodes
(torchrun or Lightning's launcher), validation SRCC every epoch, early stopping. Output folder:

- `model/`: the best student by val SRCC (`Student.from_pretrained`), with the run's `split.json`;
- `metrics.json`: best/last validation metrics and the per-epoch history;
- `checkpoints/last.ckpt`, `run.json`, `split.json`, `history.json`: the run folder of `training.spine`
  (a rerun of the same command resumes and ends with the same result as an uninterrupted run; a rerun
  with other identity settings is refused); `logs/`: CSV logs.
A NaN/inf loss stops the run with a clear error; the checkpoint of the last good epoch stays.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric

from ..data.records import Dataset, ImageRecord, ids_hash
from ..data.splits import SPLIT_FILE, SPLIT_RECORD, split_record
from ..data.table import SplitTable, teacher_rows
from ..data.unlabeled import UNLABELED_SPLIT
from ..data.views import source_groups
from ..artifacts import atomic_write_text
from ..errors import IAAError
from ..evaluation.metrics import srcc
from ..loss_names import FeatureLossName, LabelLossName, check_name
from ..losses import feature_distillation_loss, label_loss, output_distillation_loss
from ..messages import get_logger
from ..settings import identity
from ..student import Student, StudentConfig
from ..targets import DistillationTargets
from .datamodule import DatasetDataModule, StudentDataModule
from .spine import RunFolder, RunStamp, ValidationCorrelations, build_trainer, check_counts
from .student_config import StudentTrainConfig
from .student_recipe import (ON_VAL, RecipeChoice, TeacherAgreement, choice_lines, hold_out, kept_epoch, phase,
                             recipe_report, resolve_schedule, set_phase, thaw_epoch)
from .warm_start import (WarmStartData, cached_images, fit_warm_start, pooled_features, predict_raw, sharpen,
                         validation_entry)

_log = get_logger(__name__)

MIN_VAL_IMAGES = 4
WARM_START_FILE = "warm_start.json"
PROBE_DIR = "probe"  # the baseline's warm start: the frozen-feature linear probe on the student's backbone


class TrainingDiverged(IAAError):
    """The training loss became NaN or infinite."""


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """LR factor: linear warm-up from ~0 to 1 over `warmup` steps, then cosine from 1 to `floor` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def delayed_warmup_cosine(step: int, start: int, warmup: int, total: int, floor: float) -> float:
    """0 before `start` (a frozen part), then `warmup_cosine` over the remaining steps."""
    if step < start:
        return 0.0
    return warmup_cosine(step - start, warmup, max(1, total - start), floor)


class StudentModule(pl.LightningModule):
    """The student, its optional EMA copy, the combined loss and validation SRCC/PLCC."""

    def __init__(self, student_config: dict, train_config: dict, schedule: str = "full"):
        """schedule: `student_recipe.resolve_schedule` of the run (what `finetune: auto` means for its data)."""
        super().__init__()
        self.save_hyperparameters()
        self.cfg = StudentTrainConfig.from_dict(train_config)
        self.schedule = schedule
        self.model = Student.create(StudentConfig.from_dict(student_config), self.cfg.pretrained, self.cfg.weights)
        self.space = self.model.config.space
        distill_dim = self.model.config.distill_dim
        # The projection stays as the warm start set it (whitened principal components): Adam moves each of its
        # weights by about lr per step, which shifts every feature by lr x |z|_1 (~1,400 lr for lite0's 1,808
        # standardised MLSP values) and wrecks the probe. The backbone before it and the layers after it learn.
        self.model.project.requires_grad_(False)
        # the teacher's aesthetic feature is distilled standardised (set by `standardise_teacher_features`)
        self.register_buffer("teacher_mean", torch.zeros(distill_dim))
        self.register_buffer("teacher_std", torch.ones(distill_dim))
        self.ema: AveragedModel | None = None
        if self.cfg.ema:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        self.val_loss = MeanMetric()
        self.val_correlations = ValidationCorrelations()
        self.agreement: TeacherAgreement | None = None  # what rule `teacher` agrees on (set by train_student)
        self.val_ids: list[str] = []  # the image of each of `val_predictions` (set with them)
        self._runtime: dict = {}  # the compiled forward (kept out of the state dict)

    @property
    def eval_model(self) -> Student:
        """The weights that are validated and saved: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def num_levels(self) -> int | None:
        return self.space.num_levels

    def setup(self, stage: str) -> None:
        """Before DDP wraps the model: channels_last weights, compiled forward."""
        if self.cfg.channels_last:
            self.to(memory_format=torch.channels_last)
        self._runtime["forward"] = torch.compile(self.model) if self.cfg.compile else self.model

    def phase(self, epoch: int) -> str:
        """What trains in 1-based `epoch`: probe (frozen backbone), partial or full (`training.student_recipe`)."""
        return phase(epoch, self.schedule, self.cfg.freeze_epochs, self.cfg.partial_epochs)

    def standardise_teacher_features(self, features: np.ndarray) -> None:
        """Per-dimension mean/std of the teacher's aesthetic feature on the training rows."""
        self.teacher_mean.copy_(torch.from_numpy(features.mean(0)))
        self.teacher_std.copy_(torch.from_numpy(features.std(0) + 1e-6))

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        set_phase(self.model, self.phase(self.current_epoch + 1))

    def _images(self, batch: dict) -> torch.Tensor:
        images = batch["image"].float().div_(255)
        return images.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else images

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        raw, feature = self._runtime.get("forward", self.model)(self._images(batch))
        raw, feature = raw.float(), feature.float()
        rated = batch.get("labelled")  # unlabelled rows (distillation only) have no GT term
        rated = slice(None) if rated is None else rated
        parts = {"label": label_loss(raw[rated], batch["label"][rated], self.num_levels, self.cfg.loss,
                                     self.cfg.rank_weight)}
        loss = parts["label"]
        if self.cfg.alpha:
            teacher = (batch["feature"] - self.teacher_mean) / self.teacher_std
            parts["feature"] = feature_distillation_loss(self.model.distilled_feature(feature), teacher,
                                                         kind=self.cfg.feature_loss)
            loss = loss + self.cfg.alpha * parts["feature"]
        if self.cfg.beta:
            parts["output"] = output_distillation_loss(raw, batch["teacher"], self.num_levels)
            loss = loss + self.cfg.beta * parts["output"]
        self._check_finite(loss, parts)
        self.log("train_loss", loss, prog_bar=True)
        for name, value in parts.items():
            self.log(f"train_{name}_loss", value)
        return loss

    def _check_finite(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """Stop every rank together (before the optimizer step) when the loss is NaN/inf."""
        bad = not bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            values = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
            raise TrainingDiverged(
                f"training diverged: the loss is not finite at epoch {self.current_epoch + 1}, step "
                f"{self.global_step} ({values}); stopped before updating the weights. The last good state is "
                "in checkpoints/last.ckpt and the best model in model/; lower the learning rates or check the labels"
            )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        raw, _ = self.eval_model(self._images(batch))
        raw = raw.float()
        self.val_loss.update(label_loss(raw, batch["label"], self.num_levels, self.cfg.loss, self.cfg.rank_weight))
        self.val_correlations.update(self.space.mean(raw), batch["mean"], batch["index"])
        self.log("val_loss", self.val_loss)

    def on_validation_epoch_end(self) -> None:
        pred, true, index = self.val_correlations.log(self)
        self.val_predictions = pred, true  # for `RecipeChoice`
        self.val_ids = [self.trainer.datamodule.val.ids[i] for i in index]
        self.measure_agreement()

    def measure_agreement(self) -> None:
        """Set `val_agreement` for `RecipeChoice`: the validated model's agreement with the teacher (None with
        nothing to agree on). On the val images it is the validation pass's own predictions, matched by image."""
        if self.agreement is None:
            self.val_agreement = None
        elif self.agreement.on == ON_VAL:
            self.val_agreement = self.agreement.of_predictions(self.val_ids, self.val_predictions[0])
        else:
            self.val_agreement = self.agreement(self.eval_model)

    def configure_optimizers(self):
        groups = []
        head = nn.ModuleList([m for m in (self.model.head, self.model.distill) if m is not None])
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs)
        warmup = round(self.cfg.warmup_epochs * per_epoch)
        thaw = thaw_epoch(self.schedule, self.cfg.freeze_epochs)
        factors = []
        for part, lr, start in ((self.model.backbone, self.cfg.backbone_lr, round((thaw or 0) * per_epoch)),
                                (head, self.cfg.head_lr, 0)):
            factor = partial(delayed_warmup_cosine, start=start if thaw is not None else total, warmup=warmup,
                             total=total, floor=self.cfg.min_lr_ratio)
            for group in param_groups_weight_decay(part, self.cfg.weight_decay):
                groups.append({**group, "lr": lr})
                factors.append(factor)
        optimizer = torch.optim.AdamW(groups)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _labelled(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    return [r for r in records if r.label is not None]


def _precision(config: StudentTrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def _strategy(config: StudentTrainConfig) -> str:
    """DDP must tolerate parameters without gradients: the backbone (or part of it) is frozen in some epochs."""
    if config.strategy in ("ddp", "ddp_spawn") or (config.strategy == "auto" and _world_size(config) > 1):
        return f"{'ddp' if config.strategy == 'auto' else config.strategy}_find_unused_parameters_true"
    return config.strategy


def _world_size(config: StudentTrainConfig) -> int:
    devices = config.devices if isinstance(config.devices, int) else 1
    return max(1, devices) * max(1, config.num_nodes)


def _check_counts(name: str, n_train: int, n_val: int, config: StudentTrainConfig, held_out: bool) -> None:
    """One full batch per process (the last partial batch of an epoch is dropped) plus MIN_TRAIN_IMAGES; no val
    images when something else chooses: the warm start, or agreement with the teacher on `held_out` photos."""
    check_counts(name, n_train, n_val, config.batch_size * _world_size(config), MIN_VAL_IMAGES,
                 val_optional=config.warm_start or held_out,
                 hint="; without val images a run needs warm_start on, or recipe_rule teacher with unlabelled photos")


def _load_targets(targets_dir: str | Path | None, dataset: Dataset, distill: bool) -> DistillationTargets | None:
    """The teacher's targets (checked against the dataset's labels), or None for a baseline without them."""
    targets = DistillationTargets.load(targets_dir) if targets_dir else None
    if distill and targets is None:
        raise IAAError("distillation (alpha or beta > 0) needs the teacher's targets: pass --targets TEACHER_DIR "
                       "(written by `iaa train-teacher`), or use --baseline")
    if targets is not None:
        if targets.num_levels != dataset.num_levels or tuple(targets.scale) != tuple(dataset.scale):
            raise IAAError(f"{targets_dir}: targets predict {targets.num_levels or 'a scalar'} levels on scale "
                           f"{tuple(targets.scale)}, dataset '{dataset.name}' has {dataset.num_levels or 'a scalar'} "
                           f"on {tuple(dataset.scale)}: the teacher head was trained on other labels")
    return targets


def _unlabelled_records(dataset: Dataset, config: StudentTrainConfig,
                        targets: DistillationTargets | None) -> list[ImageRecord]:
    """The unlabelled images a distilled run trains on: those with teacher targets (none for the baseline)."""
    records = dataset.split(UNLABELED_SPLIT)
    if not records or not config.distilled or not config.unlabeled_ratio:
        return []
    covered = set(targets.ids)
    usable = [r for r in records if r.image_id in covered]
    if not usable:
        raise IAAError(f"{targets.source}: the teacher's targets cover none of the {len(records)} unlabelled images; "
                       "extract features and train the teacher head on the dataset with its unlabelled images "
                       "(`iaa fit` with `unlabeled:` in the recipe does every stage)")
    if len(usable) < len(records):
        _log.info(f"{len(records) - len(usable)} unlabelled image(s) without teacher targets (unreadable when the "
                  "features were extracted) left out")
    return usable


def _student_config(config: StudentTrainConfig, dataset: Dataset, targets: DistillationTargets | None
                    ) -> StudentConfig:
    """The architecture of the run's student: its backbone, the dataset's labels, the teacher's feature width."""
    sizes = {k: v for k, v in (("input_size", config.input_size), ("train_resize", config.train_resize)) if v}
    return StudentConfig.for_backbone(
        config.backbone, num_levels=dataset.num_levels, scale=tuple(dataset.scale), feature_dim=config.feature_dim,
        pooling=config.pooling, distill_dim=targets.features.shape[1] if config.alpha and targets else 0,
        synthetic_labels=dataset.synthetic_labels, **sizes)


def _run_identity(dataset: Dataset, config: StudentTrainConfig, student_config: StudentConfig, baseline: bool,
                  splits: tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]],
                  targets_dir: str | Path | None) -> dict:
    return {
        "train": identity(config), "student": asdict(student_config), "baseline": baseline,
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "train_ids": ids_hash([r.image_id for r in splits[0]]), "val_ids": ids_hash([r.image_id for r in splits[1]]),
        "unlabeled_ids": ids_hash([r.image_id for r in splits[2]]),
        "targets": str(Path(targets_dir).resolve()) if targets_dir and config.distilled else None,
    }


def train_student(
    dataset: Dataset,
    out: str | Path,
    config: StudentTrainConfig | None = None,
    targets_dir: str | Path | None = None,
    baseline: bool = False,
    image_cache_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train (or resume, or return the finished result of) one stage-2 run into `out`; returns metrics.json's dict.

    baseline=True forces alpha = beta = 0 and needs no targets (given targets are only checked).
    image_cache_dir: root of the pre-resized image caches (default `$IAA_CACHE_DIR/images` or ~/.cache).
    callbacks: extra Lightning callbacks.
    """
    config = replace(config or StudentTrainConfig(), **({"alpha": 0.0, "beta": 0.0} if baseline else {}))
    check_name(config.loss, LabelLossName, "loss")
    check_name(config.feature_loss, FeatureLossName, "feature loss")
    if dataset.num_levels is None and dataset.scale is None:
        raise IAAError(f"dataset '{dataset.name}' has no labels: student training needs rated images")
    targets = _load_targets(targets_dir, dataset, config.distilled)
    if targets is not None:  # the images the teacher's features could not read are left out, as `iaa fit` does
        dataset = dataset.without(targets.dropped)
    labelled = _labelled(dataset.split("train")), _labelled(dataset.split("val"))
    if config.distilled:
        targets.rows_for([r.image_id for r in labelled[0] + labelled[1]])
    unlabelled, held_out = _unlabelled_records(dataset, config, targets), []
    if config.recipe_rule == "teacher":  # a seeded share left out of training, to choose the epoch on
        unlabelled, held_out = hold_out(unlabelled, config.seed)
    _check_counts(dataset.name, len(labelled[0]), len(labelled[1]), config, bool(held_out))
    splits = (*labelled, unlabelled)
    student_config = _student_config(config, dataset, targets)
    run = RunFolder(out, _run_identity(dataset, config, student_config, baseline, splits, targets_dir))
    finished = run.finished()
    if finished is not None:
        kept = finished["best_val_srcc"]
        what = f"best val SRCC {kept:.4f}" if kept is not None else f"epoch {finished['best_epoch']} kept"
        _log.info(f"{run.out}: already trained ({what}); nothing to do")
        return finished
    data = DatasetDataModule(dataset, splits, config, student_config, targets if config.distilled else None,
                             image_cache_dir)
    data.setup("fit")  # image caches built, undecodable images left out: the counts the schedule needs
    counts, excluded = data.counts, data.excluded
    _check_counts(dataset.name, counts[0], counts[1], config, bool(held_out))
    resume = run.start([r.image_id for r in splits[0]], [r.image_id for r in splits[1]])
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = StudentModule(asdict(student_config), asdict(config), resolve_schedule(config.finetune, counts[0]))
    module.agreement = _teacher_agreement(data, held_out, targets, config.recipe_rule)
    if data.train.features is not None:
        module.standardise_teacher_features(data.train.features)
    validated = counts[1] > 0
    extra = _model_extra(run, config, baseline, split_record(dataset, len(splits[1])))
    trainer = _trainer(run, config, extra, callbacks, module.schedule, validated)
    start = time.perf_counter()
    if resume is None:
        _epoch_zero(run, module, trainer, data, config, baseline, extra)
    if validated or module.agreement is not None:  # else the warm start is kept (`choice_lines` says so)
        _fit(trainer, module, data, resume)
    if not trainer.is_global_zero:
        return {}
    metrics = _write_metrics(run, trainer, config, student_config, baseline, counts, excluded,
                             time.perf_counter() - start, module.schedule, _teacher_val_srcc(data.val, module.space),
                             module.agreement)
    for line in choice_lines(metrics):
        _log.info(line)
    return metrics


def _epoch_zero(run: RunFolder, module: StudentModule, trainer: pl.Trainer, data: StudentDataModule,
                config: StudentTrainConfig, baseline: bool, extra: dict) -> None:
    """Warm start (when on), then the starting model validated and kept as epoch 0; the baseline's warm start
    (the frozen-feature linear probe) is also saved as `probe/`. Deterministic: every process computes the same.
    extra: `_model_extra`."""
    start = time.perf_counter()
    report = {}
    if config.warm_start:
        train = data.train
        teacher = None if train.features is None else (
            (train.features - module.teacher_mean.numpy()) / module.teacher_std.numpy())
        fit_rows = WarmStartData(train.source, train.rows, train.labels[:len(train) - train.num_unlabeled],
                                 teacher, train.predictions, source_groups(train.ids))
        pooled = pooled_features(module.model, fit_rows, config.progress and trainer.is_global_zero)
        report = fit_warm_start(module.model, pooled, fit_rows, config.beta)
    entry, module.val_predictions = {}, (np.empty(0), np.empty(0))
    if len(data.val):  # without val images the distribution's spread is not sharpened (nothing to match)
        raw = predict_raw(module.model, cached_images(data.val.source, data.val.rows, module.model.config.input_size))
        if report and module.num_levels:
            raw, report["sharpness"] = sharpen(module.model, raw, data.val.labels)
        entry = validation_entry(module.space, raw, data.val.labels, data.val.means,
                                 lambda raw, y: label_loss(raw, y, module.num_levels, config.loss, config.rank_weight))
        module.val_predictions = module.space.mean(raw).double().numpy(), data.val.means
        module.val_ids = list(data.val.ids)
    if module.ema is not None:
        module.ema.module.load_state_dict(module.model.state_dict())
    entry = {"epoch": 0, "step": 0, **entry, "train_seconds": round(time.perf_counter() - start, 3)}
    module.measure_agreement()
    next(c for c in trainer.callbacks if isinstance(c, RecipeChoice)).record(module, entry, trainer.is_global_zero)
    if trainer.is_global_zero:
        atomic_write_text(run.out / WARM_START_FILE, json.dumps({"warm_start": report, "epoch_0": entry},
                                                                indent=1) + "\n")
        if baseline and report:
            _save_best(run.out, {**extra, "linear_probe": True}, module, entry, folder=PROBE_DIR)
    module.model.train()


def _teacher_val_srcc(val: SplitTable, space) -> float | None:
    """SRCC of the teacher's predictions on the val images (None without teacher rows or val images)."""
    if val.predictions is None or not len(val):
        return None
    return srcc(val.means, _teacher_means(val.predictions, space))


def _teacher_means(predictions: np.ndarray, space) -> np.ndarray:
    """The teacher's mean score on the label scale from its predictions (distributions or normalised scores)."""
    return space.target_mean(torch.from_numpy(np.asarray(predictions, np.float32))).double().numpy()


def _teacher_agreement(data: DatasetDataModule, held_out: list[ImageRecord], targets: DistillationTargets | None,
                       rule: str) -> TeacherAgreement | None:
    """What rule `teacher` agrees with the teacher on, with the teacher's mean scores: the held-out unlabelled
    photos (read from the train image cache, which holds every unlabelled photo), else the val images of a
    distilled run; None for another rule, for the baseline (its tables carry no teacher predictions) and
    without either."""
    if rule != "teacher" or targets is None:
        return None
    train_cache, space = data.caches[0], data.student_config.space
    held = [r for r in held_out if r.image_id not in train_cache.failed]
    if held:
        return TeacherAgreement(train_cache.path, train_cache.rows_for([r.image_id for r in held]),
                                _teacher_means(teacher_rows(held, targets)[1], space))
    if not len(data.val) or data.val.predictions is None:
        return None
    return TeacherAgreement(data.val.source, data.val.rows, _teacher_means(data.val.predictions, space), ON_VAL,
                            list(data.val.ids))


def _save_best(out: Path, extra: dict, module: StudentModule, entry: dict, folder: str = "model") -> None:
    """The best student so far into out/model (or another `folder`), with the run's split."""
    model_dir = module.eval_model.save_pretrained(out / folder, **extra, epoch=entry["epoch"],
                                                  val_srcc=entry.get("val_srcc"), val_plcc=entry.get("val_plcc"))
    shutil.copyfile(out / SPLIT_FILE, Path(model_dir) / SPLIT_FILE)


def _model_extra(run: RunFolder, config: StudentTrainConfig, baseline: bool, split: dict) -> dict:
    """What a saved student's config.json records about its run; split: `data.splits.split_record`."""
    return {"dataset": run.identity["dataset"], "dataset_fingerprint": run.identity["dataset_fingerprint"],
            "baseline": baseline, "alpha": config.alpha, "beta": config.beta, SPLIT_RECORD: split}


def _trainer(run: RunFolder, config: StudentTrainConfig, extra: dict, callbacks: Sequence[Callback],
             schedule: str, validated: bool) -> pl.Trainer:
    """extra: `_model_extra`. validated: False without val images (no validation, no early stopping on val SRCC)."""
    save_best = partial(_save_best, run.out, extra)
    phase_of = partial(phase, schedule=schedule, freeze_epochs=config.freeze_epochs,
                       partial_epochs=config.partial_epochs)
    hardware = {**config.hardware(), "precision": _precision(config), "strategy": _strategy(config)}
    return build_trainer(run.out, hardware, max_epochs=config.epochs, patience=config.patience if validated else None,
                         callbacks=[RecipeChoice(run.out, save_best, config.batch_size, phase_of, config.recipe_rule,
                                                 config.agreement_patience, validated),
                                    RunStamp(run.fingerprint),
                                    *callbacks],
                         gradient_clip_val=config.grad_clip or None, use_distributed_sampler=False,
                         log_every_n_steps=10)


def _fit(trainer: pl.Trainer, module: StudentModule, data: StudentDataModule, resume: Path | None) -> None:
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    except Exception as exc:  # a divergence inside spawned DDP workers arrives wrapped: unwrap the message
        lines = [line for line in str(exc).splitlines() if "training diverged:" in line]
        if lines and not isinstance(exc, TrainingDiverged):
            raise TrainingDiverged(lines[-1].split("TrainingDiverged: ", 1)[-1]) from None
        raise
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        _close_progress_bars(trainer)


def _close_progress_bars(trainer: pl.Trainer) -> None:
    """A run stopped by an exception leaves tqdm bars open; they would print again at interpreter exit."""
    bar = trainer.progress_bar_callback
    for name in ("_train_progress_bar", "_val_progress_bar"):
        progress = getattr(bar, name, None)
        if progress is not None:
            progress.close()


def _write_metrics(run: RunFolder, trainer: pl.Trainer, config: StudentTrainConfig, student_config: StudentConfig,
                   baseline: bool, counts: tuple[int, int, int], excluded: list[str], seconds: float,
                   schedule: str, teacher_val_srcc: float | None, agreement: TeacherAgreement | None = None) -> dict:
    history = run.history()
    if not history:
        raise IAAError(f"{run.out}: training ended without a single validated epoch")
    best = kept_epoch(history)
    start = run.out / WARM_START_FILE
    return run.write_metrics({
        "recipe": recipe_report(history, best["epoch"], schedule, config.freeze_epochs, config.partial_epochs,
                                counts[1], config.recipe_rule, agreement),
        "warm_start": json.loads(start.read_text()) if start.is_file() else None,
        "teacher_val_srcc": teacher_val_srcc, "pooling": student_config.pooling,
        "kind": "student_training", "baseline": baseline, "backbone": student_config.backbone,
        "dataset": run.identity["dataset"], "alpha": config.alpha, "beta": config.beta,
        "best_val_srcc": best.get("val_srcc"), "best_val_plcc": best.get("val_plcc"), "best_epoch": best["epoch"],
        "last_val_srcc": history[-1].get("val_srcc"), "epochs_completed": history[-1]["epoch"],
        "stopped_early": history[-1]["epoch"] < config.epochs,
        "num_train": counts[0], "num_val": counts[1], "num_unlabeled": counts[2], "excluded_images": excluded, "world_size": trainer.world_size,
        "fit_seconds": round(seconds, 2), "model_dir": "model", "history": history,
    })
