"""A self-contained HTML culling view of scored photos: one file, no external resources.

Thumbnails (small JPEG data URIs) sorted by score with a keep-threshold slider, the score
histogram as inline SVG, the best and worst picks, and the files that could not be scored.
"""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..artifacts import atomic_write_text
from ..errors import DecodeError
from ..imaging import decode_image
from .scorer import ScoreResult

PICKS = 6

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f4;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}
.card{background:#fff;border-radius:6px;padding:.4rem;box-shadow:0 1px 3px #0002;width:VAR_THUMBpx}
.card img{width:100%;height:VAR_THUMBpx;object-fit:contain;background:#eee;display:block}
.card .score{font-weight:600;font-size:1.05rem}.card .path{font-size:.7rem;color:#666;word-break:break-all}
.card.dim{opacity:.25}.picks .card{width:calc(VAR_THUMBpx*1.3)}
.noimg{height:VAR_THUMBpx;display:flex;align-items:center;justify-content:center;color:#999;background:#eee}
svg text{font-size:11px;fill:#444}
table{border-collapse:collapse}td{padding:.2rem .6rem;border-bottom:1px solid #ddd;font-size:.85rem}
"""

SCRIPT = """
const slider=document.getElementById('threshold'),label=document.getElementById('threshold-value'),
kept=document.getElementById('kept');
function cull(){const t=parseFloat(slider.value);label.textContent=t.toFixed(2);let n=0;
document.querySelectorAll('#all .card').forEach(c=>{const keep=parseFloat(c.dataset.score)>=t;
c.classList.toggle('dim',!keep);if(keep)n++;});kept.textContent=n;}
slider.addEventListener('input',cull);cull();
"""


def thumbnail_uri(path: str, size: int) -> str:
    """A small JPEG of `path` as a data URI ('' when it cannot be decoded)."""
    try:
        image = decode_image(path, min_side=size)
    except DecodeError:
        return ""
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram_svg(scores: np.ndarray, scale: tuple[float, float], bins: int = 30, width: int = 640, height: int = 180) -> str:
    """Inline SVG bar chart of the score histogram over the model's scale."""
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
        f'text-anchor="middle">{v:g}</text>'
        for v in np.linspace(scale[0], scale[1], 5)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="score histogram">{"".join(bars)}{ticks}'
        f'<text x="2" y="12">{top}</text><line x1="30" x2="{width - 10}" y1="{height - pad}" '
        f'y2="{height - pad}" stroke="#888"/></svg>'
    )


def _card(result: ScoreResult, uri: str) -> str:
    name = html.escape(result.path)
    image = f'<img src="{uri}" alt="{name}" loading="lazy">' if uri else '<div class="noimg">no preview</div>'
    spread = f" ± {result.std:.2f}" if math.isfinite(result.std) else ""
    return (
        f'<div class="card" data-score="{result.mean:.6f}">{image}'
        f'<div class="score">{result.mean:.2f}<small>{spread}</small></div>'
        f'<div class="path">{name}</div></div>'
    )


def render_gallery(
    results: Sequence[ScoreResult],
    scale: tuple[float, float],
    title: str = "iaa score",
    thumb_size: int = 160,
    max_thumbnails: int = 5000,
    workers: int = 4,
) -> str:
    """The gallery page as a string. Only the best `max_thumbnails` photos get a thumbnail card."""
    scored = sorted((r for r in results if r.ok), key=lambda r: -r.mean)
    failed = [r for r in results if not r.ok]
    shown = scored[:max_thumbnails]
    n_picks = min(PICKS, max(1, len(scored) // 2))  # best and worst do not overlap
    picks = {r.path for r in scored[:n_picks]} | {r.path for r in scored[::-1][:n_picks]}
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes outside the GIL
        uris = dict(zip([r.path for r in shown], pool.map(lambda r: thumbnail_uri(r.path, thumb_size), shown)))
    missing = [r for r in scored if r.path in picks and r.path not in uris]
    uris.update({r.path: thumbnail_uri(r.path, thumb_size) for r in missing})

    means = np.array([r.mean for r in scored], dtype=np.float64)
    summary = (
        f"{len(scored)} photos scored, {len(failed)} failed"
        + (f"; mean {means.mean():.2f}, median {np.median(means):.2f}" if len(means) else "")
    )
    low, high = float(scale[0]), float(scale[1])
    start = float(np.median(means)) if len(means) else low
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE.replace('VAR_THUMB', str(thumb_size))}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{summary}. Scores are on the model's {low:g}–{high:g} scale.</p>",
        "<h2>Score histogram</h2>",
        histogram_svg(means, (low, high)) if len(means) else "<p>No scores.</p>",
    ]
    if scored:
        parts += [
            "<h2>Best picks</h2><div class='grid picks' id='best'>",
            *[_card(r, uris.get(r.path, "")) for r in scored[:n_picks]],
            "</div><h2>Worst picks</h2><div class='grid picks' id='worst'>",
            *[_card(r, uris.get(r.path, "")) for r in scored[::-1][:n_picks]],
            "</div>",
        ]
    parts += [
        f"<h2>All photos by score</h2><p><label>Keep photos scoring at least "
        f"<input type='range' id='threshold' min='{low}' max='{high}' step='0.01' value='{start:.2f}'> "
        f"<span id='threshold-value'></span></label> — <span id='kept'></span> kept</p>",
        "<div class='grid' id='all'>",
        *[_card(r, uris[r.path]) for r in shown],
        "</div>",
    ]
    if len(scored) > len(shown):
        parts.append(f"<p>{len(scored) - len(shown)} lower-scored photos not shown (see the score file).</p>")
    if failed:
        rows = "".join(f"<tr><td>{html.escape(r.path)}</td><td>{html.escape(r.error)}</td></tr>" for r in failed)
        parts.append(f"<h2>Failed files ({len(failed)})</h2><table id='failed'>{rows}</table>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_gallery(results: Sequence[ScoreResult], out: str | Path, scale: tuple[float, float], **kwargs) -> Path:
    """Write the gallery atomically; kwargs go to `render_gallery`."""
    out = Path(out)
    atomic_write_text(out, render_gallery(results, scale, **kwargs))
    return out
