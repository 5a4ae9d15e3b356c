"""`trapcls convert --to megadetector`: a field CSV as MegaDetector batch output (format 1.6), which Timelapse imports.

The format (https://lila.science/megadetector-output-format, checked by MegaDetector's
`validate_batch_results`) describes boxes a detector found and, per box, what a classifier said.
A whole-frame CSV has no detector behind it: the file says so (`info.detector`) and writes each frame this
way (a detection run is written from its detector's boxes, below):

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

A detection run (`predict --detections md.json`; convert reads its boxes CSV and md.json, detection_run.py) is
written from the detector's boxes instead:

- each frame's entry holds every box md.json gives it, in md.json's order and with its category id,
  confidence and bbox, those below predict's detection threshold too (they were not classified, so they have
  no `classifications`, as in MegaDetector's own output of a classifier run with a threshold);
- a classified box has `classifications` by the rule of a whole frame above: every non-blank class, most
  probable first, as P(class | not blank), renormalised over the non-blank classes. The box's P(blank) is
  what the classifier says of a detector box it sees as empty: a box it calls blank (P(blank) >= the blank
  threshold) gets no classifications, as a blank frame gets none, and the detector's `conf` stays the
  detector's;
- a frame that failed (unreadable, or md.json's own `failure`: predict wrote it as an error row) gets
  `failure` and `detections: null`; a frame without boxes gets `detections: []`;
- `detection_categories` are md.json's, and `info` carries its detector: `detector`, `detector_metadata`
  and `detection_completion_time` as md.json states them; `classifier` is the CSV's model, and
  `custom_metadata` names the CSV, the boxes CSV and md.json.

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
from trapcls.results.detection_run import RunBoxes
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
# A detection run's info fields that describe the detector, carried over from its file.
CARRIED_INFO = ("detection_completion_time", "detector_metadata")
STAND_IN_FRAME_RATE = 1.0  # a clip of unknown frame rate: Timelapse drops a video detection without a positive one
_DRIVE = re.compile(r"^[A-Za-z]:")  # C:\x.jpg, or C:x.jpg (relative to drive C's current folder)


def write_megadetector(table: Table, config: ConvertConfig, *, threshold: float,
                       run: RunBoxes | None = None) -> ConvertSummary:
    """Write `table` as MegaDetector format 1.6 JSON to `config.out`, atomically; blank: P(blank) >= threshold.
    With `run` (a detection run, its detector's file given) the detector's boxes, each classified one with its
    classifications."""
    check_out(config, overwrite=config.overwrite)
    outside = [frame.path for frame in table.rows if not inside_image_folder(frame.path)]
    if outside:
        table = replace(table, rows=[frame for frame in table.rows if inside_image_folder(frame.path)])
    results = megadetector_results(table, taxa_for(table.classes, config.taxa), threshold=threshold, run=run)
    with writing(config.out):
        atomic_write_text(config.out, json.dumps(results, indent=1, allow_nan=False) + "\n")
    notes = _notes(table, config.out, outside) + (_box_notes(table, results, run) if run is not None else [])
    return ConvertSummary(out=config.out, to="megadetector", frames=len(table.rows),
                          clips=sum(f.clip is not None for f in table.rows), notes=notes,
                          boxes=sum(len(im["detections"] or ()) for im in results["images"]) if run else 0)


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


def megadetector_results(table: Table, taxa: dict[str, Taxon], *, threshold: float,
                         run: RunBoxes | None = None) -> dict:
    """The whole JSON document for `table` (see the module docstring for the convention); with `run`, a detection
    run's."""
    ids = {i: str(i) for i in range(len(table.classes)) if i != table.blank}
    kinds = [CATEGORY_OF_TYPE.get(taxa[name].observation_type, "1") for name in table.classes]
    if run is None:
        info, categories = _info(table, threshold), dict(DETECTION_CATEGORIES)
        images = [image_entry(frame, blank=table.blank, kinds=kinds, threshold=threshold) for frame in table.rows]
    else:
        info, categories = detection_info(table, threshold, run), dict(run.detections.categories)
        images = [box_image_entry(frame, run, blank=table.blank, threshold=threshold) for frame in table.rows]
    return {
        "info": info,
        "detection_categories": categories,
        "classification_categories": {ids[i]: display(table.classes[i]) for i in ids},
        "classification_category_descriptions": {
            ids[i]: display(taxa[table.classes[i]].scientific_name or table.classes[i]) for i in ids},
        "images": images,
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
    entry = file_fields(frame)
    if not frame.ok:
        if frame.clip is not None:
            entry.update(frame_rate=FAILED_FRAME_RATE, frames_processed=[])
        return failed(entry, frame)
    detection = whole_frame_detection(frame.probs, blank=blank, kinds=kinds, threshold=threshold)
    if frame.clip is not None:
        rate, number = clip_anchor(frame.clip)
        entry.update(frame_rate=rate, frames_processed=sorted({0, number}))
        if detection is not None:
            detection["frame_number"] = number
    return {**entry, "detections": [] if detection is None else [detection]}


def file_fields(frame: Row) -> dict:
    """An entry's `file` and, when the frame has a capture time, its `datetime`."""
    entry: dict = {"file": display(frame.path)}
    if frame.captured:
        entry["datetime"] = frame.time.strftime(EXIF_TIME)
    return entry


def failed(entry: dict, frame: Row) -> dict:
    """The entry of a file that could not be classified: its error as `failure`, and no detections."""
    return {**entry, "failure": display(frame.error or "unreadable (the CSV gives no reason)"), "detections": None}


def clip_anchor(clip: Clip) -> tuple[float, int]:
    """(frame_rate, frame_number) of a classified clip's detection: its frame rate and best frame, or, when the frame
    rate is unknown, the stand-in rate and frame 0 (the clip's start at any rate), so that Timelapse keeps it."""
    rate = known_rate(clip)
    if rate is None:
        return STAND_IN_FRAME_RATE, 0
    return rate, clip.best_frame if clip.best_frame is not None and clip.best_frame >= 0 else 0


def whole_frame_detection(probs: np.ndarray, *, blank: int | None, kinds: list[str], threshold: float) -> dict | None:
    """The detection of a non-blank frame, or None when P(blank) >= threshold (or nothing else has probability)."""
    found = classifications(probs, blank=blank, threshold=threshold)
    if found is None:
        return None
    conf = 1.0 if blank is None else 1.0 - float(probs[blank])
    return {"category": kinds[int(found[0][0])], "conf": _round(conf), "bbox": list(WHOLE_FRAME),
            "classifications": found}


def classifications(probs: np.ndarray, *, blank: int | None, threshold: float) -> list[list] | None:
    """[class id, P(class | not blank)] for every non-blank class, most probable first, of a whole frame or a
    box; None when it is blank (P(blank) >= threshold) or nothing else has probability. The one rule of both."""
    others = [i for i in range(len(probs)) if i != blank]
    mass = float(probs[others].sum())
    if mass <= 0 or (blank is not None and probs[blank] >= threshold):
        return None
    order = sorted(others, key=lambda i: (-probs[i], i))
    return [[str(i), _round(probs[i] / mass)] for i in order]


def detection_info(table: Table, threshold: float, run: RunBoxes) -> dict:
    """A detection run's `info`: the detector's fields carried over from its file, the classifier trapcls's."""
    source = run.detections.info
    info = {"format_version": FORMAT_VERSION, "detector": display(run.detections.detector)}
    info.update({key: source[key] for key in CARRIED_INFO if key in source and _plain(source[key])})
    info.update({
        "classifier": display(table.model or UNKNOWN_MODEL),
        "classification_completion_time": datetime.now().strftime(COMPLETION_TIME),
        "custom_metadata": {"trapcls_version": __version__, "predictions": display(table.source.name),
                            "blank_threshold": threshold, "boxes": display(run.boxes.name),
                            "detections": display(run.detections.source.name)},
    })
    return info


def box_image_entry(frame: Row, run: RunBoxes, *, blank: int | None, threshold: float) -> dict:
    """A detection run's `images[]` entry: every box of the frame's entry in the detector's file, in its order, the
    classified ones with their classifications; a failure for a frame that could not be classified."""
    entry = file_fields(frame)
    if not frame.ok:
        return failed(entry, frame)
    found = run.entries.get(frame.path)
    probs = {r.box.index: r.probs for r in frame.detected.boxes} if frame.detected is not None else {}
    category = {}
    for key, name in run.detections.categories.items():
        category.setdefault(name, key)
    detections = []
    for box in found.boxes if found is not None else ():
        detection = {"category": category[box.category], "conf": _round(box.conf),
                     "bbox": [_round(v) for v in box.bbox]}
        classified = classifications(probs[box.index], blank=blank, threshold=threshold) \
            if box.index in probs else None
        if classified is not None:
            detection["classifications"] = classified
        detections.append(detection)
    return {**entry, "detections": detections}


def _box_notes(table: Table, results: dict, run: RunBoxes) -> list[str]:
    """What a detection run's JSON holds: how many boxes, how many classified, how many of those called blank."""
    written = sum(len(im["detections"] or ()) for im in results["images"])
    classified = sum(len(f.detected.boxes) for f in table.rows if f.ok and f.detected is not None)
    named = sum("classifications" in d for im in results["images"] for d in im["detections"] or ())
    note = f"{written} boxes written, {classified} of them classified (at or above predict's detection threshold)"
    if written > classified:
        note += f"; the other {written - classified} have no classifications"
    if classified > named:
        note += f"; {classified - named} classified boxes the classifier calls blank have none either"
    notes = [note + "."]
    if run.unused:
        notes.append(f"{run.unused} entries of {display(run.detections.source.name)} match no frame of the CSV and "
                     "are left out.")
    return notes


def _plain(value: object) -> bool:
    """Whether a value read from the detector's file can be written as strict JSON (no NaN or infinity)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


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
