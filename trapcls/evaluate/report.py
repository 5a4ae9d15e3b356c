"""One self-contained HTML evaluation report: metrics tables, pictures and example galleries, no external requests."""

from __future__ import annotations

import base64
import html
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trapcls import __version__
from trapcls.core.system.exceptions import MissingDependencyError
from trapcls.core.system.fsutil import atomic_write_text, writing
from trapcls.core.system.names import display
from trapcls.evaluate import pictures

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 192
NOT_FOUND = "image not found"


class GalleryItem(NamedTuple):
    """One example: the image (None when unknown), its labels, the top-1 probability and a caption."""

    image: Path | None
    true_label: str
    predicted_label: str
    probability: float
    caption: str


@dataclass
class Gallery:
    """A titled set of examples shown as a grid of thumbnails."""

    title: str
    items: list[GalleryItem] = field(default_factory=list)
    description: str = ""


def galleries(
    keys: list[str],
    probs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    images: list[Path | None],
    *,
    per_gallery: int = 12,
) -> list[Gallery]:
    """Most confident mistakes, most uncertain predictions, and up to 3 examples per true class."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if probs.ndim != 2 or probs.shape != (n, len(classes)):
        raise ValueError(f"probs has shape {probs.shape}; expected ({n}, {len(classes)}) for {n} labels")
    if len(keys) != n or len(images) != n:
        raise ValueError(f"{len(keys)} keys and {len(images)} images for {n} labels; expected one each")
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must be class indices in 0..{len(classes) - 1}")
    predicted = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    top1 = probs[np.arange(n), predicted] if n else np.zeros(0)
    p_true = probs[np.arange(n), labels] if n else np.zeros(0)

    def item(i: int, caption: str) -> GalleryItem:
        return GalleryItem(images[i], classes[labels[i]], classes[predicted[i]], float(top1[i]), caption)

    # Stable sorts: ties keep the input order, so the report is reproducible.
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-top1[wrong], kind="stable")][:per_gallery]
    uncertain = np.argsort(top1, kind="stable")[:per_gallery]
    per_class: list[GalleryItem] = []
    for c in range(len(classes)):
        rows = np.flatnonzero(labels == c)
        if not len(rows):
            continue
        rows = rows[np.argsort(-p_true[rows], kind="stable")]  # most to least sure of the true class
        picks = [(rows[0], "best")]
        if len(rows) >= 3:
            picks.append((rows[len(rows) // 2], "median"))
        if len(rows) >= 2:
            picks.append((rows[-1], "worst"))
        for i, rank in picks:
            per_class.append(item(i, f"{keys[i]} · {rank} for {classes[c]}, p(true) {p_true[i]:.3f}"))
    return [
        Gallery("Most confident mistakes", [item(i, f"{keys[i]} · p(true) {p_true[i]:.3f}") for i in wrong],
                "Wrong top-1 predictions, most confident first: label errors or look-alike classes."),
        Gallery("Most uncertain", [item(i, f"{keys[i]} · p(true) {p_true[i]:.3f}") for i in uncertain],
                "Lowest top-1 probability first: what the model cannot decide on."),
        Gallery("Per-class examples", per_class,
                "For each true class the image the model is most sure of, a median one and the least sure."),
    ]


def write_report(
    path: Path,
    *,
    title: str,
    metrics: dict,
    classes: list[str],
    galleries: list[Gallery],
    bundle_summary: dict | None,
    command: str,
    comparison: dict | None = None,
    notes: list[str] | None = None,
) -> dict:
    """Write the report as one HTML file (images inlined as data: URIs) atomically; return what was embedded.

    The result counts pictures, distinct thumbnails embedded and gallery cards shown with the
    "image not found" placeholder, and lists the image paths that could not be read.
    """
    notes = list(notes or [])
    stats: dict[str, Any] = {"pictures": 0, "thumbnails": 0, "thumbnails_missing": 0, "missing_images": []}
    drawn = len(metrics.get("confusion_classes") or classes)
    if metrics.get("confusion") is not None and drawn > pictures.MOST_CLASSES:
        notes.append(f"{drawn} classes occur: too many to draw a confusion matrix (at most {pictures.MOST_CLASSES}); "
                     "`trapcls evaluate --json` holds it.")
    try:
        figures = _figures(metrics, classes)
        stats["pictures"] = len(figures)
    except MissingDependencyError as exc:
        # The tables are the report; a field box without matplotlib still gets them.
        log.warning("report written without pictures: %s", exc)
        notes.append(f"No pictures: {exc}")
        figures = []
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    body = [
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(generated)} by trapcls {_e(__version__)} with:</p>',
        f'<pre class="command">{_e(command)}</pre></header>',
        _contents(metrics, comparison, notes=bool(notes), pictures=bool(figures),
                  galleries=bool(galleries), bundle=bool(bundle_summary)),
    ]
    if notes:
        items = "".join(f"<li>{_e(note)}</li>" for note in notes)
        body.append(_section("notes", "Warnings", f'<ul class="notes">{items}</ul>'))
    body.append(_section("headline", "Headline metrics", _headline(metrics)))
    if comparison:
        body.append(_section("comparison", "Comparison", _comparison(comparison)))
    body.append(_section("per-class", "Per class", _per_class_table(metrics.get("per_class") or [])))
    if metrics.get("per_site"):
        body.append(_section("per-site", "Per site", _per_site_table(metrics["per_site"])))
    if figures:
        body.append(_section("pictures", "Pictures", _figures_html(figures)))
    cache: dict[Path | None, str | None] = {}
    for number, gallery in enumerate(galleries, 1):
        body.append(_gallery(number, gallery, cache, stats))
    if bundle_summary:
        body.append(_section("bundle", "Model bundle", _bundle(bundle_summary)))
    body.append(f"<footer>trapcls {_e(__version__)} · one self-contained file: no scripts, no network "
                "requests.</footer>")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )
    with writing(path, "--report"):  # a folder, a read-only or full disk: one line naming the file
        atomic_write_text(path, page)
    stats["bytes"] = len(page.encode("utf-8"))
    log.info("report %s: %d pictures, %d thumbnails, %d images not found", path, stats["pictures"],
             stats["thumbnails"], stats["thumbnails_missing"])
    return stats


def _figures(metrics: dict, classes: list[str]) -> list[tuple[str, str, bytes, bool]]:
    """(id, caption, PNG, wide) for every picture the metrics allow."""
    out = []
    # The classes that occur (evaluate_probs leaves the others out of the matrix); a hand-built one has them all.
    shown = metrics.get("confusion_classes") or classes
    if metrics.get("confusion") is not None and 0 < len(shown) <= pictures.MOST_CLASSES:
        wide = len(shown) > 20  # side by side up to 20 classes; beyond that each needs the full width
        out.append(("confusion", "Confusion matrix, counts (rows: true class, columns: predicted), over the "
                    "classes that occur.", pictures.confusion_png(metrics["confusion"], shown, normalised=False), wide))
        out.append(("confusion-normalised", "Confusion matrix, each row as a share of its true class.",
                    pictures.confusion_png(metrics["confusion"], shown, normalised=True), wide))
    if metrics.get("reliability"):
        out.append(("reliability", "Reliability: accuracy per top-1 confidence bin; bars under the diagonal "
                    "mean over-confidence.", pictures.reliability_png(metrics["reliability"]), False))
    if metrics.get("per_class"):
        out.append(("per-class-bars", "Precision and recall per class, most frequent first.",
                    pictures.per_class_png(metrics["per_class"]), False))
    return out


def _figures_html(figures: list[tuple[str, str, bytes, bool]]) -> str:
    parts = ['<div class="pictures">']
    for ident, caption, png, wide in figures:
        parts.append(
            f'<figure class="picture{" wide" if wide else ""}"><div class="scroll">'
            f'<img id="{ident}" src="{_data_uri(png, "image/png")}" alt="{_e(caption)}"></div>'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    parts.append("</div>")
    return "".join(parts)


def _gallery(number: int, gallery: Gallery, cache: dict[Path | None, str | None], stats: dict) -> str:
    ident = f"gallery-{number}"
    parts = [f'<section class="gallery" id="{ident}"><h2>{_e(gallery.title)}</h2>']
    if gallery.description:
        parts.append(f'<p class="meta">{_e(gallery.description)}</p>')
    if not gallery.items:
        parts.append("<p>None.</p></section>")
        return "".join(parts)
    parts.append('<div class="grid">')
    for item in gallery.items:
        key = Path(item.image) if item.image is not None else None
        if key not in cache:  # an image in several galleries is decoded once
            data = pictures.thumbnail(key, THUMBNAIL_SIZE)
            cache[key] = _data_uri(data, "image/jpeg") if data else None
            if data:
                stats["thumbnails"] += 1
            elif key is not None:
                stats["missing_images"].append(str(key))
        uri = cache[key]
        if uri is None:
            stats["thumbnails_missing"] += 1
        # The file name only: the page is shared, and the caption gives the row's path relative to the inputs.
        name = key.name if key is not None else "(no path)"
        if uri:
            picture = f'<img src="{uri}" alt="{_e(name)}" loading="lazy">'
        else:
            picture = (f'<div class="missing" role="img" aria-label="{NOT_FOUND}"><span>{NOT_FOUND}'
                       f'<span class="path">{_e(name)}</span></span></div>')
        wrong = item.true_label != item.predicted_label
        parts.append(
            f'<figure class="card{" wrong" if wrong else ""}">{picture}<figcaption>'
            f"<div>true <b>{_e(item.true_label)}</b></div>"
            f'<div>pred <b class="{"bad" if wrong else "good"}">{_e(item.predicted_label)}</b> '
            f'<span class="num">{_fmt(item.probability, 3)}</span></div>'
            f'<div class="caption">{_e(item.caption)}</div></figcaption></figure>'
        )
    parts.append("</div></section>")
    return "".join(parts)


def _headline(metrics: dict) -> str:
    rows: list[tuple[str, Any, str]] = [("images", metrics.get("n"), "")]
    if "log_loss" in metrics:
        rows.append(("log loss", metrics["log_loss"], metrics.get("log_loss_rule") or ""))
    for key, name, how in (
        ("accuracy", "accuracy", "top-1 prediction equals the label"),
        ("balanced_accuracy", "balanced accuracy", "mean recall over the classes"),
        ("macro_f1", "macro-F1", "unweighted mean of the per-class F1"),
    ):
        if key in metrics:
            rows.append((name, metrics[key], how))
    for k, value in sorted((metrics.get("top_k") or {}).items(), key=lambda kv: int(kv[0])):
        rows.append((f"top-{k} accuracy", value, f"label among the {k} most probable classes"))
    if "ece" in metrics:
        bins = metrics.get("ece_bins")
        rows.append(("ECE", metrics["ece"], f"expected calibration error, {bins} equal-width confidence bins"
                     if bins else "expected calibration error"))
    blank = metrics.get("blank")
    if blank:
        threshold = blank.get("threshold")
        rule = f"blank when p(blank) ≥ {_fmt(threshold, 2)}" if threshold is not None else ""
        for key, name in (("blank_precision", "blank precision"), ("blank_recall", "blank recall"),
                          ("animal_precision", "animal precision"), ("animal_recall", "animal recall")):
            rows.append((name, blank.get(key), rule))
        counts = ", ".join(f"{k} {blank[k]}" for k in ("tp", "fp", "fn", "tn") if blank.get(k) is not None)
        if counts:
            rows.append(("blank counts", "", f"{counts} (positive = blank)"))
    body = "".join(f'<tr><th scope="row">{_e(name)}</th><td class="num">{_fmt(value)}</td>'
                   f'<td class="how">{_e(how)}</td></tr>'
                   for name, value, how in rows)
    return _table(["metric", "value", "how it is computed"], body)


def _comparison(comparison: dict) -> str:
    """Both results side by side with b − a, as `trapcls.core.metrics.compare` gives them."""
    a_name, b_name = (comparison.get("names") or ("A", "B"))[:2]
    parts = []
    rows = _comparison_metrics(comparison)
    if rows:
        body = "".join(
            f'<tr><th scope="row">{_e(name)}</th><td class="num">{_fmt(a)}</td><td class="num">{_fmt(b)}</td>'
            f"{_diff_cell(diff, lower_is_better=not higher)}</tr>"
            for name, a, b, diff, higher in rows
        )
        parts.append(f"<h3>Headline metrics</h3>{_table(['metric', a_name, b_name, f'{b_name} − {a_name}'], body)}")
    rows = comparison.get("classes") or comparison.get("per_class") or []
    if rows:
        body = "".join(
            f'<tr><th scope="row">{_e(row.get("class"))}</th><td class="num">{_fmt(row.get("f1_a"))}</td>'
            f'<td class="num">{_fmt(row.get("f1_b"))}</td>{_diff_cell(_first(row, "f1_difference", "f1_diff"))}'
            f'<td class="num">{_fmt(row.get("recall_a"))}</td><td class="num">{_fmt(row.get("recall_b"))}</td>'
            f'{_diff_cell(_first(row, "recall_difference", "recall_diff"))}</tr>'
            for row in rows
        )
        headers = ["class", f"F1 {a_name}", f"F1 {b_name}", "F1 difference", f"recall {a_name}", f"recall {b_name}",
                   "recall difference"]
        parts.append(f"<h3>Per class</h3>{_table(headers, body)}")
    return "".join(parts) or "<p>Nothing to compare.</p>"


def _comparison_metrics(comparison: dict) -> list[tuple[str, Any, Any, Any, bool]]:
    """(name, a, b, b − a, higher is better) rows from a "metrics" list or a "headline" mapping."""
    if isinstance(comparison.get("headline"), dict):
        named = [{"name": name, **row} for name, row in comparison["headline"].items()]
    else:
        named = comparison.get("metrics") or []
    return [(str(row.get("name")), row.get("a"), row.get("b"), _first(row, "difference", "diff"),
             row.get("higher_is_better", not _lower_is_better(row.get("name")))) for row in named]


def _first(row: dict, *keys: str) -> Any:
    return next((row[key] for key in keys if row.get(key) is not None), None)


_LOWER_IS_BETTER = ("log_loss", "log loss", "ece")


def _lower_is_better(name: Any) -> bool:
    """For comparison rows that do not say: loss and calibration error improve downwards."""
    return str(name or "").lower().startswith(_LOWER_IS_BETTER)


def _per_class_table(per_class: list[dict]) -> str:
    if not per_class:
        return "<p>No per-class metrics.</p>"
    body = "".join(
        f'<tr><th scope="row">{_e(row.get("class"))}</th><td class="num">{_fmt(row.get("precision"))}</td>'
        f'<td class="num">{_fmt(row.get("recall"))}</td><td class="num">{_fmt(row.get("f1"))}</td>'
        f'<td class="num">{_fmt(row.get("support"))}</td></tr>'
        for row in per_class
    )
    return _table(["class", "precision", "recall", "F1", "support"], body)


def _per_site_table(per_site: dict) -> str:
    body = []
    for site, row in per_site.items():
        blank = row.get("blank") or {}
        body.append(
            f'<tr><th scope="row">{_e(site)}</th><td class="num">{_fmt(row.get("n"))}</td>'
            f'<td class="num">{_fmt(row.get("accuracy"))}</td><td class="num">{_fmt(row.get("balanced_accuracy"))}</td>'
            f'<td class="num">{_fmt(row.get("macro_f1"))}</td><td class="num">{_fmt(row.get("log_loss"))}</td>'
            f'<td class="num">{_fmt(blank.get("blank_recall"))}</td>'
            f'<td class="num">{_fmt(blank.get("animal_recall"))}</td></tr>'
        )
    return _table(["site", "images", "accuracy", "balanced accuracy", "macro-F1", "log loss", "blank recall",
                   "animal recall"], "".join(body))


_BUNDLE_FIRST = ("arch", "classes", "calibration", "metrics", "trapcls_version", "created", "preprocess")


def _bundle(summary: dict) -> str:
    keys = [k for k in _BUNDLE_FIRST if k in summary] + [k for k in summary if k not in _BUNDLE_FIRST]
    body = []
    for key in keys:
        value = summary[key]
        if key == "classes" and isinstance(value, list):
            shown = f'<span class="num">{len(value)}</span>: ' + _e(", ".join(map(str, value)))
        else:
            shown = _value_html(value)
        body.append(f'<tr><th scope="row">{_e(key)}</th><td class="text">{shown}</td></tr>')
    return _table(["key", "value"], "".join(body))


def _value_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: dicts as nested key/value lists, scalar lists comma-joined."""
    if isinstance(value, dict):
        if not value:
            return "—"
        if depth >= 3:
            return _e(repr(value))
        items = "".join(f"<dt>{_e(k)}</dt><dd>{_value_html(v, depth + 1)}</dd>" for k, v in value.items())
        return f"<dl>{items}</dl>"
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return _e(", ".join(_fmt(v) for v in value)) or "—"
        return "<ol>" + "".join(f"<li>{_value_html(v, depth + 1)}</li>" for v in value) + "</ol>"
    return _e(_fmt(value))


