"""Embedding files: each scored photo's aesthetic feature keyed by its path, for search and near-duplicates.

`.safetensors`: one float32 tensor (F,) per path, the key being the path. `.npy`: one structured array with
fields `path` (text) and `embedding` (float32, F), loadable without pickle (`np.load(FILE)["embedding"]`).
Failed files have no embedding and are left out. Files are written atomically (temp file + rename).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..artifacts import atomic_file
from ..errors import IAAError
from .result import Result

EMBEDDING_FORMATS = (".npy", ".safetensors")


def check_embedding_path(path: str | Path) -> Path:
    """Refuse a file name whose extension names no embedding format (raises IAAError)."""
    path = Path(path)
    if path.suffix.lower() not in EMBEDDING_FORMATS:
        raise IAAError(f"{path}: embeddings are written as .npy or .safetensors; name the file accordingly")
    return path


def save_embeddings(results: Iterable[Result], path: str | Path) -> int:
    """Write the embeddings of the scored `results` to `path`; returns how many were written."""
    path = check_embedding_path(path)
    vectors = {r.path: np.asarray(r.embedding, dtype=np.float32) for r in results if r.ok and r.embedding is not None}
    with atomic_file(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            from safetensors.numpy import save_file

            save_file(vectors, str(tmp))
        else:
            width = max((len(p) for p in vectors), default=1)
            size = next(iter(vectors.values())).shape[0] if vectors else 0
            table = np.empty(len(vectors), dtype=[("path", f"U{width}"), ("embedding", np.float32, (size,))])
            table["path"] = list(vectors)
            if vectors:
                table["embedding"] = np.stack(list(vectors.values()))
            with open(tmp, "wb") as f:
                np.save(f, table, allow_pickle=False)
    return len(vectors)


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Path -> embedding, from a file `save_embeddings` wrote."""
    path = check_embedding_path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    table = np.load(path, allow_pickle=False)
    return {str(p): e for p, e in zip(table["path"], table["embedding"])}
