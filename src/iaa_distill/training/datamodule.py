"""Train/val batches for the student, read from pre-resized image caches (no JPEG decoding per epoch).
`DatasetDataModule` prepares them from a dataset (`prepare_data` builds the caches, `setup` the tables);
`StudentDataModule` turns the two tables into loaders.

Train: the whole image was resized once to `train_resize` x `train_resize` (the train cache); each
epoch takes a random `input_size` crop and a random horizontal flip of it, on uint8 (the NIMA protocol
described in `preprocessing`), which keeps the whole composition in view.
Val: a second, small cache stores the val images resized whole to `input_size` straight from the
decoded photo, so validation sees exactly what `preprocessing.eval_transform` gives at scoring time
(resizing the train cache again would resample twice). A run without val images builds none.

The order of images and every crop/flip are drawn in the main process by `AugmentationSampler`
from (seed, epoch) alone: runs with the same seed see identical batches with any number of
workers, a resumed run continues exactly where it stopped, and the baseline sees the same data
as the distilled run. Under DDP each rank takes an equal-sized shard of that sequence.
Batches are dicts of uint8 `image` (B, 3, S, S), `label` (GT distribution or normalised score),
`mean` (GT mean on the scale) and, for distillation, the teacher's `feature` and `teacher` prediction rows;
val batches also carry each image's `index` in its table (validation knows its predictions by image).

Unlabelled images (distillation only): the train split then holds its labelled rows first and the
unlabelled ones after them (`num_labelled`), and `MixedBatches` appends `unlabeled_ratio` x batch size
unlabelled crops (rounded) to every batch of labelled ones. The labelled part of every batch is exactly the
baseline's; batches carry a boolean `labelled` mask so the GT loss skips the unlabelled rows.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from ..data.records import Dataset, ImageRecord
from ..data.table import SplitTable, split_table
from ..data.unlabeled import UNLABELED_SPLIT
from ..messages import get_logger
from ..student import StudentConfig
from ..targets import DistillationTargets
from .image_cache import ImageCache, ensure_image_cache
from .sampling import SeededEpochSampler
from .student_config import StudentTrainConfig

_log = get_logger(__name__)


class CachedImages(torch.utils.data.Dataset):
    """Items are (i, y, x, flip) for crops (train) or i for whole cached images (val)."""

    def __init__(self, split: SplitTable, crop: int | None = None):
        self.split = split
        self.crop = crop
        self._pixels: np.ndarray | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: int | tuple[int, int, int, int]) -> dict[str, torch.Tensor]:
        if self._pixels is None:
            self._pixels = np.load(self.split.source, mmap_mode="r")
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
        if s.num_labelled is not None:
            out["labelled"] = torch.tensor(i < s.num_labelled)
        if self.crop is None:
            out["index"] = torch.tensor(i)
        return out


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class AugmentationSampler(SeededEpochSampler):
    """Seeded per-epoch shuffle + crop offsets + flips; each DDP rank gets an equal shard (padded by wrapping)."""

    def __init__(self, n: int, resize: int, crop: int, seed: int, hflip: bool = True):
        super().__init__(seed)
        self.n, self.resize, self.crop, self.hflip = n, resize, crop, hflip

    def __len__(self) -> int:
        world, _ = _world()
        return -(-self.n // world)

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        world, rank = _world()
        g = self.generator()
        order = self.permutation(self.n, g)
        span = self.resize - self.crop + 1
        ys = torch.randint(0, span, (self.n,), generator=g)
        xs = torch.randint(0, span, (self.n,), generator=g)
        flips = torch.randint(0, 2, (self.n,), generator=g) if self.hflip else torch.zeros(self.n, dtype=torch.long)
        per_rank = len(self)
        order = torch.cat([order, order[: per_rank * world - self.n]])
        for i in order[rank::world].tolist():
            yield i, int(ys[i]), int(xs[i]), int(flips[i])


class MixedBatches(torch.utils.data.Sampler):
    """Batch sampler: each batch of `batch_size` labelled items plus round(`unlabeled_ratio` x `batch_size`)
    unlabelled ones (indices offset by `offset`).

    The unlabelled stream is drawn per epoch from (seed, epoch) alone, like the labelled one: one or more
    seeded passes over the unlabelled images, so a resumed run continues with the same batches.
    """

    def __init__(self, labelled: AugmentationSampler, unlabelled: AugmentationSampler, batch_size: int,
                 unlabeled_ratio: float, offset: int):
        self.labelled, self.unlabelled = labelled, unlabelled
        self.batch_size, self.offset = batch_size, offset
        self.per_batch = round(unlabeled_ratio * batch_size)  # unlabelled items in every batch

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch (also after a resume)."""
        self.labelled.set_epoch(epoch)
        self.unlabelled.epoch = epoch

    def __len__(self) -> int:
        return len(self.labelled) // self.batch_size

    def _unlabelled_items(self, count: int) -> list[tuple[int, int, int, int]]:
        items: list[tuple[int, int, int, int]] = []
        epoch, passes = self.unlabelled.epoch, 0
        while len(items) < count:
            self.unlabelled.set_epoch(epoch * 1_000 + passes)  # passes within an epoch never meet the next epoch's
            items += [(i + self.offset, y, x, f) for i, y, x, f in self.unlabelled]
            passes += 1
        self.unlabelled.epoch = epoch
        return items[:count]

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        labelled = list(self.labelled)
        unlabelled = self._unlabelled_items(len(self) * self.per_batch)
        for step in range(len(self)):
            yield (labelled[step * self.batch_size:(step + 1) * self.batch_size]
                   + unlabelled[step * self.per_batch:(step + 1) * self.per_batch])


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
    """Lightning data for stage 2 from its tables (`DatasetDataModule` prepares them from a dataset). Use with
    `Trainer(use_distributed_sampler=False)`: sharding is built in."""

    def __init__(
        self,
        train: SplitTable | None,
        val: SplitTable | None,
        train_resize: int,
        input_size: int,
        batch_size: int,
        num_workers: int = 4,
        seed: int = 0,
        hflip: bool = True,
        unlabeled_ratio: float = 0.0,
    ):
        """unlabeled_ratio: unlabelled images added to every train batch per labelled one (when train has
        unlabelled rows)."""
        super().__init__()
        self.train, self.val = train, val
        self.train_resize, self.input_size = train_resize, input_size
        self.batch_size, self.num_workers, self.seed, self.hflip = batch_size, num_workers, seed, hflip
        self.unlabeled_ratio = unlabeled_ratio

    def _loader(self, dataset: CachedImages, **sampling) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, **sampling, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        n = len(self.train) - self.train.num_unlabeled
        sampler = AugmentationSampler(n, self.train_resize, self.input_size, self.seed, self.hflip)
        images = CachedImages(self.train, crop=self.input_size)
        if not self.train.num_unlabeled or not round(self.unlabeled_ratio * self.batch_size):
            return self._loader(images, batch_size=self.batch_size, sampler=sampler, drop_last=True)
        unlabelled = AugmentationSampler(self.train.num_unlabeled, self.train_resize, self.input_size,
                                         self.seed + 1, self.hflip)
        return self._loader(images, batch_sampler=MixedBatches(sampler, unlabelled, self.batch_size,
                                                               self.unlabeled_ratio, offset=n))

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(CachedImages(self.val), batch_size=self.batch_size, sampler=ShardSampler(len(self.val)),
                            drop_last=False)


