"""`trapcls adapt`: re-estimate each deployment's class priors from its own frames and correct the probabilities.

Every camera sees its own mix of species, but a classifier's probabilities carry the mix of its
training set. Saerens, Latinne & Decaestecker (2002, "Adjusting the outputs of a classifier to
new a priori probabilities: a simple procedure", Neural Computation 14:21-41) estimate a new
mix from unlabelled predictions alone with EM, assuming only the priors changed (p(x|y) did not):

    E-step: q_i(y) ∝ p_i(y) * pi(y) / pi_train(y)      (each frame's posterior under the new priors)
    M-step: pi(y)  = (sum_i q_i(y) + s * pi_train(y)) / (n + s)

starting from pi = pi_train. The M-step here is the MAP estimate under a Dirichlet prior centred
on the training priors with strength s pseudo-frames (--prior-strength): it damps the estimate
when a deployment has few frames and keeps a class the camera has not shown yet from being
driven to zero. Deployments with fewer than --min-frames readable frames are left unchanged. A video
clip's row counts as one frame (its combined probabilities) and keeps its clip cells.

pi_train comes from the bundle (`training.config.train_class_counts`, written by `trapcls
train`); a bundle without them is assumed to have been trained on a uniform mix, and the
report says so. The certified blank policy of a bundle was certified on unadapted probabilities:
the adapted CSV still uses its threshold, but its guarantee does not carry over (the command
says so).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from trapcls.core.model.blank import BlankRule, rule_for
from trapcls.core.model.bundle import load_bundle
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import atomic_write_text, refuse_input_as_output, write_csv, writing
from trapcls.core.system.names import display
from trapcls.core.table.layout import Layout
from trapcls.core.table.read import Table, read_field
from trapcls.results.config import AdaptConfig
from trapcls.results.events import deployment_of

MAX_ITERATIONS = 1000
TOLERANCE = 1e-7
ADAPTED = " +prior-adapted"  # appended to the model column: these are no longer the model's own probabilities


@dataclass(frozen=True)
class Estimate:
    """One deployment's outcome."""

    deployment: str
    frames: int  # readable frames
    adapted: bool
    reason: str  # why not, or how it converged
    prior: np.ndarray  # the estimated priors (the training priors when not adapted)
    iterations: int = 0


