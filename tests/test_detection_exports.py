"""convert on a detection run (`predict --detections`): per-box classifications in MegaDetector JSON that
MegaDetector's own validator accepts, and one Camtrap DP observation per classified box that validates offline.

The run is real: `trapcls predict --detections` with the shipped model on the repository's camera-trap frames
(EXIF-timed trail-camera frames, one frame built from two real frames side by side), with a MegaDetector file
written here (a user's checkout has no ../shared). The exact rules are checked on hand-made rows; the real ENA24
frames and their real MegaDetector v5 output are converted where ../shared exists. Bad input: one line each.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import CAMTRAP_SCHEMAS, DEMO, FRAMES, csv_rows, trapcls, validate_camtrap_dp, validate_megadetector
from trapcls.core.frames.detections import Box
from trapcls.core.model.blank import given_rule
from trapcls.core.table.boxes import BoxLayout
from trapcls.core.table.layout import Layout
from trapcls.core.table.row import BoxResult, Detected, Row
from trapcls.results import ConvertConfig, run_convert

TRAIN = DEMO / "train"
DETECTOR_INFO = {"format_version": "1.4", "detector": "md_v5a.0.0.pt",
                 "detection_completion_time": "2024-05-01 10:00:00",
                 "detector_metadata": {"megadetector_version": "v5a.0.0", "typical_detection_threshold": 0.2,
                                       "conservative_detection_threshold": 0.05}}
CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
# Rough taxa for the shipped model's animal classes (the Camtrap DP needs a scientificName for each).
TAXA = {"antelope_deer": "Ruminantia", "bird": "Aves", "canid": "Canidae", "hyena": "Hyaenidae",
        "large_cat": "Felidae", "large_herbivore": "Mammalia", "pig": "Suidae", "primate": "Primates",
        "rodent_hare": "Glires", "small_carnivore": "Carnivora"}


def detection(bbox: list[float], conf: float = 0.9, category: str = "1") -> dict:
    return {"category": category, "conf": conf, "bbox": bbox}


def write_md(path: Path, images: list[dict], info: dict = DETECTOR_INFO) -> Path:
    path.write_text(json.dumps({"info": info, "detection_categories": CATEGORIES, "images": images}), encoding="utf-8")
    return path


def timed_jpeg(image: Image.Image, path: Path, taken: str) -> Path:
    """Save `image` with an EXIF capture time (DateTime and DateTimeOriginal)."""
    exif = Image.Exif()
    exif[0x0132] = taken
    exif.get_ifd(0x8769)[0x9003] = taken
    image.save(path, quality=92, exif=exif)
    return path


def side_by_side(left: Path, right: Path, out: Path, taken: str) -> tuple[list[float], list[float]]:
    """Two real frames side by side in one timed frame; the box of each (x, y, w, h relative to the new frame)."""
    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    height = min(a.height, b.height)
    a, b = (im.resize((round(im.width * height / im.height), height)) for im in (a, b))
    both = Image.new("RGB", (a.width + b.width, height))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    timed_jpeg(both, out, taken)
    split = a.width / both.width
    return [0.02, 0.1, round(split - 0.04, 4), 0.8], [round(split + 0.02, 4), 0.1, round(1 - split - 0.04, 4), 0.8]


@dataclass(frozen=True)
class Run:
    images: Path
    md: Path
    pred: Path
    boxes: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """A real detection run over: two animals of two species in one frame (and a low box beside them), a frame
    with only a low-confidence box, a frame with no box, a person and an animal, a detector failure, and a
    truncated JPEG."""
    root = tmp_path_factory.mktemp("detection-run")
    images = root / "images"
    (images / "cam1").mkdir(parents=True)
    (images / "cam2").mkdir()
    left, right = side_by_side(TRAIN / "buffalo" / "buffalo-trailcam-1.JPG",
                               TRAIN / "baboon" / "baboon-trailcam-1.JPG", images / "cam1" / "two.jpg",
                               "2012:10:05 13:00:00")
    shutil.copy(TRAIN / "elephant" / "elephant-trailcam-1.JPG", images / "cam1" / "low.jpg")
    shutil.copy(TRAIN / "warthog" / "warthog-trailcam-1.JPG", images / "cam1" / "none.jpg")
    shutil.copy(FRAMES / "buffalo-trailcam-3.JPG", images / "cam2" / "person.jpg")
    shutil.copy(FRAMES / "warthog-trailcam-3.JPG", images / "cam2" / "failed.jpg")
    whole = (FRAMES / "elephant-trailcam-3.JPG").read_bytes()
    (images / "cam2" / "truncated.jpg").write_bytes(whole[:len(whole) // 3])
    md = write_md(root / "md.json", [
        {"file": "cam1/two.jpg", "detections": [detection(left, 0.93), detection([0.9, 0.9, 0.05, 0.05], 0.05),
                                                detection(right, 0.88)]},
        {"file": "cam1/low.jpg", "detections": [detection([0.2, 0.3, 0.4, 0.4], 0.1)]},
        {"file": "cam1/none.jpg", "detections": []},
        {"file": "cam2/person.jpg", "detections": [detection([0.05, 0.2, 0.2, 0.6], 0.8, "2"),
                                                   detection([0.3, 0.2, 0.6, 0.7], 0.9)]},
        {"file": "cam2/failed.jpg", "failure": "Failure image access"},
        {"file": "cam2/truncated.jpg", "detections": [detection([0.1, 0.1, 0.5, 0.5])]},
    ])
    pred = root / "pred.csv"
    trapcls("predict", images, "--detections", md, "--out", pred)
    return Run(images, md, pred, root / "pred.boxes.csv")


def box_rows(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {(row["path"], int(row["box"])): row for row in csv.DictReader(fh)}


def classes_of(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    return header[header.index("probability") + 1:header.index("model")]


def expected_classifications(row: dict[str, str], classes: list[str]) -> list[tuple[str, float]]:
    """A box's classifications by the one rule: every non-blank class, P(class | not blank), most probable first."""
    probs = {i: float(row[name]) for i, name in enumerate(classes) if name != "blank"}
    mass = sum(probs.values())
    return [(str(i), p / mass) for i, p in sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))]