class DatasetDataModule(StudentDataModule):
    """The student's data prepared from a dataset: `prepare_data` builds the pre-resized image caches (once for
    every run over the same images), `setup` the train/val tables, undecodable images left out (`excluded`).

    `splits`: labelled train, val and the unlabelled images to distil on; `targets`: the teacher's rows of a
    distilled run (None for the baseline). Both are idempotent, so `train_student` calls them before the trainer
    (it needs the counts and the tables) and Lightning's own calls do nothing more."""

    def __init__(self, dataset: Dataset, splits: tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]],
                 config: StudentTrainConfig, student_config: StudentConfig, targets: DistillationTargets | None,
                 image_cache_dir: str | Path | None):
        super().__init__(None, None, student_config.train_resize, student_config.input_size, config.batch_size,
                         config.num_workers, config.seed, config.hflip, config.unlabeled_ratio)
        self.dataset, self.splits, self.targets = dataset, splits, targets
        self.student_config, self.image_cache_dir = student_config, image_cache_dir
        self.caches: tuple[ImageCache, ImageCache | None] | None = None  # train, val (None without val images)
        self.counts: tuple[int, int, int] = (0, 0, 0)  # train, val, unlabelled images after `setup`
        self.excluded: list[str] = []

    def prepare_data(self) -> None:
        if self.caches is not None:
            return
        dataset, (train, val, _) = self.dataset, self.splits
        kw = dict(root=self.image_cache_dir, interpolation=self.student_config.interpolation,
                  dataset_fingerprint=dataset.fingerprint(), num_workers=self.num_workers)
        # train+val+every unlabelled image in dataset order: one cache for the student and the baseline, any val split
        used = {r.image_id for r in train + val + dataset.split(UNLABELED_SPLIT)}
        pool = [r for r in dataset.records if r.image_id in used]
        self.caches = (ensure_image_cache(pool, self.train_resize, name=f"{dataset.name}-train", **kw),
                       ensure_image_cache(val, self.input_size, name=f"{dataset.name}-val", **kw) if val else None)

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        self.prepare_data()
        train_cache, val_cache = self.caches
        val_failed = val_cache.failed if val_cache else {}
        train, val, unlabelled = ([r for r in records if r.image_id not in failed]
                                  for records, failed in zip(self.splits, (train_cache.failed, val_failed,
                                                                          train_cache.failed)))
        self.excluded = sorted(set(train_cache.failed) | set(val_failed))
        if self.excluded:
            _log.info(f"excluded {len(self.excluded)} undecodable image(s) from training (listed in the image "
                      "caches' manifest.json)")
        space = self.student_config.space
        self.train = split_table(train, space, train_cache.rows_for, self.targets, unlabelled, source=train_cache.path)
        self.val = split_table(val, space, val_cache.rows_for if val_cache else lambda ids: np.zeros(0, np.int64),
                               self.targets, source=val_cache.path if val_cache else None)
        self.counts = (len(train), len(val), len(unlabelled))
