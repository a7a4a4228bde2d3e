"""An evaluation output folder: metrics.json, per_image.csv, report.md, self-contained report.html, PNG plots.

`write_report` writes it; `load_run` reads it back (for `iaa compare`).
"""
from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_text
from ..errors import IAAError
from .categories import DEFAULT_MIN_IMAGES, MIN_CI_IMAGES, per_category
from .metrics import compute_metrics
from .plots import category_plot, histogram_plot, plot_title, scatter_plot
from .predictions import Predictions

METRICS_NAME = "metrics.json"
PER_IMAGE_NAME = "per_image.csv"
PLOTS = {"scatter": "scatter.png", "histogram": "histogram.png", "categories": "categories.png"}

# (key in the overall metrics, label in tables); EMD rows appear only when present.
HEADLINE = (
    ("srcc", "SRCC"),
    ("plcc", "PLCC"),
    ("plcc_logistic", "PLCC (after 4-parameter logistic fit)"),
    ("krcc", "KRCC"),
    ("accuracy", "Binary accuracy"),
    ("emd_r1", "EMD (r=1)"),
    ("emd_r2", "EMD (r=2)"),
    ("mse", "MSE"),
    ("mae", "MAE"),
    ("true_mean", "Mean of true scores"),
    ("true_std", "Std of true scores"),
    ("pred_mean", "Mean of predicted scores"),
    ("pred_std", "Std of predicted scores"),
)


@dataclass
class EvalRun:
    """One evaluation folder read back: its predictions and its metrics.json document."""

    path: Path
    predictions: Predictions
    document: dict[str, Any]

    @property
    def name(self) -> str:
        return self.document.get("model") or self.path.name


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers rounded, NaN/None as 'n/a'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def jsonable(value: Any) -> Any:
    """NaN/inf become null so metrics.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def headline_rows(overall: dict[str, Any]) -> list[list[str]]:
    """[label, value] rows of the headline metrics present in `overall`."""
    rows = []
    for key, label in HEADLINE:
        if key not in overall:
            continue
        if key == "accuracy" and overall.get("threshold") is not None:
            label = f"{label} (true and predicted >= {overall['threshold']:g})"
        rows.append([label, fmt(overall[key])])
    return rows


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt_p(value: float | None) -> str:
    """A p-value as reported: '< 0.001' below that, else three decimals; NaN/None as 'n/a'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table in a box that scrolls sideways when it is wider than the page."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class=\"wide\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>\n"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


HTML_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
              "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
              "text-align:left}img{max-width:100%}.wide{overflow-x:auto;max-width:100%}")


def html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n{body}</body></html>\n")


