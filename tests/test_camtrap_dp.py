"""`trapcls convert --to camtrap-dp`: the package validates against the official Camtrap DP 1.0.2 schemas, offline.

The validator (the profile with jsonschema, each CSV and its foreign keys with frictionless, no
network) is first shown to pass the official example and to catch a broken copy of it; then it
checks packages made from a real `trapcls predict` over the committed RECONYX burst, the bundled
samples (no EXIF time) and a truncated JPEG.
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from helpers import BURST, SAMPLES, offline, trapcls
from helpers import CAMTRAP_SCHEMA_URL as SCHEMA_URL
from helpers import CAMTRAP_SCHEMAS as SCHEMAS
from helpers import CAMTRAP_TABLES as TABLES
from helpers import validate_camtrap_dp as validate_package
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.core.table.read import read_field
from trapcls.results import ConvertConfig, run_convert
from trapcls.results.camtrapdp import (
    DEPLOYMENT_FIELDS,
    MEDIA_FIELDS,
    OBSERVATION_FIELDS,
    PLACEHOLDER_LOCATION,
    PROFILE,
    TAXON_RANKS,
    parse_timezone,
)
from trapcls.results.events import deployment_of, group_events
from trapcls.results.taxa import OBSERVATION_TYPES, taxa_for

# Rough taxa for the default bundle's animal classes; the class the burst's event gets becomes the
# grey heron the frames show, whatever the demonstration model calls it.
TAXA = {"antelope_deer": ("Ruminantia", ""), "bird": ("Aves", "class"), "canid": ("Canidae", "family"),
        "hyena": ("Hyaenidae", "family"), "large_cat": ("Felidae", "family"), "large_herbivore": ("Mammalia", "class"),
        "pig": ("Suidae", "family"), "primate": ("Primates", "order"), "rodent_hare": ("Glires", ""),
        "small_carnivore": ("Carnivora", "order")}


# --- the validator --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schemas() -> Path:
    if not (SCHEMAS / "camtrap-dp-profile.json").is_file():
        pytest.skip(f"{SCHEMAS} is not available (the Camtrap DP schemas are on project machines and in CI only)")
    return SCHEMAS


def test_official_example_is_valid(schemas):
    assert validate_package(schemas / "example", schemas) == []


def test_validator_catches_a_broken_package(schemas, tmp_path):
    broken = Path(shutil.copytree(schemas / "example", tmp_path / "broken"))
    for path in broken.iterdir():
        path.chmod(0o644)
    descriptor = json.loads((broken / "datapackage.json").read_text(encoding="utf-8"))
    del descriptor["project"]
    (broken / "datapackage.json").write_text(json.dumps(descriptor), encoding="utf-8")
    lines = (broken / "media.csv").read_text(encoding="utf-8").splitlines()
    first = lines[1].split(",")
    first[1], first[3] = "no-such-deployment", first[3].replace("T", " ")[:19]  # unknown FK, timestamp without zone
    (broken / "media.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n", encoding="utf-8")
    errors = validate_package(broken, schemas)
    assert any("'project' is a required property" in e for e in errors), errors
    assert any(e.startswith("media:") and "foreign key" in e and "no-such-deployment" in e for e in errors), errors
    assert any(e.startswith("media:") and "timestamp" in e and "Type error" in e for e in errors), errors
    assert len(errors) == 3, errors


def test_validation_is_offline(schemas):
    """The guard works: left to itself, frictionless would fetch the remote profile and schemas."""
    import frictionless

    descriptor = json.loads((schemas / "example" / "datapackage.json").read_text(encoding="utf-8"))
    with offline(), pytest.raises(frictionless.FrictionlessException, match="network access attempted"):
        frictionless.Package(descriptor, basepath=str(schemas / "example")).validate()


def test_writer_columns_are_the_table_schemas(schemas):
    def fields(name):
        return tuple(f["name"] for f in json.loads((schemas / f"{name}-table-schema.json").read_text())["fields"])

    assert (DEPLOYMENT_FIELDS, MEDIA_FIELDS, OBSERVATION_FIELDS) == tuple(fields(n) for n in TABLES)
    observations = json.loads((schemas / "observations-table-schema.json").read_text())["fields"]
    kinds = next(f for f in observations if f["name"] == "observationType")["constraints"]["enum"]
    assert tuple(kinds) == OBSERVATION_TYPES
    profile = json.loads((schemas / "camtrap-dp-profile.json").read_text())
    ranks = profile["allOf"][1]["properties"]["taxonomic"]["items"]["properties"]["taxonRank"]["enum"]
    assert tuple(ranks) == TAXON_RANKS
    example = json.loads((schemas / "example" / "datapackage.json").read_text())
    assert example["profile"] == PROFILE
    assert [r["schema"] for r in example["resources"][:3]] == [SCHEMA_URL.format(n) for n in TABLES]


# --- packages made from a real predict run --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> Path:
    """`trapcls predict` over camA (the RECONYX burst) and camB (samples without EXIF time, a truncated JPEG)."""
    inbox = tmp_path_factory.mktemp("inbox")
    (inbox / "camA").mkdir()
    (inbox / "camB").mkdir()
    for frame in sorted(BURST.glob("*.JPG")):
        shutil.copy(frame, inbox / "camA" / frame.name)
    for sample in sorted(SAMPLES.glob("*.jpg")):
        shutil.copy(sample, inbox / "camB" / sample.name)
    whole = (BURST / "20210531082538-RCNX0031.JPG").read_bytes()
    (inbox / "camB" / "cut-short.jpg").write_bytes(whole[: len(whole) // 3])  # EXIF kept, pixels cut
    out = inbox.parent / "pred.csv"
    trapcls("predict", inbox, "--out", out)
    return out


@pytest.fixture(scope="module")
def burst_class(predictions) -> str:
    """The class of the burst's event, by the events rule (the demonstration model may not say 'bird')."""
    table = read_field(predictions)
    events = group_events(table, gap=120, deployment=lambda p: deployment_of(p, 1))
    (burst,) = [e for e in events if e.deployment == "camA"]
    probs = burst.probs.copy()
    probs[table.blank] = -1
    return table.classes[int(probs.argmax())]


