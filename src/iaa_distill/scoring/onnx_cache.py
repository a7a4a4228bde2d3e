"""`--backend auto`: ONNX Runtime on the CPU, PyTorch on a GPU, from an ONNX export made once per model.

The export is cached beside the model as `onnx-cache/model-KEY.onnx`, KEY being a hash of the model's
config and weight files (and of this export's version), so a retrained model never meets a stale export.
A model folder that cannot be written (a Hugging Face snapshot, a read-only share) caches in the user's
cache folder instead (`$XDG_CACHE_HOME/iaa-distill/onnx`, else `~/.cache/...`). Each export is written to
a temporary file and renamed into place, so concurrent runs never see a partial file, and it is checked
against PyTorch before it is used. A model that does not export, or whose export disagrees, is scored with
PyTorch, said in one log line.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..hashing import update_with_file
from ..messages import get_logger

EXPORT_VERSION = "2"  # bump when the exported graph changes: older cached exports are then never used
CACHE_FOLDER = "onnx-cache"
MAX_EXPORT_DIFFERENCE = 1e-4  # an export whose mean scores differ more from PyTorch's is not used
log = get_logger(__name__)


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'onnx' on the CPU, 'torch' on a GPU; 'torch' and 'onnx' stay."""
    if backend == "auto":
        return "onnx" if device.type == "cpu" else "torch"
    return backend


def weights_key(model_dir: str | Path) -> str:
    """Hash of everything the export is made from: config.json and every weight file of the folder."""
    folder = Path(model_dir)
    digest = hashlib.sha256(f"iaa-onnx-{EXPORT_VERSION}-torch-{torch.__version__}".encode())
    for path in [folder / "config.json", *sorted(folder.glob("*.safetensors"))]:
        digest.update(path.name.encode())
        update_with_file(digest, path)
    return digest.hexdigest()[:24]


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iaa-distill" / "onnx"


def cache_folders(model_dir: str | Path) -> list[Path]:
    """Where an export may live, in order: beside the model (not inside the Hugging Face cache, whose
    snapshots are its own), then the user's cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    beside = Path(model_dir).resolve() / CACHE_FOLDER
    in_hub = Path(os.path.abspath(model_dir)).is_relative_to(Path(HF_HUB_CACHE).resolve()) or \
        beside.is_relative_to(Path(HF_HUB_CACHE).resolve())
    return ([] if in_hub else [Path(model_dir) / CACHE_FOLDER]) + [user_cache_dir()]


def cached_onnx(model_dir: str | Path) -> Path | None:
    """The model's cached export, made now when there is none; None (logged) when it cannot be made or used."""
    name = f"model-{weights_key(model_dir)}.onnx"
    for folder in cache_folders(model_dir):
        if (folder / name).is_file():
            return folder / name
    for folder in cache_folders(model_dir):
        if _writable(folder):
            return _export_checked(model_dir, folder / name)
    log.warning("%s: no writable folder for its ONNX export (%s); scoring with PyTorch", model_dir,
                ", ".join(map(str, cache_folders(model_dir))))
    return None


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _export_checked(model_dir: str | Path, out: Path) -> Path | None:
    """Export to `out` (temp file + rename), keep it only when it scores as PyTorch does."""
    from .onnx_export import export_onnx, verify_onnx

    try:
        export_onnx(model_dir, out)
        difference = verify_onnx(model_dir, out)
    except Exception as exc:  # any exporter or runtime failure: PyTorch still scores this model
        log.warning("%s: ONNX export failed (%s: %s); scoring with PyTorch", model_dir, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
        out.unlink(missing_ok=True)
        return None
    if difference > MAX_EXPORT_DIFFERENCE:
        log.warning("%s: its ONNX export differs from PyTorch by %.1e; scoring with PyTorch", model_dir, difference)
        out.unlink(missing_ok=True)
        return None
    return out
