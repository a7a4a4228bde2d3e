"""The culling gallery: one self-contained HTML page of scored photos, usable offline from any folder.

Cards show a lazily loaded thumbnail, the file name (full path on hover), score, stars, flag and
burst group; click or Enter enlarges. Lightroom's keys cull: arrows move, P pick, X reject, U unflag,
0-5 stars. Sort by score, name or capture time (bursts stay together); a score-range filter spans the
data's range. Decisions live in the browser (localStorage) across reloads and export as the CSV that
`iaa cull --decisions FILE --apply` reads (or a TXT list of picks). CSS and JS are inlined from `static/`.

`iaa cull` passes thumbnail files from its side folder; `iaa score --html` embeds small JPEGs as data URIs.
"""
from __future__ import annotations

import base64
import hashlib
import html
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..artifacts import SYNTHETIC_NOTE, atomic_write_text
from ..culling.survey import make_thumbnail
from ..errors import DecodeError
from ..imaging import decode_image
from .scorer import ScoreResult

PICKS = 6
BROWSER_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")  # enlarged from the original file


@dataclass(frozen=True)
class GalleryPhoto:
    """One card: a scored photo, its thumbnail URL ('' for none) and the cull's decision."""

    path: str
    score: float
    thumb: str
    std: float = math.nan
    flag: str = "unflagged"
    rating: int = 0
    burst: str = ""
    taken: float | None = None
    reason: str = ""


def _static(name: str) -> str:
    return resources.files(__package__).joinpath(f"static/{name}").read_text(encoding="utf-8")


def thumbnail_uri(path: str, size: int) -> str:
    """A small JPEG of `path` as a data URI ('' when it cannot be decoded)."""
    try:
        image = decode_image(path, min_side=size)
    except DecodeError:
        return ""
    _, jpeg = make_thumbnail(image, size, quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def histogram_svg(scores: np.ndarray, scale: tuple[float, float], bins: int = 30, width: int = 640, height: int = 180) -> str:
    """Inline SVG bar chart of the score histogram over `scale` (low, high)."""
    counts, edges = np.histogram(scores, bins=bins, range=scale)
    top = max(1, int(counts.max()) if counts.size else 1)
    pad, bar_w = 30, (width - 40) / bins
    bars = []
    for i, count in enumerate(counts):
        h = (height - pad - 10) * count / top
        x, y = 30 + i * bar_w, height - pad - h
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" fill="#4a7bb7">'
            f"<title>{edges[i]:.2f}-{edges[i + 1]:.2f}: {count}</title></rect>"
        )
    ticks = "".join(
        f'<text x="{30 + (v - scale[0]) / (scale[1] - scale[0]) * (width - 40):.1f}" y="{height - 12}" '
        f'text-anchor="middle">{v:.2f}</text>'
        for v in np.linspace(scale[0], scale[1], 5)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="score histogram">{"".join(bars)}{ticks}'
        f'<text x="2" y="12">{top}</text><line x1="30" x2="{width - 10}" y1="{height - pad}" '
        f'y2="{height - pad}" stroke="#888"/></svg>'
    )


def data_range(scores: np.ndarray) -> tuple[float, float, float]:
    """The slider's and histogram's span, the scores' own range rounded out to a step of about 1/100 of
    it (at most 0.01), and that step."""
    if not len(scores):
        return 0.0, 1.0, 0.01
    spread = float(scores.max() - scores.min())
    step = min(0.01, 10.0 ** math.floor(math.log10(spread / 100))) if spread > 0 else 0.01
    # round(..., 6): 5.380903 / 1e-6 is 5380902.99999... in floating point
    low = math.floor(round(float(scores.min()) / step, 6)) * step
    high = math.ceil(round(float(scores.max()) / step, 6)) * step
    return (low, high, step) if high > low else (low - step, high + step, step)


def _decimals(step: float) -> int:
    return max(2, -math.floor(math.log10(step) + 1e-9))


def _card(photo: GalleryPhoto) -> str:
    path, name = html.escape(photo.path), html.escape(Path(photo.path).name)
    image = f'<img src="{html.escape(photo.thumb)}" alt="{name}" loading="lazy">' if photo.thumb else '<div class="noimg">no preview</div>'
    full = Path(photo.path).absolute().as_uri() if Path(photo.path).suffix.lower() in BROWSER_FORMATS else ""
    spread = f"<small> ± {photo.std:.2f}</small>" if math.isfinite(photo.std) else ""
    burst = f'<span class="burst" title="burst or near-duplicate group">{html.escape(photo.burst)}</span>' if photo.burst else ""
    return (
        f'<figure class="card{" in-burst" if photo.burst else ""}" tabindex="-1" data-path="{path}" data-name="{name}" '
        f'data-score="{photo.score:.6f}" data-time="{"" if photo.taken is None else f"{photo.taken:.3f}"}" '
        f'data-burst="{html.escape(photo.burst)}" data-flag="{photo.flag}" data-rating="{photo.rating}" '
        f'data-reason="{html.escape(photo.reason)}" data-full="{html.escape(full)}">{image}<figcaption>'
        f'<span class="name" title="{path}">{name}</span><span class="score">{photo.score:.2f}{spread}</span>'
        f'<span class="stars"></span><span class="flag"></span>{burst}</figcaption></figure>'
    )