# --- MegaDetector JSON ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def md_out(run, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("md-out") / "results.json"
    done = trapcls("convert", run.pred, "--to", "megadetector", "--out", out, "--detections", run.md)
    return out, done.stdout + done.stderr


def test_the_json_of_a_detection_run_passes_megadetectors_validator(run, md_out):
    out, said = md_out
    result = validate_megadetector(out, image_root=run.images)
    assert result["errors"] == [] and result["warnings"] == []
    assert "6 frames, 6 boxes" in said  # two.jpg 3, low.jpg 1, none.jpg 0, person.jpg 2; the failures none
    assert "6 boxes written, 4 of them classified (at or above predict's detection threshold); the other 2 have " \
           "no classifications." in said


def test_every_input_box_is_written_and_the_detector_carried_over(run, md_out):
    doc, source = json.loads(md_out[0].read_text(encoding="utf-8")), json.loads(run.md.read_text(encoding="utf-8"))
    assert doc["info"]["format_version"] == "1.6"
    assert doc["info"]["detector"] == "md_v5a.0.0.pt"
    assert doc["info"]["detector_metadata"] == DETECTOR_INFO["detector_metadata"]
    assert doc["info"]["detection_completion_time"] == DETECTOR_INFO["detection_completion_time"]
    assert doc["info"]["classifier"] == next(iter(csv_rows(run.pred).values()))["model"]
    assert doc["detection_categories"] == CATEGORIES
    images = {im["file"]: im for im in doc["images"]}
    assert set(images) == {im["file"] for im in source["images"]}
    for entry in source["images"]:
        if "failure" in entry:
            continue
        written = images[entry["file"]]["detections"] or []
        if entry["file"] == "cam2/truncated.jpg":  # unreadable: a failure, whatever its boxes
            assert written == [] and images[entry["file"]]["detections"] is None
            continue
        assert [(d["category"], d["conf"], d["bbox"]) for d in written] == \
               [(d["category"], d["conf"], d["bbox"]) for d in entry["detections"]]