def build_document(
    predictions: Predictions,
    threshold: float | None = None,
    min_category_images: int = DEFAULT_MIN_IMAGES,
    excluded: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics.json document: run metadata, overall metrics, per-category results, excluded images."""
    overall = compute_metrics(predictions, threshold)
    categories = per_category(predictions, min_category_images)
    return {
        "model": predictions.model_name,
        "dataset": predictions.dataset,
        "split": predictions.split,
        "n": len(predictions),
        "scale": list(predictions.scale) if predictions.scale else None,
        "num_levels": predictions.num_levels,
        **(extra or {}),
        "overall": overall,
        "min_category_images": min_category_images,
        "per_category": categories,
        "excluded": dict(excluded or {}),
        "plots": dict(PLOTS),
    }


def write_report(
    predictions: Predictions,
    out: str | Path,
    threshold: float | None = None,
    min_category_images: int = DEFAULT_MIN_IMAGES,
    excluded: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute every metric and write the evaluation folder; returns the metrics.json document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    document = build_document(predictions, threshold, min_category_images, excluded, extra)
    overall, categories, excluded = document["overall"], document["per_category"], document["excluded"]
    predictions.to_csv(out / PER_IMAGE_NAME)
    plots = {
        "scatter": scatter_plot(predictions, overall, out / PLOTS["scatter"]),
        "histogram": histogram_plot(predictions, out / PLOTS["histogram"]),
        "categories": category_plot(categories, out / PLOTS["categories"], plot_title(predictions, "SRCC per category")),
    }
    title = f"Evaluation of {predictions.model_name or 'model'} on {predictions.dataset or 'dataset'}"
    sections = _sections(document, categories, excluded)
    md = [f"# {title}\n"]
    body = [f"<h1>{html.escape(title)}</h1>\n"]
    for heading, text, headers, rows, plot in sections:
        md.append(f"\n## {heading}\n\n" + (f"{text}\n\n" if text else ""))
        body.append(f"<h2>{html.escape(heading)}</h2>\n" + (f"<p>{html.escape(text)}</p>\n" if text else ""))
        if rows:
            md.append(markdown_table(headers, rows))
            body.append(html_table(headers, rows))
        if plot:
            md.append(f"\n![{heading}]({PLOTS[plot]})\n")
            body.append(f"<img alt=\"{html.escape(heading)}\" src=\"{data_uri(plots[plot])}\">\n")
    atomic_write_text(out / "report.md", "".join(md))
    atomic_write_text(out / "report.html", html_page(title, "".join(body)))
    # written last: its presence marks a complete evaluation folder
    atomic_write_text(out / METRICS_NAME, json.dumps(jsonable(document), indent=2) + "\n")
    return document


def _category_row(c: dict[str, Any]) -> list[Any]:
    low, high = c.get("srcc_ci", [math.nan, math.nan])
    ci = "too few" if c["n"] < MIN_CI_IMAGES else ("n/a" if not math.isfinite(low) else f"[{low:.3f}, {high:.3f}]")
    return [c["category"], c["n"], fmt(c["srcc"]), ci, fmt(c["plcc"])]


def _sections(document: dict[str, Any], categories: list[dict[str, Any]], excluded: dict[str, str]):
    """(heading, text, table headers, table rows, plot key) of each report section."""
    scale = document["scale"]
    summary = (f"Model {document['model'] or 'n/a'}, dataset {document['dataset'] or 'n/a'}, "
               f"split {document['split'] or 'n/a'}: {document['n']} images"
               + (f", scale {scale[0]:g}..{scale[1]:g}" if scale else "")
               + (f", {len(excluded)} excluded (could not be scored)" if excluded else "") + ".")
    cat_headers = ["Category", "n", "SRCC", "SRCC 95% CI", "PLCC"]
    shown = [_category_row(c) for c in categories if not c["too_few"]]
    few = [_category_row(c) for c in categories if c["too_few"]]
    sections = [
        ("Overall", summary, ["Metric", "Value"], headline_rows(document["overall"]), None),
        ("Predicted vs true", "", [], [], "scatter"),
        ("Score distributions", "", [], [], "histogram"),
    ]
    if document.get("notes"):
        sections.append(("Notes", " ".join(document["notes"]), [], [], None))
    if categories:
        sections.append(("Per category", f"Categories with at least {document['min_category_images']} images.",
                         cat_headers, shown, "categories"))
    if few:
        sections.append(("Categories with too few images",
                         f"Fewer than {document['min_category_images']} images: not meaningful, listed for "
                         "completeness only.", cat_headers, few, None))
    if excluded:
        sections.append(("Excluded images", "", ["Image", "Reason"], sorted(excluded.items()), None))
    return sections


def _nan(value: Any) -> Any:
    """null -> NaN for the numeric fields read back from metrics.json."""
    return math.nan if value is None else value


def load_run(directory: str | Path) -> EvalRun:
    """Read an evaluation folder written by `write_report` (`iaa eval`)."""
    directory = Path(directory).expanduser()
    metrics_path = directory / METRICS_NAME
    if not metrics_path.is_file() or not (directory / PER_IMAGE_NAME).is_file():
        raise IAAError(f"{directory}: not an evaluation folder (expected {METRICS_NAME} and {PER_IMAGE_NAME}; "
                       "run `iaa eval` first)")
    try:
        document = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as exc:
        raise IAAError(f"{metrics_path}: invalid JSON ({exc})") from None
    document["overall"] = {k: _nan(v) if k != "threshold" else v for k, v in document.get("overall", {}).items()}
    for row in document.get("per_category", []):
        row["srcc"], row["plcc"] = _nan(row.get("srcc")), _nan(row.get("plcc"))
    scale = document.get("scale")
    predictions = Predictions.from_csv(
        directory / PER_IMAGE_NAME, tuple(scale) if scale else None, document.get("num_levels"),
        document.get("model") or directory.name, document.get("dataset", ""), document.get("split", ""))
    return EvalRun(directory, predictions, document)
