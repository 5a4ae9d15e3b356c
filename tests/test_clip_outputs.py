"""Video clips downstream of predict: events, Timelapse (MegaDetector 1.6 video entries), Camtrap DP, adapt, merge and
evaluate take a clip's row wherever they take a frame's.

The field CSVs are written by the one layout (`Layout(..., clips=True)`) from rows made here, so every clip cell has a
known value: a clip that outlasts the gap, one that failed, one whose frame rate is unknown, an untimed one, one with
a UTC offset, and one of every clip suffix trapcls reads. The MegaDetector validator and the offline Camtrap DP
validation check what the converters write, and are first shown to catch a broken copy. Then the same checks run on
what `trapcls predict` writes for real clips: the committed zamba clips, clips made here from the real RECONYX burst
with a creation time, and clips that cannot be read.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    BURST,
    CAMTRAP_SCHEMAS,
    REPO,
    SHARED_DATA,
    csv_rows,
    frames_of,
    trapcls,
    validate_camtrap_dp,
    validate_megadetector,
    write_clip,
)
from trapcls.core.frames.discover import CLIP_SUFFIXES
from trapcls.core.model.blank import BlankRule
from trapcls.core.model.bundle import load_bundle
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import csv_text
from trapcls.core.table.layout import Layout
from trapcls.core.table.read import read_field
from trapcls.core.table.row import Clip, Row
from trapcls.predict.merge import merge_csvs
from trapcls.results.camtrapdp import media_type

MODEL = "clip-model v1 sha256:0123456789ab"
CLASSES = ("fox", "blank", "human", "car")
RULE = BlankRule(0.5, "given", "given")
FOX = np.array([0.8, 0.1, 0.05, 0.05])
BLANK = np.array([0.02, 0.95, 0.02, 0.01])
HUMAN = np.array([0.1, 0.2, 0.6, 0.1])
CAR = np.array([0.05, 0.15, 0.1, 0.7])

# clip1 lasts 60.5 s: clip2 starts 150 s after clip1 starts but 89.5 s after it ends, so with --gap 120 (and 90)
# it is in clip1's event only because the gap is counted from the end of the event so far.
ROWS = [
    Row("camA/IMG_0001.JPG", FOX, "2024-05-01T06:30:00"),
    Row("camA/clip1.MP4", FOX, "2024-05-01T06:31:00", clip=Clip(61, 60.5, 29.97, 900)),
    Row("camA/clip2.mp4", FOX, "2024-05-01T06:33:30", clip=Clip(10, 9.2, 30.0, 45)),
    Row("camA/clip3.avi", BLANK, "2024-05-01T07:00:00", clip=Clip(10, 10.0, 15.0, 0)),
    Row("camB/bad.mov", None, "2024-05-01T08:00:00", error="no video stream", clip=Clip()),
    Row("camB/norate.mkv", FOX, "2024-05-01T09:00:00", clip=Clip(5, None, None, 3)),
    Row("camB/untimed.wmv", HUMAN, "", clip=Clip(3, 3.0, 25.0, 50)),
    Row("camC/x.asf", CAR, "2024-05-02T10:00:00+02:00", clip=Clip(4, 4.0, 30.0, 60)),
    Row("camC/y.m4v", FOX, "2024-05-02T10:00:30+02:00", clip=Clip(4, 3.5, 30.0, 30)),
]


def write_field(path: Path, rows: list[Row], layout: Layout | None = None) -> Path:
    """A field CSV as predict writes it: the one layout's header and cells, rows in the order given."""
    layout = layout or Layout("field", CLASSES, RULE, model=MODEL, clips=True)
    path.write_text(csv_text(layout.header(), (layout.cells(row) for row in rows)), encoding="utf-8")
    return path


@pytest.fixture()
def clips_csv(tmp_path) -> Path:
    return write_field(tmp_path / "pred.csv", ROWS)


# --- events ---------------------------------------------------------------------------------------------------------