def test_classified_boxes_carry_classifications_by_the_one_rule_and_the_others_none(run, md_out):
    doc = json.loads(md_out[0].read_text(encoding="utf-8"))
    classes, boxes = classes_of(run.boxes), box_rows(run.boxes)
    names = doc["classification_categories"]
    assert list(names.values()) == [c for c in classes if c != "blank"]
    checked = 0
    for image in doc["images"]:
        for n, found in enumerate(image["detections"] or ()):
            row = boxes.get((image["file"], n))
            if row is None:  # below the detection threshold: not classified
                assert found["conf"] < 0.2 and "classifications" not in found
                continue
            got = found["classifications"]
            assert all(c in names for c, _ in got)
            assert [p for _, p in got] == sorted((p for _, p in got), reverse=True)
            want = expected_classifications(row, classes)
            assert [c for c, _ in got] == [c for c, _ in want]
            np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=2e-6)
            checked += 1
    assert checked == len(boxes) == 4  # two.jpg 2, person.jpg 2 (the truncated frame was never cropped)


def test_two_species_a_person_and_the_failures(run, md_out):
    images = {im["file"]: im for im in json.loads(md_out[0].read_text(encoding="utf-8"))["images"]}
    frames = csv_rows(run.pred)
    first, low, second = images["cam1/two.jpg"]["detections"]
    assert "classifications" not in low
    assert first["classifications"][0][0] != second["classifications"][0][0]  # each box its own species
    assert len(frames["cam1/two.jpg"]["species"].split(";")) == 2
    person, animal = images["cam2/person.jpg"]["detections"]
    # The person box is the model's human_vehicle class (id 4), the detector's call; every other class 0.
    assert person["category"] == "2" and person["classifications"][0] == ["4", 1.0]
    assert {p for _, p in person["classifications"][1:]} == {0.0}
    assert "classifications" in animal
    assert [d.get("classifications") for d in images["cam1/low.jpg"]["detections"]] == [None]
    assert images["cam1/none.jpg"]["detections"] == []
    assert images["cam2/failed.jpg"]["detections"] is None
    assert images["cam2/failed.jpg"]["failure"] == frames["cam2/failed.jpg"]["error"]
    assert "Failure image access" in images["cam2/failed.jpg"]["failure"]
    assert "truncated" in images["cam2/truncated.jpg"]["failure"]


# --- Camtrap DP ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schemas() -> Path:
    if not (CAMTRAP_SCHEMAS / "camtrap-dp-profile.json").is_file():
        pytest.skip(f"{CAMTRAP_SCHEMAS} is not available (the Camtrap DP schemas are on project machines and in CI)")
    return CAMTRAP_SCHEMAS


