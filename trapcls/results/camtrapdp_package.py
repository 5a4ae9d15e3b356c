"""datapackage.json of a Camtrap DP 1.0.2 package (camtrapdp.py writes the tables): what the package says about
itself, with placeholders where trapcls cannot know (contributors, project, licenses)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from trapcls import __version__
from trapcls.core.system.names import display
from trapcls.core.table.read import Table
from trapcls.results.taxa import Taxon

VERSION = "1.0.2"
PROFILE = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
_NAME = re.compile(r"[^a-z0-9._-]+")


def descriptor(table: Table, deployments: list[dict[str, str]], observations: list[dict[str, str]],
               taxa: dict[str, Taxon], now: datetime) -> dict:
    """datapackage.json: the Camtrap DP metadata, with placeholders where trapcls cannot know."""
    model, source = display(table.model or "an unnamed model"), display(table.source.name)  # JSON text is Unicode
    slug = _NAME.sub("-", table.source.stem.lower()).strip("-.") or "predictions"
    return {
        "resources": [{"name": name, "path": f"{name}.csv", "profile": "tabular-data-resource", "format": "csv",
                       "mediatype": "text/csv", "encoding": "utf-8",
                       "schema": f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}/{name}-table-schema.json"}
                      for name in TABLES],
        "profile": PROFILE,
        "name": f"trapcls-{slug}",
        "id": str(uuid.uuid4()),
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": f"Camera trap images classified by trapcls: {source}",
        "contributors": [{"title": "trapcls (placeholder: replace with the people and organisations behind the data)",
                          "role": "contributor"}],
        "description": (f"Machine classifications of camera-trap images by the model {model} with trapcls "
                        f"{__version__}, converted from {source}. {_media_level(table)} Each event (a burst of "
                        "one camera) has an event-level observation. Contributors, project and licenses are "
                        "placeholders to complete before publishing."),
        "sources": [{"title": "trapcls", "version": __version__}, {"title": f"classifier: {model}"}],
        "project": {"title": f"Placeholder: the project behind {source}",
                    "samplingDesign": "opportunistic", "captureMethod": ["activityDetection"],
                    "individualAnimals": False, "observationLevel": ["media", "event"]},
        "spatial": _spatial(deployments),
        "temporal": _temporal(deployments),
        "taxonomic": _taxonomic(taxa, {o["scientificName"] for o in observations if o.get("scientificName")}),
    }


def _media_level(table: Table) -> str:
    """What the media-level observations are: per image, or per detector box for a detection run."""
    if any(row.detected is not None for row in table.rows):
        return ("The images were classified from a detector's boxes: each box the model classified as not blank has "
                "a media-level observation with its bbox, an image without one a single media-level observation.")
    return "Each image has a media-level observation."


def _spatial(deployments: list[dict[str, str]]) -> dict:
    """GeoJSON of the deployments: a Point for one location, else their bounding box."""
    lons = [float(d["longitude"]) for d in deployments]
    lats = [float(d["latitude"]) for d in deployments]
    west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    if (west, south) == (east, north):
        return {"type": "Point", "coordinates": [west, south]}
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def _temporal(deployments: list[dict[str, str]]) -> dict[str, str]:
    """The first deployment's start date and the last one's end date, each in its own time zone."""
    start = min((datetime.fromisoformat(d["deploymentStart"]) for d in deployments))
    end = max((datetime.fromisoformat(d["deploymentEnd"]) for d in deployments))
    return {"start": start.date().isoformat(), "end": end.date().isoformat()}


def _taxonomic(taxa: dict[str, Taxon], observed: set[str]) -> list[dict]:
    """One entry per scientific name observed, with its rank and vernacular name from --taxa."""
    entries: dict[str, dict] = {}
    for taxon in taxa.values():
        name = taxon.scientific_name
        if not name or name not in observed or name in entries:
            continue
        entry: dict = {"scientificName": name}
        if taxon.rank:
            entry["taxonRank"] = taxon.rank
        if taxon.vernacular_name:
            entry["vernacularNames"] = {"eng": taxon.vernacular_name}
        entries[name] = entry
    return [entries[name] for name in sorted(entries)]