def test_events_place_clips_by_their_start_and_count_the_gap_from_where_a_clip_ends(clips_csv, tmp_path):
    done = trapcls("events", clips_csv, "--out", tmp_path / "events.csv")
    assert "1 frames and 8 clips -> 6 events" in done.stdout
    assert "frames or clips have no capture time" in done.stderr and "frames or clips were unreadable" in done.stderr
    events = csv_rows(tmp_path / "events.csv", key="event_id")
    assert list(events) == ["camA/20240501T063000", "camA/20240501T070000", "camB/20240501T080000",
                            "camB/20240501T090000", "camB/untimed:untimed.wmv", "camC/20240502T100000"]
    visit = events["camA/20240501T063000"]  # the frame, clip1 and clip2: clip2 starts 89.5 s after clip1 ends
    assert (visit["frames"], visit["start"], visit["label"], visit["first_file"]) == \
        ("3", "2024-05-01T06:30:00", "fox", "camA/IMG_0001.JPG")
    assert visit["end"] == "2024-05-01T06:33:40"  # clip2's end, 06:33:39.2, up to the second
    quiet = events["camA/20240501T070000"]
    assert (quiet["is_blank"], quiet["end"]) == ("true", "2024-05-01T07:00:10")
    failed = events["camB/20240501T080000"]
    assert (failed["unreadable"], failed["label"], failed["end"]) == ("1", "", "2024-05-01T08:00:00")
    assert events["camB/20240501T090000"]["end"] == "2024-05-01T09:00:00"  # no known duration: it ends as it starts
    assert (events["camB/untimed:untimed.wmv"]["untimed"], events["camB/untimed:untimed.wmv"]["end"]) == ("true", "")
    offset = events["camC/20240502T100000"]  # the offset the container gave is kept on start and end
    assert (offset["frames"], offset["start"], offset["end"]) == \
        ("2", "2024-05-02T10:00:00+02:00", "2024-05-02T10:00:34+02:00")


@pytest.mark.parametrize(("gap", "camera_a_events"), [("90", 2), ("89", 3)])
def test_the_gap_after_a_clip_is_counted_from_its_end(clips_csv, tmp_path, gap, camera_a_events):
    trapcls("events", clips_csv, "--out", tmp_path / "events.csv", "--gap", gap)
    events = csv_rows(tmp_path / "events.csv", key="event_id")
    assert sum(e["deployment"] == "camA" for e in events.values()) == camera_a_events


