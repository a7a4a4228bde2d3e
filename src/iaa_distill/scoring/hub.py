"""Hub names for models: `org/name` (optionally at a pinned revision) resolves through `huggingface_hub`, and a
model folder is published with a model card.

Resolving looks in the local Hugging Face cache first (`HF_HUB_CACHE`, by default ~/.cache/huggingface/hub) and
uses the network only for what is not there, so a cached model loads with `HF_HUB_OFFLINE=1` or no network at
all. A name without a revision uses the cached copy of `main` when there is one: pin a commit hash (or a tag)
for a definite model. A path that exists on disk is always a model folder, never a hub name.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import IAAError

# what a model folder holds: config.json, model.safetensors, model.onnx, split.json, the card
MODEL_FILES = ["*.json", "*.safetensors", "*.onnx", "README.md"]
CARD_NAME = "README.md"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def network_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises when the Hub cannot be reached or refuses: HTTP, connection and token errors."""
    from huggingface_hub.errors import HfHubHTTPError

    # OSError: token and cache errors (and, before huggingface_hub 1.0, every requests error); the HTTP client's
    # own base error (connection refused, timeouts) is HfHubHTTPError's base class
    return (OSError, HfHubHTTPError.__mro__[1])


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (huggingface_hub's run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_hub_name(model: str | Path) -> bool:
    """`org/name` that is not an existing path."""
    return isinstance(model, str) and REPO_ID.fullmatch(model) is not None and not Path(model).expanduser().exists()


def resolve_model(model: str | Path, revision: str | None = None) -> Path:
    """The folder of `model`: a local folder as is, a hub name as its snapshot in the Hugging Face cache
    (downloaded the first time; raises IAAError with what to do when it cannot be had)."""
    if not is_hub_name(model):
        if revision:
            raise IAAError(f"{model}: a revision applies to hub names (org/name), not to a model folder")
        return Path(model)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    at = f" at revision {revision}" if revision else ""
    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=MODEL_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise IAAError(f"{model}: not a model folder, and not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
                           f"{at} while HF_HUB_OFFLINE is set; run once with network access, or give a folder") from None
    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=MODEL_FILES))
    except RepositoryNotFoundError:
        raise IAAError(f"{model}: not a model folder, nor a model on the Hub (check the name; for a private "
                       "model log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise IAAError(f"{model}: the Hub has no revision {revision!r}") from None
    except network_errors() as exc:  # no network, Hub down
        raise IAAError(f"{model}{at}: not in the Hugging Face cache and the Hub cannot be reached ({first_line(exc)}); "
                       "check the network, or give a model folder") from None


def model_card(model_dir: str | Path, repo_id: str, metrics: dict[str, Any] | None = None) -> str:
    """README.md for a model folder: what it is, its training data, its metrics and how to use it.

    metrics: an evaluation's metrics.json (`iaa eval`), whose test figures are added to the validation ones."""
    from huggingface_hub import ModelCardData

    from ..artifacts import SYNTHETIC_NOTE, labels_are_synthetic, read_config

    config = read_config(model_dir)
    extra = config.get("extra", {})
    synthetic = labels_are_synthetic(config)
    data = ModelCardData(library_name="iaa-distill", license=None,
                         tags=["image-aesthetics", "iaa-distill", config["kind"]] + (["synthetic-labels"] if synthetic else []))
    levels, (low, high) = config.get("num_levels"), config.get("scale", (1, 10))
    what = f"a {levels}-level distribution" if levels else "one scalar score"
    lines = [f"---\n{data.to_yaml()}\n---", f"# {repo_id}", "",
             f"An image-aesthetics {config['kind']} model of iaa-distill (backbone `{config.get('backbone', 'teachers')}`, "
             f"input {config.get('input_size', '?')} px): scores on {low:g}–{high:g} as {what}.", ""]
    if synthetic:
        lines += [f"**Warning: this model was {SYNTHETIC_NOTE}.**", ""]
    lines += ["## Training data", "",
              f"- dataset: {extra.get('dataset', 'not recorded')}"
              + (f" (fingerprint {extra['dataset_fingerprint']})" if extra.get("dataset_fingerprint") else ""),
              f"- labels: {'synthetic (a formula, not human ratings)' if synthetic else 'human ratings'}",
              f"- {'baseline trained on labels only' if extra.get('baseline') else 'distilled from the teachers'}", "",
              "## Metrics", "", "| split | SRCC | PLCC |", "|---|---|---|"]
    lines += [_metric_row("validation" + (f" (epoch {extra['epoch']})" if "epoch" in extra else ""),
                          extra.get("val_srcc"), extra.get("val_plcc"))]
    if metrics:
        overall = metrics.get("overall", {})
        split = f"{metrics.get('split', 'test')} ({metrics.get('dataset', '?')}, n={overall.get('n', '?')})"
        lines.append(_metric_row(split, overall.get("srcc"), overall.get("plcc")))
    lines += ["", "## Use", "", "```python", "from iaa_distill import Scorer", "",
              f'scorer = Scorer.from_pretrained("{repo_id}")  # pin revision="<commit>" for a definite model',
              'print(scorer.score("photo.jpg").mean)', "```", "", "```sh", f"iaa score photos/ --model {repo_id}", "```", ""]
    return "\n".join(lines)


def _metric_row(split: str, srcc: float | None, plcc: float | None) -> str:
    shown = ["not recorded" if v is None else f"{v:.3f}" for v in (srcc, plcc)]
    return f"| {split} | {shown[0]} | {shown[1]} |"


def push_to_hub(model_dir: str | Path, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                metrics: str | Path | None = None, message: str | None = None, token: str | None = None) -> tuple[str, bool]:
    """Publish a model folder as hub model `repo_id`; returns (commit id, whether a model card was written).

    The folder gets a README.md model card first when it has none (an existing one, maybe edited, is kept), so
    what is published and what a later download holds are the same bytes as the folder's."""
    from huggingface_hub import HfApi

    from ..artifacts import read_config, read_json

    model_dir = Path(model_dir)
    read_config(model_dir)  # a model folder, or a clear error
    card = model_dir / CARD_NAME
    wrote_card = not card.exists()
    if wrote_card:
        from ..artifacts import atomic_write_text

        found = read_json(Path(metrics), f"{metrics}: no such metrics file") if metrics else None
        atomic_write_text(card, model_card(model_dir, repo_id, found))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=model_dir, allow_patterns=MODEL_FILES, revision=revision,
                                 commit_message=message or f"iaa push {model_dir.name}")
    except network_errors() as exc:
        raise IAAError(f"{repo_id}: push failed ({first_line(exc)}); check the network and your login "
                       "(hf auth login, or HF_TOKEN)") from None
    return info.oid, wrote_card

