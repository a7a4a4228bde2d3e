"""A saved artefact is a folder: `config.json` (rebuilds the model and its preprocessing) + `model.safetensors`."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import IAAError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_UMASK = os.umask(0)  # read once at import (setting it back at once); umask cannot be read without setting it
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_artifact(directory: str | Path, kind: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write weights then config (the config's presence marks a complete artefact)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS_NAME}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, directory / WEIGHTS_NAME)
    payload = {"kind": kind, "iaa_distill_version": __version__, **config}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    return directory


def read_config(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The `config.json` of a model folder; `kind` checks that it holds what the caller expects."""
    directory = Path(directory).expanduser()
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise IAAError(f"{directory}: not a model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise IAAError(f"{config_path}: invalid JSON ({exc})") from None
    if kind is not None and config.get("kind") != kind:
        raise IAAError(f"{directory}: holds a '{config.get('kind')}' model, expected '{kind}'")
    return config


def load_artifact(directory: str | Path, kind: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an artefact folder (config and weights)."""
    config = read_config(directory, kind)
    weights_path = Path(directory).expanduser() / WEIGHTS_NAME
    if not weights_path.is_file():
        raise IAAError(f"{directory}: not a model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    return config, load_file(str(weights_path))