def test_clip_events_do_not_depend_on_row_order(clips_csv, tmp_path):
    order = np.random.default_rng(3).permutation(len(ROWS))
    shuffled = write_field(tmp_path / "shuffled.csv", [ROWS[i] for i in order])
    trapcls("events", clips_csv, "--out", tmp_path / "a.csv")
    trapcls("events", shuffled, "--out", tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# --- Timelapse: MegaDetector 1.6 video entries ----------------------------------------------------------------------

def convert_megadetector(field: Path, out: Path) -> tuple[dict, str]:
    done = trapcls("convert", field, "--to", "megadetector", "--out", out)
    return json.loads(out.read_text(encoding="utf-8")), done.stderr


def timelapse_keeps(entry: dict) -> list[dict]:
    """The detections Timelapse imports from one entry (RecognitionDatabases.PopulateTables): every one of a JPEG's,
    and of any other file (a video to Timelapse) only those with frame_number >= 0 when frame_rate > 0."""
    detections = entry.get("detections") or []
    if entry["file"].lower().endswith((".jpg", ".jpeg")):
        return detections
    rate = entry.get("frame_rate")
    return [d for d in detections if d.get("frame_number", -1) >= 0 and rate is not None and rate > 0]


def test_megadetector_video_entries_pass_the_validator_and_what_timelapse_reads(clips_csv, tmp_path):
    doc, stderr = convert_megadetector(clips_csv, tmp_path / "results.json")
    result = validate_megadetector(tmp_path / "results.json")
    assert result["errors"] == [] and result["warnings"] == []
    entries = {e["file"]: e for e in doc["images"]}
    assert "frame_rate" not in entries["camA/IMG_0001.JPG"] and "frames_processed" not in entries["camA/IMG_0001.JPG"]
    clip1 = entries["camA/clip1.MP4"]
    assert (clip1["frame_rate"], clip1["frames_processed"], clip1["datetime"]) == \
        (29.97, [0, 900], "2024:05:01 06:31:00")
    [detection] = clip1["detections"]
    assert detection["frame_number"] == 900 and detection["conf"] == pytest.approx(0.9)
    assert detection["classifications"][0][0] == "0"  # fox
    quiet = entries["camA/clip3.avi"]
    assert (quiet["detections"], quiet["frame_rate"], quiet["frames_processed"]) == ([], 15.0, [0])
    failed = entries["camB/bad.mov"]
    assert (failed["frame_rate"], failed["frames_processed"], failed["detections"], failed["failure"]) == \
        (-1.0, [], None, "no video stream")
    unknown = entries["camB/norate.mkv"]  # no frame rate: a stand-in rate and the clip's first frame
    assert (unknown["frame_rate"], unknown["frames_processed"], unknown["detections"][0]["frame_number"]) == \
        (1.0, [0], 0)
    assert "1 clips have no known frame rate" in stderr
    assert entries["camC/x.asf"]["detections"][0]["category"] == "3" and entries["camC/x.asf"]["frame_rate"] == 30.0
    for entry in doc["images"]:
        assert timelapse_keeps(entry) == (entry["detections"] or [])  # Timelapse drops none of them
        if "frame_rate" in entry and entry["detections"]:
            assert {d["frame_number"] for d in entry["detections"]} <= set(entry["frames_processed"])
    readable_animals = [r.path for r in ROWS if r.ok and r.probs[1] < 0.5]
    assert all(len(timelapse_keeps(entries[p])) == 1 for p in readable_animals)


def _drop(field: str):
    def change(image: dict) -> None:
        del image[field]
    return change


def _drop_frame_number(image: dict) -> None:
    del image["detections"][0]["frame_number"]


def _as_if_read(image: dict) -> None:  # a failed clip's frame rate -1 on an entry without a failure
    del image["failure"]
    image["detections"] = []


@pytest.mark.parametrize(("entry", "change", "message"), [
    ("camA/clip1.MP4", _drop("frame_rate"), "Video without frame rate"),
    ("camA/clip1.MP4", _drop("frames_processed"), "Video without frames_processed"),
    ("camA/clip1.MP4", _drop_frame_number, "Frame without frame number"),
    ("camB/bad.mov", _as_if_read, "Video with illegal frame rate"),
])
def test_the_validator_catches_a_video_entry_without_its_fields(clips_csv, tmp_path, entry, change, message):
    doc, _ = convert_megadetector(clips_csv, tmp_path / "results.json")
    broken = copy.deepcopy(doc)
    change(next(e for e in broken["images"] if e["file"] == entry))
    assert any(message in error for error in validate_megadetector(broken)["errors"])


@pytest.mark.parametrize("rate", [None, 0.0])
def test_an_unknown_frame_rate_gets_the_stand_in_not_a_rate_timelapse_drops(tmp_path, rate):
    row = Row("cam/a.mp4", FOX, "2024-01-01T00:00:00", clip=Clip(3, 2.0, rate, 2))
    doc, _ = convert_megadetector(write_field(tmp_path / "pred.csv", [row]), tmp_path / "results.json")
    [entry] = doc["images"]
    assert (entry["frame_rate"], entry["detections"][0]["frame_number"]) == (1.0, 0)
    assert validate_megadetector(doc)["errors"] == []


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), -1.0])
def test_a_hand_edited_clip_cell_that_is_no_rate_is_refused_in_one_line(tmp_path, rate):
    row = Row("cam/a.mp4", FOX, "2024-01-01T00:00:00", clip=Clip(3, 2.0, rate, 2))
    pred = write_field(tmp_path / "pred.csv", [row])
    done = trapcls("convert", pred, "--to", "megadetector", "--out", tmp_path / "r.json", rc=1)
    assert "are not finite numbers of at least 0" in done.stderr and "Traceback" not in done.stderr


