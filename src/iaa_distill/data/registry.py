"""Open a dataset named on the command line as `FORMAT:PATH[?option=value&...]`.

Formats: ava, tad66k, aadb, koniq, csv, folder, xmp, decisions, darktable (e.g. `ava:/data/AVA`, `csv:/data/mine/labels.csv`,
`folder:~/Photos`, `xmp:~/Photos` for the stars in XMP sidecars and embedded XMP, `decisions:decisions.csv` for
the ratings exported from the culling gallery, `darktable:library.db` for darktable's catalogue). `~` is expanded. Options after `?` go to the reader as keyword arguments:
`csv:labels.csv?scale=1,10`, `csv:...?test_fraction=0.1`, `koniq:...?test_fraction=0.2`,
`tad66k:...?images=/data/tad66k_images`. A path that exists as written (even with a '?') is
taken as is.
"""
from __future__ import annotations

import gc
import inspect
from collections.abc import Callable
from pathlib import Path

from ..errors import DatasetError
from .aadb import read_aadb
from .ava import read_ava
from .csv_labels import read_csv
from .darktable import read_darktable_ratings
from .decisions import read_decisions_ratings
from .folder import read_folder
from .koniq import read_koniq
from .records import Dataset
from .splits import DEFAULT_VAL_FRACTION, carve_val
from .tad66k import read_tad66k
from .xmp_ratings import read_xmp_ratings

READERS: dict[str, Callable[..., Dataset]] = {
    "ava": read_ava,
    "tad66k": read_tad66k,
    "aadb": read_aadb,
    "koniq": read_koniq,
    "csv": read_csv,
    "folder": read_folder,
    "xmp": read_xmp_ratings,
    "decisions": read_decisions_ratings,
    "darktable": read_darktable_ratings,
}
NUMERIC_OPTIONS = {"test_fraction"}


def open_dataset(spec: str, *, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> Dataset:
    """Read the dataset named by `spec` (FORMAT:PATH) into records, with the split every run uses: the reader's
    official splits, and val carved from the found train images when there is no val list (`splits.carve_val`).
    `seed` also carves a reader's seeded test split (KonIQ-10k, a CSV without a split column)."""
    fmt, sep, location = spec.partition(":")
    fmt = fmt.strip().lower()
    if not sep or not location:
        raise DatasetError(f"dataset {spec!r}: expected FORMAT:PATH with FORMAT one of {', '.join(READERS)}")
    if fmt not in READERS:
        raise DatasetError(f"dataset {spec!r}: unknown format {fmt!r}; known formats: {', '.join(READERS)}")
    reader = READERS[fmt]
    path, options = _split_options(location, reader, spec)
    if not path.exists():
        raise DatasetError(f"dataset {spec!r}: {path} does not exist")
    gc_was_enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of new records: cyclic GC passes would cost ~30% of the time
    try:
        if "seed" in inspect.signature(reader).parameters:
            options = {"seed": seed, **options}
        return carve_val(reader(path, **options), val_fraction, seed)
    finally:
        if gc_was_enabled:
            gc.enable()


def _split_options(location: str, reader: Callable[..., Dataset], spec: str) -> tuple[Path, dict]:
    """The path and the reader options of `PATH?key=value&key=value`."""
    plain = Path(location).expanduser()
    base, sep, query = location.rpartition("?")
    if not sep or plain.exists():
        return plain, {}
    allowed = [p for p in inspect.signature(reader).parameters if p not in ("path", "seed")]
    options: dict = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if key not in allowed or not eq:
            accepted = ", ".join(f"{a}=..." for a in allowed) or "none"
            raise DatasetError(f"dataset {spec!r}: unknown option {item!r} (options of this format: {accepted})")
        if key in NUMERIC_OPTIONS:
            try:
                value = float(value)
            except ValueError:
                raise DatasetError(f"dataset {spec!r}: option {key} must be a number, got {value!r}") from None
        options[key] = value
    return Path(base).expanduser(), options
