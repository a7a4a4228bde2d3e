"""A saved artefact is a folder: `config.json` (rebuilds the model and its preprocessing) + `model.safetensors`."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from dataclasses import asdict
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import IAAError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_UMASK = os.umask(0)  # read once at import (setting it back at once); umask cannot be read without setting it
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what a newly created file gets


@contextlib.contextmanager
def atomic_file(path: Path, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` to write the new file to (by any writer: PIL, numpy, safetensors, ONNX);
    when the block ends without an error it is fsynced (unless not `durable`: a cache that is made again when
    it is missing or wrong, where an fsync per file would cost more than the file) and renamed over `path`, so
    readers see either the old or the new file, never half. The temporary file never stays behind, and gets the
    usual permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.close(fd)
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        yield tmp
        os.chmod(tmp, FILE_MODE)  # and so do writers that make their file anew (safetensors)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file whole or not at all (`atomic_file`)."""
    with atomic_file(path, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file (UTF-8, whatever the locale) whole or not at all. File names that are not UTF-8 (kept by
    Python as surrogate escapes) are written as their own bytes."""
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def save_artifact(directory: str | Path, kind: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write weights then config (the config's presence marks a complete artefact)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / WEIGHTS_NAME) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    payload = {"kind": kind, "iaa_distill_version": __version__, **config}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    return directory


def model_name(directory: str | Path) -> str:
    """A model's display name: its folder's, or the run folder's for a model saved by training (RUN/model)."""
    resolved = Path(directory).expanduser().resolve()
    return resolved.parent.name if resolved.name == "model" else resolved.name


def read_json(path: Path, missing: str) -> dict[str, Any]:
    """A JSON file as a dict; `missing` is the error when it does not exist."""
    if not path.is_file():
        raise IAAError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise IAAError(f"{path}: invalid JSON ({exc})") from None


def read_config(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The `config.json` of a model folder; `kind` checks that it holds what the caller expects."""
    directory = Path(directory).expanduser()
    config = read_json(directory / CONFIG_NAME, f"{directory}: not a model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    if kind is not None and config.get("kind") != kind:
        raise IAAError(f"{directory}: holds a '{config.get('kind')}' model, expected '{kind}'")
    return config


def load_artifact(directory: str | Path, kind: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an artefact folder (config and weights)."""
    config = read_config(directory, kind)
    weights_path = Path(directory).expanduser() / WEIGHTS_NAME
    if not weights_path.is_file():
        raise IAAError(f"{directory}: not a model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        return config, load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error type for truncated or damaged files
        raise IAAError(f"{weights_path}: damaged or truncated weights ({_first_line(exc)}); "
                       "copy the model folder again or re-train it") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def dataclass_from_json(cls: type, data: dict[str, Any], tuples: tuple[str, ...] = ()) -> Any:
    """Rebuild dataclass `cls` from its JSON dict: unknown keys (e.g. `kind`) dropped, JSON lists in `tuples` made tuples."""
    values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
    values.update({k: tuple(values[k]) for k in tuples if values.get(k) is not None})
    return cls(**values)


class SavedModel:
    """`save_pretrained` / `from_pretrained` for an nn.Module built from a dataclass `config` (with `from_dict`)."""

    KIND: ClassVar[str]
    CONFIG: ClassVar[type]

    def save_pretrained(self, directory: str | Path, **extra: Any) -> Path:
        config = asdict(self.config)
        if extra:
            config["extra"] = {**config.get("extra", {}), **extra}
        return save_artifact(directory, self.KIND, config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        config, state = load_artifact(directory, cls.KIND)
        config_path = Path(directory).expanduser() / CONFIG_NAME
        try:
            model = cls(cls.CONFIG.from_dict(config))
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:  # e.g. timm's "Unknown model"
            raise IAAError(f"{config_path}: cannot build the model ({_first_line(exc)}); "
                           "the config was edited or is damaged") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), _first_line(exc))
            raise IAAError(f"{config_path}: does not match {WEIGHTS_NAME} ({detail}); "
                           "the config was edited or the files come from different models") from None
        return model.eval()


SYNTHETIC_NOTE = "trained on SYNTHETIC labels (the demo's formula), not human ratings: its scores are not aesthetic judgements"


def labels_are_synthetic(config: Any) -> bool:
    """True for a model (config dataclass or its JSON dict) trained on synthetic labels, such as the demo's."""
    value = config.get("synthetic_labels") if isinstance(config, dict) else getattr(config, "synthetic_labels", False)
    return bool(value)
