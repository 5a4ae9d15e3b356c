"""`trapcls evaluate`: match prediction CSVs to labels, score them, and report what does not fit.

Predictions come from `trapcls predict` (field or submission format, or `watch`'s CSVs); labels
in any layout `trapcls train` reads (class folders, filepath,label[,site] CSV, DrivenData,
file names by regex). A prediction row is matched to a label by its id (submission: the file
stem) or by the longest unambiguous tail of its path (field). Nothing is dropped silently:
unmatched ids on either side, labels the model has no class for, error rows, rows that do not
sum to 1 and images missing for the gallery are counted and named in the notes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from trapcls.core.frames.labels import Sample, load_samples
from trapcls.core.metrics import compare, evaluate_probs
from trapcls.core.model.blank import DEFAULT, DEFAULT_BLANK_THRESHOLD, BlankRule, blank_index, given_rule
from trapcls.core.model.bundle import MANIFEST, load_bundle, store_blank_policy
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import refuse_input_as_output
from trapcls.core.system.names import display
from trapcls.core.table.blank import rule_for_table
from trapcls.core.table.read import Table
from trapcls.core.table.read import read_predictions as read_predictions_table
from trapcls.core.table.row import Row
from trapcls.evaluate.certify import certify_blank_threshold
from trapcls.evaluate.config import EvaluateConfig
from trapcls.evaluate.report import galleries, write_report

log = logging.getLogger(__name__)

SUM_TOLERANCE = 1e-4  # |row sum - 1| beyond this is reported (the rows are renormalised, as the metric does)
EXAMPLES = 5


@dataclass(frozen=True)
class Predictions:
    """One prediction CSV as arrays: the row keys, class probabilities, and the rows that failed."""

    source: Path
    fmt: str
    classes: list[str]
    keys: list[str]
    probs: np.ndarray  # (N, C); only the rows with probabilities
    failed: list[str]  # keys of error rows (unreadable images)
    model: str | None = None  # the model column of a field CSV (None: submission, or written before it existed)
    table: Table | None = None  # the CSV as read, for its blank rule


@dataclass
class Matched:
    """Predictions aligned with labels, ready to score, and what did not line up."""

    keys: list[str]
    probs: np.ndarray
    labels: np.ndarray
    classes: list[str]
    sites: list[str] | None
    images: list[Path | None]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def read_predictions(path: Path) -> Predictions:
    """Read a `predict`/`watch` CSV in the field or submission format (rows that are not distributions are
    renormalised and reported by `match`, as the metric does)."""
    table = read_predictions_table(path, distributions=False)
    good = [row for row in table.rows if row.ok]
    probs = np.asarray([row.probs for row in good], dtype=np.float64).reshape(len(good), len(table.classes))
    _refuse_non_probabilities(table, good, probs)
    return Predictions(source=path, fmt=table.fmt, classes=list(table.classes), keys=[row.path for row in good],
                       probs=probs, failed=[row.path for row in table.rows if not row.ok], model=table.model,
                       table=table)


def _refuse_non_probabilities(table: Table, good: list[Row], probs: np.ndarray) -> None:
    """DataError naming the file, row and column of the first cell that is NaN, infinite or negative: no
    renormalisation makes such a row a distribution, and one of them turns the log loss into NaN."""
    bad = np.argwhere(~np.isfinite(probs) | (probs < 0))
    if not len(bad):
        return
    row, column = bad[0]
    line = next(i for i, r in enumerate(table.rows, start=2) if r is good[row])  # the header is line 1
    more = f" ({len(bad) - 1} more such cells)" if len(bad) > 1 else ""
    raise DataError(f"{table.source}: row {line} ({display(good[row].path)}), column {display(table.classes[column])}: "
                    f"{probs[row, column]:g} is not a probability (NaN, infinite or negative){more}. Fix or remove "
                    "the row; a CSV trapcls wrote never holds one.")


def blank_rule(config: EvaluateConfig, predictions: Predictions) -> BlankRule:
    """The rule blank-vs-animal scores use: the one the CSV was written with (trapcls.core.table.blank), the
    threshold given, or for a submission CSV (no is_blank column) the bundle's rule, else the default."""
    table = predictions.table
    if table.fmt == "field" and table.blank is not None:
        return rule_for_table(table, given=config.blank_threshold, bundle=config.bundle, candidate=True)
    if config.blank_threshold is not None:
        return given_rule(config.blank_threshold)
    if config.bundle is not None:
        return load_bundle(config.bundle).blank_rule()
    return BlankRule(DEFAULT_BLANK_THRESHOLD, DEFAULT, f"the default {DEFAULT_BLANK_THRESHOLD:g}: a submission CSV "
                     "names no model, and no bundle was given")