@pytest.fixture(scope="module")
def taxa_file(predictions, burst_class, tmp_path_factory) -> Path:
    classes = read_field(predictions).classes
    path = tmp_path_factory.mktemp("taxa") / "taxa.csv"
    rows = []
    for name, taxon in taxa_for(classes).items():
        if taxon.observation_type == "animal":
            scientific, rank = TAXA.get(name, ("Animalia", "kingdom"))
            vernacular = ""
            if name == burst_class:
                scientific, rank, vernacular = "Ardea cinerea", "species", "grey heron"
            rows.append([name, scientific, rank, vernacular])
    write_rows(path, ["class", "scientificName", "taxonRank", "vernacularName"], rows)
    return path


@pytest.fixture(scope="module")
def deployments_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("deployments") / "deployments.csv"
    write_rows(path, ["deploymentID", "latitude", "longitude", "locationName", "cameraModel", "deploymentStart",
                      "notes"],
               [["camA", "51.181", "5.655", "beek kleine vijver", "Reconyx-HF2X", "2021-04-01T10:00:00Z", "x"],
                ["camB", "50.699", "4.013", "", "", "", ""], ["camC", "50.1", "4.1", "", "", "", ""]])
    return path


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def convert(predictions: Path, out: Path, **options):
    return run_convert(ConvertConfig(predictions=predictions, to="camtrap-dp", out=out, **options))


@pytest.fixture(scope="module")
def package(predictions, tmp_path_factory):
    """The plain conversion: no --deployments, no --taxa, cameras on +02:00."""
    out = tmp_path_factory.mktemp("plain") / "package"
    return convert(predictions, out, timezone="+02:00")


def test_package_is_valid(package, schemas):
    assert validate_package(package.out, schemas) == []
    assert sorted(p.name for p in package.out.iterdir()) == [
        "datapackage.json", "deployments.csv", "media.csv", "observations.csv"]


