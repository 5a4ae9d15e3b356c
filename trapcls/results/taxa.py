"""What each class means in the field: an observation type (Camtrap DP's vocabulary) and a scientific name.

The exports need it: MegaDetector's detection categories (animal, person, vehicle) and Camtrap DP's
`observationType` and `scientificName`. Classes named like blank/empty, human/person or vehicle/car
get their type by default; every other class is an animal whose scientific name comes from a
`--taxa` CSV (columns `class,scientificName[,observationType][,vernacularName][,taxonRank]`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from trapcls.core.frames.labels import listing
from trapcls.core.model.blank import BLANK_NAMES
from trapcls.core.model.boxes import HUMAN_NAMES, VEHICLE_NAMES
from trapcls.core.system.exceptions import DataError

# Camtrap DP 1.0.2, observations-table-schema.json: observationType's enum.
OBSERVATION_TYPES = ("animal", "human", "vehicle", "blank", "unknown", "unclassified")
DEFAULT_TYPES = {
    **dict.fromkeys(BLANK_NAMES, "blank"),
    **dict.fromkeys(HUMAN_NAMES, "human"),
    **dict.fromkeys(VEHICLE_NAMES, "vehicle"),
    **dict.fromkeys(("unknown", "other", "unidentified"), "unknown"),
}


@dataclass(frozen=True)
class Taxon:
    """One class's meaning."""

    name: str  # the model's class name
    observation_type: str
    scientific_name: str | None = None
    vernacular_name: str | None = None
    rank: str | None = None


def taxa_for(classes: tuple[str, ...], taxa_file: Path | None = None) -> dict[str, Taxon]:
    """A Taxon per class: the defaults, overridden by `taxa_file`. With a file, every animal class must be in it."""
    given = read_taxa(taxa_file) if taxa_file else {}
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise DataError(f"{taxa_file} names classes the model does not have: {listing(unknown)} (the model's: "
                        f"{listing(list(classes))}).")
    taxa = {name: given.get(name) or Taxon(name, DEFAULT_TYPES.get(name.lower(), "animal")) for name in classes}
    missing = [name for name, taxon in taxa.items() if taxon.observation_type == "animal" and not taxon.scientific_name]
    if taxa_file and missing:
        raise DataError(f"{taxa_file} has no row for the classes {listing(missing)}. Add a row "
                        "`class,scientificName` for each (observationType animal is the default).")
    return taxa


def read_taxa(path: Path) -> dict[str, Taxon]:
    """Read a --taxa CSV; DataError for a missing file, missing columns, bad types or repeated classes."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows, fields = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read --taxa {path}: {exc}.") from exc
    if not rows or "class" not in fields or "scientificName" not in fields:
        raise DataError(f"--taxa {path} must be a CSV with the columns class,scientificName (optional: "
                        "observationType, vernacularName, taxonRank) and one row per class.")
    taxa: dict[str, Taxon] = {}
    for line, row in enumerate(rows, start=2):
        name = (row.get("class") or "").strip()
        kind = (row.get("observationType") or "").strip() or "animal"
        if not name:
            raise DataError(f"--taxa {path}: row {line} has no class.")
        if name in taxa:
            raise DataError(f"--taxa {path}: the class {name!r} has more than one row.")
        if kind not in OBSERVATION_TYPES:
            raise DataError(f"--taxa {path}: row {line} ({name}): observationType {kind!r} is not one of "
                            f"{', '.join(OBSERVATION_TYPES)}.")
        scientific = (row.get("scientificName") or "").strip() or None
        if kind == "animal" and not scientific:
            raise DataError(f"--taxa {path}: row {line} ({name}) is an animal with no scientificName.")
        taxa[name] = Taxon(name, kind, scientific, (row.get("vernacularName") or "").strip() or None,
                           (row.get("taxonRank") or "").strip() or None)
    return taxa