def taxa_file(folder: Path) -> Path:
    path = folder / "taxa.csv"
    path.write_text("class,scientificName\n" + "".join(f"{c},{n}\n" for c, n in TAXA.items()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def package(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("camtrap") / "package"
    done = trapcls("convert", run.pred, "--to", "camtrap-dp", "--out", out, "--timezone", "+02:00",
                   "--taxa", taxa_file(out.parent))
    (out.parent / "said.txt").write_text(done.stdout, encoding="utf-8")
    return out


def test_the_camtrap_dp_package_of_a_detection_run_validates(package, schemas):
    assert validate_camtrap_dp(package, schemas) == []
    assert "4 box observations" in (package.parent / "said.txt").read_text(encoding="utf-8")  # two.jpg 2, person 2


def test_one_observation_per_classified_box_with_its_bbox_and_class(run, package):
    classes, boxes = classes_of(run.boxes), box_rows(run.boxes)
    media = {m["mediaID"]: m["filePath"] for m in csv_rows(package / "media.csv", key="mediaID").values()}
    observations = [o for o in csv_rows(package / "observations.csv", key="observationID").values()
                    if o["observationLevel"] == "media"]
    by_file: dict[str, list[dict[str, str]]] = {}
    for o in observations:
        by_file.setdefault(media[o["mediaID"]], []).append(o)
    for o in (o for o in observations if o["bboxX"]):
        index = int(o["observationTags"].split("detectionBox:")[1])
        row = boxes[(media[o["mediaID"]], index)]
        assert [float(o[k]) for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")] == \
               pytest.approx([float(row[k]) for k in ("bbox_x", "bbox_y", "bbox_width", "bbox_height")], abs=1e-6)
        probs = {name: float(row[name]) for name in classes}
        top = max((c for c in classes if c != "blank"), key=probs.get)
        assert o["observationTags"].startswith(f"modelClass:{top}|detectionCategory:{row['category']}")
        assert float(o["classificationProbability"]) == pytest.approx(probs[top], abs=1e-6)
        assert o["observationType"] == ("human" if top == "human_vehicle" else "animal")
        assert o["scientificName"] == TAXA.get(top, "")
    two = by_file["cam1/two.jpg"]
    assert len(two) == 2 and len({o["scientificName"] for o in two}) == 2
    assert sorted(o["observationType"] for o in by_file["cam2/person.jpg"]) == ["animal", "human"]
    for blank in ("cam1/low.jpg", "cam1/none.jpg"):  # no box at or above the threshold: the frame is blank
        [o] = by_file[blank]
        assert o["observationType"] == "blank" and not o["bboxX"]
    [bad] = by_file["cam2/truncated.jpg"]
    assert bad["observationType"] == "unclassified" and not bad["bboxX"]
    assert "cam2/failed.jpg" not in by_file  # the detector's failure: no capture time read, so no medium


# --- the exact rules, on hand-made rows --------------------------------------------------------------------------

CLASSES = ("blank", "deer", "fox", "human")
MODEL = "hand-made v1"


def hand_made_run(folder: Path, frames: dict[str, list[tuple[Box, list[float]]]]) -> tuple[Path, Path]:
    """A detection run's frame CSV and boxes CSV written by the writers predict uses (Layout, BoxLayout), each frame's
    row from its boxes by the rule of core/model/boxes.py."""
    from trapcls.core.model.boxes import frame_from_boxes

    layout, boxes = Layout("field", CLASSES, given_rule(0.5), MODEL, detections=True), BoxLayout(CLASSES, MODEL)
    lines, box_lines = [layout.header()], [boxes.header()]
    for path, found in frames.items():
        results = tuple(BoxResult(b, np.array(p)) for b, p in found)
        probs, species = frame_from_boxes([r.probs for r in results], CLASSES, 0)
        lines.append(layout.cells(Row(path, probs, captured="2024-05-01T06:30:00",
                                      detected=Detected(len(results), species, results))))
        box_lines += [boxes.cells(path, r) for r in results]
    pred = folder / "pred.csv"
    for target, rows in ((pred, lines), (folder / "pred.boxes.csv", box_lines)):
        with open(target, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)
    return pred, folder / "pred.boxes.csv"


DEER = Box(0, "animal", 0.9, 0.1, 0.1, 0.3, 0.3), [0.1, 0.6, 0.3, 0.0]
EMPTY = Box(1, "animal", 0.6, 0.5, 0.5, 0.2, 0.2), [0.8, 0.1, 0.1, 0.0]  # a box the classifier calls blank


def test_a_box_the_classifier_calls_blank_gets_no_classification(tmp_path):
    pred, _ = hand_made_run(tmp_path, {"cam/a.jpg": [DEER, EMPTY]})
    md = write_md(tmp_path / "md.json", [{"file": "cam/a.jpg", "detections": [
        detection([0.1, 0.1, 0.3, 0.3], 0.9), detection([0.5, 0.5, 0.2, 0.2], 0.6)]}])
    doc = json.loads(run_convert(ConvertConfig(predictions=pred, to="megadetector", out=tmp_path / "md_out.json",
                                               detections=md)).out.read_text(encoding="utf-8"))
    first, second = doc["images"][0]["detections"]
    # Renormalised over the non-blank classes: deer 0.6 / 0.9, fox 0.3 / 0.9; the blank-called box: none.
    assert first["classifications"] == [["1", round(0.6 / 0.9, 6)], ["2", round(0.3 / 0.9, 6)], ["3", 0.0]]
    assert "classifications" not in second and second["conf"] == 0.6
    result = validate_megadetector(doc)
    assert result["errors"] == [] and result["warnings"] == []


def test_a_box_the_classifier_calls_blank_gets_no_observation(tmp_path, schemas):
    pred, _ = hand_made_run(tmp_path, {"cam/a.jpg": [DEER, EMPTY]})
    summary = run_convert(ConvertConfig(predictions=pred, to="camtrap-dp", out=tmp_path / "pkg", timezone="+02:00"))
    assert summary.boxes == 1
    media = [o for o in csv_rows(tmp_path / "pkg" / "observations.csv", key="observationID").values()
             if o["observationLevel"] == "media"]
    assert [(o["observationTags"].split("|")[0], o["bboxX"], o["classificationProbability"]) for o in media] == \
           [("modelClass:deer", "0.1", "0.6")]
    assert validate_camtrap_dp(tmp_path / "pkg", schemas) == []


def test_a_whole_frame_csv_converts_as_before_and_refuses_box_options(tmp_path):
    pred = tmp_path / "whole.csv"
    layout = Layout("field", CLASSES, given_rule(0.5), MODEL)
    with open(pred, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(
            [layout.header(), layout.cells(Row("cam/a.jpg", np.array([0.1, 0.6, 0.3, 0.0]), captured=""))])
    doc = json.loads(run_convert(ConvertConfig(predictions=pred, to="megadetector", out=tmp_path / "a.json"))
                     .out.read_text(encoding="utf-8"))
    assert doc["images"][0]["detections"][0]["bbox"] == [0.0, 0.0, 1.0, 1.0]
    for flag in ("--boxes", "--detections"):
        done = trapcls("convert", pred, "--to", "megadetector", "--out", tmp_path / "b.json", flag, pred, rc=2)
        assert f"Invalid value for '{flag}'" in done.stderr and "no detection columns" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


# --- bad input: one line each ------------------------------------------------------------------------------------


def _one_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_missing_boxes_csv_is_one_line(run, tmp_path):
    alone = Path(shutil.copy(run.pred, tmp_path / "pred.csv"))  # without its pred.boxes.csv
    line = _one_line(trapcls("convert", alone, "--to", "camtrap-dp", "--out", tmp_path / "pkg", rc=1))
    assert "pred.boxes.csv, the boxes CSV predict writes beside" in line and "does not exist" in line
    assert "pass it with --boxes" in line


def test_boxes_of_another_run_or_model_are_one_line(run, tmp_path):
    rows = run.boxes.read_text(encoding="utf-8").splitlines(keepends=True)
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("".join(rows[:-1]), encoding="utf-8")
    line = _one_line(trapcls("convert", run.pred, "--to", "camtrap-dp", "--out", tmp_path / "pkg",
                             "--boxes", fewer, rc=1))
    assert "is not this run's" in line
    other = tmp_path / "other.csv"
    other.write_text("".join([rows[0], *(r.replace("trapcls-default", "another-model") for r in rows[1:])]),
                     encoding="utf-8")
    line = _one_line(trapcls("convert", run.pred, "--to", "camtrap-dp", "--out", tmp_path / "pkg",
                             "--boxes", other, rc=1))
    assert "holds boxes of the model 'another-model" in line


@pytest.mark.parametrize(("case", "change", "message"), [
    ("a box index missing", lambda images: images[0]["detections"].pop(), "has 2 boxes for cam1/two.jpg"),
    ("another bbox", lambda images: images[0]["detections"][0].update(bbox=[0.5, 0.5, 0.1, 0.1]),
     "box 0 is animal 0.93 at [0.5, 0.5, 0.1, 0.1]"),
    ("a frame with boxes missing", lambda images: images.pop(3), "has no boxes for cam2/person.jpg"),
])
def test_detections_that_do_not_match_the_boxes_csv_are_one_line(run, tmp_path, case, change, message):
    source = json.loads(run.md.read_text(encoding="utf-8"))
    change(source["images"])
    md = write_md(tmp_path / "md.json", source["images"])
    line = _one_line(trapcls("convert", run.pred, "--to", "megadetector", "--out", tmp_path / "a.json",
                             "--detections", md, rc=1))
    assert message in line, case


def test_megadetector_of_a_detection_run_needs_the_detector_file(run, tmp_path):
    done = trapcls("convert", run.pred, "--to", "megadetector", "--out", tmp_path / "a.json", rc=2)
    assert "Invalid value for '--detections': is needed for --to megadetector" in _one_line(done)
    assert not (tmp_path / "a.json").exists()


def test_a_detections_file_that_is_not_megadetector_output_is_one_line(run, tmp_path):
    line = _one_line(trapcls("convert", run.pred, "--to", "megadetector", "--out", tmp_path / "a.json",
                             "--detections", run.pred, rc=1))
    assert "is not a MegaDetector output file" in line


# --- the real ENA24 frames and their real MegaDetector v5 output ---------------------------------------------------


@pytest.mark.slow
def test_ena24_with_its_megadetector_output_exports_validated(shared_data, schemas, tmp_path):
    """Every ENA24 frame's real MDv5 box classified; the MegaDetector JSON and the Camtrap DP package validate."""
    ena = shared_data / "ena24_small"
    images = tmp_path / "ena24"
    images.mkdir()
    for i, frame in enumerate(sorted(ena.glob("*.jpg"))):  # the frames have no EXIF time; Camtrap DP needs one
        timed_jpeg(Image.open(frame), images / frame.name, f"2019:06:01 12:{i:02d}:00")
    pred = tmp_path / "pred.csv"
    trapcls("predict", images, "--detections", ena / "md_annotations.json", "--out", pred)
    frames, boxes = csv_rows(pred), box_rows(tmp_path / "pred.boxes.csv")
    assert len(frames) == len(boxes) == 21 and all(row["boxes"] == "1" for row in frames.values())
    trapcls("convert", pred, "--to", "megadetector", "--out", tmp_path / "md.json",
            "--detections", ena / "md_annotations.json")
    result = validate_megadetector(tmp_path / "md.json", image_root=images)
    assert result["errors"] == [] and result["warnings"] == []
    doc = json.loads((tmp_path / "md.json").read_text(encoding="utf-8"))
    assert doc["info"]["detector"] == "md_v5.0.0" and doc["info"]["classifier"] != "ecosystem1_v2"
    # One box per frame, so a box has classifications exactly when its frame is not blank (the shipped whole-frame
    # model calls some crops blank: they keep the detector's box, without classifications).
    assert [len(im["detections"]) for im in doc["images"]] == [1] * 21
    assert {im["file"]: "classifications" not in im["detections"][0] for im in doc["images"]} == \
           {path: row["is_blank"] == "true" for path, row in frames.items()}
    trapcls("convert", pred, "--to", "camtrap-dp", "--out", tmp_path / "pkg", "--timezone", "America/New_York",
            "--detections", ena / "md_annotations.json", "--taxa", taxa_file(tmp_path))
    assert validate_camtrap_dp(tmp_path / "pkg", schemas) == []
    media = [o for o in csv_rows(tmp_path / "pkg" / "observations.csv", key="observationID").values()
             if o["observationLevel"] == "media"]
    assert len(media) == 21
    assert sum(bool(o["bboxX"]) for o in media) == sum(row["is_blank"] == "false" for row in frames.values())


@pytest.mark.slow
def test_ena24_with_hand_drawn_boxes_every_animal_classified_and_exported(shared_data, schemas, tmp_path):
    """The 25 animals of the 21 ENA24 frames, boxed by hand (train/detections/): every box classified and in the
    boxes CSV, several boxes of one frame listed once per species, both exports validated."""
    hand = Path(__file__).resolve().parents[1] / "train" / "detections" / "ena24-hand-boxes.json"
    entries = {e["file"]: e["detections"] for e in json.loads(hand.read_text())["images"]}
    images = tmp_path / "ena24"
    images.mkdir()
    for i, frame in enumerate(sorted((shared_data / "ena24_small").glob("*.jpg"))):
        timed_jpeg(Image.open(frame), images / frame.name, f"2019:06:01 12:{i:02d}:00")
    pred = tmp_path / "pred.csv"
    trapcls("predict", images, "--detections", hand, "--out", pred)
    frames, boxes = csv_rows(pred), box_rows(tmp_path / "pred.boxes.csv")
    assert set(boxes) == {(f, i) for f, found in entries.items() for i in range(len(found))}
    assert len(boxes) == 25 and frames["9455.jpg"]["boxes"] == "3"
    for path, row in frames.items():
        tops = {boxes[(path, i)]["label"] for i in range(len(entries[path]))} - {"blank"}
        assert sorted(row["species"].split(";") if row["species"] else []) == sorted(tops)
    trapcls("convert", pred, "--to", "megadetector", "--out", tmp_path / "md.json", "--detections", hand)
    result = validate_megadetector(tmp_path / "md.json", image_root=images)
    assert result["errors"] == [] and result["warnings"] == []
    trapcls("convert", pred, "--to", "camtrap-dp", "--out", tmp_path / "pkg", "--timezone", "America/New_York",
            "--taxa", taxa_file(tmp_path))
    assert validate_camtrap_dp(tmp_path / "pkg", schemas) == []