def test_burst_is_one_event_with_ten_media_observations(package):
    observations = read_rows(package.out / "observations.csv")
    media = read_rows(package.out / "media.csv")
    burst_media = {m["mediaID"] for m in media if m["deploymentID"] == "camA"}
    events = [o for o in observations if o["observationLevel"] == "event" and o["deploymentID"] == "camA"]
    assert len(events) == 1 and len(burst_media) == 10
    (event,) = events
    assert (event["eventStart"], event["eventEnd"]) == ("2021-04-11T20:43:09+02:00", "2021-04-11T20:43:15+02:00")
    assert event["mediaID"] == "" and event["observationType"] == "animal"
    per_media = [o for o in observations if o["observationLevel"] == "media" and o["mediaID"] in burst_media]
    assert len(per_media) == 10 and {o["eventID"] for o in per_media} == {event["eventID"]} == {"camA/20210411T204309"}
    for row in [event, *per_media]:
        assert row["classificationMethod"] == "machine" and row["classifiedBy"].startswith("trapcls-default")
        assert 0 < float(row["classificationProbability"]) <= 1 and row["count"] == ""
    assert package.frames == 11 and package.events == 2  # camA's burst, camB's cut-short frame


def test_timestamps_carry_the_timezone(package):
    media = read_rows(package.out / "media.csv")
    assert all(m["timestamp"].endswith("+02:00") for m in media)
    assert [m["timestamp"] for m in media if m["deploymentID"] == "camA"][0] == "2021-04-11T20:43:09+02:00"


def test_untimed_frames_are_left_out_with_a_note(package):
    paths = {m["filePath"] for m in read_rows(package.out / "media.csv")}
    assert not any(p.startswith("camB/") and "-1.jpg" in p for p in paths)
    (note,) = [n for n in package.notes if "no capture time" in n]
    assert note.startswith("4 frames") and "camB/impala-1.jpg" in note


def test_unreadable_frame_is_unclassified(package):
    media = {m["mediaID"]: m for m in read_rows(package.out / "media.csv")}
    cut = [o for o in read_rows(package.out / "observations.csv") if o["deploymentID"] == "camB"]
    assert {o["observationLevel"] for o in cut} == {"media", "event"}
    assert all(o["observationType"] == "unclassified" and o["classificationProbability"] == "" for o in cut)
    assert [media[o["mediaID"]]["filePath"] for o in cut if o["mediaID"]] == ["camB/cut-short.jpg"]
    assert any("could not be read" in n for n in package.notes)


def test_placeholders_are_stated(package):
    deployments = read_rows(package.out / "deployments.csv")
    assert [(d["deploymentID"], d["latitude"], d["longitude"]) for d in deployments] == [
        ("camA", "0", "0"), ("camB", "0", "0")]
    assert all(d["deploymentComments"] == PLACEHOLDER_LOCATION for d in deployments)
    assert any("placeholder coordinates" in n for n in package.notes)
    assert any("no scientificName" in n for n in package.notes)
    descriptor = json.loads((package.out / "datapackage.json").read_text())
    assert "placeholder" in descriptor["contributors"][0]["title"].lower()
    assert descriptor["temporal"] == {"start": "2021-04-11", "end": "2021-04-11"}
    assert "trapcls-default" in descriptor["description"] and descriptor["sources"][0]["title"] == "trapcls"


