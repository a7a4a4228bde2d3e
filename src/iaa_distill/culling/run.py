"""One cull: score (cached) and survey (thumbnails, hashes, capture times) from one decode per photo, group
bursts, decide, write the decisions CSV and the gallery, then XMP sidecars and file actions when asked.

The output folder holds `scores.csv` (resumable, from `score_to_file`), `thumbs/`, `decisions.csv`,
`gallery.html` and `model.json` (which model and which version of the decoder made the scores: another model
refuses the folder, another decoder has it scored again).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import atomic_write_text, labels_are_synthetic
from ..errors import IAAError
from ..imaging import DECODER_VERSION, IMAGE_EXTENSIONS
from ..messages import get_logger
from ..scoring.batch import format_output, journal_paths, read_output, score_to_file
from ..scoring.gallery import GalleryPhoto, render_page
from ..settings import fingerprint
from .actions import lead_photos
from .bursts import group_bursts
from .decisions import write_decisions
from .rules import CullRules, Decision, decide
from .survey import PhotoFacts, Surveyor, changed_photos, survey

SIDECARS = (".xmp",)  # files beside photos that are expected, not skipped photos
log = get_logger(__name__)


@dataclass
class CullResult:
    """The decisions, the facts behind them, the seconds each stage took and the files written."""

    decisions: list[Decision]
    facts: dict[str, PhotoFacts]
    seconds: dict[str, float] = field(default_factory=dict)
    synthetic: bool = False
    files: dict[str, Path] = field(default_factory=dict)


def check_model(out: Path, model_dir: str | Path, config) -> None:
    """Refuse to reuse scores made by another model; drop the scores made by another version of the decoder (from
    other pixels of the same files: a camera JPEG's preview or its full image), so that they are scored again
    and one folder never mixes the two; then remember the model and the decoder."""
    stamp = {"model": str(Path(model_dir).resolve()), "config": fingerprint(config), "decoder": DECODER_VERSION}
    path, scores = out / "model.json", out / "scores.csv"
    if path.exists() and (scores.exists() or journal_paths(scores)):
        old = json.loads(path.read_text())
        if (old.get("model"), old.get("config")) != (stamp["model"], stamp["config"]):
            raise IAAError(f"{out}: its scores were made by {old.get('model')}; use another --out for this model, "
                           "or delete scores.csv there to rescore")
        if old.get("decoder") != DECODER_VERSION:
            log.info("%s: its scores were made by another version of the decoder; scoring every photo again", out)
            if scores.exists():
                forget_scores(scores, list(read_output(scores, "csv")), bool(config.num_levels))
            for journal in journal_paths(scores):  # an interrupted run's scores, from that decoder too
                journal.unlink()
    atomic_write_text(path, json.dumps(stamp, indent=2) + "\n")


def cull(paths: Sequence[str], scorer, model_dir: str | Path, out: str | Path, rules: CullRules = CullRules(), *,
         thumb_size: int = 400, batch_size: int = 32, workers: int = 2, progress: bool = False,
         title: str = "iaa cull") -> CullResult:
    """Score `paths` into `out` (cached), decide by `rules`, write decisions.csv and gallery.html.

    Twins (IMG_1.CR3 + IMG_1.JPG) are one photo: the lead (JPEG or other non-RAW first) is scored and
    decided, the others travel with it. A photo changed since it was scored is scored again."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_model(out, model_dir, scorer.config)
    paths = lead_photos(paths)
    forget_scores(out / "scores.csv", changed_photos(out / "thumbs", paths), bool(scorer.config.num_levels))
    clock = time.perf_counter()
    surveyor = Surveyor(out / "thumbs", thumb_size)  # thumbnails from the scoring decode: one decode per photo
    (out / "thumbs").mkdir(exist_ok=True)
    rows = score_to_file(scorer, paths, out / "scores.csv", batch_size=batch_size, num_workers=workers,
                         resume=True, progress=progress, visit=surveyor, stage="scoring + thumbnails")
    seconds = {"scoring": time.perf_counter() - clock}
    clock = time.perf_counter()  # the photos whose scores were kept, or whose decode failed, are surveyed alone
    facts = survey(paths, out / "thumbs", thumb_size, workers, progress, known=surveyor.facts)
    seconds["thumbnails"] = time.perf_counter() - clock
    clock = time.perf_counter()
    by_path = {r.path: r for r in rows or []}
    results = [by_path[p] for p in paths]
    bursts = group_bursts([facts[p] for p in paths], rules.burst_gap, rules.burst_distance) if rules.bursts else [""] * len(paths)
    decisions = decide(paths, [r.mean for r in results], bursts, rules, [r.error for r in results])
    synthetic = labels_are_synthetic(scorer.config)
    files = {"scores": out / "scores.csv", "decisions": write_decisions(decisions, out / "decisions.csv")}
    seconds["decisions"] = time.perf_counter() - clock
    clock = time.perf_counter()
    files["gallery"] = write_culling_gallery(decisions, facts, out / "gallery.html", title, synthetic,
                                             {r.path: r.std for r in results})
    seconds["gallery"] = time.perf_counter() - clock
    return CullResult(decisions, facts, seconds, synthetic, files)


def forget_scores(scores: Path, photos: Sequence[str], with_distribution: bool) -> None:
    """Drop the cached scores of `photos` (replaced or edited since), so they are scored again."""
    if not photos or not scores.exists():
        return
    rows = read_output(scores, "csv")
    kept = [r for p, r in rows.items() if p not in set(photos)]
    atomic_write_text(scores, format_output(kept, "csv", with_distribution))


def write_culling_gallery(decisions: Sequence[Decision], facts: dict[str, PhotoFacts], out: Path, title: str,
                          synthetic: bool, spreads: dict[str, float] | None = None) -> Path:
    """The gallery of a cull, its thumbnails referenced relative to the page."""
    thumbs = os.path.relpath(out.parent / "thumbs", out.parent)
    photos = [GalleryPhoto(d.path, d.score, f"{thumbs}/{facts[d.path].thumb}" if d.path in facts and facts[d.path].thumb else "",
                           (spreads or {}).get(d.path, float("nan")), d.flag, d.rating, d.burst,
                           facts[d.path].taken if d.path in facts else None, d.reason)
              for d in decisions if d.flag != "error"]
    failed = [(d.path, d.reason) for d in decisions if d.flag == "error"]
    atomic_write_text(out, render_page(photos, failed, title, synthetic))
    return out


def skipped_files(specs: Sequence[str]) -> list[str]:
    """Files in the given folders that are not photos (sidecars aside), as 'N .ext' counts, for the report."""
    counts: Counter[str] = Counter()
    for spec in specs:
        if not Path(spec).is_dir():
            continue
        for _, folders, files in os.walk(spec):
            folders[:] = [d for d in folders if not d.startswith(".")]
            for name in files:
                suffix = Path(name).suffix.lower()
                if not name.startswith(".") and suffix not in IMAGE_EXTENSIONS and suffix not in SIDECARS:
                    counts[suffix or "(no extension)"] += 1
    return [f"{n} {ext}" for ext, n in counts.most_common()]
