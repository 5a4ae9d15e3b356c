"""`trapcls convert --to camtrap-dp`: a field CSV as a Camtrap DP 1.0.2 data package (GBIF, Agouti, camtrapR).

--out becomes a folder of datapackage.json, deployments.csv, media.csv and observations.csv. Every
file is written atomically and datapackage.json last (an overwritten package loses its old one
first), so a folder with a datapackage.json holds a whole package. Standard library and numpy only.

Conventions (Camtrap DP's own vocabulary in `code`):
- Deployments are camera folders: the first --deployment-depth folders of a frame's path, as
  `trapcls events` groups them; the folder path is the `deploymentID` ("camA", "site1/camA", "."
  for frames directly under the folder `predict` read). --deployments FILE is a CSV with at least
  `deploymentID,latitude,longitude` and any other column of the deployments table
  (`locationName`, `cameraModel`, `deploymentStart`, ...). Without it, the coordinates are
  placeholders (0, 0) that `deploymentComments` and the summary's notes say are placeholders.
  `deploymentStart`/`deploymentEnd` not given are the deployment's first and last capture time.
- Media: one row per frame with a capture time (Camtrap DP requires a `timestamp`; frames without
  one are left out, and a note says which). `timestamp` is the EXIF capture time with the UTC
  offset EXIF recorded, else in --timezone (an IANA name such as Europe/Brussels, daylight saving
  applied per frame, or a fixed offset such as +02:00). `mediaID` is 16 hex digits of a hash of
  the path, so the same frame keeps its ID in every export. `filePath` is the path as in the
  field CSV, relative to the folder `predict` read: tools open the images when the package sits in
  that folder. `filePublic` is false, `captureMethod` empty (EXIF does not say whether motion or a
  timer triggered the camera).
- Observations (`classificationMethod` machine, `classifiedBy` the model id): one `media`-level
  observation per media file, and one `event`-level observation per event (frames of one
  deployment no more than --gap seconds apart, the events of `trapcls events`; `eventID` is its
  `event_id`, and the event's probabilities follow `core/model/probs.combine_frames`). `observationType` is
  blank when P(blank) >= the blank threshold, else the type of the most probable non-blank class
  (from --taxa or the class name: animal with its `scientificName`, human, vehicle, unknown);
  `classificationProbability` is the probability of the class reported, and `observationTags`
  names it (`modelClass:<class>`). An unreadable frame, or an event with no readable frame, is
  `unclassified`, with no classification fields. `count` is empty: a classifier does not count.
- A detection run (`predict --detections`; its boxes come from its boxes CSV, convert.py): a frame that is
  not blank gets one media-level observation per classified box instead of one for the frame, with the box's
  `bboxX`, `bboxY`, `bboxWidth`, `bboxHeight` (MegaDetector's, relative to the frame, top left), the verdict
  above on the box's own probabilities (so a person box mapped to the human class is `human`), and tags that
  name the detector's category, confidence and box number (`detectionCategory:animal|detectionConfidence:0.93|
  detectionBox:0`). A box the classifier calls blank gets none: it is a detector false positive, and the frame
  is blank only when all its boxes are (core/model/boxes.py). A blank frame (no box at or above the detection
  threshold, or only blank ones) keeps its one blank observation, as any blank frame. Events are as above.
- datapackage.json (camtrapdp_package.py): `contributors` (trapcls), the `project` (title, `samplingDesign`
  opportunistic, `captureMethod` activityDetection) and the missing `licenses` are placeholders
  to edit before publishing; `spatial` is the deployments' bounding box, `temporal` their dates,
  `taxonomic` the scientific names observed (a --taxa `vernacularName` is taken as English);
  `description` and `sources` name the model and the trapcls version.
- Frames whose path breaks `filePath`'s pattern (a leading '.', '/' or '~', or '..') are left out
  with a note, like untimed ones.
- Cells are written as they are (no spreadsheet formula guard: it would change IDs and paths).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mimetypes
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path, PurePosixPath

import numpy as np

from trapcls import __version__
from trapcls.core.frames.labels import listing
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.core.system.fsutil import atomic_write_text, refuse_input_as_output, write_csv, writing
from trapcls.core.system.names import display, name_bytes
from trapcls.core.table.read import Table
from trapcls.core.table.row import Row
from trapcls.results.camtrapdp_package import PROFILE as PROFILE  # the package's profile, for its readers
from trapcls.results.camtrapdp_package import descriptor
from trapcls.results.clips import clip_end, files_word, known_duration, known_rate
from trapcls.results.config import ConvertConfig, ConvertSummary
from trapcls.results.deployments import DEPLOYMENT_FIELDS, read_deployments
from trapcls.results.events import Event, deployment_of, group_events
from trapcls.results.taxa import Taxon, taxa_for

# The columns of the three Table Schemas, in their order (a validator checks the header against them).
MEDIA_FIELDS = (
    "mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName", "fileMediatype",
    "exifData", "favorite", "mediaComments")
OBSERVATION_FIELDS = (
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd", "observationLevel",
    "observationType", "cameraSetupType", "scientificName", "count", "lifeStage", "sex", "behavior", "individualID",
    "individualPositionRadius", "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth",
    "bboxHeight", "classificationMethod", "classifiedBy", "classificationTimestamp", "classificationProbability",
    "observationTags", "observationComments")
BBOX_FIELDS = ("bboxX", "bboxY", "bboxWidth", "bboxHeight")
TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")
PLACEHOLDER_LOCATION = "placeholder location: pass --deployments"
# IANA media types by suffix: the frames and every video clip suffix trapcls classifies (the system's mimetypes table
# lacks some, e.g. .mkv, on many machines; Camtrap DP wants "image/...", "video/..." or "audio/...").
_MEDIATYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4",
               ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".asf": "video/x-ms-asf",
               ".wmv": "video/x-ms-wmv", ".mkv": "video/x-matroska"}
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")
_UNREADABLE = "not classified: trapcls could not read the image(s)"


def write_camtrap_dp(table: Table, config: ConvertConfig, *, threshold: float) -> ConvertSummary:
    """Write `table` as a Camtrap DP package into the folder `config.out` (see the module docstring)."""
    _check_out(config.out, config.overwrite)
    for name in PACKAGE_FILES:
        refuse_input_as_output(config.out / name, config.inputs())
    zone = parse_timezone(config.timezone)
    taxa = taxa_for(table.classes, config.taxa)
    _check_ranks(taxa, config.taxa)
    notes: list[str] = []
    moments = capture_moments(table.rows, zone, notes)
    if not moments:
        raise DataError(f"{table.source}: no frame has a capture time, and Camtrap DP needs one for every image. "
                        "Were the EXIF times stripped (some copy and resize tools do)?")
    events = group_events(table, gap=config.gap, deployment=lambda path: deployment_of(path, config.deployment_depth))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    verdict = _verdicts(table, taxa, threshold, now.astimezone().isoformat())
    media = _media_rows(events, moments)
    observations = _observation_rows(events, moments, verdict)
    deployments = _deployment_rows(media, config.deployments, notes)
    _note_observations(observations, notes)
    _note_boxes(table, media, observations, notes)
    package = descriptor(table, deployments, observations, taxa, now)
    _write(config.out, config.overwrite, {"deployments": (DEPLOYMENT_FIELDS, deployments),
                                          "media": (MEDIA_FIELDS, media),
                                          "observations": (OBSERVATION_FIELDS, observations)}, package)
    return ConvertSummary(out=config.out, to="camtrap-dp", frames=len(media),
                          clips=sum(m["fileMediatype"].startswith("video/") for m in media),
                          events=sum(o["observationLevel"] == "event" for o in observations), notes=notes,
                          boxes=sum(bool(o.get("bboxX")) for o in observations))


def parse_timezone(text: str | None) -> tzinfo | None:
    """--timezone as a tzinfo: a fixed offset (+02:00, -0530, UTC+2, Z) or an IANA name (Europe/Brussels)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.upper() == "Z":
        return timezone.utc
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        delta = timedelta(hours=hours, minutes=minutes)
        if minutes >= 60 or delta > timedelta(hours=14):
            raise OptionError("timezone", f"{text}: a UTC offset is between -14:00 and +14:00, e.g. +02:00")
        return timezone(-delta if sign == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise OptionError("timezone", f"{text!r} is neither a UTC offset such as +02:00 nor a known IANA time zone "
                                      "name such as Europe/Brussels or Africa/Nairobi (names are case-sensitive; on "
                                      "Windows, `pip install tzdata` provides them)") from None


def capture_moments(frames: list[Row], zone: tzinfo | None, notes: list[str]) -> dict[str, datetime]:
    """Each timed frame's capture time with its UTC offset: EXIF's when it had one, else `zone`'s."""
    moments: dict[str, datetime] = {}
    untimed, unzoned, unsafe = [], [], []
    files = files_word(frames)
    for frame in frames:
        if not frame.captured:
            untimed.append(frame.path)
            continue
        if not _safe_path(frame.path):
            unsafe.append(frame.path)
            continue
        moment = datetime.fromisoformat(frame.captured).replace(microsecond=0)
        if moment.tzinfo is None:
            if zone is None:
                unzoned.append(frame.path)
                continue
            moment = moment.replace(tzinfo=zone)
        moments[frame.path] = moment
    if unzoned:
        raise DataError(f"{len(unzoned)} {files} have a capture time without a UTC offset (EXIF rarely records "
                        f"one), e.g. {listing(unzoned)}, and Camtrap DP timestamps need one: pass --timezone with "
                        "the cameras' time zone (Europe/Brussels) or offset (+02:00).")
    if untimed:
        notes.append(f"{len(untimed)} {files} have no capture time and are left out (Camtrap DP requires a "
                     f"timestamp for each image): {listing(untimed)}.")
    if unsafe:
        notes.append(f"{len(unsafe)} {files} are left out because Camtrap DP's filePath may not start with '.', "
                     f"'/' or '~' nor contain '..': {listing(unsafe)}. Rename them and predict again.")
    return moments


def _safe_path(path: str) -> bool:
    """Camtrap DP's filePath pattern: no leading '.', '/' or '~' and no '..' anywhere."""
    return not path.startswith((".", "/", "~")) and ".." not in path


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _id(kind: str, key: str) -> str:
    """A stable identifier: the same frame or event gets the same one in every export."""
    return hashlib.sha256(name_bytes(f"{kind}:{key}")).hexdigest()[:16]


def _media_rows(events: list[Event], moments: dict[str, datetime]) -> list[dict[str, str]]:
    """One media.csv row per timed frame or clip, by deployment, time and path."""
    rows = []
    for event in events:
        for frame in event.frames:
            if frame.path not in moments:
                continue
            rows.append({
                "mediaID": _id("media", frame.path), "deploymentID": event.deployment,
                "timestamp": _stamp(moments[frame.path]), "filePath": frame.path, "filePublic": "false",
                "fileName": PurePosixPath(frame.path).name, "fileMediatype": media_type(frame),
                "mediaComments": _clip_comment(frame),
                "end": _stamp(clip_end(moments[frame.path], frame, whole_seconds=True)),  # not a column: for spans
            })
    return rows


def media_type(row: Row) -> str:
    """The IANA media type of a frame or clip, by its suffix (a clip's is always "video/...")."""
    kind = "image" if row.clip is None else "video"
    found = _MEDIATYPES.get(PurePosixPath(row.path).suffix.lower()) or mimetypes.guess_type(row.path)[0] or ""
    if found.startswith(kind + "/"):
        return found
    return "image/jpeg" if kind == "image" else "video/mp4"  # not a suffix trapcls reads: only a hand-made CSV


def _clip_comment(row: Row) -> str:
    """What a clip's row says besides its verdict (frames sampled, length, the frame that shows it best), for
    mediaComments; "" for a frame."""
    clip = row.clip
    if clip is None:
        return ""
    parts = [f"video clip: {clip.frames} frames sampled"]
    if known_duration(clip) is not None:
        parts.append(f"{clip.duration:g} s long")
    rate = known_rate(clip)
    if rate is not None:
        parts.append(f"{rate:g} frames/s")
    if clip.best_frame is not None:
        when = f" ({clip.best_frame / rate:.1f} s)" if rate is not None else ""
        parts.append(f"best frame {clip.best_frame}{when}")
    return ", ".join(parts)


def _verdicts(table: Table, taxa: dict[str, Taxon], threshold: float,
              classified_at: str) -> Callable[[np.ndarray | None], dict[str, str]]:
    """A function from one probability row (None: unreadable) to an observation's classification cells."""
    blank = table.blank

    def verdict(probs: np.ndarray | None) -> dict[str, str]:
        if probs is None:
            return {"observationType": "unclassified", "observationComments": _UNREADABLE}
        if blank is not None and probs[blank] >= threshold:
            top = blank
        else:
            candidates = probs.copy()
            if blank is not None:
                candidates[blank] = -1.0
            top = int(np.argmax(candidates))
        taxon = taxa[table.classes[top]]
        return {"observationType": "blank" if top == blank else taxon.observation_type,
                "scientificName": "" if top == blank else taxon.scientific_name or "",
                "classificationMethod": "machine", "classifiedBy": table.model or f"trapcls {__version__}",
                "classificationTimestamp": classified_at, "classificationProbability": _probability(probs[top]),
                "observationTags": f"modelClass:{taxon.name}",
                "class": taxon.name}  # not a column: for the notes

    return verdict


def _probability(p: float) -> str:
    return f"{min(max(float(p), 0.0), 1.0):.6f}".rstrip("0").rstrip(".")


def _observation_rows(events: list[Event], moments: dict[str, datetime],
                      verdict: Callable[[np.ndarray | None], dict[str, str]]) -> list[dict[str, str]]:
    """Per event with media: its event-level observation, then one media-level observation per media file."""
    rows = []
    for event in events:
        frames = [f for f in event.frames if f.path in moments]
        if not frames:  # an untimed frame: no timestamp, so no event either
            continue
        # A clip's observation lasts from its start to its end (start + duration, up to the whole second).
        spans = [(moments[f.path], clip_end(moments[f.path], f, whole_seconds=True)) for f in frames]
        rows.append({"observationID": _id("event-observation", event.id), "deploymentID": event.deployment,
                     "eventID": event.id, "eventStart": _stamp(min(s for s, _ in spans)),
                     "eventEnd": _stamp(max(e for _, e in spans)), "observationLevel": "event",
                     **verdict(event.probs)})
        for frame, (start, end) in zip(frames, spans):
            rows.extend(media_observations(frame, verdict, {
                "deploymentID": event.deployment, "mediaID": _id("media", frame.path), "eventID": event.id,
                "eventStart": _stamp(start), "eventEnd": _stamp(end), "observationLevel": "media"}))
    return rows


def media_observations(frame: Row, verdict: Callable[[np.ndarray | None], dict[str, str]],
                       common: dict[str, str]) -> list[dict[str, str]]:
    """A media file's media-level observations: one per classified detector box the classifier does not call
    blank, with its bbox (a detection run's frame that is not blank), else one for the whole file."""
    whole = {"observationID": _id("media-observation", frame.path), **common, **verdict(frame.probs)}
    if frame.detected is None or whole["observationType"] in ("blank", "unclassified"):
        return [whole]
    rows = []
    for result in frame.detected.boxes:
        found, box = verdict(result.probs), result.box
        if found["observationType"] == "blank":  # a detector box the classifier calls empty: no observation
            continue
        rows.append({"observationID": _id(f"box-observation:{box.index}", frame.path), **common, **found,
                     **dict(zip(BBOX_FIELDS, (f"{v:.6g}" for v in box.bbox))),
                     "observationTags": f"{found['observationTags']}|detectionCategory:{box.category}"
                                        f"|detectionConfidence:{box.conf:.6g}|detectionBox:{box.index}"})
    return rows or [whole]  # every box blank by a rounding hair while the frame is not: the frame's verdict


def _note_observations(observations: list[dict[str, str]], notes: list[str]) -> None:
    """Notes on unreadable frames and on animals without a scientific name."""
    unreadable = [o["mediaID"] for o in observations if o["observationLevel"] == "media"
                  and o["observationType"] == "unclassified"]
    if unreadable:
        notes.append(f"{len(unreadable)} frames could not be read; their observations are unclassified.")
    unnamed = sorted({o["class"] for o in observations if o["observationType"] == "animal" and not o["scientificName"]})
    if unnamed:
        notes.append(f"Animal observations of the classes {listing(unnamed)} have no scientificName (GBIF needs "
                     "one): pass --taxa FILE with the columns class,scientificName.")


def _note_boxes(table: Table, media: list[dict[str, str]], observations: list[dict[str, str]],
                notes: list[str]) -> None:
    """A detection run's: how many box observations came of how many classified boxes."""
    kept = {m["filePath"] for m in media}
    frames = [f for f in table.rows if f.detected is not None and f.path in kept]
    if not frames:
        return
    classified = sum(len(f.detected.boxes) for f in frames)
    boxes = sum(bool(o.get("bboxX")) for o in observations)
    notes.append(f"{boxes} media-level observations are detector boxes (with a bbox) of the {classified} boxes "
                 "classified: a box the classifier calls blank has none, and a frame with no box left has one "
                 "observation of its own (blank).")


def _deployment_rows(media: list[dict[str, str]], given_file: Path | None, notes: list[str]) -> list[dict[str, str]]:
    """One deployments.csv row per deployment with media: from --deployments, else placeholders."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for row in media:
        moment, end = datetime.fromisoformat(row["timestamp"]), datetime.fromisoformat(row["end"])
        first, last = spans.get(row["deploymentID"], (moment, end))
        spans[row["deploymentID"]] = (min(first, moment), max(last, end))
    given = read_deployments(given_file, notes) if given_file else None
    if given is not None:
        missing = [name for name in spans if name not in given]
        if missing:
            raise DataError(f"--deployments {given_file} has no row for the deployments {listing(missing)} (camera "
                            "folders of the predictions); add a row deploymentID,latitude,longitude for each, or "
                            "change --deployment-depth.")
        unused = sorted(set(given) - set(spans))
        if unused:
            notes.append(f"--deployments rows with no timed frames are left out: {listing(unused)}.")
    else:
        notes.append(f"deployments.csv has placeholder coordinates (0, 0) for {listing(list(spans))}: pass "
                     "--deployments FILE with the columns deploymentID,latitude,longitude.")
    rows = []
    for name, (start, end) in spans.items():
        row = dict(given[name]) if given is not None else {
            "deploymentID": name, "latitude": "0", "longitude": "0", "deploymentComments": PLACEHOLDER_LOCATION}
        row["deploymentStart"] = row.get("deploymentStart") or _stamp(start)
        row["deploymentEnd"] = row.get("deploymentEnd") or _stamp(end)
        rows.append(row)
    return rows


def _check_ranks(taxa: dict[str, Taxon], taxa_file: Path | None) -> None:
    bad = [f"{t.name} ({t.rank})" for t in taxa.values() if t.rank and t.rank not in TAXON_RANKS]
    if bad:
        raise DataError(f"--taxa {taxa_file}: taxonRank must be one of {', '.join(TAXON_RANKS)} (or empty); "
                        f"got {listing(bad)}.")


PACKAGE_FILES = ("datapackage.json", "deployments.csv", "media.csv", "observations.csv")


def _check_out(out: Path, overwrite: bool) -> None:
    with writing(out):
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out} is a file; a Camtrap DP package is a folder: give a new or empty folder.")
        # Any folder without a package in it will do: the folder that was classified, for one, so that
        # the media's relative filePaths resolve from the package.
        present = [name for name in PACKAGE_FILES if (out / name).exists()]
        if present and not overwrite:
            raise DataError(f"--out {out} already holds a package ({', '.join(present)}); pass --overwrite to "
                            "replace it, or choose another folder.")


def _write(out: Path, overwrite: bool, tables: dict[str, tuple[tuple[str, ...], list[dict[str, str]]]],
           package: dict) -> None:
    """The CSVs, then datapackage.json: a package folder is complete once its descriptor exists.

    A failed write (a full disk) takes back the files this call wrote, and the folder if it made it,
    so no partial package is left behind.
    """
    made, written = not out.exists(), []
    with writing(out, kept="no partial package is left"):
        try:
            out.mkdir(parents=True, exist_ok=True)
            if overwrite:
                (out / "datapackage.json").unlink(missing_ok=True)
            for name, (fields, rows) in tables.items():
                written.append(out / f"{name}.csv")
                # display(): a name whose bytes are not UTF-8 with \\x escapes, as the CSVs are UTF-8.
                write_csv(written[-1], fields, ([display(row.get(f, "")) for f in fields] for row in rows))
            atomic_write_text(out / "datapackage.json", json.dumps(package, indent=2, ensure_ascii=False) + "\n")
        except OSError:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            if made:
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
