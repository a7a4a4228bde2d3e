"""Stage 2: train one end-to-end timm student with ground truth + feature and output distillation.

loss = label_loss(GT) + alpha * feature_distillation(student feature, teacher aesthetic feature)
                      + beta  * output_distillation(student prediction, teacher prediction)

Teacher targets come from stage 1's `DistillationTargets`; teachers never run here. The baseline
is the identical run with alpha = beta = 0 (same seed, initialisation, data order, crops, flips
and schedule), so the two differ only in the distillation terms.

Plumbing is Lightning: AdamW with separate backbone/head learning rates and no decay on
biases/norms (timm's param groups), linear warm-up + cosine decay per step (LambdaLR), gradient
clipping, optional EMA of the weights (torch AveragedModel, used for validation and the saved
model), bf16 autocast on GPU, channels_last, optional torch.compile, DDP across GPUs/nodes
(torchrun or Lightning's launcher), validation SRCC every epoch, early stopping. Output folder:

- `model/`: the best student by val SRCC (`Student.from_pretrained`);
- `metrics.json`: best/last validation metrics and the per-epoch history;
- `checkpoints/last.ckpt`: full training state at the end of the last epoch; rerunning the same
  command resumes from it and ends with the same result as an uninterrupted run;
- `run.json`: the settings of the run (a rerun with other settings is refused); `logs/`: CSV logs.
A NaN/inf loss stops the run with a clear error; the checkpoint of the last good epoch stays.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric, PearsonCorrCoef, SpearmanCorrCoef

from ..artifacts import atomic_write_text
from ..data.records import Dataset, ImageRecord
from ..errors import IAAError
from ..losses import feature_distillation_loss, label_loss, output_distillation_loss
from ..student import Student, StudentConfig, prediction_to_mean
from ..targets import DistillationTargets
from .datamodule import SplitArrays, StudentDataModule
from .image_cache import ensure_image_cache, ids_hash
from .student_config import StudentTrainConfig

MIN_TRAIN_IMAGES = 16
MIN_VAL_IMAGES = 4
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
# Settings that may change between an interrupted run and its resumption.
RESUME_FREE = ("num_workers", "progress")


class TrainingDiverged(IAAError):
    """The training loss became NaN or infinite."""


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """LR factor: linear warm-up from ~0 to 1 over `warmup` steps, then cosine from 1 to `floor` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class StudentModule(pl.LightningModule):
    """The student, its optional EMA copy, the combined loss and validation SRCC/PLCC."""

    def __init__(self, student_config: dict, train_config: dict):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = StudentTrainConfig.from_dict(train_config)
        self.model = Student.create(StudentConfig.from_dict(student_config), self.cfg.pretrained, self.cfg.weights)
        self.ema: AveragedModel | None = None
        if self.cfg.ema:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        self.val_srcc, self.val_plcc, self.val_loss = SpearmanCorrCoef(), PearsonCorrCoef(), MeanMetric()
        self._runtime: dict = {}  # the compiled forward (kept out of the state dict)

    @property
    def eval_model(self) -> Student:
        """The weights that are validated and saved: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def num_levels(self) -> int | None:
        return self.model.config.num_levels

    def setup(self, stage: str) -> None:
        """Before DDP wraps the model: channels_last weights, compiled forward."""
        if self.cfg.channels_last:
            self.to(memory_format=torch.channels_last)
        self._runtime["forward"] = torch.compile(self.model) if self.cfg.compile else self.model

    def _images(self, batch: dict) -> torch.Tensor:
        images = batch["image"].float().div_(255)
        return images.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else images

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        raw, feature = self._runtime.get("forward", self.model)(self._images(batch))
        raw, feature = raw.float(), feature.float()
        parts = {"label": label_loss(raw, batch["label"], self.num_levels, self.cfg.loss, self.cfg.rank_weight)}
        loss = parts["label"]
        if self.cfg.alpha:
            parts["feature"] = feature_distillation_loss(feature, batch["feature"], kind=self.cfg.feature_loss)
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
        model = self.eval_model
        raw, _ = model(self._images(batch))
        raw = raw.float()
        mean, _ = prediction_to_mean(raw, model.levels, self.num_levels)
        self.val_loss.update(label_loss(raw, batch["label"], self.num_levels, self.cfg.loss, self.cfg.rank_weight))
        self.val_srcc.update(mean, batch["mean"])
        self.val_plcc.update(mean, batch["mean"])
        self.log("val_srcc", self.val_srcc, prog_bar=True)
        self.log("val_plcc", self.val_plcc)
        self.log("val_loss", self.val_loss)

    def configure_optimizers(self):
        groups = []
        head = nn.ModuleList([self.model.project, self.model.head])
        for part, lr in ((self.model.backbone, self.cfg.backbone_lr), (head, self.cfg.head_lr)):
            for group in param_groups_weight_decay(part, self.cfg.weight_decay):
                groups.append({**group, "lr": lr})
        optimizer = torch.optim.AdamW(groups)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.cfg.warmup_epochs * total / max(1, self.trainer.max_epochs))
        factor = partial(warmup_cosine, warmup=warmup, total=total, floor=self.cfg.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])


class BestStudent(Callback):
    """After each validation: record the epoch's metrics and save the student when val SRCC improves."""

    def __init__(self, out: Path, extra: dict):
        self.out, self.extra = out, extra
        self.best = -math.inf
        self.history: list[dict] = []
        self._epoch_start, self._train_seconds, self._steps_at_start = 0.0, 0.0, 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._steps_at_start = time.perf_counter(), trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_seconds = time.perf_counter() - self._epoch_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: StudentModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        images = (trainer.global_step - self._steps_at_start) * pl_module.cfg.batch_size * trainer.world_size
        entry = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                 **{k: metrics[k] for k in ("val_srcc", "val_plcc", "val_loss", "train_loss") if k in metrics},
                 "train_seconds": round(self._train_seconds, 3),
                 "train_images_per_second": round(images / max(self._train_seconds, 1e-9), 1)}
        self.history.append(entry)
        srcc = entry["val_srcc"] if math.isfinite(entry.get("val_srcc", math.nan)) else -2.0
        improved = srcc > self.best
        if improved:
            self.best = srcc
        if trainer.is_global_zero:
            if improved:
                pl_module.eval_model.save_pretrained(self.out / "model", **self.extra, epoch=entry["epoch"],
                                                     val_srcc=entry.get("val_srcc"), val_plcc=entry.get("val_plcc"))
            atomic_write_text(self.out / HISTORY_FILE, json.dumps(self.history, indent=1) + "\n")

    def state_dict(self) -> dict:
        return {"best": self.best, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.history = state_dict["best"], state_dict["history"]


def _labelled(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    return [r for r in records if r.label is not None]


def _label_arrays(records: Sequence[ImageRecord], num_levels: int | None, scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """GT in the student's output space (distribution, or score normalised to [0, 1]) and GT means."""
    means = np.array([r.label.mean for r in records], dtype=np.float32)
    if num_levels:
        labels = []
        for r in records:
            if r.label.num_levels != num_levels:
                raise IAAError(f"{r.image_id}: label has {r.label.num_levels or 'no'} vote levels, the dataset {num_levels}")
            labels.append(r.label.distribution())
        return np.asarray(labels, dtype=np.float32), means
    low, high = scale
    return ((means - low) / (high - low)).astype(np.float32), means


def _world_size(config: StudentTrainConfig) -> int:
    devices = config.devices if isinstance(config.devices, int) else 1
    return max(1, devices) * max(1, config.num_nodes)


def _precision(config: StudentTrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def _flat_settings(settings: dict) -> dict:
    """Settings as JSON would give them back, nested keys flattened, resume-free ones dropped."""
    plain = json.loads(json.dumps(settings))
    flat = {k: v for k, v in plain.items() if not isinstance(v, dict)}
    for group in ("train", "student"):
        flat.update({f"{group}.{k}": v for k, v in plain[group].items() if k not in RESUME_FREE})
    return flat


def _check_run_settings(out: Path, settings: dict) -> dict | None:
    """Refuse to resume a run made with other settings; return its metrics when it already finished."""
    started = (out / "checkpoints" / "last.ckpt").is_file() or (out / METRICS_FILE).is_file()
    if not started or not (out / RUN_FILE).is_file():
        return None
    old, new = _flat_settings(json.loads((out / RUN_FILE).read_text())), _flat_settings(settings)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise IAAError(f"{out} holds a run with other settings (changed: {', '.join(changed)}); "
                       "choose a new --out or delete that folder")
    metrics = out / METRICS_FILE
    return json.loads(metrics.read_text()) if metrics.is_file() else None


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

    baseline=True forces alpha = beta = 0 and needs no targets (given targets only set `feature_dim`).
    image_cache_dir: root of the pre-resized image caches (default `$IAA_CACHE_DIR/images` or ~/.cache).
    callbacks: extra Lightning callbacks.
    """
    config = config or StudentTrainConfig()
    if baseline:
        config = replace(config, alpha=0.0, beta=0.0)
    if config.loss not in ("emd", "mse", "l1") or config.feature_loss not in ("mse", "cosine"):
        raise IAAError(f"unknown loss: loss='{config.loss}' (emd, mse, l1), feature_loss='{config.feature_loss}' (mse, cosine)")
    distill = bool(config.alpha or config.beta)
    out = Path(out).expanduser()
    if dataset.num_levels is None and dataset.scale is None:
        raise IAAError(f"dataset '{dataset.name}' has no labels: student training needs rated images")
    train_records, val_records = _labelled(dataset.split("train")), _labelled(dataset.split("val"))
    _check_counts(dataset.name, len(train_records), len(val_records), config)

    targets = DistillationTargets.load(targets_dir) if targets_dir else None
    if distill and targets is None:
        raise IAAError("distillation (alpha or beta > 0) needs the teacher's targets: pass --targets TEACHER_DIR "
                       "(written by `iaa train-teacher`), or use --baseline")
    if targets is not None:
        if targets.num_levels != dataset.num_levels or tuple(targets.scale) != tuple(dataset.scale):
            raise IAAError(f"{targets_dir}: targets predict {targets.num_levels or 'a scalar'} levels on scale "
                           f"{tuple(targets.scale)}, dataset '{dataset.name}' has {dataset.num_levels or 'a scalar'} "
                           f"on {tuple(dataset.scale)}: the teacher head was trained on other labels")
        if distill:
            targets.rows_for([r.image_id for r in train_records + val_records])
    feature_dim = config.feature_dim or (targets.features.shape[1] if targets is not None else 256)
    sizes = {k: v for k, v in (("input_size", config.input_size), ("train_resize", config.train_resize)) if v}
    student_config = StudentConfig.for_backbone(config.backbone, num_levels=dataset.num_levels,
                                                scale=tuple(dataset.scale), feature_dim=feature_dim,
                                                synthetic_labels=dataset.synthetic_labels, **sizes)

    settings = {
        "train": asdict(config), "student": asdict(student_config), "baseline": baseline,
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "train_ids": ids_hash([r.image_id for r in train_records]), "val_ids": ids_hash([r.image_id for r in val_records]),
        "targets": str(Path(targets_dir).resolve()) if targets_dir and distill else None,
    }
    finished = _check_run_settings(out, settings)
    if finished is not None:
        print(f"{out}: already trained (best val SRCC {finished['best_val_srcc']:.4f}); nothing to do", flush=True)
        return finished
    atomic_write_text(out / RUN_FILE, json.dumps(settings, indent=2) + "\n")  # identical on every rank

    cache_kw = dict(root=image_cache_dir, interpolation=student_config.interpolation,
                    dataset_fingerprint=dataset.fingerprint(), num_workers=config.num_workers)
    used = {r.image_id for r in train_records + val_records}
    pool = [r for r in dataset.records if r.image_id in used]  # train+val in dataset order: stable across val splits
    train_cache = ensure_image_cache(pool, student_config.train_resize, name=f"{dataset.name}-train", **cache_kw)
    val_cache = ensure_image_cache(val_records, student_config.input_size, name=f"{dataset.name}-val", **cache_kw)
    train_records = [r for r in train_records if r.image_id not in train_cache.failed]
    val_records = [r for r in val_records if r.image_id not in val_cache.failed]
    excluded = sorted(set(train_cache.failed) | set(val_cache.failed))
    if excluded:
        print(f"excluded {len(excluded)} undecodable image(s) from training (listed in the image caches' failed.json)",
              flush=True)
    _check_counts(dataset.name, len(train_records), len(val_records), config)

    def split_arrays(records: list[ImageRecord], cache) -> SplitArrays:
        labels, means = _label_arrays(records, dataset.num_levels, tuple(dataset.scale))
        split = SplitArrays(cache.path, cache.rows_for([r.image_id for r in records]), labels, means)
        if distill:
            rows = targets.rows_for([r.image_id for r in records])
            split.features, split.predictions = targets.features[rows], targets.predictions[rows]
            finite = np.isfinite(split.features).all(1) & np.isfinite(split.predictions.reshape(len(rows), -1)).all(1)
            if not finite.all():
                raise IAAError(f"{targets_dir}: the distillation targets of {int((~finite).sum())} images are not "
                               f"finite (e.g. '{records[int(np.argmin(finite))].image_id}'); retrain the teacher head")
        return split

    data = StudentDataModule(split_arrays(train_records, train_cache), split_arrays(val_records, val_cache),
                             student_config.train_resize, student_config.input_size, config.batch_size,
                             config.num_workers, config.seed, config.hflip)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = StudentModule(asdict(student_config), asdict(config))
    extra = {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(), "baseline": baseline,
             "alpha": config.alpha, "beta": config.beta}
    trainer = pl.Trainer(
        default_root_dir=out, max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
        num_nodes=config.num_nodes, strategy=config.strategy, precision=_precision(config),
        gradient_clip_val=config.grad_clip or None, use_distributed_sampler=False, num_sanity_val_steps=0,
        deterministic=config.deterministic if config.deterministic is not None else not torch.cuda.is_available(),
        logger=CSVLogger(out, name="logs"), log_every_n_steps=10, enable_model_summary=False,
        enable_progress_bar=config.progress,
        callbacks=[
            BestStudent(out, extra),
            EarlyStopping("val_srcc", mode="max", patience=config.patience, check_finite=False),
            ModelCheckpoint(dirpath=out / "checkpoints", filename="last", enable_version_counter=False),
            *callbacks,
        ],
    )
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"resuming from {last}", flush=True)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=last if last.is_file() else None)
    except Exception as exc:  # a divergence inside spawned DDP workers arrives wrapped: unwrap the message
        lines = [line for line in str(exc).splitlines() if "training diverged:" in line]
        if lines and not isinstance(exc, TrainingDiverged):
            raise TrainingDiverged(lines[-1].split("TrainingDiverged: ", 1)[-1]) from None
        raise
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        _close_progress_bars(trainer)
    if not trainer.is_global_zero:
        return {}
    return _write_metrics(out, trainer, settings, len(train_records), len(val_records), excluded,
                          time.perf_counter() - start)


def _close_progress_bars(trainer: pl.Trainer) -> None:
    """A run stopped by an exception leaves tqdm bars open; they would print again at interpreter exit."""
    bar = trainer.progress_bar_callback
    for name in ("_train_progress_bar", "_val_progress_bar"):
        progress = getattr(bar, name, None)
        if progress is not None:
            progress.close()


def _check_counts(name: str, n_train: int, n_val: int, config: StudentTrainConfig) -> None:
    need = max(MIN_TRAIN_IMAGES, config.batch_size * _world_size(config))
    if n_train < need:
        raise IAAError(f"dataset '{name}': {n_train} labelled training images, at least {need} needed "
                       f"(batch size {config.batch_size} x {_world_size(config)} process(es), minimum {MIN_TRAIN_IMAGES})")
    if n_val < MIN_VAL_IMAGES:
        raise IAAError(f"dataset '{name}': {n_val} labelled validation images, at least {MIN_VAL_IMAGES} needed "
                       "(raise --val-fraction or add a val split)")


def _write_metrics(out: Path, trainer: pl.Trainer, settings: dict, n_train: int, n_val: int,
                   excluded: list[str], seconds: float) -> dict:
    history = json.loads((out / HISTORY_FILE).read_text()) if (out / HISTORY_FILE).is_file() else []
    if not history:
        raise IAAError(f"{out}: training ended without a single validated epoch")
    valid = [h for h in history if math.isfinite(h.get("val_srcc", math.nan))]
    best = max(valid, key=lambda h: h["val_srcc"]) if valid else history[0]
    metrics = {
        "kind": "student_training", "baseline": settings["baseline"], "backbone": settings["student"]["backbone"],
        "dataset": settings["dataset"], "alpha": settings["train"]["alpha"], "beta": settings["train"]["beta"],
        "best_val_srcc": best.get("val_srcc"), "best_val_plcc": best.get("val_plcc"), "best_epoch": best["epoch"],
        "last_val_srcc": history[-1].get("val_srcc"), "epochs_completed": history[-1]["epoch"],
        "stopped_early": history[-1]["epoch"] < settings["train"]["epochs"],
        "num_train": n_train, "num_val": n_val, "excluded_images": excluded, "world_size": trainer.world_size,
        "fit_seconds": round(seconds, 2), "model_dir": "model", "history": history,
    }
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics
