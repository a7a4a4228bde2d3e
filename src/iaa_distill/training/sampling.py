"""The one seeded sampler of both training stages: every draw of an epoch (order, crops, flips) comes from
(seed, epoch) alone, so runs with the same seed see the same data with any number of workers, a resumed
run continues exactly where it stopped, and the baseline sees the distilled run's labelled batches."""
from __future__ import annotations

import torch


class SeededEpochSampler(torch.utils.data.Sampler):
    """Base of the training samplers; Lightning calls `set_epoch` before every epoch (also after a resume)."""

    def __init__(self, seed: int):
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        """The epoch's random stream (draw in a fixed order from it)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def permutation(self, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """This epoch's order of `size` items."""
        return torch.randperm(size, generator=generator or self.generator())
