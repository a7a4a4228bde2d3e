"""Stage breakdown of an input path (read, decode, resize, compute, write) and the stage that binds it.

Each stage is timed alone on the same photos, through the same code the real path runs (`iaa_distill.inputs`):
- read (+ decode in the workers): the `BatchReader` through its DataLoader workers, nothing else;
- decode + resize on the device (`prepare`) of batches already read into memory;
- compute: the model on a fixed batch (measured by the caller);
- write: rows into a `storage.RowStore`, committed (fsynced) like the real caches.
The slowest stage is the limit of the path; the end-to-end rate is printed as a ratio to it.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..inputs import BatchReader, OutputSize, prepare
from ..storage import RowStore, create_array
from .timing import Report, images_per_second


def _batches(count: int, batch_size: int) -> list[list[int]]:
    return [list(range(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]


def read_rate(reader: BatchReader, workers: int, repeats: int) -> float:
    """img/s of the workers alone: read (and, worker decode, decode) every batch into one buffer."""
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=workers)
    return images_per_second(lambda: sum(len(raw.rows) + len(raw.jpeg_rows) for raw in loader), repeats=repeats)


def prepare_rate(reader: BatchReader, sizes: Sequence[OutputSize], device: torch.device, repeats: int) -> float:
    """img/s of `prepare` (transfer, device decode of JPEG bytes, grouped resize) on batches already in memory."""
    raws = [reader[k] for k in range(len(reader))]
    min_side = max(size for size, _ in sizes)

    def run() -> int:
        done = sum(len(prepare(raw, device, sizes, reader.paths, min_side).rows) for raw in raws)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return done

    return images_per_second(run, repeats=repeats)


def write_rate(row_shape: tuple[int, ...], dtype: type, count: int, batch_size: int, repeats: int) -> float:
    """img/s of writing `count` rows in batches into a row store, one fsynced commit per batch."""
    values = np.ones((batch_size, *row_shape), dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        array = Path(tmp) / "rows.npy"
        create_array(array, (count, *row_shape), dtype)

        def run() -> int:
            with RowStore(array, Path(tmp) / "journal.jsonl") as store:
                for rows in _batches(count, batch_size):
                    store.write(rows, values[: len(rows)])
                    store.commit({"rows": len(rows)})
            return count

        return images_per_second(run, repeats=repeats)


def input_stages(report: Report, section: str, photos: Sequence[Path], sizes: Sequence[OutputSize],
                 device: torch.device, decoder: str, workers: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Add and return the read/decode and resize stage rates of the shared input path for these output sizes."""
    paths = [str(p) for p in photos]
    encoded = decoder == "torchvision"
    reader = BatchReader(paths, _batches(len(paths), batch_size), max(s for s, _ in sizes), encoded=encoded)
    where = f"{workers} workers" if workers else "main process"
    read_name = "read JPEG bytes" if encoded else "read + reduced-size decode"
    stage_name = "decode (nvJPEG) + grouped resize" if encoded and device.type == "cuda" else (
        "decode + grouped resize" if encoded else "grouped resize")
    size_text = "/".join(str(s) for s, _ in sizes)
    return {
        "read": report.add(section, f"stage read: {read_name} ({where})", read_rate(reader, workers, repeats)),
        "resize": report.add(section, f"stage {stage_name} to {size_text} on {device.type}",
                             prepare_rate(reader, sizes, device, repeats)),
    }


def binding_stage(report: Report, section: str, stages: dict[str, float], end_to_end: float,
                  goal: float | None) -> str:
    """Print and record the slowest stage and the end-to-end rate as a ratio to it. Every stage must have been
    measured at the end-to-end figure's batch size: a path cannot beat its slowest stage, so a ratio above 1 is
    recorded as a measurement error (noise, or stages timed unlike the path), not as a result."""
    name = min(stages, key=stages.get)
    text = ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
    impossible = end_to_end > stages[name]
    report.ratio(f"{section}: end to end vs its binding stage ({name})", end_to_end, stages[name],
                 goal=None if impossible else goal, note=f"[stages img/s: {text}]",
                 verdict="MEASUREMENT ERROR (above 1: the stages and the path were not timed alike)" if impossible else None)
    return name


def shared_core_limit(report: Report, section: str, stages: dict[str, float], end_to_end: float) -> float:
    """Print and record the end-to-end rate against 1 / sum(1 / stage rate): the limit when every stage, each
    timed alone on all the cores, has to share those cores with the others (a CPU machine: the decoding workers
    and the model run on the same cores, so min(stages) is out of reach unless one stage is much the faster)."""
    shared = 1 / sum(1 / v for v in stages.values())
    names = " + ".join(f"1/{k}" for k in stages)
    return report.ratio(f"{section}: end to end vs 1 / ({names}) (its stages sharing the same cores)",
                        end_to_end, shared)
