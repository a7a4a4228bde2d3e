"""Train/val batches for the student, read from pre-resized image caches (no JPEG decoding per epoch).

Train: the whole image was resized once to `train_resize` x `train_resize` (the train cache); each
epoch takes a random `input_size` crop and a random horizontal flip of it, on uint8 — the same
augmentation as `preprocessing.train_transform`, which keeps the whole composition in view.
Val: a second, small cache stores the val images resized whole to `input_size` straight from the
decoded photo, so validation sees exactly what `preprocessing.eval_transform` gives at scoring time
(resizing the train cache again would resample twice).

The order of images and every crop/flip are drawn in the main process by `AugmentationSampler`
from (seed, epoch) alone: runs with the same seed see identical batches with any number of
workers, a resumed run continues exactly where it stopped, and the baseline sees the same data
as the distilled run. Under DDP each rank takes an equal-sized shard of that sequence.
Batches are dicts of uint8 `image` (B, 3, S, S), `label` (GT distribution or normalised score),
`mean` (GT mean on the scale) and, for distillation, the teacher's `feature` and `teacher` prediction rows.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch


@dataclass
class SplitArrays:
    """One split: cache rows and per-image targets (teacher rows None for the baseline)."""

    cache_path: Path
    rows: np.ndarray  # (N,) row of each image in the cache
    labels: np.ndarray  # (N, K) distribution or (N,) normalised score
    means: np.ndarray  # (N,) GT mean on the scale
    features: np.ndarray | None = None  # (N, F) teacher aesthetic feature
    predictions: np.ndarray | None = None  # (N, K) or (N,) teacher prediction

    def __len__(self) -> int:
        return len(self.rows)


class CachedImages(torch.utils.data.Dataset):
    """Items are (i, y, x, flip) for crops (train) or i for whole cached images (val)."""

    def __init__(self, split: SplitArrays, crop: int | None = None):
        self.split = split
        self.crop = crop
        self._pixels: np.ndarray | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: int | tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
        if self._pixels is None:
            self._pixels = np.load(self.split.cache_path, mmap_mode="r")
        s = self.split
        if self.crop is None:
            i = int(item)
            image = torch.from_numpy(np.array(self._pixels[s.rows[i]]))
        else:
            i, y, x, flip = item
            image = torch.from_numpy(np.array(self._pixels[s.rows[i], y:y + self.crop, x:x + self.crop]))
            if flip:
                image = image.flip(1)
        out = {
            "image": image.permute(2, 0, 1),
            "label": torch.from_numpy(np.asarray(s.labels[i], dtype=np.float32)),
            "mean": torch.tensor(s.means[i], dtype=torch.float32),
        }
        if s.features is not None:
            out["feature"] = torch.from_numpy(np.asarray(s.features[i], dtype=np.float32))
            out["teacher"] = torch.from_numpy(np.asarray(s.predictions[i], dtype=np.float32))
        return out


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class AugmentationSampler(torch.utils.data.Sampler):
    """Seeded per-epoch shuffle + crop offsets + flips; each DDP rank gets an equal shard (padded by wrapping)."""

    def __init__(self, n: int, resize: int, crop: int, seed: int, hflip: bool = True):
        self.n, self.resize, self.crop, self.seed, self.hflip = n, resize, crop, seed, hflip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch (also after a resume)."""
        self.epoch = epoch

    def __len__(self) -> int:
        world, _ = _world()
        return -(-self.n // world)

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        world, rank = _world()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        span = self.resize - self.crop + 1
        ys = torch.randint(0, span, (self.n,), generator=g)
        xs = torch.randint(0, span, (self.n,), generator=g)
        flips = torch.randint(0, 2, (self.n,), generator=g) if self.hflip else torch.zeros(self.n, dtype=torch.long)
        per_rank = len(self)
        order = torch.cat([order, order[: per_rank * world - self.n]])
        for i in order[rank::world].tolist():
            yield i, int(ys[i]), int(xs[i]), int(flips[i])


class ShardSampler(torch.utils.data.Sampler):
    """Every image once across ranks, in order (validation; metrics gather the shards)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        world, rank = _world()
        return len(range(rank, self.n, world))

    def __iter__(self) -> Iterator[int]:
        world, rank = _world()
        return iter(range(rank, self.n, world))


class StudentDataModule(pl.LightningDataModule):
    """Lightning data for stage 2. Use with `Trainer(use_distributed_sampler=False)`: sharding is built in."""

    def __init__(
        self,
        train: SplitArrays,
        val: SplitArrays,
        train_resize: int,
        input_size: int,
        batch_size: int,
        num_workers: int = 4,
        seed: int = 0,
        hflip: bool = True,
    ):
        super().__init__()
        self.train, self.val = train, val
        self.train_resize, self.input_size = train_resize, input_size
        self.batch_size, self.num_workers, self.seed, self.hflip = batch_size, num_workers, seed, hflip

    def _loader(self, dataset: CachedImages, sampler: torch.utils.data.Sampler, drop_last: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        sampler = AugmentationSampler(len(self.train), self.train_resize, self.input_size, self.seed, self.hflip)
        return self._loader(CachedImages(self.train, crop=self.input_size), sampler, drop_last=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(CachedImages(self.val), ShardSampler(len(self.val)), drop_last=False)