def _contents(metrics: dict, comparison: dict | None, *, notes: bool, pictures: bool, galleries: bool,
              bundle: bool) -> str:
    links = [("notes", "Warnings")] if notes else []
    links += [("headline", "Headline")]
    links += [("comparison", "Comparison")] if comparison else []
    links += [("per-class", "Per class")]
    links += [("per-site", "Per site")] if metrics.get("per_site") else []
    links += [("pictures", "Pictures")] if pictures else []
    links += [("gallery-1", "Examples")] if galleries else []
    links += [("bundle", "Bundle")] if bundle else []
    return "<nav>" + " · ".join(f'<a href="#{ident}">{_e(name)}</a>' for ident, name in links) + "</nav>"


def _section(ident: str, heading: str, content: str) -> str:
    return f'<section id="{ident}"><h2>{_e(heading)}</h2>{content}</section>'


def _table(headers: list[str], body: str) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _diff_cell(value: Any, *, lower_is_better: bool = False) -> str:
    """A signed difference, green when it is an improvement and red when it is a regression."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="num">—</td>'
    better = value < 0 if lower_is_better else value > 0
    tone = "" if value == 0 else "better" if better else "worse"
    return f'<td class="num {tone}">{"+" if value > 0 else ""}{_fmt(value)}</td>'


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(value) else f"{float(value):.{digits}f}"
    return str(value)


def _e(value: Any) -> str:
    # display(): a file name whose bytes are not UTF-8 shown with \x escapes, as the page must be UTF-8.
    return html.escape("" if value is None else display(str(value)), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_CSS = """
