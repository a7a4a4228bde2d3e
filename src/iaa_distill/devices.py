"""The one reading of a `--device` option, shared by feature extraction, scoring, evaluation and serving."""
from __future__ import annotations

import os

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
