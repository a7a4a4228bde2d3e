"""Stage 1: train the teacher head on cached teacher features, then write the distillation targets.

Reads only the feature cache (float16 memmap rows, converted to float32 per batch) and the dataset's
labels; no image is decoded. Lightning runs the loop: validation SRCC every epoch, the best epoch
kept, early stopping, a CSV log, and resumption of an interrupted run from `checkpoints/last.ckpt`.
The output folder then holds the head (`config.json` + `model.safetensors`), the targets of every
valid image in the cache (all splits) and `metrics.json`.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from scipy import stats

from ..artifacts import atomic_write_text
from ..data.records import Dataset
from ..errors import DatasetError, IAAError
from ..features.cache import FeatureCache
from ..losses import label_loss
from ..student import prediction_to_mean
from ..targets import DistillationTargets
from ..teacher_head import TeacherHead, TeacherHeadConfig, raw_to_target, run_head

MIN_TRAIN_IMAGES = 8
FINGERPRINT_KEYS = ("teachers", "dim", "hflip", "preprocessing", "dataset")  # what decides a cache's content
CHECKPOINTS = "checkpoints"
METRICS_NAME = "metrics.json"


@dataclass
class TeacherTrainConfig:
    """Hyper-parameters of stage 1 (AdamW + cosine decay over `epochs`)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: tuple[int, ...] = (1024, 256)
    dropout: float = 0.25
    loss: str = "emd"  # 'emd' (votes; means MSE for scalar labels), 'mse' or 'l1'
    rank_weight: float = 0.0
    seed: int = 0
    patience: int = 5  # epochs without a better val SRCC before stopping
    device: str = "auto"  # 'auto', 'cpu', 'cuda' or 'cuda:N'
    precision: str = "32-true"  # any Lightning precision, e.g. 'bf16-mixed' on a GPU
    progress: bool = True


@dataclass
class LabelledRows:
    """One split as cache rows with their labels."""

    ids: list[str]
    rows: np.ndarray  # (N,) rows of the feature cache
    labels: np.ndarray  # (N, K) vote distribution or (N,) score normalised to [0, 1]
    means: np.ndarray  # (N,) mean score on the label scale

    def __len__(self) -> int:
        return len(self.ids)


def cache_fingerprint(manifest: dict[str, Any]) -> str:
    """Hash of what decides a cache's content (teachers, preprocessing, images)."""
    spec = {key: manifest.get(key) for key in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def label_layout(dataset: Dataset) -> tuple[int | None, tuple[float, float]]:
    """(K or None, scale) of the dataset's labels; refuses unlabelled datasets."""
    labelled = [r.label for r in dataset.records if r.label is not None]
    if not labelled:
        raise DatasetError(f"dataset '{dataset.name}' has no labels; a teacher head needs labelled images")
    scale = tuple(dataset.scale or labelled[0].scale)
    return dataset.num_levels, (float(scale[0]), float(scale[1]))


def labelled_rows(dataset: Dataset, cache: FeatureCache, split: str) -> LabelledRows:
    """Labelled images of `split` that have valid features in the cache."""
    num_levels, (low, high) = label_layout(dataset)
    valid = set(cache.valid_ids())
    position = {image_id: row for row, image_id in enumerate(cache.ids)}
    ids, labels, means = [], [], []
    for record in dataset.split(split):
        if record.label is None or record.image_id not in valid:
            continue
        if num_levels:
            dist = record.label.distribution()
            if dist is None or len(dist) != num_levels:
                raise DatasetError(f"dataset '{dataset.name}': image '{record.image_id}' has no {num_levels}-level "
                                   "vote distribution, unlike the rest of the dataset")
            labels.append(dist)
        else:
            labels.append((record.label.mean - low) / (high - low))
        ids.append(record.image_id)
        means.append(record.label.mean)
    rows = np.array([position[i] for i in ids], dtype=np.int64)
    label_array = np.asarray(labels, dtype=np.float32).reshape((len(ids), num_levels) if num_levels else (len(ids),))
    return LabelledRows(ids, rows, label_array, np.asarray(means, dtype=np.float32))


class FeatureBatches(torch.utils.data.Dataset):
    """Items are whole batches: a list of positions in `split` -> features, labels, means, ids."""

    def __init__(self, features: np.ndarray, split: LabelledRows):
        self.features = features
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, positions: np.ndarray) -> dict[str, Any]:
        positions = np.sort(positions)  # ascending cache rows read the memmap sequentially
        s = self.split
        return {
            "features": torch.from_numpy(np.asarray(self.features[s.rows[positions]], dtype=np.float32)),
            "label": torch.from_numpy(s.labels[positions]),
            "mean": torch.from_numpy(s.means[positions]),
            "ids": [s.ids[p] for p in positions],
        }


