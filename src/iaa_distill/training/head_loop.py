"""The teacher head's training loop, one for the final head and for every cross-validation fold: the
LightningModule (label loss, AdamW + cosine decay over `epochs`, validation SRCC) and batches of feature rows
shuffled from (seed, epoch) alone.

`training.teacher` runs it on the whole training split with validation, early stopping, the best epoch kept and
resume; the head's cross-validation (`head_candidates.fit_mlp_head`) runs the same loop on a fold's rows for
`epochs` epochs, without validation (`fit_rows`).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from ..data.table import SplitTable
from ..errors import IAAError
from ..losses import label_loss
from ..teacher_head import TeacherHead, TeacherHeadConfig
from .sampling import SeededEpochSampler
from .spine import CHECKPOINTS, ValidationCorrelations, quiet_lightning
from .teacher_config import TeacherTrainConfig


class HeadDiverged(IAAError):
    """The head's training loss became NaN or infinite."""


class FeatureBatches(torch.utils.data.Dataset):
    """Items are whole batches: a list of positions in `split` -> features, labels, means, ids."""

    def __init__(self, features: np.ndarray, split: SplitTable):
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


class EpochBatches(SeededEpochSampler):
    """Batches of positions, shuffled from (seed, epoch) alone so that a resumed run sees the same order.

    Training drops a last batch of one image (BatchNorm cannot normalise it).
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool):
        super().__init__(seed)
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle

    def _batches(self) -> list[np.ndarray]:
        order = self.permutation(self.size).numpy() if self.shuffle else np.arange(self.size)
        batches = [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        return [b for b in batches if len(b) > 1 or not self.shuffle]

    def __iter__(self):
        # A generator: the order is drawn at the first batch, after Lightning's `set_epoch` (on resume Lightning
        # creates the iterator before setting the epoch).
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


class FeatureDataModule(pl.LightningDataModule):
    """Train/val batches read from the feature cache (in-process: a batch is one memmap read); `val` None: none."""

    def __init__(self, features: np.ndarray, train: SplitTable, val: SplitTable | None, batch_size: int, seed: int):
        super().__init__()
        self.features, self.train, self.val = features, train, val
        self.batch_size, self.seed = batch_size, seed

    def _loader(self, split: SplitTable, shuffle: bool) -> torch.utils.data.DataLoader:
        sampler = EpochBatches(len(split), self.batch_size, self.seed, shuffle)
        # Its own generator: creating the iterator must not consume the global RNG that draws dropout masks.
        return torch.utils.data.DataLoader(FeatureBatches(self.features, split), sampler=sampler, batch_size=None,
                                           generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader | list:
        return [] if self.val is None else self._loader(self.val, shuffle=False)


class TeacherHeadModule(pl.LightningModule):
    """The head, its label loss and the validation correlations."""

    def __init__(self, head_config: dict, train_config: dict):
        super().__init__()
        self.save_hyperparameters()
        self.head = TeacherHead(TeacherHeadConfig.from_dict(head_config))
        self.train_config = TeacherTrainConfig(**train_config)
        self.space = self.head.config.space
        self.val_correlations = ValidationCorrelations()

    def _check_features(self, batch: dict[str, Any]) -> None:
        finite = torch.isfinite(batch["features"]).all(dim=1)
        if not bool(finite.all()):
            image_id = batch["ids"][int((~finite).nonzero()[0])]
            raise IAAError(f"cached features of image '{image_id}' are not finite (NaN/inf); the feature cache "
                           "is damaged: extract features again into a new folder")

    def _loss(self, raw: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return label_loss(raw, label, self.space.num_levels, self.train_config.loss, self.train_config.rank_weight)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # Dropout masks drawn from (seed, step) alone, like the batch order: a resumed run repeats them exactly.
        torch.manual_seed(self.train_config.seed * 1_000_003 + self.global_step)
        self._check_features(batch)
        raw, _ = self.head(batch["features"])
        loss = self._loss(raw, batch["label"])
        if not bool(torch.isfinite(loss)):
            raise HeadDiverged(f"training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                           f"stopped (the last good checkpoint is kept in {CHECKPOINTS}/); try a lower --lr")
        self.log("train_loss", loss, prog_bar=True, batch_size=len(raw))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._check_features(batch)
        raw, _ = self.head(batch["features"])
        self.log("val_loss", self._loss(raw, batch["label"]), batch_size=len(raw))
        self.val_correlations.update(self.space.mean(raw), batch["mean"])

    def on_validation_epoch_end(self) -> None:
        self.val_correlations.log(self)

    def configure_optimizers(self):
        cfg = self.train_config
        optimizer = torch.optim.AdamW(self.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def fit_rows(features: np.ndarray, labels: np.ndarray, config: TeacherHeadConfig, train: TeacherTrainConfig
             ) -> TeacherHead:
    """The loop on in-memory `features` rows for `train.epochs` epochs on the CPU, no validation or early stopping
    in float32 (a cross-validation fold). A fold whose loss diverges keeps the head as it was then."""
    torch.manual_seed(train.seed)
    n = len(features)
    module = TeacherHeadModule(asdict(config), {**asdict(train), "hidden": list(train.hidden)})
    rows = SplitTable([str(i) for i in range(n)], np.arange(n), np.asarray(labels, np.float32), np.full(n, np.nan))
    quiet_lightning()
    trainer = pl.Trainer(max_epochs=train.epochs, accelerator="cpu", devices=1, precision="32-true",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    try:
        trainer.fit(module, datamodule=FeatureDataModule(np.asarray(features, np.float32), rows, None,
                                                         train.batch_size, train.seed))
    except HeadDiverged:
        pass
    return module.head.eval()