@dataclass
class AdaptSummary:
    """What `trapcls adapt` did."""

    out: Path
    report: Path
    classes: tuple[str, ...]
    training_prior: np.ndarray
    assumed_uniform: bool
    estimates: list[Estimate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rule: BlankRule | None = None  # the is_blank rule of the adapted CSV (None: no blank class)

    def lines(self) -> list[str]:
        """A table of the deployments (estimated priors, top 3, against the training priors) and where it all went."""
        lines = [f"{'deployment':<24}{'frames':>8}  estimated priors (training prior), top 3"]
        for e in self.estimates:
            top = sorted(range(len(self.classes)), key=lambda i: -e.prior[i])[:3]
            mix = ", ".join(f"{self.classes[i]} {e.prior[i]:.2f} ({self.training_prior[i]:.2f})" for i in top)
            lines.append(f"{e.deployment[:23]:<24}{e.frames:>8}  {mix if e.adapted else 'not adapted: ' + e.reason}")
        return [*lines, f"-> {self.out}; priors in {self.report}"]

    def notices(self) -> list[str]:
        """What the user should know besides: the blank rule of the adapted CSV and why, then the notes."""
        return ([self.rule.describe()] if self.rule else []) + [f"note: {note}" for note in self.notes]


def em_priors(probs: np.ndarray, train_prior: np.ndarray, *, strength: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Saerens et al.'s EM with a Dirichlet(strength * train_prior) prior: (priors, adapted probs, iterations)."""
    prior, iterations = train_prior.copy(), 0
    while iterations < MAX_ITERATIONS:
        iterations += 1
        new = (_posteriors(probs, prior, train_prior).sum(axis=0) + strength * train_prior) / (len(probs) + strength)
        converged = np.abs(new - prior).max() < TOLERANCE
        prior = new
        if converged:
            break
    return prior, _posteriors(probs, prior, train_prior), iterations


def _posteriors(probs: np.ndarray, prior: np.ndarray, train_prior: np.ndarray) -> np.ndarray:
    """Each frame's probabilities under new priors: p(y|x) * prior(y) / train_prior(y), renormalised."""
    tiny = np.finfo(np.float64).tiny
    weighted = probs * (prior / np.maximum(train_prior, tiny))
    return weighted / np.maximum(weighted.sum(axis=1, keepdims=True), tiny)


def training_prior(bundle) -> tuple[np.ndarray, bool]:
    """The bundle's training class frequencies (smoothed by one frame each), or uniform; True when assumed."""
    counts = bundle.class_counts
    if counts is None:
        return np.full(len(bundle.classes), 1.0 / len(bundle.classes)), True
    values = np.array([counts[c] for c in bundle.classes], dtype=np.float64) + 1.0
    return values / values.sum(), False


def run_adapt(config: AdaptConfig) -> AdaptSummary:
    """Adapt each deployment's probabilities to its own priors; write the adapted CSV and a JSON report."""
    report = _check_outputs(config)
    bundle = load_bundle(config.bundle)
    table = read_field(config.predictions)
    _check_same_model(table, bundle, config)
    train, assumed = training_prior(bundle)
    summary = AdaptSummary(out=config.out, report=report,
                           classes=table.classes, training_prior=train, assumed_uniform=assumed)
    if assumed:
        summary.notes.append(f"{config.bundle} records no training class frequencies (bundles exported before "
                             "trapcls recorded them): the training mix is assumed uniform.")
    adapted: dict[str, np.ndarray] = {}
    groups: dict[str, list[int]] = {}
    for i, frame in enumerate(table.rows):
        if frame.ok:
            groups.setdefault(deployment_of(frame.path, config.deployment_depth), []).append(i)
    for name in sorted(groups):
        rows = groups[name]
        estimate, probs = _adapt_one(name, np.stack([table.rows[i].probs for i in rows]), train, config)
        summary.estimates.append(estimate)
        adapted.update({table.rows[i].path: p for i, p in zip(rows, probs)})
    rule = summary.rule = rule_for(table.classes, config.blank_threshold, bundle.blank_rule)
    if bundle.blank_policy and config.blank_threshold is None and table.blank is not None:
        summary.notes.append(f"is_blank uses the bundle's certified threshold {rule.threshold:g}, but it was certified "
                             "on unadapted probabilities: its guarantee does not carry over to adapted ones.")
    clips = any(frame.clip is not None for frame in table.rows)  # video clips keep their clip columns
    _write(config, table, adapted, Layout("field", table.classes, rule, model=(table.model or "") + ADAPTED,
                                          clips=clips))
    _write_report(summary, table, config)
    return summary


def _adapt_one(name: str, probs: np.ndarray, train: np.ndarray, config: AdaptConfig) -> tuple[Estimate, np.ndarray]:
    if len(probs) < config.min_frames:
        return Estimate(name, len(probs), False, f"fewer than --min-frames {config.min_frames} readable frames",
                        train), probs
    prior, adapted, iterations = em_priors(probs, train, strength=config.prior_strength)
    return Estimate(name, len(probs), True, f"EM converged in {iterations} iterations", prior, iterations), adapted


def _check_same_model(table: Table, bundle, config: AdaptConfig) -> None:
    if tuple(table.classes) != tuple(bundle.classes):
        raise DataError(f"{config.predictions} has the classes {', '.join(table.classes)}, but {config.bundle} "
                        f"has {', '.join(bundle.classes)}: pass the bundle that wrote the predictions.")
    if table.model is not None and table.model != bundle.model_id:
        raise DataError(f"{config.predictions} was written by {table.model!r}, not by {bundle.model_id!r}: pass "
                        "the bundle that wrote it (its training priors are what gets corrected).")


def _check_outputs(config: AdaptConfig) -> Path:
    """The report's path, once neither output is a folder, one of the inputs, or the other output."""
    report = config.report or config.out.with_suffix(".priors.json")
    for flag, path in (("--out", config.out), ("--report", report)):
        if path.is_dir():
            raise DataError(f"{flag} {path} is a folder; give a file path.")
    if os.path.abspath(report) == os.path.abspath(config.out):
        raise DataError(f"--report {report} is --out as well: the priors would replace the adapted CSV; give "
                        "--report another file.")
    refuse_input_as_output(config.out, config.inputs())
    refuse_input_as_output(report, [*config.inputs(), ("--out", config.out)], flag="--report")
    return report


def _write(config: AdaptConfig, table: Table, adapted: dict[str, np.ndarray], layout: Layout) -> None:
    rows = []
    for frame in table.rows:
        # replace(): a clip's row keeps its clip fields (frames sampled, duration, frame rate, best frame).
        row = (replace(frame, probs=adapted[frame.path]) if frame.ok
               else replace(frame, error=frame.error or "error"))
        rows.append(layout.cells(row))
    with writing(config.out):
        write_csv(config.out, layout.header(), sorted(rows, key=lambda r: r[0]))


def _write_report(summary: AdaptSummary, table: Table, config: AdaptConfig) -> None:
    def mix(values: np.ndarray) -> dict[str, float]:
        return {display(c): round(float(v), 6) for c, v in zip(table.classes, values)}

    # display(): names whose bytes are not UTF-8 (a camera folder from a Latin-1 card) with \\x escapes, as
    # strict JSON readers refuse the lone surrogates Python holds them in.
    report = {
        "predictions": display(str(config.predictions)), "bundle": display(str(config.bundle)),
        "model": table.model and display(table.model),
        "method": "EM of Saerens, Latinne & Decaestecker (2002), MAP with a Dirichlet prior on the priors",
        "prior_strength": config.prior_strength, "min_frames": config.min_frames,
        "training_prior": mix(summary.training_prior), "training_prior_assumed_uniform": summary.assumed_uniform,
        "deployments": [{"deployment": display(e.deployment), "frames": e.frames, "adapted": e.adapted,
                         "reason": e.reason, "prior": mix(e.prior)} for e in summary.estimates],
        "notes": [display(note) for note in summary.notes],
    }
    with writing(summary.report, "--report"):
        atomic_write_text(summary.report, json.dumps(report, indent=2) + "\n")
