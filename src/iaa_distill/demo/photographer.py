"""A simulated photographer for tests and benchmarks: the demo's photos rated by a hidden taste.

The taste is NOT the demo's label formula (which only penalises degradations): it depends on content,
preferring some subjects (the cat, the coffee, the astronaut) over others (microscopy, deep space), and on
technique: it likes warm light (the generator's warm colour cast), dislikes tilted horizons strongly and
blur, and barely minds noise or JPEG artefacts. Stars come from the taste plus a little inconsistency
(sd 0.3, seeded per photo) cut at fixed levels; the worst photos are rejected. Ratings are written as real
XMP sidecars (`photo.xmp`) by exiftool, as Lightroom or Bridge would leave them.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import IAAError

SUBJECT = {"chelsea": 1.5, "coffee": 1.0, "astronaut": 0.6, "motorcycle": 0.3, "rocket": 0.0, "camera": -0.3,
           "hubble": -1.0, "cells": -1.2, "retina": -1.5}
TECHNIQUE = {"clean": 0.0, "colour_cast": 0.45, "tilt": -0.9, "blur": -0.6, "underexposed": -0.3,
             "overexposed": -0.4, "bad_crop": -0.3, "noise": -0.1, "jpeg": -0.1}
# taste -> stars: below the first cut a reject (-1), then 1..5 stars
CUTS = (-2.4, -1.2, -0.4, 0.3, 1.0)
NAME = re.compile(r"(?P<photo>[a-z]+)_\d{3}_(?P<kind>[a-z_]+?)(?P<strength>\d)\.jpg$")


def hidden_taste(photo: str | Path) -> float:
    """The photographer's liking of a demo photo, from its subject and its technique (parsed from the name)."""
    match = NAME.search(Path(photo).name)
    if match is None:
        raise IAAError(f"{photo}: not a demo photo name (PHOTO_NNN_KINDS.jpg)")
    return SUBJECT[match["photo"]] + TECHNIQUE[match["kind"]] * int(match["strength"])


def stars(photo: str | Path, seed: int = 0) -> int:
    """The rating given: -1 (reject) or 1..5, the taste plus a seeded per-photo inconsistency."""
    noise = np.random.default_rng([seed, zlib.crc32(Path(photo).name.encode())]).normal(0, 0.3)
    return int(np.searchsorted(CUTS, hidden_taste(photo) + noise)) or -1


def rate_with_exiftool(photos: Iterable[Path], seed: int = 0) -> dict[Path, int]:
    """Write each photo's stars into a new `photo.xmp` sidecar with one exiftool run (existing sidecars of
    these photos are replaced); returns the ratings written."""
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        raise IAAError("exiftool is not installed (apt install libimage-exiftool-perl): the simulated "
                       "photographer writes its ratings with it")
    ratings = {Path(p): stars(p, seed) for p in photos}
    lines = []
    for photo, rating in ratings.items():
        photo.with_suffix(".xmp").unlink(missing_ok=True)
        lines += [f"-XMP-xmp:Rating={rating}", "-o", str(photo.with_suffix(".xmp")), str(photo), "-execute"]
    with tempfile.NamedTemporaryFile("w", suffix=".args", delete=False) as args:
        args.write("\n".join(lines) + "\n")
    try:
        done = subprocess.run([exiftool, "-q", "-@", args.name], capture_output=True, text=True)
    finally:
        Path(args.name).unlink()
    if done.returncode != 0:
        raise IAAError(f"exiftool failed writing sidecars: {done.stderr.strip().splitlines()[:1]}")
    return ratings


def unrate(folder: Path) -> None:
    """Remove the photographer's sidecars below `folder` (the demo photos' own ones only)."""
    for sidecar in folder.rglob("*.xmp"):
        if NAME.search(sidecar.with_suffix(".jpg").name):
            sidecar.unlink()