def test_a_clip_said_to_end_after_the_year_9999_is_one_line(tmp_path):
    pred = write_field(tmp_path / "pred.csv", [Row("cam/a.mp4", FOX, "2024-01-01T00:00:00", clip=Clip(3, 1e15, 30, 2))])
    done = trapcls("events", pred, "--out", tmp_path / "events.csv", rc=1)
    assert "ends after the year 9999" in done.stderr and "Traceback" not in done.stderr


# --- Camtrap DP -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schemas() -> Path:
    if not (CAMTRAP_SCHEMAS / "camtrap-dp-profile.json").is_file():
        pytest.skip(f"{CAMTRAP_SCHEMAS} is not available (the Camtrap DP schemas are on project machines and in CI)")
    return CAMTRAP_SCHEMAS


def test_camtrap_dp_writes_video_media_whose_observations_cover_the_clip(clips_csv, tmp_path, schemas):
    package = tmp_path / "package"
    done = trapcls("convert", clips_csv, "--to", "camtrap-dp", "--out", package, "--timezone", "+01:00")
    assert "1 frames and 7 clips" in done.stdout
    assert validate_camtrap_dp(package, schemas) == []
    media = csv_rows(package / "media.csv", key="filePath")
    assert "camB/untimed.wmv" not in media  # no timestamp: left out, with a note
    assert {path: m["fileMediatype"] for path, m in media.items()} == {
        "camA/IMG_0001.JPG": "image/jpeg", "camA/clip1.MP4": "video/mp4", "camA/clip2.mp4": "video/mp4",
        "camA/clip3.avi": "video/x-msvideo", "camB/bad.mov": "video/quicktime", "camB/norate.mkv": "video/x-matroska",
        "camC/x.asf": "video/x-ms-asf", "camC/y.m4v": "video/x-m4v"}
    assert media["camA/clip1.MP4"]["timestamp"] == "2024-05-01T06:31:00+01:00"
    assert media["camC/x.asf"]["timestamp"] == "2024-05-02T10:00:00+02:00"  # the container's own offset
    assert media["camA/clip1.MP4"]["mediaComments"] == \
        "video clip: 61 frames sampled, 60.5 s long, 29.97 frames/s, best frame 900 (30.0 s)"
    assert media["camA/IMG_0001.JPG"]["mediaComments"] == ""
    observations = list(csv.DictReader(open(package / "observations.csv", encoding="utf-8")))
    by_media = {o["mediaID"]: o for o in observations if o["observationLevel"] == "media"}
    clip1 = by_media[media["camA/clip1.MP4"]["mediaID"]]
    assert (clip1["eventStart"], clip1["eventEnd"]) == ("2024-05-01T06:31:00+01:00", "2024-05-01T06:32:01+01:00")
    assert by_media[media["camB/bad.mov"]["mediaID"]]["observationType"] == "unclassified"
    events = {o["eventID"]: o for o in observations if o["observationLevel"] == "event"}
    visit = events["camA/20240501T063000"]
    assert (visit["eventStart"], visit["eventEnd"]) == ("2024-05-01T06:30:00+01:00", "2024-05-01T06:33:40+01:00")
    assert events["camA/20240501T070000"]["observationType"] == "blank"
    deployments = csv_rows(package / "deployments.csv", key="deploymentID")
    assert deployments["camA"]["deploymentEnd"] == "2024-05-01T07:00:10+01:00"  # the end of its last clip