def test_deployments_and_taxa_files(predictions, deployments_file, taxa_file, schemas, tmp_path):
    (burst_class,) = [r["class"] for r in read_rows(taxa_file) if r["scientificName"] == "Ardea cinerea"]
    summary = convert(predictions, tmp_path / "dp", timezone="+02:00", deployments=deployments_file, taxa=taxa_file)
    assert validate_package(summary.out, schemas) == []
    deployments = {d["deploymentID"]: d for d in read_rows(summary.out / "deployments.csv")}
    assert sorted(deployments) == ["camA", "camB"]  # camC has no frames
    assert (deployments["camA"]["latitude"], deployments["camA"]["longitude"]) == ("51.181", "5.655")
    assert deployments["camA"]["cameraModel"] == "Reconyx-HF2X" and deployments["camA"]["deploymentComments"] == ""
    assert [deployments["camA"][k] for k in ("deploymentStart", "deploymentEnd")] == [
        "2021-04-01T10:00:00+00:00", "2021-04-11T20:43:15+02:00"]  # given, else the last frame
    event = next(o for o in read_rows(summary.out / "observations.csv")
                 if o["observationLevel"] == "event" and o["deploymentID"] == "camA")
    assert event["scientificName"] == "Ardea cinerea" and event["observationTags"] == f"modelClass:{burst_class}"
    descriptor = json.loads((summary.out / "datapackage.json").read_text())
    assert {"scientificName": "Ardea cinerea", "taxonRank": "species",
            "vernacularNames": {"eng": "grey heron"}} in descriptor["taxonomic"]
    assert descriptor["temporal"] == {"start": "2021-04-01", "end": "2021-04-11"}
    assert descriptor["spatial"]["type"] == "Polygon"
    assert [4.013, 50.699] in descriptor["spatial"]["coordinates"][0]
    assert any("camC" in n for n in summary.notes) and any("are ignored: notes." in n for n in summary.notes)
    assert not any("placeholder coordinates" in n or "no scientificName" in n for n in summary.notes)


def test_iana_zone_gives_the_same_offsets(predictions, package, tmp_path):
    summary = convert(predictions, tmp_path / "dp", timezone="Europe/Brussels")  # CEST in April 2021
    stamps = [m["timestamp"] for m in read_rows(summary.out / "media.csv")]
    assert stamps == [m["timestamp"] for m in read_rows(package.out / "media.csv")]


def test_exif_offsets_need_no_timezone(predictions, schemas, tmp_path):
    with open(predictions, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:
        row[1] = row[1] and row[1] + "-05:00"
    shifted = write_rows(tmp_path / "pred.csv", rows[0], rows[1:])
    summary = convert(shifted, tmp_path / "dp", timezone="+02:00")  # EXIF's own offset wins
    assert validate_package(summary.out, schemas) == []
    assert {m["timestamp"][-6:] for m in read_rows(summary.out / "media.csv")} == {"-05:00"}


def test_blank_threshold_decides_blank(predictions, schemas, tmp_path):
    summary = convert(predictions, tmp_path / "dp", timezone="+02:00", blank_threshold=0.0)
    assert validate_package(summary.out, schemas) == []
    classified = [o for o in read_rows(summary.out / "observations.csv") if o["observationType"] != "unclassified"]
    assert len(classified) == 11 and {o["observationType"] for o in classified} == {"blank"}
    assert all(o["scientificName"] == "" and o["observationTags"] == "modelClass:blank" for o in classified)


def test_ids_are_stable_and_overwrite_replaces(predictions, package, tmp_path):
    again = convert(predictions, package.out, timezone="+02:00", overwrite=True)
    for name in ("media.csv", "observations.csv"):
        ids = [[r[k] for k in ("mediaID", "observationID") if k in r] for r in read_rows(again.out / name)]
        assert ids == [[r[k] for k in ("mediaID", "observationID") if k in r] for r in read_rows(package.out / name)]
    assert len({r["observationID"] for r in read_rows(again.out / "observations.csv")}) == 13


@pytest.mark.parametrize(("text", "january", "july"), [
    ("+02:00", 2, 2), ("-0530", -5.5, -5.5), ("UTC+2", 2, 2), ("Z", 0, 0), ("UTC", 0, 0),
    ("Europe/Brussels", 1, 2), ("Africa/Maputo", 2, 2)])
def test_timezone_offsets_and_names(text, january, july):
    zone = parse_timezone(text)
    for month, hours in ((1, january), (7, july)):
        assert datetime(2021, month, 1, 12, tzinfo=zone).utcoffset() == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["+25:00", "+02:75", "Mars/Olympus_Mons", "Europe", "../etc/passwd", "CEST"])
def test_bad_timezones_are_refused(text):
    with pytest.raises(OptionError, match="timezone"):
        parse_timezone(text)


