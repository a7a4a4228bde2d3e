"""AVA (Murray et al. 2012): `AVA.txt`, `aesthetics_image_lists/*.jpgl`, `tags.txt`, images at `images/<id>.jpg`.

Each image gets its 10 vote counts (scores 1..10). Split = the literature's: test = the ids of
`generic_test.jpgl` present in AVA.txt, train = every other image (val is carved from the found train
images by `open_dataset`, see `data.splits`). Categories: `tag:<name>` for the semantic tags (tag id 0 = none; an id missing from
`tags.txt` gives `tag:<id>`) and `category:<name>` for membership of the 8 category lists
(train and test lists alike). Challenges are not categories; `challenges.txt` is not needed.
Rows with zero votes cannot have a label and are skipped with a note. Image files are not
checked here (`iaa data check` does that).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .parsing import deduplicate, text_lines
from .records import Dataset, ImageRecord, Label

SCALE = (1.0, 10.0)
CATEGORY_LISTS = ("animal", "architecture", "cityscape", "floral", "fooddrink", "landscape", "portrait", "stilllife")
LISTS_DIR = "aesthetics_image_lists"


def read_ava(path: Path) -> Dataset:
    """Read an AVA folder (the one holding AVA.txt) into records with the official test split."""
    root = Path(path)
    label_file = root / "AVA.txt"
    if not label_file.is_file():
        raise DatasetError(f"{root}: no AVA.txt here (expected the AVA folder holding AVA.txt, {LISTS_DIR}/, images/)")
    notes: list[str] = []
    tag_names = _read_tags(root / "tags.txt", notes)
    test_list = root / LISTS_DIR / "generic_test.jpgl"
    if not test_list.is_file():
        raise DatasetError(f"{test_list}: not found (AVA's official test split is read from it)")
    test_ids = _read_id_list(test_list)
    members = _category_members(root / LISTS_DIR, notes)

    rows: list[tuple[str, ImageRecord]] = []
    zero_votes: list[str] = []
    unknown_tags: set[str] = set()
    for number, line in text_lines(label_file):
        where = f"{label_file}:{number}"
        image_id, votes, tags = _parse_row(line, where)
        if sum(votes) == 0:
            zero_votes.append(image_id)
            continue
        unknown_tags |= {str(t) for t in tags if t not in tag_names}
        categories = [f"tag:{tag_names.get(t, t)}" for t in tags] + members.get(image_id, [])
        rows.append((where, ImageRecord(
            image_id=image_id, path=root / "images" / f"{image_id}.jpg", dataset="ava",
            split="test" if image_id in test_ids else "train", categories=tuple(categories),
            label=Label(scale=SCALE, votes=votes),
        )))

    if zero_votes:
        notes.append(f"{len(zero_votes)} rows with zero votes skipped (no label), e.g. {', '.join(zero_votes[:3])}")
    if unknown_tags and tag_names:
        notes.append(f"tag ids not in tags.txt kept as numbers: {', '.join(sorted(unknown_tags, key=int))}")
    records = deduplicate(rows, notes)
    absent = test_ids - {r.image_id for r in records}
    if absent:
        notes.append(f"{len(absent)} ids of generic_test.jpgl have no labelled row in AVA.txt (ignored), e.g. {', '.join(sorted(absent)[:3])}")
    return Dataset(name="ava", root=root, records=records, num_levels=10, scale=SCALE, notes=notes)


def _parse_row(line: str, where: str) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """One AVA.txt row -> (image id, 10 vote counts, non-zero semantic tag ids)."""
    cols = line.split()
    if len(cols) != 15:
        raise DatasetError(f"{where}: expected 15 space-separated columns, found {len(cols)}")
    try:
        numbers = tuple(map(int, cols[2:14]))
    except ValueError:
        raise DatasetError(f"{where}: vote counts and tag ids must be integers") from None
    votes, tags = numbers[:10], numbers[10:]
    if min(votes) < 0:
        raise DatasetError(f"{where}: negative vote count")
    return cols[1], votes, tuple(t for t in tags if t)


def _category_members(lists_dir: Path, notes: list[str]) -> dict[str, list[str]]:
    """image id -> `category:<name>` of every category list (train and test) it appears in."""
    members: dict[str, list[str]] = {}
    missing = []
    for category in CATEGORY_LISTS:
        listed: set[str] = set()
        for part in ("train", "test"):
            list_file = lists_dir / f"{category}_{part}.jpgl"
            if list_file.is_file():
                listed |= _read_id_list(list_file)
            else:
                missing.append(f"{category}_{part}")
        for image_id in listed:
            members.setdefault(image_id, []).append(f"category:{category}")
    if missing:
        notes.append(f"category lists not found in {LISTS_DIR}/ (categories incomplete): {' '.join(missing)}")
    return members


def _read_tags(path: Path, notes: list[str]) -> dict[int, str]:
    """tags.txt: `id name` per line (names may contain spaces)."""
    if not path.is_file():
        notes.append("tags.txt not found: semantic tags kept as numbers")
        return {}
    tags = {}
    for number, line in text_lines(path):
        tag_id, _, name = line.partition(" ")
        try:
            tags[int(tag_id)] = name.strip() or tag_id
        except ValueError:
            raise DatasetError(f"{path}:{number}: expected 'id name', got {line!r}") from None
    return tags


def _read_id_list(path: Path) -> set[str]:
    """A .jpgl list: one image id per line."""
    return {line.split()[0] for _, line in text_lines(path)}