:root { --fg: #1d2329; --muted: #5b6770; --line: #dde2e6; --bad: #b3261e; --good: #1e7b34; --bg2: #f5f7f8; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       line-height: 1.45; margin: 0 auto; padding: 1rem; max-width: 1200px; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; overflow-wrap: anywhere; }
h3 { font-size: 1.05rem; margin: 1rem 0 .4rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .6rem; border-bottom: 2px solid var(--line); padding-bottom: .2rem; }
.meta { color: var(--muted); margin: .2rem 0; }
pre.command { background: var(--bg2); padding: .6rem .8rem; border-radius: 6px; white-space: pre-wrap;
              overflow-wrap: anywhere; font-size: .9rem; }
nav { position: sticky; top: 0; background: #fff; padding: .4rem 0; border-bottom: 1px solid var(--line);
      font-size: .95rem; z-index: 1; }
nav a { color: #1f5fa8; }
.notes li { color: var(--bad); }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-size: .92rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--bg2); white-space: nowrap; }
tbody th { font-weight: 600; white-space: nowrap; }
td.num, span.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.how { color: var(--muted); min-width: 16rem; }
td.text { min-width: 20rem; overflow-wrap: anywhere; }
td.better { color: var(--good); } td.worse { color: var(--bad); }
dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
.pictures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 1rem; }
.picture { margin: 0; } .picture.wide { grid-column: 1 / -1; }
.picture img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.picture.wide img { max-width: none; }  /* many classes: natural size, scroll sideways rather than shrink */
figcaption { color: var(--muted); font-size: .88rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(46%, 180px), 1fr)); gap: .8rem; }
.card { margin: 0; border: 1px solid var(--line); border-radius: 6px; overflow: hidden; background: #fff; }
.card.wrong { border-color: var(--bad); }
.card img { display: block; width: 100%; height: 150px; object-fit: contain; background: #111; }
.card figcaption { padding: .35rem .5rem; color: var(--fg); overflow-wrap: anywhere; }
.card .caption { color: var(--muted); font-size: .8rem; }
b.bad { color: var(--bad); } b.good { color: var(--good); }
.missing .path { display: block; font-weight: 400; font-size: .75rem; padding: 0 .4rem; overflow-wrap: anywhere; }
.missing { height: 150px; display: flex; align-items: center; justify-content: center; text-align: center;
           color: var(--muted); font-weight: 600; background: repeating-linear-gradient(45deg, #eceff1, #eceff1 10px,
           #f7f8f9 10px, #f7f8f9 20px); }
footer { margin: 2.5rem 0 1rem; color: var(--muted); font-size: .85rem; }
@media (max-width: 600px) { body { padding: .6rem; } h1 { font-size: 1.3rem; } th, td { padding: .25rem .45rem; } }
"""
