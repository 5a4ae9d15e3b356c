"""`predict --detections`: MegaDetector boxes in, species per box out (issue 24).

The rule that makes a frame's row from its boxes is checked against hand-computed values; the whole run is
checked end to end with the shipped model on the repository's real frames, with MegaDetector files written here
(a user's checkout has no ../shared): several animals in one frame (built from real frames), a person, a box
below the threshold, no box, a detector failure, a frame the detector never saw.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import FRAMES, csv_rows, trapcls
from trapcls.core.frames.crop import MARGIN, crop, preprocess_crops, square
from trapcls.core.frames.detections import Box, Entry
from trapcls.core.model.blank import given_rule
from trapcls.core.model.boxes import detector_class, frame_from_boxes
from trapcls.core.model.bundle import default_bundle, load_bundle
from trapcls.core.table.layout import Layout
from trapcls.core.table.row import Detected, Row

CLASSES = ("blank", "deer", "fox", "human")


def box(category="animal", conf=0.9, index=0) -> Box:
    return Box(index, category, conf, 0.1, 0.1, 0.3, 0.3)


def frame_row(boxes: list[Box], probs: dict[int, list[float]], threshold=0.2):
    """The rule, as predict applies it: the boxes at or above the threshold, person boxes mapped to the human
    class, the rest classified (here: the probabilities given per box index)."""
    results = []
    for b in Entry("f.jpg", tuple(boxes)).above(threshold):
        mapped = detector_class(b.category, CLASSES)
        results.append(np.eye(len(CLASSES))[mapped] if mapped is not None else np.array(probs[b.index]))
    return frame_from_boxes(results, CLASSES, 0)


@pytest.mark.parametrize(("case", "boxes", "probs", "expected", "species"), [
    ("no box", [], {}, [1, 0, 0, 0], ()),
    ("a low-confidence box only", [box(conf=0.1)], {0: [0.1, 0.7, 0.2, 0]}, [1, 0, 0, 0], ()),
    ("one animal box", [box()], {0: [0.1, 0.7, 0.2, 0]}, [0.1, 0.7, 0.2, 0], ("deer",)),
    # P(blank) = min(0.1, 0) = 0; evidence deer 0.7, fox 0.2, human 1.0 (the person box), of 1.9
    ("an animal and a person", [box(), box("person", 0.8, 1)], {0: [0.1, 0.7, 0.2, 0]},
     [0, 0.7 / 1.9, 0.2 / 1.9, 1 / 1.9], ("deer", "human")),
    # P(blank) = min(0.2, 0.4) = 0.2; evidence deer 0.6 + 0.1, fox 0.2 + 0.45, human 0.05, of 1.4, times 0.8
    ("two species", [box(), box(index=1)], {0: [0.2, 0.6, 0.2, 0], 1: [0.4, 0.1, 0.45, 0.05]},
     [0.2, 0.7 / 1.4 * 0.8, 0.65 / 1.4 * 0.8, 0.05 / 1.4 * 0.8], ("deer", "fox")),
])
def test_the_rule_that_combines_detector_and_classifier(case, boxes, probs, expected, species):
    got, got_species = frame_row(boxes, probs)
    np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=case)
    assert got_species == species
    # The row as written: label and is_blank from these probabilities (a threshold of 0.5 here).
    layout = Layout("field", CLASSES, given_rule(0.5), model="m", detections=True)
    cells = layout.cells(Row("f.jpg", got, detected=Detected(sum(b.conf >= 0.2 for b in boxes), got_species)))
    header = layout.header()
    row = dict(zip(header, cells, strict=True))
    assert row["label"] == CLASSES[int(np.argmax(expected))]
    assert row["is_blank"] == ("true" if expected[0] >= 0.5 else "false")
    assert row["species"] == ";".join(species)


def test_a_model_without_a_blank_class_cannot_say_a_frame_is_blank():
    with pytest.raises(Exception, match="no blank class"):
        frame_from_boxes([], ("deer", "fox"), None)


def test_the_crop_is_a_square_around_the_box_with_a_margin_padded_black():
    image = Image.new("RGB", (400, 200), (200, 100, 50))
    # A 40x20 px box at the frame's left edge: a 48 px square (40 x 1.2) centred on it, half outside the frame.
    b = (0.0, 0.45, 0.1, 0.1)
    assert square(b, 400, 200) == (-4, 76, 44, 124)  # centre (20, 100), 24 px each way
    out = crop(image, b)
    assert out.size == (48, 48)
    assert out.getpixel((0, 24)) == (0, 0, 0) and out.getpixel((47, 24)) == (200, 100, 50)
    assert MARGIN == 0.1


# --- end to end ---------------------------------------------------------------------------------------------

def scene(path: Path, left: Path, right: Path) -> list[list[float]]:
    """Two real frames side by side: one frame holding two animals, and a box around each."""
    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB").resize(Image.open(left).size)
    canvas = Image.new("RGB", (a.width * 2, a.height))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    canvas.save(path, quality=92)
    return [[0.02, 0.05, 0.46, 0.9], [0.52, 0.05, 0.46, 0.9]]


def megadetector(entries: list[dict], threshold: float | None = 0.2) -> dict:
    meta = {"typical_detection_threshold": threshold} if threshold is not None else {}
    return {"info": {"format_version": "1.4", "detector": "md_v5a.0.0", "detector_metadata": meta},
            "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}, "images": entries}


def detection(bbox, conf=0.9, category="1") -> dict:
    return {"category": category, "conf": conf, "bbox": bbox}


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    """Real frames and a MegaDetector file with every kind of entry."""
    root = tmp_path_factory.mktemp("field")
    images = root / "images"
    images.mkdir()
    two_species = scene(images / "baboon_and_warthog.jpg", FRAMES / "baboon-3.jpg", FRAMES / "warthog-3.jpg")
    one_species = scene(images / "zebra_and_elephant.jpg", FRAMES / "zebra-3.jpg", FRAMES / "elephant-3.jpg")
    for name in ("buffalo-3.jpg", "elephant-trailcam-3.JPG", "warthog-trailcam-3.JPG", "zebra-3.jpg",
                 "baboon-trailcam-3.JPG"):
        (images / name).write_bytes((FRAMES / name).read_bytes())
    entries = [
        {"file": "baboon_and_warthog.jpg", "detections": [detection(b) for b in two_species]},
        {"file": "zebra_and_elephant.jpg", "detections": [detection(b, 0.7) for b in one_species]},
        {"file": "buffalo-3.jpg", "detections": [detection([0.1, 0.1, 0.8, 0.8], 0.95),
                                                 detection([0.0, 0.0, 0.1, 0.1], 0.05)]},
        {"file": "elephant-trailcam-3.JPG", "detections": [detection([0.3, 0.3, 0.2, 0.4], 0.08)]},
        {"file": "warthog-trailcam-3.JPG", "detections": []},
        {"file": "zebra-3.jpg", "detections": [detection([0.6, 0.2, 0.2, 0.6], 0.9, "2"),
                                               detection([0.1, 0.1, 0.5, 0.8], 0.9)]},
        {"file": "lost.jpg", "failure": "Failure image access"},
        {"file": "not-here/other.jpg", "detections": []},
    ]
    (root / "md.json").write_text(json.dumps(megadetector(entries)))
    return root


@pytest.fixture(scope="module")
def run(field) -> dict:
    out = field / "pred.csv"
    proc = trapcls("predict", field / "images", "--detections", field / "md.json", "--out", out)
    return {"proc": proc, "frames": csv_rows(out), "boxes": _box_rows(field / "pred.boxes.csv"), "out": out}


def _box_rows(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    with open(path, newline="") as fh:
        return {(r["path"], int(r["box"])): r for r in csv.DictReader(fh)}


def test_every_box_at_or_above_the_threshold_is_classified_as_its_own_crop(field, run):
    from trapcls.predict.backends import create_backend
    from trapcls.predict.infer import frame_probs

    bundle = load_bundle(default_bundle())
    backend = create_backend("onnxruntime", bundle, threads=1)
    md = {e["file"]: e for e in json.loads((field / "md.json").read_text())["images"]}
    for (path, index), row in run["boxes"].items():
        d = md[path]["detections"][index]
        assert d["conf"] >= 0.2 and row["category"] == {"1": "animal", "2": "person"}[d["category"]]
        assert [float(row[k]) for k in ("bbox_x", "bbox_y", "bbox_width", "bbox_height")] == d["bbox"]
        got = np.array([float(row[c]) for c in bundle.classes])
        if d["category"] == "2":  # the detector's person: the model's human_vehicle class
            assert row["label"] == "human_vehicle" and float(row["human_vehicle"]) == 1.0
            continue
        x, _ = preprocess_crops(field / "images" / path, [Box(index, "animal", 0.9, *d["bbox"])], bundle.preprocess)
        np.testing.assert_allclose(got, frame_probs(x, bundle, backend)[0], atol=1e-8)  # this crop alone
    # Every box at or above 0.2 is there, and none below.
    expected_keys = {(f, i) for f, e in md.items() for i, d in enumerate(e.get("detections") or []) if d["conf"] >= 0.2}
    assert set(run["boxes"]) == expected_keys


def test_a_frame_row_combines_its_boxes_and_lists_each_species_once(run):
    classes = load_bundle(default_bundle()).classes
    frames, boxes = run["frames"], run["boxes"]
    for path, frame in frames.items():
        mine = [np.array([float(r[c]) for c in classes]) for (p, _), r in sorted(boxes.items()) if p == path]
        if frame["status"] != "ok":
            continue
        assert int(frame["boxes"]) == len(mine)
        if not mine:  # no box at or above the threshold: blank
            assert frame["label"] == "blank" and float(frame["blank"]) == 1.0 and frame["species"] == ""
            continue
        stacked = np.stack(mine)
        blank = classes.index("blank")
        p_blank = stacked[:, blank].min()
        evidence = stacked.sum(axis=0)
        evidence[blank] = 0
        expected = evidence / evidence.sum() * (1 - p_blank)
        expected[blank] = p_blank
        np.testing.assert_allclose([float(frame[c]) for c in classes], expected, atol=1e-6)
        tops = {classes[int(np.argmax(p))] for p in mine} - {"blank"}
        assert frame["species"].split(";") == [c for c in classes if c in tops] or (not tops and not frame["species"])
    two = frames["baboon_and_warthog.jpg"]
    assert two["boxes"] == "2" and len(two["species"].split(";")) == len(set(two["species"].split(";")))


def test_frames_without_an_entry_or_with_a_detector_failure_get_error_rows_that_say_why(run):
    frames = run["frames"]
    assert frames["baboon-trailcam-3.JPG"]["status"] == "error"
    assert "not in md.json" in frames["baboon-trailcam-3.JPG"]["error"]
    assert set(frames) == {"baboon_and_warthog.jpg", "zebra_and_elephant.jpg", "buffalo-3.jpg",
                           "elephant-trailcam-3.JPG", "warthog-trailcam-3.JPG", "zebra-3.jpg", "baboon-trailcam-3.JPG"}
    text = run["proc"].stdout + run["proc"].stderr
    assert "6 of 7 frames have an entry in md.json" in text
    assert "2 entries of md.json match no frame given" in text
    assert "detection threshold 0.2 (md.json's typical_detection_threshold)" in text
    assert "trained on whole frames" in text  # the shipped model is a whole-frame model


def test_the_person_box_makes_the_frame_hold_a_human(run):
    zebra = run["frames"]["zebra-3.jpg"]
    assert zebra["boxes"] == "2" and "human_vehicle" in zebra["species"].split(";")
    assert float(zebra["blank"]) == 0.0  # a person box is certain: the frame is not blank


def test_a_resumed_run_ends_with_the_same_two_files(field, run, tmp_path):
    """Killed after a frame's box rows were written and before its own row: the rerun writes its boxes once."""
    out, boxes = tmp_path / "pred.csv", tmp_path / "pred.boxes.csv"
    lines = run["out"].read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]))  # the last two frames' rows never reached the CSV...
    boxes.write_bytes((field / "pred.boxes.csv").read_bytes())  # ...but all box rows did
    trapcls("predict", field / "images", "--detections", field / "md.json", "--out", out)
    assert out.read_bytes() == run["out"].read_bytes()
    assert boxes.read_bytes() == (field / "pred.boxes.csv").read_bytes()