@pytest.mark.parametrize("case", ["no zone", "unknown zone", "deployment missing", "no latitude column",
                                  "empty latitude", "late end", "taxa missing a class", "bad rank", "out is a file",
                                  "package already there"])
def test_bad_input_is_a_clear_error(case, predictions, deployments_file, taxa_file, tmp_path):
    out = tmp_path / "dp"
    options: dict = {"timezone": "+02:00"}
    if case == "no zone":
        options, expected = {}, "pass --timezone"
    elif case == "unknown zone":
        options, expected = {"timezone": "Mars/Olympus_Mons"}, "nor a known IANA time zone"
    elif case == "deployment missing":
        options["deployments"] = write_rows(tmp_path / "d.csv", ["deploymentID", "latitude", "longitude"],
                                            [["camA", "51", "5"]])
        expected = "no row for the deployments camB"
    elif case == "no latitude column":
        options["deployments"] = write_rows(tmp_path / "d.csv", ["deploymentID", "lat", "longitude"],
                                            [["camA", "51", "5"], ["camB", "51", "5"]])
        expected = "it has no latitude"
    elif case == "empty latitude":
        options["deployments"] = write_rows(tmp_path / "d.csv", ["deploymentID", "latitude", "longitude"],
                                            [["camA", "51", "5"], ["camB", "", "5"]])
        expected = r"row 3 \(camB\): latitude is empty"
    elif case == "late end":
        options["deployments"] = write_rows(tmp_path / "d.csv", ["deploymentID", "latitude", "longitude",
                                                                 "deploymentEnd"],
                                            [["camA", "51", "5", "2021-04-12 08:00"], ["camB", "51", "5", ""]])
        expected = r"row 2 \(camA\): deploymentEnd '2021-04-12 08:00' is not an ISO 8601 date and time with a UTC"
    elif case == "bad rank":
        rows = read_rows(taxa_file)
        rows[0]["taxonRank"] = "suborder"
        options["taxa"] = write_rows(tmp_path / "t.csv", list(rows[0]), [list(r.values()) for r in rows])
        expected = "taxonRank must be one of kingdom"
    elif case == "taxa missing a class":
        rows = [r for r in read_rows(taxa_file) if r["class"] != "canid"]
        options["taxa"] = write_rows(tmp_path / "t.csv", list(rows[0]), [list(r.values()) for r in rows])
        expected = "no row for the classes canid"
    elif case == "out is a file":
        out.write_text("not a folder")
        expected = "is a file"
    else:
        out.mkdir()
        (out / "media.csv").write_text("keep me")
        expected = "already holds a package"
    with pytest.raises(OptionError if case == "unknown zone" else DataError, match=expected):
        convert(predictions, out, **options)
    assert not out.exists() or case in ("out is a file", "package already there")
    if case == "package already there":
        assert sorted(p.name for p in out.iterdir()) == ["media.csv"]
        assert (out / "media.csv").read_text() == "keep me"


def test_the_package_may_go_into_the_classified_folder_so_file_paths_resolve(predictions, schemas, tmp_path):
    """A folder with other files in it (the images) is fine as long as it holds no package yet."""
    out = tmp_path / "photos"
    (out / "camA").mkdir(parents=True)
    (out / "camA" / "keep.JPG").write_bytes(b"not touched")
    convert(predictions, out, timezone="+02:00")
    assert validate_package(out, schemas) == []
    assert (out / "camA" / "keep.JPG").read_bytes() == b"not touched"


def test_cli_convert(predictions, schemas, tmp_path):
    out = tmp_path / "dp"
    done = trapcls("convert", predictions, "--to", "camtrap-dp", "--out", out, "--timezone", "Europe/Brussels")
    assert "11 frames" in done.stdout and "no capture time" in done.stderr
    assert validate_package(out, schemas) == []
    bad = trapcls("convert", predictions, "--to", "camtrap-dp", "--out", tmp_path / "dp2", rc=1)
    assert "--timezone" in bad.stderr and "Traceback" not in bad.stderr