def read_labels(path: Path, *, label_regex: str | None = None) -> list[Sample]:
    """Labels in any layout `train` reads, video clips included (class folders and --label-regex find them too); the
    files need not exist (they are only used for galleries)."""
    return load_samples(path, label_regex=label_regex, check_files=False, clips=True)


def match(predictions: Predictions, samples: list[Sample]) -> Matched:
    """Align prediction rows with labelled samples and note every mismatch."""
    notes: list[str] = []
    counts: dict[str, int] = {}
    if predictions.fmt == "submission":
        index = _index_by_stem(samples)
    else:
        index = _index_by_tail(samples)
    position = {c: i for i, c in enumerate(predictions.classes)}
    keys, rows, labels, sites, images = [], [], [], [], []
    unmatched, ambiguous, unknown, matched_samples = [], [], [], set()
    for key, probs in zip(predictions.keys, predictions.probs, strict=True):
        found = _lookup(index, key, predictions.fmt)
        if found is None:
            unmatched.append(key)
            continue
        if isinstance(found, list):
            ambiguous.append(key)
            continue
        matched_samples.add(id(found))
        if found.label not in position:
            unknown.append(f"{key} ({found.label})")
            continue
        keys.append(key)
        rows.append(probs)
        labels.append(position[found.label])
        sites.append(found.site or "")
        images.append(found.path)
    unlabelled_failed = [k for k in predictions.failed if _lookup(index, k, predictions.fmt) is not None]
    missing = [s for s in samples if id(s) not in matched_samples]
    failed_keys = set(predictions.failed)
    missing = [s for s in missing if not _failed(s, failed_keys, predictions.fmt)]
    probs = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(predictions.classes))
    sums = probs.sum(axis=1) if len(probs) else np.zeros(0)
    off = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
    if len(off):
        probs = probs / np.where(sums > 0, sums, 1)[:, None]
    for name, items, text in (
        ("predictions_without_label", unmatched, "prediction rows have no label and are not scored"),
        ("ambiguous", ambiguous, "prediction rows match more than one label (same file name in several "
                                 "folders); give the paths more context"),
        ("unknown_class", unknown, "labelled rows have a class the model does not predict; they are not scored"),
        ("labels_without_prediction", [str(s.path) for s in missing], "labelled images have no prediction row"),
        ("error_rows", predictions.failed, f"rows in {predictions.source.name} are errors (unreadable images) and "
                                           "are not scored"),
        ("rows_not_summing_to_1", [keys[i] for i in off], f"rows do not sum to 1 (by more than {SUM_TOLERANCE:g}); "
                                                           "they were renormalised"),
    ):
        counts[name] = len(items)
        if items:
            notes.append(f"{len(items)} {text}, e.g. {', '.join(map(str, items[:EXAMPLES]))}.")
    counts["scored"] = len(keys)
    counts["error_rows_with_label"] = len(unlabelled_failed)
    if not keys:
        raise DataError(f"No prediction row of {predictions.source} matches a label. " + " ".join(notes))
    has_sites = any(sites)
    return Matched(keys=keys, probs=probs, labels=np.asarray(labels), classes=list(predictions.classes),
                   sites=sites if has_sites else None, images=images, notes=notes, counts=counts)


def _index_by_stem(samples: list[Sample]) -> dict[str, Sample | list[Sample]]:
    index: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        index[s.path.stem].append(s)
    return {k: v[0] if len(v) == 1 else v for k, v in index.items()}