def test_the_submission_format_and_a_threshold_given_on_the_command_line(field, tmp_path):
    out = tmp_path / "sub.csv"
    proc = trapcls("predict", field / "images", "--detections", field / "md.json", "--out", out,
                   "--format", "submission", "--detection-threshold", "0.06", "--boxes-out", tmp_path / "b.csv")
    assert "detection threshold 0.06 (--detection-threshold)" in proc.stdout + proc.stderr
    boxes = _box_rows(tmp_path / "b.csv")
    assert ("elephant-trailcam-3.JPG", 0) in boxes and ("buffalo-3.jpg", 1) not in boxes  # 0.08 in, 0.05 out
    assert out.read_text().splitlines()[0].startswith("id,")


def test_evaluate_scores_a_detection_run_like_any_other(field, run, tmp_path):
    labels = tmp_path / "labels.csv"
    truth = {"baboon_and_warthog.jpg": "primate", "warthog-trailcam-3.JPG": "pig", "baboon-trailcam-3.JPG": "primate"}
    labels.write_text("filepath,label\n" + "".join(f"{p},{truth.get(p, 'large_herbivore')}\n" for p in run["frames"]))
    scores = json.loads(trapcls("evaluate", run["out"], "--labels", labels, "--json").stdout)
    right = sum(row["label"] == truth.get(p, "large_herbivore") for p, row in run["frames"].items() if row["label"])
    metrics = scores["metrics"][0]
    assert metrics["n"] == 6 and metrics["accuracy"] == pytest.approx(right / 6)  # the error row is not scored


