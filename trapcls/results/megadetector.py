"""`trapcls convert --to megadetector`: a field CSV as MegaDetector batch output (format 1.6), which Timelapse imports.

The format (https://lila.science/megadetector-output-format, checked by MegaDetector's
`validate_batch_results`) describes boxes a detector found and, per box, what a classifier said.
trapcls has no detector: it classifies whole frames. The file says so (`info.detector`) and
writes each frame this way:

- a readable frame that is not blank (P(blank) < the blank threshold, or a model without a blank
  class) gets ONE detection covering the whole frame, `bbox` [0, 0, 1, 1] (x, y, width, height,
  relative). Its `conf` is 1 - P(blank) (1.0 without a blank class), so Timelapse's detection
  threshold plays the part of trapcls's blank threshold. Its `category` is the observation type
  of the most probable non-blank class: animal -> "1" animal, human -> "2" person, vehicle -> "3"
  vehicle (MegaDetector's categories); unknown and unclassified -> "1".
- its `classifications` are [class id, probability] for every non-blank class, most probable
  first, renormalised over the non-blank classes: P(class | not blank) = p / (sum of non-blank p).
  That is what a MegaDetector classification means (what the box shows, given it shows
  something); the detection's conf already says how sure the frame is not blank, and conf times
  a classification gives back the CSV's probability (up to rounding). So a classification
  threshold in Timelapse means the same on a near-certain frame and on a doubtful one.
- a blank frame (P(blank) >= threshold) gets `detections: []`: that is how the format says
  "nothing here", and Timelapse counts it as Empty.
- an unreadable frame gets `failure` (predict's error text) and `detections: null`, as the
  format asks; Timelapse skips it.
- `file`: the CSV's path, relative to the folder `predict` read (the image folder Timelapse opens).
  A frame whose path would leave that folder (absolute, a drive letter, a '..' step; only a
  hand-edited CSV holds one) is left out with a note, as Camtrap DP's filePath rule does. A name
  whose bytes are not UTF-8 is written with \\x escapes (`display`): JSON text must be Unicode.
- `datetime`: the capture time as EXIF writes it ("2021:04:11 20:43:09", camera wall clock), as
  MegaDetector's run_detector_batch writes it with --include_image_timestamp; absent when the
  frame has none.
- a video clip's entry (format 1.4+ video fields, as MegaDetector's process_video writes them) is
  the clip's row, classified like a frame: its combined probabilities give one whole-frame detection
  or none, and the detection carries `frame_number`, the clip's best frame (the sampled frame that
  shows its label best). `frame_rate` is the clip's frame rate, so that frame_number / frame_rate is
  the detection's time in the clip, and `frames_processed` lists the frame numbers the row knows were
  classified: the first frame (always sampled) and the best one (the field CSV records how many
  frames were sampled, not which). Timelapse keeps a video detection only when frame_number >= 0
  and frame_rate > 0, and shows the clip as Empty otherwise: so a clip whose container states no
  frame rate (or whose cell is not a positive number) gets frame_rate 1, a stand-in, and its detection
  on frame 0, the clip's start, which is 0 s at any frame rate; a note counts such clips. A clip
  that failed gets `failure`, `detections: null`, `frame_rate` -1 and no frames processed, as
  MegaDetector writes a failed video. `datetime` is the clip's start.

Categories: `classification_categories` maps the class's position in the model's class list
(the CSV's column order) to its name, for every class except blank: blank is never a
classification (a blank frame has no detection to carry one), and the format's way to say
blank is an empty detection list. Ids are therefore stable for a model but skip the blank's
position. `classification_category_descriptions` gives each id the scientific name from --taxa
when known, else the class name. `info` names the classifier exactly (the CSV's model column),
the blank threshold as detector_metadata's thresholds, and trapcls's version.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from trapcls import __version__
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import atomic_write_text, refuse_input_as_output, writing
from trapcls.core.system.names import display
from trapcls.core.table.read import Table
from trapcls.core.table.row import Clip, Row
from trapcls.results.clips import files_word, known_rate
from trapcls.results.config import ConvertConfig, ConvertSummary
from trapcls.results.taxa import Taxon, taxa_for

FORMAT_VERSION = "1.6"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
# Camtrap DP observation type -> MegaDetector detection category; any other type is an animal.
CATEGORY_OF_TYPE = {"animal": "1", "human": "2", "vehicle": "3"}
WHOLE_FRAME = (0.0, 0.0, 1.0, 1.0)
UNKNOWN_MODEL = "unknown model (CSV without a model column)"
DETECTOR = f"trapcls {__version__} whole-frame (no detector: one box covering the frame per non-blank frame)"
COMPLETION_TIME = "%Y-%m-%d %H:%M:%S"  # the format's completion times
EXIF_TIME = "%Y:%m:%d %H:%M:%S"  # per-image datetime, as run_detector_batch writes it
DIGITS = 6
FAILED_FRAME_RATE = -1.0  # a failed video's frame_rate, as MegaDetector writes it (the validator then wants `failure`)
STAND_IN_FRAME_RATE = 1.0  # a clip of unknown frame rate: Timelapse drops a video detection without a positive one
_DRIVE = re.compile(r"^[A-Za-z]:")  # C:\x.jpg, or C:x.jpg (relative to drive C's current folder)


def write_megadetector(table: Table, config: ConvertConfig, *, threshold: float) -> ConvertSummary:
    """Write `table` as MegaDetector format 1.6 JSON to `config.out`, atomically; blank: P(blank) >= threshold."""
    check_out(config, overwrite=config.overwrite)
    outside = [frame.path for frame in table.rows if not inside_image_folder(frame.path)]
    if outside:
        table = replace(table, rows=[frame for frame in table.rows if inside_image_folder(frame.path)])
    results = megadetector_results(table, taxa_for(table.classes, config.taxa), threshold=threshold)
    with writing(config.out):
        atomic_write_text(config.out, json.dumps(results, indent=1, allow_nan=False) + "\n")
    return ConvertSummary(out=config.out, to="megadetector", frames=len(table.rows),
                          clips=sum(f.clip is not None for f in table.rows), notes=_notes(table, config.out, outside))


def inside_image_folder(path: str) -> bool:
    """Whether `path` stays inside the folder it is relative to on every system a reader may run on: not absolute
    (no leading / or \\, no drive letter) and no '..' step, / and \\ both separators (Timelapse runs on
    Windows, where the Linux name '..\\x.jpg' leads out). `predict` writes no other; a hand-edited CSV can."""
    return bool(path) and not path.startswith(("/", "\\")) and not _DRIVE.match(path) and \
        ".." not in re.split(r"[/\\]", path)


def check_out(config: ConvertConfig, *, overwrite: bool) -> None:
    """DataError for an --out that is a folder, one of the files the command reads, or an existing file without
    overwrite."""
    out = config.out
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a JSON file path, e.g. {out / 'results.json'}.")
    refuse_input_as_output(out, config.inputs())
    if out.exists() and not overwrite:
        raise DataError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out.")


def megadetector_results(table: Table, taxa: dict[str, Taxon], *, threshold: float) -> dict:
    """The whole JSON document for `table` (see the module docstring for the convention)."""
    ids = {i: str(i) for i in range(len(table.classes)) if i != table.blank}
    kinds = [CATEGORY_OF_TYPE.get(taxa[name].observation_type, "1") for name in table.classes]
    return {
        "info": _info(table, threshold),
        "detection_categories": dict(DETECTION_CATEGORIES),
        "classification_categories": {ids[i]: display(table.classes[i]) for i in ids},
        "classification_category_descriptions": {
            ids[i]: display(taxa[table.classes[i]].scientific_name or table.classes[i]) for i in ids},
        "images": [image_entry(frame, blank=table.blank, kinds=kinds, threshold=threshold) for frame in table.rows],
    }


def _info(table: Table, threshold: float) -> dict:
    # Every detection has conf = 1 - P(blank) > 1 - threshold: at that threshold Timelapse shows
    # exactly the frames trapcls calls non-blank.
    floor = _round(1.0 - threshold)
    return {
        "format_version": FORMAT_VERSION,
        "detector": DETECTOR,
        "detector_metadata": {"megadetector_version": "none", "typical_detection_threshold": floor,
                              "conservative_detection_threshold": floor},
        "classifier": display(table.model or UNKNOWN_MODEL),
        "classification_completion_time": datetime.now().strftime(COMPLETION_TIME),
        "custom_metadata": {"trapcls_version": __version__, "predictions": display(table.source.name),
                            "blank_threshold": threshold, "boxes": "whole frame"},
    }


def image_entry(frame: Row, *, blank: int | None, kinds: list[str], threshold: float) -> dict:
    """One `images[]` entry: a whole-frame detection, none (blank), or a failure (unreadable); a clip's with its
    video fields."""
    entry: dict = {"file": display(frame.path)}
    if frame.captured:
        entry["datetime"] = frame.time.strftime(EXIF_TIME)
    if not frame.ok:
        if frame.clip is not None:
            entry.update(frame_rate=FAILED_FRAME_RATE, frames_processed=[])
        return {**entry, "failure": display(frame.error or "unreadable (the CSV gives no reason)"), "detections": None}
    detection = whole_frame_detection(frame.probs, blank=blank, kinds=kinds, threshold=threshold)
    if frame.clip is not None:
        rate, number = clip_anchor(frame.clip)
        entry.update(frame_rate=rate, frames_processed=sorted({0, number}))
        if detection is not None:
            detection["frame_number"] = number
    return {**entry, "detections": [] if detection is None else [detection]}


def clip_anchor(clip: Clip) -> tuple[float, int]:
    """(frame_rate, frame_number) of a classified clip's detection: its frame rate and best frame, or, when the frame
    rate is unknown, the stand-in rate and frame 0 (the clip's start at any rate), so that Timelapse keeps it."""
    rate = known_rate(clip)
    if rate is None:
        return STAND_IN_FRAME_RATE, 0
    return rate, clip.best_frame if clip.best_frame is not None and clip.best_frame >= 0 else 0


def whole_frame_detection(probs: np.ndarray, *, blank: int | None, kinds: list[str], threshold: float) -> dict | None:
    """The detection of a non-blank frame, or None when P(blank) >= threshold (or nothing else has probability)."""
    others = [i for i in range(len(probs)) if i != blank]
    mass = float(probs[others].sum())
    if mass <= 0 or (blank is not None and probs[blank] >= threshold):
        return None
    order = sorted(others, key=lambda i: (-probs[i], i))
    conf = 1.0 if blank is None else 1.0 - float(probs[blank])
    return {"category": kinds[order[0]], "conf": _round(conf), "bbox": list(WHOLE_FRAME),
            "classifications": [[str(i), _round(probs[i] / mass)] for i in order]}


def _notes(table: Table, out: Path, outside: list[str]) -> list[str]:
    notes, files = [], files_word(table.rows)
    if outside:
        notes.append(f"{len(outside)} {files} are left out: their paths leave the image folder (absolute, or with "
                     f"'..'), which a file entry may not, e.g. {', '.join(map(display, outside[:5]))}.")
    unreadable = sum(not f.ok for f in table.rows)
    if unreadable:
        notes.append(f"{unreadable} {files} were unreadable: they are in the JSON with their error as `failure` and "
                     "no detections (Timelapse skips them).")
    unknown = sum(f.ok and f.clip is not None and known_rate(f.clip) is None for f in table.rows)
    if unknown:
        notes.append(f"{unknown} clips have no known frame rate: their frame_rate is a stand-in "
                     f"{STAND_IN_FRAME_RATE:g} and their detection is on frame 0, the clip's start (Timelapse drops a "
                     "video detection without a positive frame rate).")
    if table.blank is None:
        notes.append("the model has no blank class: every readable frame gets a whole-frame detection (conf 1.0).")
    if table.model is None:
        notes.append(f"{table.source} has no model column: info.classifier says {UNKNOWN_MODEL!r}.")
    if out.suffix.lower() != ".json":
        notes.append(f"Timelapse's import dialog lists .json files only; consider naming --out {out.stem}.json.")
    return notes


def _round(value: float) -> float:
    return round(float(value), DIGITS)
