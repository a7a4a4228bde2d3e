"""Content hashes that need nothing but the standard library (culling's reruns import no torch or numpy)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks: a culled photo's copy check and a
    teacher's weights fingerprint."""
    return update_with_file(hashlib.sha256(), path).hexdigest()


def update_with_file(digest: Any, path: str | Path) -> Any:
    """Feed a file's bytes into `digest` in 1 MiB blocks (one digest may cover several files); returns it."""
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest
