"""The sidecar journal of an applied cull (OUT/journal/): the old bytes of every sidecar, saved before it changes.

`log.jsonl` gets one line, flushed to disk, before a sidecar is written ("begin", with the file holding its
old bytes, or none when there was no sidecar) and one after ("done"). A rerun keeps the first "begin" of
each sidecar, so the old bytes are always those from before this cull; `restore` writes them back
byte-identical (or removes a sidecar this cull created).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .xmp import replace_sidecar

LOG = "log.jsonl"


class Journal:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.begun: dict[str, str | None] = {}  # sidecar -> file of its old bytes (None: there was none)
        self.done: set[str] = set()
        log = self.folder / LOG
        for line in log.read_text(encoding="utf-8", errors="surrogateescape").splitlines() if log.exists() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: its write never started
            if entry["state"] == "begin":
                self.begun.setdefault(entry["sidecar"], entry["old"])
            else:
                self.done.add(entry["sidecar"])

    def _append(self, entry: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOG, "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write(self, sidecar: Path, old: bytes | None, new: bytes) -> None:
        """Save `old` (first time only), then write `new` into `sidecar`, then note it done."""
        key = str(sidecar)
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
            self._append({"sidecar": key, "old": name, "state": "begin"})
            self.begun[key] = name
        replace_sidecar(sidecar, new)
        self._append({"sidecar": key, "state": "done"})
        self.done.add(key)

    def restore(self) -> list[str]:
        """Put every journalled sidecar back as it was; returns one line per sidecar that could not be."""
        problems = []
        for key, name in reversed(self.begun.items()):
            sidecar = Path(key)
            try:
                if name is None:
                    if os.path.lexists(sidecar):
                        sidecar.unlink()
                else:
                    replace_sidecar(sidecar, (self.folder / name).read_bytes())
            except OSError as exc:
                problems.append(f"{sidecar}: could not be restored ({exc.strerror or exc})")
        return problems