# --- bad input ----------------------------------------------------------------------------------------------

def _md(tmp_path: Path, data) -> Path:
    path = tmp_path / "md.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


BAD = [
    ("not json", "filepath,label\na.jpg,zebra\n", "not JSON"),
    ("a json list", [1, 2], "needs an 'images' list"),
    ("no format version", {"images": [], "detection_categories": {"1": "animal"}}, "format"),
    ("box outside the frame", megadetector([{"file": "zebra-3.jpg", "detections": [detection([0.8, 0.1, 0.5, 0.2])]}]),
     "outside the frame"),
    ("negative box", megadetector([{"file": "zebra-3.jpg", "detections": [detection([-0.1, 0.1, 0.5, 0.2])]}]),
     "outside the frame"),
    ("undefined category", megadetector([{"file": "zebra-3.jpg", "detections": [detection([0, 0, 1, 1], 0.9, "7")]}]),
     "does not define"),
    ("confidence above 1", megadetector([{"file": "zebra-3.jpg", "detections": [detection([0, 0, 1, 1], 3)]}]),
     "confidence"),
    ("other detector categories", {**megadetector([]), "detection_categories": {"1": "bird"}}, "not MegaDetector's"),
    ("no path matches", megadetector([{"file": "cams/a/IMG_0001.JPG", "detections": []}]), "none of the"),
    ("video entries", megadetector([{"file": "clip.mp4", "frames": [], "detections": []}]), "video entry"),
    ("two entries for one frame", megadetector([{"file": "zebra-3.jpg", "detections": []}] * 2), "two entries"),
]