def test_every_clip_suffix_trapcls_reads_has_a_video_media_type():
    expected = {".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".avi": "video/x-msvideo",
                ".asf": "video/x-ms-asf", ".wmv": "video/x-ms-wmv", ".mkv": "video/x-matroska"}
    assert set(CLIP_SUFFIXES) == set(expected)
    for suffix in CLIP_SUFFIXES:
        for name in (f"cam/a{suffix}", f"cam/a{suffix.upper()}"):
            assert media_type(Row(name, FOX, clip=Clip(1, 1.0, 1.0, 0))) == expected[suffix]


# --- adapt and merge ------------------------------------------------------------------------------------------------

def test_adapt_keeps_a_clips_cells(tmp_path):
    bundle_dir = REPO / "trapcls" / "default_bundle"
    bundle = load_bundle(bundle_dir)
    rng = np.random.default_rng(0)
    layout = Layout("field", bundle.classes, bundle.blank_rule(), model=bundle.model_id, clips=True)
    rows = [Row(f"camA/{i:02d}.mp4", rng.dirichlet(np.ones(len(bundle.classes))), "2024-05-01T06:00:00",
                clip=Clip(5, 4.97, 29.97, i)) for i in range(6)]
    rows += [Row("camA/still.jpg", rng.dirichlet(np.ones(len(bundle.classes)))),
             Row("camA/bad.avi", None, error="truncated inside its first frame", clip=Clip())]
    pred = write_field(tmp_path / "pred.csv", rows, layout)
    trapcls("adapt", pred, "--bundle", bundle_dir, "--out", tmp_path / "adapted.csv", "--min-frames", "3")
    adapted = {row.path: row for row in read_field(tmp_path / "adapted.csv").rows}
    assert {path: row.clip for path, row in adapted.items()} == {row.path: row.clip for row in rows}
    assert adapted["camA/bad.avi"].error == "truncated inside its first frame"
    assert not np.allclose(adapted["camA/00.mp4"].probs, rows[0].probs)  # adapted, not copied


def test_clip_shards_merge_into_the_bytes_of_one_run(tmp_path):
    canonical = merge_csvs([write_field(tmp_path / "all.csv", ROWS)], tmp_path / "canonical.csv").out
    frames_only = Layout("field", CLASSES, RULE, model=MODEL)  # a shard that met no clip has no clip columns
    shards = [write_field(tmp_path / "s1.csv", [ROWS[0]], frames_only),
              write_field(tmp_path / "s2.csv", list(reversed(ROWS[1:5]))),
              write_field(tmp_path / "s3.csv", ROWS[5:])]
    merged = merge_csvs(shards, tmp_path / "merged.csv")
    assert merged.rows == len(ROWS)
    assert (tmp_path / "merged.csv").read_bytes() == canonical.read_bytes()
    assert {r.path: r.clip for r in read_field(tmp_path / "merged.csv").rows} == {r.path: r.clip for r in ROWS}


def test_merge_refuses_clip_shards_of_two_models(tmp_path):
    other = Layout("field", CLASSES, RULE, model="another v1 sha256:ffffffffffff", clips=True)
    shards = [write_field(tmp_path / "s1.csv", ROWS[:3]), write_field(tmp_path / "s2.csv", ROWS[3:], other)]
    with pytest.raises(DataError, match="different models"):
        merge_csvs(shards, tmp_path / "merged.csv")
    assert not (tmp_path / "merged.csv").exists()


def test_merge_still_refuses_shards_whose_other_columns_differ(tmp_path):
    fewer = Layout("field", CLASSES[:3] + ("deer",), RULE, model=MODEL)
    shards = [write_field(tmp_path / "s1.csv", ROWS[1:3]), write_field(tmp_path / "s2.csv", [ROWS[0]], fewer)]
    with pytest.raises(DataError, match="other columns"):
        merge_csvs(shards, tmp_path / "merged.csv")