def _index_by_tail(samples: list[Sample]) -> dict[str, Sample | list[Sample]]:
    """Every tail of every sample path ("x.jpg", "cam/x.jpg", ...) -> the sample(s) ending that way."""
    index: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        parts = s.path.as_posix().split("/")
        for i in range(len(parts)):
            index["/".join(parts[i:])].append(s)
    return {k: v[0] if len(v) == 1 else v for k, v in index.items()}


def _lookup(index, key: str, fmt: str):
    if fmt == "submission":
        return index.get(key)
    parts = key.split("/")
    found = index.get(key)
    if found is None:  # the CSV may carry more leading folders than the labels: drop them one by one
        for i in range(1, len(parts)):
            found = index.get("/".join(parts[i:]))
            if found is not None:
                break
    return found


def _failed(sample: Sample, failed: set[str], fmt: str) -> bool:
    if fmt == "submission":
        return sample.path.stem in failed
    path = sample.path.as_posix()
    return any(path.endswith("/" + k) or path == k for k in failed)


def missing_images(matched: Matched) -> list[Path]:
    """The labelled images that are not on disk (their galleries show a placeholder)."""
    return [p for p in matched.images if p is not None and not p.is_file()]


@dataclass
class Evaluation:
    """The scores (one dict per predictions file), the comparison, and the notes about mismatches."""

    names: list[str]
    metrics: list[dict]
    comparison: dict | None
    notes: list[str]
    counts: list[dict[str, int]]
    report: Path | None = None
    certificate: dict | None = None  # --blank-miss: the certified blank threshold
    stored_in: Path | None = None  # --write-bundle: the bundle.json that now holds it
    blank_rules: list[str | None] = field(default_factory=list)  # per file, the blank rule its scores used, and why

    def to_json(self) -> dict:
        """Everything as JSON values; names whose bytes are not UTF-8 with \\x escapes (`display`), as strict JSON
        readers refuse the lone surrogates Python holds them in."""
        return _displayed({
            "predictions": self.names, "metrics": self.metrics, "comparison": self.comparison, "notes": self.notes,
            "counts": self.counts, "report": str(self.report) if self.report else None,
            "blank_certificate": self.certificate, "stored_in": str(self.stored_in) if self.stored_in else None,
            "blank_rules": self.blank_rules})


def _displayed(value):
    """`value` with every string (keys too) as `display` writes it."""
    if isinstance(value, str):
        return display(value)
    if isinstance(value, dict):
        return {_displayed(k): _displayed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_displayed(v) for v in value]
    return value


def evaluate(config: EvaluateConfig) -> Evaluation:
    """Score one predictions file (or two side by side) against labels; write the HTML report if asked."""
    if config.report is not None:
        refuse_input_as_output(config.report, config.inputs(), flag="--report")
    refuse_a_bad_write_bundle(config)
    samples = read_labels(config.labels, label_regex=config.label_regex)
    loaded = [read_predictions(p) for p in config.predictions]
    matched = [match(p, samples) for p in loaded]
    notes = [f"{p.source.name}: {n}" for p, m in zip(loaded, matched, strict=True) for n in m.notes] \
        if len(loaded) > 1 else list(matched[0].notes)
    if len(matched) == 2:
        matched = _common_rows(matched, [p.source.name for p in loaded], notes)
    rules = [blank_rule(config, p) for p in loaded]
    metrics = [evaluate_probs(m.probs, m.labels, m.classes, sites=m.sites, blank_threshold=rule.threshold)
               for m, rule in zip(matched, rules, strict=True)]
    comparison = None
    if len(metrics) == 2:
        comparison = {**compare(metrics[0], metrics[1], matched[0].classes),
                      "names": tuple(p.source.name for p in loaded)}
    absent = missing_images(matched[0])
    if absent and config.report:
        notes.append(f"{len(absent)} labelled images are not on disk, so the galleries show placeholders for them, "
                     f"e.g. {', '.join(str(p) for p in absent[:EXAMPLES])}.")
    result = Evaluation(names=[p.source.name for p in loaded], metrics=metrics, comparison=comparison, notes=notes,
                        counts=[m.counts for m in matched],
                        blank_rules=[r.describe() if blank_index(p.classes) is not None else None
                                     for p, r in zip(loaded, rules, strict=True)])
    if config.blank_miss is not None:
        result.certificate, result.stored_in = certify(config, loaded[0], matched[0])
    if config.report:
        first = matched[0]
        write_report(config.report, title=config.title or f"trapcls evaluate: {loaded[0].source.name}",
                     metrics=metrics[0], classes=first.classes,
                     galleries=galleries(first.keys, first.probs, first.labels, first.classes, first.images),
                     bundle_summary=bundle_summary(config.bundle), command=config.command, comparison=comparison,
                     notes=notes)
        result.report = config.report
    return result


