"""The --deployments file of `trapcls convert --to camtrap-dp`: Camtrap DP deployment columns per camera folder.

A CSV with at least `deploymentID,latitude,longitude` (decimal degrees, WGS84) and any other column of
Camtrap DP's deployments table; columns that are not deployment fields are ignored with a note.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from trapcls.core.frames.labels import listing
from trapcls.core.system.exceptions import DataError

# The columns of the deployments Table Schema, in its order (a validator checks the header against them).
DEPLOYMENT_FIELDS = (
    "deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
    "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay", "cameraHeight",
    "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance", "timestampIssues", "baitUse", "featureType",
    "habitat", "deploymentGroups", "deploymentTags", "deploymentComments")


def read_deployments(path: Path, notes: list[str]) -> dict[str, dict[str, str]]:
    """Read a --deployments CSV: deploymentID, latitude, longitude and optional deployments-table columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows, fields = list(reader), [f.strip() for f in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read --deployments {path}: {exc}.") from exc
    missing = [f for f in ("deploymentID", "latitude", "longitude") if f not in fields]
    if missing or not rows:
        raise DataError(f"--deployments {path} must be a CSV with the columns deploymentID,latitude,longitude "
                        "(decimal degrees, WGS84) and one row per camera folder; it has no "
                        f"{', '.join(missing) or 'rows'}.")
    ignored = [f for f in fields if f not in DEPLOYMENT_FIELDS]
    if ignored:
        notes.append(f"--deployments columns that are not Camtrap DP deployment fields are ignored: "
                     f"{listing(ignored)}.")
    given: dict[str, dict[str, str]] = {}
    for line, raw in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k and k.strip() in DEPLOYMENT_FIELDS}
        name = row["deploymentID"]
        where = f"--deployments {path}: row {line} ({name or 'no deploymentID'})"
        if not name or name in given:
            raise DataError(f"{where}: every row needs a deploymentID of its own.")
        for field, limit in (("latitude", 90), ("longitude", 180)):
            row[field] = _coordinate(row[field], limit, f"{where}: {field}")
        for field in ("deploymentStart", "deploymentEnd"):
            if row.get(field):
                row[field] = _aware(row[field], f"{where}: {field}")
        given[name] = row
    return given


def _coordinate(text: str, limit: float, where: str) -> str:
    if not text:
        raise DataError(f"{where} is empty; Camtrap DP requires decimal degrees (WGS84) for every deployment.")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -limit <= value <= limit:
        raise DataError(f"{where} {text!r} is not a number of decimal degrees between -{limit} and {limit}.")
    return text


def _aware(text: str, where: str) -> str:
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)  # Python 3.10: no Z
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise DataError(f"{where} {text!r} is not an ISO 8601 date and time with a UTC offset, e.g. "
                        "2021-04-01T12:00:00+02:00.")
    return moment.isoformat(timespec="seconds")