@pytest.mark.parametrize(("case", "data", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_detection_files_get_one_line_and_exit_1(tmp_path, case, data, message):
    images = tmp_path / "images"
    images.mkdir()
    (images / "zebra-3.jpg").write_bytes((FRAMES / "zebra-3.jpg").read_bytes())
    proc = trapcls("predict", images, "--detections", _md(tmp_path, data), "--out", tmp_path / "p.csv", rc=1)
    assert message in proc.stderr and "Traceback" not in proc.stderr, case
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error")]) == 1


@pytest.mark.parametrize(("args", "flag"), [
    (["--detection-threshold", "1.5"], "--detection-threshold"),
    (["--detection-threshold", "-0.1"], "--detection-threshold"),
])
def test_bad_detection_options_exit_2(field, tmp_path, args, flag):
    proc = trapcls("predict", field / "images", "--detections", field / "md.json", "--out", tmp_path / "p.csv",
                   *args, rc=2)
    assert flag in proc.stderr and "Traceback" not in proc.stderr


def test_detection_options_without_detections_exit_2(tmp_path):
    for args in (["--boxes-out", tmp_path / "b.csv"], ["--detection-threshold", "0.5"]):
        proc = trapcls("predict", FRAMES, "--out", tmp_path / "p.csv", *args, rc=2)
        assert "--detections" in proc.stderr


def test_a_boxes_out_that_is_another_file_is_refused_and_left_untouched(field, run, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,label\nzebra-3.jpg,zebra\n")
    before = labels.read_bytes()
    for target in (labels, field / "pred.csv"):
        proc = trapcls("predict", field / "images", "--detections", field / "md.json", "--out", tmp_path / "p.csv",
                       "--boxes-out", target, rc=1)
        assert "left untouched" in proc.stderr
    assert labels.read_bytes() == before
    frame = field / "images" / "zebra-3.jpg"
    image = frame.read_bytes()
    proc = trapcls("predict", field / "images", "--detections", field / "md.json", "--out", tmp_path / "r.csv",
                   "--boxes-out", frame, rc=1)
    assert "is an input itself" in proc.stderr and frame.read_bytes() == image
    for target in (tmp_path / "q.csv", field / "md.json"):
        proc = trapcls("predict", field / "images", "--detections", field / "md.json", "--out", tmp_path / "q.csv",
                       "--boxes-out", target, rc=2)
        assert "same file" in proc.stderr


def _crop_bundle(tmp_path: Path, crop) -> Path:
    import shutil

    bundle = Path(shutil.copytree(default_bundle(), tmp_path / "crop-bundle"))
    manifest = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**manifest, "crop": crop} if crop else manifest))
    return bundle


