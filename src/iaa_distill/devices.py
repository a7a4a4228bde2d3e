"""Devices and processes: the one reading of a `--device` option, and joining torchrun's process group;
shared by feature extraction, scoring, evaluation and serving."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch

from .errors import IAAError


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' -> the local rank's GPU (GPU 0 outside torchrun);
    'cuda:N'; 'cpu'. Asking for CUDA without it is a clear error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise IAAError(f"--device {device}: no CUDA GPU is available (use --device cpu)")
        if device == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device(device)
    raise IAAError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)")


@contextmanager
def process_group(device: torch.device, backend: str | None = None,
                  timeout: timedelta | None = None) -> Iterator[tuple[int, int]]:
    """(rank, world size): from an initialised process group; under torchrun (WORLD_SIZE > 1) from a group joined
    for the duration (`backend`: default NCCL on CUDA, else gloo); otherwise (0, 1)."""
    import torch.distributed as dist

    started = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"), timeout=timeout)
        started = True
    try:
        yield (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    finally:
        if started:
            dist.destroy_process_group()