class EpochBatches(torch.utils.data.Sampler):
    """Batches of positions, shuffled from (seed, epoch) alone so that a resumed run sees the same order.

    Training drops a last batch of one image (BatchNorm cannot normalise it).
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool):
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.size) if self.shuffle
                 else np.arange(self.size))
        batches = [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        return [b for b in batches if len(b) > 1 or not self.shuffle]

    def __iter__(self):
        # A generator: the order is drawn at the first batch, after Lightning's `set_epoch` (on resume Lightning
        # creates the iterator before setting the epoch).
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


class FeatureDataModule(pl.LightningDataModule):
    """Train/val batches read from the feature cache (in-process: a batch is one memmap read)."""

    def __init__(self, features: np.ndarray, train: LabelledRows, val: LabelledRows, batch_size: int, seed: int):
        super().__init__()
        self.features, self.train, self.val = features, train, val
        self.batch_size, self.seed = batch_size, seed

    def _loader(self, split: LabelledRows, shuffle: bool) -> torch.utils.data.DataLoader:
        sampler = EpochBatches(len(split), self.batch_size, self.seed, shuffle)
        # Its own generator: creating the iterator must not consume the global RNG that draws dropout masks.
        return torch.utils.data.DataLoader(FeatureBatches(self.features, split), sampler=sampler, batch_size=None,
                                           generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.val, shuffle=False)


def correlations(pred: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
    """SRCC and PLCC (None where undefined, e.g. constant predictions)."""
    if len(pred) < 2:
        return {"srcc": None, "plcc": None, "count": int(len(pred))}
    with np.errstate(all="ignore"):
        srcc = float(stats.spearmanr(pred, true)[0])
        plcc = float(np.corrcoef(pred, true)[0, 1])
    return {"srcc": srcc if np.isfinite(srcc) else None, "plcc": plcc if np.isfinite(plcc) else None,
            "count": int(len(pred))}


class TeacherHeadModule(pl.LightningModule):
    """The head, its label loss and the validation correlations."""

    def __init__(self, head_config: dict, train_config: dict, run_key: str, checkpoint_dir: str):
        super().__init__()
        self.save_hyperparameters()
        self.head = TeacherHead(TeacherHeadConfig.from_dict(head_config))
        self.train_config = TeacherTrainConfig(**train_config)
        self._val_pred: list[torch.Tensor] = []
        self._val_true: list[torch.Tensor] = []

    def _check_features(self, batch: dict[str, Any]) -> None:
        finite = torch.isfinite(batch["features"]).all(dim=1)
        if not bool(finite.all()):
            image_id = batch["ids"][int((~finite).nonzero()[0])]
            raise IAAError(f"cached features of image '{image_id}' are not finite (NaN/inf); the feature cache "
                           "is damaged: extract features again into a new folder")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # Dropout masks drawn from (seed, step) alone, like the batch order: a resumed run repeats them exactly.
        torch.manual_seed(self.train_config.seed * 1_000_003 + self.global_step)
        self._check_features(batch)
        raw, _ = self.head(batch["features"])
        cfg = self.train_config
        loss = label_loss(raw, batch["label"], self.head.config.num_levels, cfg.loss, cfg.rank_weight)
        if not bool(torch.isfinite(loss)):
            raise IAAError(f"training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                           f"stopped (the last good checkpoint is kept in {self.hparams.checkpoint_dir}); "
                           "try a lower --lr")
        self.log("train_loss", loss, prog_bar=True, batch_size=len(raw))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._check_features(batch)
        raw, _ = self.head(batch["features"])
        cfg = self.train_config
        self.log("val_loss", label_loss(raw, batch["label"], self.head.config.num_levels, cfg.loss, cfg.rank_weight),
                 batch_size=len(raw))
        mean, _ = prediction_to_mean(raw, self.head.levels, self.head.config.num_levels)
        self._val_pred.append(mean.detach().cpu())
        self._val_true.append(batch["mean"].cpu())

    def on_validation_epoch_end(self) -> None:
        result = correlations(torch.cat(self._val_pred).numpy(), torch.cat(self._val_true).numpy())
        self._val_pred.clear()
        self._val_true.clear()
        # An undefined correlation (constant predictions) counts as the worst possible for model selection.
        self.log("val_srcc", -1.0 if result["srcc"] is None else result["srcc"], prog_bar=True)
        self.log("val_plcc", -1.0 if result["plcc"] is None else result["plcc"])

    def configure_optimizers(self):
        cfg = self.train_config
        optimizer = torch.optim.AdamW(self.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def _accelerator(device: str) -> tuple[str, Any]:
    if device in ("auto", "cpu"):
        return device, "auto" if device == "auto" else 1
    if device in ("cuda", "gpu"):
        return "gpu", 1
    if device.startswith("cuda:") and device[5:].isdigit():
        return "gpu", [int(device[5:])]
    raise IAAError(f"unknown device '{device}' (expected auto, cpu, cuda or cuda:N)")


def _resume_checkpoint(checkpoint_dir: Path, run_key: str) -> Path | None:
    """`last.ckpt` of an interrupted run with the same settings, else None (stale checkpoints are removed)."""
    last = checkpoint_dir / "last.ckpt"
    if last.is_file():
        try:
            saved = torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]["run_key"]
        except Exception:  # unreadable (killed while writing) or from another version: start again
            saved = None
        if saved == run_key:
            return last
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return None


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


def train_teacher_head(
    dataset: Dataset, cache_dir: str | Path | FeatureCache, out: str | Path, config: TeacherTrainConfig | None = None
) -> dict[str, Any]:
    """Train the head on `cache_dir`'s features of `dataset`; write head, targets and metrics into `out`.

    Returns the metrics (also in `out/metrics.json`): val/test SRCC and PLCC of the best epoch.
    """
    config = config or TeacherTrainConfig()
    if config.loss not in ("emd", "mse", "l1"):
        raise IAAError(f"unknown loss '{config.loss}' (expected emd, mse or l1)")
    if config.epochs < 1 or config.batch_size < 2:
        raise IAAError("epochs must be at least 1 and batch size at least 2")
    cache = cache_dir if isinstance(cache_dir, FeatureCache) else FeatureCache.open(cache_dir)
    cache.check_matches(dataset)
    num_levels, scale = label_layout(dataset)
    train, val, test = (labelled_rows(dataset, cache, s) for s in ("train", "val", "test"))
    if len(train) < MIN_TRAIN_IMAGES:
        raise IAAError(f"dataset '{dataset.name}': only {len(train)} labelled training images with features in "
                       f"{cache.directory} (at least {MIN_TRAIN_IMAGES} needed)")
    if len(val) < 2:
        raise IAAError(f"dataset '{dataset.name}': {len(val)} validation images with features; "
                       "set a larger --val-fraction or give the dataset a val split")

    out = Path(out).expanduser()
    checkpoint_dir = out / CHECKPOINTS
    head_config = TeacherHeadConfig(
        input_dim=cache.dim, num_levels=num_levels, scale=scale, hidden=tuple(config.hidden),
        dropout=config.dropout, teachers=cache.manifest.get("teachers", []),
        cache_fingerprint=cache_fingerprint(cache.manifest), dataset_fingerprint=dataset.fingerprint(),
        synthetic_labels=dataset.synthetic_labels,
    )
    settings = {k: v for k, v in asdict(config).items() if k != "progress"}
    run_key = hashlib.sha256(json.dumps([asdict(head_config), settings, train.ids, val.ids],
                                        sort_keys=True, default=list).encode()).hexdigest()[:16]
    resume = _resume_checkpoint(checkpoint_dir, run_key)

    pl.seed_everything(config.seed, workers=True, verbose=False)
    train_config = {**asdict(config), "hidden": list(config.hidden)}
    module = TeacherHeadModule(asdict(head_config), train_config, run_key, str(checkpoint_dir))
    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_srcc", mode="max",
                           save_last=True, save_top_k=1)
    accelerator, devices = _accelerator(config.device)
    trainer = pl.Trainer(
        max_epochs=config.epochs, accelerator=accelerator, devices=devices, precision=config.precision,
        callbacks=[best, EarlyStopping(monitor="val_srcc", mode="max", patience=config.patience)],
        logger=CSVLogger(out, name="logs"), enable_progress_bar=config.progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=max(1, min(50, len(train) // config.batch_size)),
    )
    trainer.fit(module, datamodule=FeatureDataModule(cache.features, train, val, config.batch_size, config.seed),
                ckpt_path=resume)
    best_epoch = None
    if best.best_model_path:
        checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(checkpoint["state_dict"])
        best_epoch = int(checkpoint["epoch"])
    head = module.head.cpu().eval()
    head.save_pretrained(out)

    valid = cache.valid_ids()
    cache_row = {image_id: row for row, image_id in enumerate(cache.ids)}
    rows = np.array([cache_row[i] for i in valid], dtype=np.int64)
    raw, aesthetic = _checked_outputs(head, cache, valid, rows)
    DistillationTargets(valid, aesthetic, raw_to_target(raw, num_levels), num_levels, scale).save(out)

    position = {image_id: i for i, image_id in enumerate(valid)}
    levels = head.levels
    metrics: dict[str, Any] = {}
    for name, split in (("val", val), ("test", test)):
        if len(split):
            split_raw = torch.from_numpy(raw[[position[i] for i in split.ids]])
            mean, _ = prediction_to_mean(split_raw, levels, num_levels)
            metrics[name] = correlations(mean.numpy(), split.means)
        else:
            metrics[name] = None
    metrics.update(
        best_epoch=best_epoch,
        epochs_trained=trainer.current_epoch,
        train_images=len(train),
        targets=len(valid),
        num_levels=num_levels,
        scale=list(scale),
        loss=config.loss,
        teachers=[t.get("name") for t in head_config.teachers],
        cache_fingerprint=head_config.cache_fingerprint,
        config=train_config,
    )
    atomic_write_text(out / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the head artefact is the best checkpoint
    return metrics

