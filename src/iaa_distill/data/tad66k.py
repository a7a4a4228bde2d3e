"""TAD66K (He et al. 2022): `merge/{train,test}.csv` (`image,score`, mean rating on 1..10) and themes from `unmerge/`.

Official train/test split (val is carved from the found train images by `open_dataset`). Each image's themes become
`theme:<name>` categories (the theme is the file name of `unmerge/{train,test}/<theme>.csv`).
Image ids are the file names relative to the image folder. The image folder is the first of
`images/`, `imgs/` that exists, else the dataset folder itself; `images=PATH` in the spec
(`tad66k:/data/TAD66K?images=/data/tad_imgs`) names another one.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .parsing import csv_rows, deduplicate, number, relative_id
from .records import Dataset, ImageRecord, Label

SCALE = (1.0, 10.0)
IMAGE_FOLDERS = ("images", "imgs")


def read_tad66k(path: Path, *, images: Path | None = None) -> Dataset:
    """Read a TAD66K folder (the one holding merge/ and unmerge/)."""
    root = Path(path)
    if not (root / "merge").is_dir():
        raise DatasetError(f"{root}: no merge/ folder here (expected TAD66K's merge/train.csv and merge/test.csv)")
    image_dir = Path(images).expanduser() if images else _image_folder(root)
    themes: dict[str, list[str]] = {}
    for part in ("train", "test"):
        folder = root / "unmerge" / part
        for theme_file in sorted(folder.glob("*.csv")) if folder.is_dir() else ():
            for _, image_id, _ in _score_rows(theme_file):
                themes.setdefault(image_id, []).append(f"theme:{theme_file.stem}")
    notes: list[str] = [] if themes else ["no unmerge/ theme files found: images have no theme categories"]

    rows = []
    for split in ("train", "test"):
        for where, image_id, score in _score_rows(root / "merge" / f"{split}.csv"):
            categories = tuple(dict.fromkeys(themes.get(image_id, ())))
            record = ImageRecord(image_id, image_dir / image_id, "tad66k", split, categories, Label(SCALE, score=score))
            rows.append((where, record))
    records = deduplicate(rows, notes)
    return Dataset(name="tad66k", root=root, records=records, num_levels=None, scale=SCALE, notes=notes)


def _image_folder(root: Path) -> Path:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root


def _score_rows(path: Path):
    """(file:line, image id, score) of an `image,score` CSV."""
    header, rows = csv_rows(path)
    if "image" not in header or "score" not in header:
        raise DatasetError(f"{path}: expected columns 'image,score', found {','.join(header)}")
    for line, row in rows:
        where = f"{path}:{line}"
        yield where, relative_id(row["image"], where), number(row["score"], where)