def _toolbar(low: float, high: float, step: float) -> str:
    places = _decimals(step)
    slider = f"type='range' min='{low:.{places}f}' max='{high:.{places}f}' step='{step:.{places}f}' data-decimals='{places}'"
    return (
        "<div class='toolbar'><label>Sort by <select id='sort'><option value='score'>score</option>"
        "<option value='name'>name</option><option value='time'>capture time</option></select></label>"
        f"<label>Scores <input {slider} id='min-score' value='{low:.{places}f}'> to <input {slider} id='max-score' "
        f"value='{high:.{places}f}'> <span id='range'></span></label><span id='counts'></span>"
        "<button id='export-csv'>Export decisions (CSV)</button><button id='export-txt'>Export picks (TXT)</button>"
        "<button id='reset'>Forget my changes</button>"
        "<span class='keys'>Arrows move · P pick · X reject · U unflag · 0–5 stars · Enter enlarge · Esc close</span></div>"
    )


def render_page(photos: Sequence[GalleryPhoto], failed: Sequence[tuple[str, str]] = (), title: str = "iaa cull",
                synthetic: bool = False, notes: Sequence[str] = (), thumb_size: int = 200) -> str:
    """The gallery page as a string: histogram, best and worst picks, every photo, failed files."""
    ranked = sorted(photos, key=lambda p: -p.score)
    scores = np.array([p.score for p in ranked], dtype=np.float64)
    low, high, step = data_range(scores)
    n_picks = min(PICKS, max(1, len(ranked) // 2))  # best and worst do not overlap
    key = hashlib.sha1("\n".join(sorted(p.path for p in photos)).encode(errors="surrogateescape")).hexdigest()[:16]
    summary = f"{len(ranked)} photos scored, {len(failed)} failed" + (
        f"; mean {scores.mean():.2f}, median {np.median(scores):.2f}, from {scores.min():.{_decimals(step)}f} "
        f"to {scores.max():.{_decimals(step)}f}" if len(scores) else "")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_static('gallery.css').replace('VAR_THUMB', str(thumb_size))}</style>",
        f"</head><body data-key='{key}'><h1>{html.escape(title)}</h1><p>{summary}.</p>",
        f"<p class='synthetic' id='synthetic'>This model was {html.escape(SYNTHETIC_NOTE)}.</p>" if synthetic else "",
        *[f"<p class='note'>{html.escape(n)}</p>" for n in notes],
        "<h2>Score histogram</h2>", histogram_svg(scores, (low, high)) if len(scores) else "<p>No scores.</p>",
    ]
    if ranked:
        parts += ["<h2>Best picks</h2><div class='grid picks' id='best'>", *map(_card, ranked[:n_picks]),
                  "</div><h2>Worst picks</h2><div class='grid picks' id='worst'>", *map(_card, ranked[::-1][:n_picks]), "</div>"]
    parts += ["<h2>All photos</h2>", _toolbar(low, high, step), "<div class='grid' id='all'>", *map(_card, ranked), "</div>"]
    if failed:
        rows = "".join(f"<tr><td>{html.escape(p)}</td><td>{html.escape(e)}</td></tr>" for p, e in failed)
        parts.append(f"<h2>Failed files ({len(failed)})</h2><table id='failed'>{rows}</table>")
    parts.append(f"<div id='lightbox' hidden><img alt='enlarged photo'><p></p></div><script>{_static('gallery.js')}</script></body></html>")
    return "\n".join(parts)


def render_gallery(results: Sequence[ScoreResult], scale: tuple[float, float] | None = None, title: str = "iaa score",
                   thumb_size: int = 160, max_thumbnails: int = 5000, workers: int = 4, synthetic: bool = False) -> str:
    """The page for `iaa score --html`: thumbnails embedded (the best `max_thumbnails`), nothing decided yet.

    `scale` (the model's) is accepted for callers of older versions; the page spans the data's own range.
    """
    scored = sorted((r for r in results if r.ok), key=lambda r: -r.mean)
    chosen = scored[:max_thumbnails] + scored[max_thumbnails:][-PICKS:]  # the worst picks get thumbnails too
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes outside the GIL
        uris = dict(zip([r.path for r in chosen], pool.map(lambda r: thumbnail_uri(r.path, thumb_size), chosen)))
    photos = [GalleryPhoto(r.path, r.mean, uris.get(r.path, ""), r.std) for r in scored]
    failed = [(r.path, r.error) for r in results if not r.ok]
    return render_page(photos, failed, title, synthetic, thumb_size=thumb_size)


def write_gallery(results: Sequence[ScoreResult], out: str | Path, scale: tuple[float, float] | None = None, **kwargs) -> Path:
    """Write the `iaa score --html` gallery atomically; kwargs go to `render_gallery`."""
    out = Path(out)
    atomic_write_text(out, render_gallery(results, scale, **kwargs))
    return out