def refuse_a_bad_write_bundle(config: EvaluateConfig) -> None:
    """A bundle to store a certified policy in is refused before any work is done."""
    if config.write_bundle is not None:
        load_bundle(config.write_bundle)  # a bad bundle is refused now, not after the scoring


def certify(config: EvaluateConfig, predictions: Predictions, matched: Matched) -> tuple[dict, Path | None]:
    """The certified blank threshold on the labelled frames; stored in --write-bundle when given."""
    blank = blank_index(matched.classes)
    if blank is None:
        raise DataError(f"--blank-miss needs a model with a blank class; {predictions.source} has the classes "
                        f"{', '.join(matched.classes)}.")
    p_blank = matched.probs[:, blank]
    is_blank = matched.labels == blank
    certificate = certify_blank_threshold(p_blank[~is_blank], p_blank[is_blank], target=config.blank_miss,
                                          confidence=config.confidence).to_json()
    if config.write_bundle is None:
        return certificate, None
    bundle = load_bundle(config.write_bundle)
    if predictions.model is not None and predictions.model != bundle.model_id:
        raise DataError(f"{predictions.source} was written by the model {predictions.model!r}, not by "
                        f"{bundle.model_id!r} ({config.write_bundle}). Certify a bundle on its own predictions.")
    if predictions.model is None:
        raise DataError(f"{predictions.source} has no model column, so nothing shows it comes from "
                        f"{config.write_bundle}. Predict again with this trapcls and certify that CSV.")
    # File names only: bundle.json travels to other machines, and their paths would be this machine's.
    policy = {**certificate, "model": bundle.model_id, "labels": config.labels.name,
              "predictions": predictions.source.name,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    stored = store_blank_policy(bundle.root, policy)
    return certificate, stored.root / MANIFEST


def _common_rows(matched: list[Matched], names: list[str], notes: list[str]) -> list[Matched]:
    """Two models are compared on the rows both scored, with the same classes in the same order."""
    a, b = matched
    if a.classes != b.classes:
        raise DataError(f"{names[0]} and {names[1]} have different class columns; compare models trained on the "
                        "same classes.")
    common = sorted(set(a.keys) & set(b.keys))
    only = len(set(a.keys) ^ set(b.keys))
    if only:
        notes.append(f"{only} rows are scored in only one of the two files; both are compared on the "
                     f"{len(common)} rows they share.")
    out = []
    for m in (a, b):
        where = {k: i for i, k in enumerate(m.keys)}
        rows = [where[k] for k in common]
        out.append(Matched(keys=common, probs=m.probs[rows], labels=m.labels[rows], classes=m.classes,
                           sites=[m.sites[i] for i in rows] if m.sites else None,
                           images=[m.images[i] for i in rows], notes=m.notes, counts=m.counts))
    return out


def bundle_summary(path: Path | None) -> dict | None:
    """The parts of bundle.json a reader of the report wants (architecture, classes, calibration, metrics)."""
    if path is None:
        return None
    bundle = load_bundle(path)
    manifest = bundle.manifest
    return {"path": str(bundle.root), "arch": bundle.arch, "classes": list(bundle.classes),
            "calibration": manifest.get("calibration"), "metrics": manifest.get("metrics"),
            "trapcls_version": manifest.get("trapcls_version"), "created": manifest.get("created"),
            "precision": manifest.get("export", {}).get("precision", "fp32")}


def render_text(result: Evaluation) -> str:
    """The terminal report: headline metrics (side by side when comparing), per-class and per-site tables."""
    lines = []
    heads = result.names
    width = max(14, *(len(h) for h in heads)) + 2
    rows = [("images scored", "n", "{:.0f}"), ("log loss", "log_loss", "{:.4f}"), ("accuracy", "accuracy", "{:.3f}"),
            ("balanced accuracy", "balanced_accuracy", "{:.3f}"), ("macro-F1", "macro_f1", "{:.3f}"),
            ("ECE", "ece", "{:.3f}")]
    lines.append(f"{'':<22}" + "".join(f"{h:>{width}}" for h in heads))
    for label, key, fmt in rows:
        lines.append(f"{label:<22}" + "".join(f"{_num(m.get(key), fmt):>{width}}" for m in result.metrics))
    for k in result.metrics[0].get("top_k", {}):
        lines.append(f"{'top-' + k + ' accuracy':<22}" + "".join(
            f"{_num(m['top_k'].get(k), '{:.3f}'):>{width}}" for m in result.metrics))
    blank = result.metrics[0].get("blank")
    if blank:
        lines.append(f"blank vs animal at P(blank) >= {blank['threshold']:g}:")
        lines += [f"  {name}: {rule}" for name, rule in zip(result.names, result.blank_rules, strict=False) if rule]
        for key in ("blank_precision", "blank_recall", "animal_precision", "animal_recall"):
            lines.append(f"  {key.replace('_', ' '):<20}" + "".join(
                f"{_num((m.get('blank') or {}).get(key), '{:.3f}'):>{width}}" for m in result.metrics))
    lines.append(f"log loss rule: {result.metrics[0].get('log_loss_rule', '')}")
    lines.append("")
    lines.append(f"{'class':<24}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}")
    for row in result.metrics[0]["per_class"]:
        lines.append(f"{row['class'][:23]:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}"
                     f"{row['support']:>10d}")
    sites = result.metrics[0].get("per_site")
    if sites:
        lines.append("")
        lines.append(f"{'site':<24}{'images':>10}{'accuracy':>10}{'bal. acc':>10}{'macro-F1':>10}{'log loss':>10}")
        for site, m in sites.items():
            lines.append(f"{site[:23]:<24}{m['n']:>10d}{_num(m.get('accuracy'), '{:.3f}'):>10}"
                         f"{_num(m.get('balanced_accuracy'), '{:.3f}'):>10}{_num(m.get('macro_f1'), '{:.3f}'):>10}"
                         f"{_num(m.get('log_loss'), '{:.4f}'):>10}")
    if result.comparison:
        lines.append("")
        lines.append(f"classes where {heads[0]} and {heads[1]} differ most (F1):")
        for row in result.comparison["per_class"][:10]:
            lines.append(f"  {row['class'][:22]:<22}{row['f1_a']:>8.3f} -> {row['f1_b']:.3f} "
                         f"({row['f1_diff']:+.3f})")
    if result.certificate:
        lines += ["", *render_certificate(result.certificate, result.stored_in)]
    if result.notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in result.notes)
    if result.report:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)


def render_certificate(c: dict, stored_in: Path | None) -> list[str]:
    """What the certified blank threshold means, in a field team's words."""
    lines = [
        f"certified blank threshold: set a frame aside as blank when P(blank) >= {c['threshold']:.3f}",
        f"  guarantee: with {c['confidence']:.0%} confidence at most {c['target_miss']:.1%} of animal frames are set "
        f"aside (certified bound {c['certified_miss_bound']:.2%}; observed here {c['misses']} of "
        f"{c['animal_frames']} = {c['observed_miss_rate']:.2%})",
        f"  review saved on these frames: {c['set_aside_share']:.1%} of all frames set aside, "
        f"{c['blanks_caught']:.1%} of the {c['blank_frames']} blank frames caught",
        f"  method: {c['method']}; holds for frames like these labelled ones (same cameras, season, model)",
    ]
    if stored_in:
        lines.append(f"  stored in {stored_in}: predict and watch now use it for is_blank (--blank-threshold "
                     "overrides)")
    return lines


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