# --- evaluate -------------------------------------------------------------------------------------------------------

def evaluation(*args) -> dict:
    return json.loads(trapcls("evaluate", *args, "--json").stdout)


def test_evaluate_scores_clip_rows_against_a_labels_csv(clips_csv, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,label\ncamA/clip1.MP4,fox\ncamA/clip2.mp4,car\ncamA/clip3.avi,blank\n"
                      "camC/x.asf,car\ncamB/bad.mov,fox\n", encoding="utf-8")
    result = evaluation(clips_csv, "--labels", labels)
    counts = result["counts"][0]
    assert (counts["scored"], counts["error_rows_with_label"]) == (4, 1)  # bad.mov: an error row, not scored
    assert result["metrics"][0]["accuracy"] == pytest.approx(0.75)  # clip2 is no fox


@pytest.fixture(scope="module")
def real_clips() -> list[Path]:
    """Real camera-trap clips: those committed under tests/data/clips, else zamba's in ../shared."""
    for folder in (REPO / "tests" / "data" / "clips", SHARED_DATA / "zamba_videos"):
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(CLIP_SUFFIXES))
        if len(found) >= 3:
            return found[:3]
    pytest.skip("no real clips: neither tests/data/clips nor ../shared/data/zamba_videos is here")


def test_evaluate_finds_clips_in_class_folders_and_reports_them(real_clips, tmp_path):
    labels = tmp_path / "labels"
    layout = Layout("field", CLASSES, RULE, model=MODEL, clips=True)
    rows = []
    for clip, label, probs in zip(real_clips, ("fox", "blank", "car"), (FOX, BLANK, FOX), strict=True):
        (labels / label).mkdir(parents=True)
        shutil.copyfile(clip, labels / label / clip.name)
        rows.append(Row(f"{label}/{clip.name}", probs, clip=Clip(3, 3.0, 1.0, 1)))
    pred = write_field(tmp_path / "pred.csv", rows, layout)
    result = evaluation(pred, "--labels", labels, "--report", tmp_path / "report.html")
    assert result["counts"][0]["scored"] == 3 and result["metrics"][0]["accuracy"] == pytest.approx(2 / 3)
    assert (tmp_path / "report.html").stat().st_size > 0  # the car clip in a gallery of mistakes, without a picture


# --- end to end: trapcls predict over real clips --------------------------------------------------------------------

CLIPS = REPO / "tests" / "data" / "clips"