def test_a_crop_model_is_refused_whole_frames_with_the_reason(tmp_path):
    from trapcls.core.frames.crop import CropSpec

    bundle = _crop_bundle(tmp_path, CropSpec().to_dict())
    proc = trapcls("predict", FRAMES, "--bundle", bundle, "--out", tmp_path / "p.csv", rc=2)
    assert "trained on detector crops" in proc.stderr and "--detections" in proc.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_crop_model_with_another_geometry_is_refused(tmp_path):
    bundle = _crop_bundle(tmp_path, {"geometry": "square", "margin": 0.5, "pad": "black"})
    proc = trapcls("predict", FRAMES, "--bundle", bundle, "--out", tmp_path / "p.csv", rc=1)
    assert "crop geometry" in proc.stderr


def test_a_crop_model_classifies_boxes_without_a_warning(field, tmp_path):
    from trapcls.core.frames.crop import CropSpec

    bundle = _crop_bundle(tmp_path, CropSpec().to_dict())
    proc = trapcls("predict", field / "images", "--bundle", bundle, "--detections", field / "md.json",
                   "--out", tmp_path / "p.csv")
    assert "trained on whole frames" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_watch_refuses_a_crop_model(tmp_path):
    from trapcls.core.frames.crop import CropSpec

    bundle = _crop_bundle(tmp_path, CropSpec().to_dict())
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    proc = trapcls("watch", inbox, "--bundle", bundle, "--out", tmp_path / "out", "--idle-exit", "1", rc=1)
    assert "trained on detector crops" in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_without_a_blank_class_is_refused_for_detections(field, tmp_path):
    bundle = _crop_bundle(tmp_path, None)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["classes"] = ["nothing" if c == "blank" else c for c in manifest["classes"]]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    proc = trapcls("predict", field / "images", "--bundle", bundle, "--detections", field / "md.json",
                   "--out", tmp_path / "p.csv", rc=1)
    assert "no blank class" in proc.stderr


def test_convert_refuses_a_boxes_csv_that_is_not_this_runs(field, run, tmp_path):
    boxes = tmp_path / "boxes.csv"
    lines = (field / "pred.boxes.csv").read_text().splitlines(keepends=True)
    boxes.write_text("".join(lines) + lines[1].replace("baboon_and_warthog.jpg", "elsewhere.jpg", 1))
    proc = trapcls("convert", run["out"], "--to", "camtrap-dp", "--out", tmp_path / "pkg", "--boxes", boxes, rc=1)
    assert "elsewhere.jpg" in proc.stderr and "not this run's" in proc.stderr
    proc = trapcls("convert", run["out"], "--to", "camtrap-dp", "--out", tmp_path / "pkg", "--boxes",
                   field / "md.json", rc=1)
    assert "not a trapcls boxes CSV" in proc.stderr
