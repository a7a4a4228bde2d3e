"""The journal of an applied cull (OUT/journal/): the old bytes of every sidecar, and of every photo whose
embedded XMP it rates, saved before the file changes.

`log.jsonl` gets one line, flushed to disk, before a file is written ("begin", with the file holding its
old bytes, or none when there was no such file, and the size and sha256 of the new bytes) and one after
("done", with the file's size and modification time then). A rerun keeps the first "begin" of each file, so
the old bytes are always those from before this cull, and recognises a photo that holds this cull's own
write (`holds`) even when a kill came between the rename and the "done" line; `restore` writes the old bytes
back byte-identical (or removes a sidecar this cull created).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..hashing import file_sha256
from .xmp import replace_sidecar

LOG = "log.jsonl"


def signature(path: str | Path) -> str:
    """'size:mtime_ns' of a file: what tells that it changed."""
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}"


class Journal:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.begun: dict[str, str | None] = {}  # file -> file of its old bytes (None: there was none)
        self.done: set[str] = set()
        self.new: dict[str, dict] = {}  # file -> size and sha256 of the last bytes written into it
        self.after: dict[str, str] = {}  # file -> its signature once written
        self.photos: set[str] = set()  # files that are photos (embedded XMP), never written through links
        log = self.folder / LOG
        for line in log.read_text(encoding="utf-8", errors="surrogateescape").splitlines() if log.exists() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: its write never started
            key = entry["sidecar"]
            if entry["state"] == "begin":
                self.begun.setdefault(key, entry["old"])
                self.new[key] = entry.get("new") or {}
                self.photos.update([key] if entry.get("photo") else [])
            else:
                self.done.add(key)
                self.after[key] = entry.get("signature", "")

    def _append(self, entry: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOG, "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write(self, path: Path, old: bytes | None, new: bytes, photo: bool = False) -> None:
        """Save `old` (first time only), note the new bytes' size and hash, write `new` into `path` (a photo
        always by temp file + rename), then note it done with its signature."""
        key = str(path)
        if key not in self.begun:
            name = None
            if old is not None:
                name = f"{len(self.begun):06d}.xmp"
                blob = self.folder / name
                self.folder.mkdir(parents=True, exist_ok=True)
                with open(blob, "wb") as f:
                    f.write(old)
                    f.flush()
                    os.fsync(f.fileno())
            self.begun[key] = name
        self.new[key] = {"size": len(new), "sha256": hashlib.sha256(new).hexdigest()}
        self._append({"sidecar": key, "old": self.begun[key], "state": "begin", "new": self.new[key], "photo": photo})
        replace_sidecar(path, new, in_place=not photo)
        self.finish(path)

    def finish(self, path: Path) -> None:
        """Note `path` done: it holds the bytes last written into it."""
        key = str(path)
        self.after[key] = signature(path)
        self._append({"sidecar": key, "state": "done", "signature": self.after[key]})
        self.done.add(key)

    def holds(self, path: Path) -> bool:
        """True when `path` holds the bytes this journal last wrote into it (its signature once written, else
        its size and sha256: a kill may have come between the rename and the "done" line)."""
        key, new = str(path), self.new.get(str(path))
        if not new or not os.path.isfile(path):
            return False
        found = signature(path)
        return found == self.after.get(key) or int(found.split(":")[0]) == new["size"] and file_sha256(path) == new["sha256"]

    def restore(self) -> list[str]:
        """Put every journalled file back as it was; returns one line per file that could not be."""
        problems = []
        for key, name in reversed(self.begun.items()):
            path = Path(key)
            try:
                if name is None:
                    if os.path.lexists(path):
                        path.unlink()
                else:
                    replace_sidecar(path, (self.folder / name).read_bytes(), in_place=key not in self.photos)
            except OSError as exc:
                problems.append(f"{path}: could not be restored ({exc.strerror or exc})")
        return problems