@pytest.fixture(scope="module")
def predicted_clips(tmp_path_factory) -> tuple[Path, Path]:
    """(inbox, field CSV) of `trapcls predict`: camA holds the RECONYX burst (EXIF 20:43:09 to 20:43:15) and two clips
    made of its frames with a creation time (20:43:20, 4 s long: the burst's event; 20:50:00: an event of its own);
    camB the committed zamba clips (no creation time), a zero-byte clip and an MP4 cut before its index."""
    inbox = tmp_path_factory.mktemp("clips") / "inbox"
    shutil.copytree(BURST, inbox / "camA", ignore=shutil.ignore_patterns("*.md", "*.txt"))
    frames = sorted(BURST.glob("*.JPG"))
    write_clip(inbox / "camA" / "visit.mp4", frames_of([f for f in frames for _ in range(2)], (160, 120)), rate=5,
               metadata={"creation_time": "2021-04-11T20:43:20Z"})
    write_clip(inbox / "camA" / "LATE.MP4", frames_of(frames[:5], (160, 120)), rate=5,
               metadata={"creation_time": "2021-04-11T20:50:00Z"})
    shutil.copytree(CLIPS, inbox / "camB", ignore=shutil.ignore_patterns("*.md", "LICENSE*"))
    (inbox / "camB" / "empty.mp4").write_bytes(b"")
    whole = (inbox / "camA" / "visit.mp4").read_bytes()
    (inbox / "camB" / "cut.mp4").write_bytes(whole[: len(whole) // 3])
    out = inbox.parent / "pred.csv"
    trapcls("predict", inbox, "--out", out)
    return inbox, out


def clip_end_cell(row: dict[str, str]) -> str:
    """Where a clip row of the CSV ends, as events and Camtrap DP write it: start + duration, up to the second."""
    end = datetime.fromisoformat(row["captured"]) + timedelta(seconds=float(row["duration_s"]))
    return (end.replace(microsecond=0) + timedelta(seconds=math.ceil(end.microsecond / 1e6))).isoformat()


@pytest.mark.slow
def test_predicted_clips_make_events_timelapse_json_and_a_camtrap_package(predicted_clips, tmp_path):
    inbox, pred = predicted_clips
    rows = csv_rows(pred, key="path")
    assert len(rows) == 10 + 2 + 4 + 2
    assert {p for p, r in rows.items() if r["status"] == "error"} == {"camB/empty.mp4", "camB/cut.mp4"}
    visit = rows["camA/visit.mp4"]
    assert visit["captured"].startswith("2021-04-11T20:43:20") and float(visit["frame_rate"]) == 5

    trapcls("events", pred, "--out", tmp_path / "events.csv")
    events = csv_rows(tmp_path / "events.csv", key="event_id")
    burst = events["camA/20210411T204309"]
    assert (burst["frames"], burst["end"]) == ("11", clip_end_cell(visit))  # the burst and the clip after it
    assert events["camA/20210411T205000"]["frames"] == "1"
    assert sum(e["untimed"] == "true" for e in events.values()) == 6  # camB: no clip there has a creation time

    convert_megadetector(pred, tmp_path / "results.json")
    result = validate_megadetector(tmp_path / "results.json", image_root=inbox)
    assert result["errors"] == [] and result["warnings"] == []
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    entries = {e["file"]: e for e in doc["images"]}
    for path, row in rows.items():
        entry = entries[path]
        assert timelapse_keeps(entry) == (entry["detections"] or [])
        if row["frames"] and row["status"] == "ok":
            assert entry["frame_rate"] == pytest.approx(float(row["frame_rate"]))
            assert all(d["frame_number"] == int(row["best_frame"]) for d in entry["detections"])
        elif row["frames"]:
            assert (entry["frame_rate"], entry["detections"], entry["frames_processed"]) == (-1.0, None, [])

    package = tmp_path / "package"
    done = trapcls("convert", pred, "--to", "camtrap-dp", "--out", package, "--timezone", "Europe/Brussels")
    assert "6 frames or clips have no capture time" in done.stderr
    if CAMTRAP_SCHEMAS.is_dir():
        assert validate_camtrap_dp(package, CAMTRAP_SCHEMAS) == []
    media = csv_rows(package / "media.csv", key="filePath")
    assert (media["camA/visit.mp4"]["fileMediatype"], media["camA/LATE.MP4"]["fileMediatype"]) == \
        ("video/mp4", "video/mp4")
    assert media["camA/visit.mp4"]["timestamp"] == "2021-04-11T20:43:20+02:00"
    observations = list(csv.DictReader(open(package / "observations.csv", encoding="utf-8")))
    [burst_event] = [o for o in observations
                     if o["eventID"] == "camA/20210411T204309" and o["observationLevel"] == "event"]
    assert burst_event["eventEnd"] == clip_end_cell(visit) + "+02:00"


@pytest.mark.slow
def test_predicted_clip_shards_merge_into_the_bytes_of_one_run(predicted_clips, tmp_path):
    inbox, pred = predicted_clips
    shards = [tmp_path / f"shard{k}.csv" for k in (1, 2)]
    for k, shard in enumerate(shards, start=1):
        trapcls("predict", inbox, "--out", shard, "--shard", f"{k}/2")
    merge_csvs(shards, tmp_path / "merged.csv")
    merge_csvs([pred], tmp_path / "one.csv")
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()

