"""convert --to megadetector: MegaDetector 1.6 JSON that MegaDetector's own validator accepts, and the
whole-frame convention (blank -> no detection, else one frame-sized box; unreadable -> failure)."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest

from helpers import BURST, SAMPLES, trapcls
from helpers import validate_megadetector as validate
from trapcls.core.system.exceptions import DataError
from trapcls.results import ConvertConfig, run_convert
from trapcls.results.megadetector import DETECTION_CATEGORIES, UNKNOWN_MODEL, WHOLE_FRAME

MODEL = "test-model v3 sha256:0123456789ab"


def convert(csv_path: Path, out: Path, **options) -> tuple[dict, object]:
    summary = run_convert(ConvertConfig(predictions=csv_path, to="megadetector", out=out, **options))
    return json.loads(out.read_text(encoding="utf-8")), summary


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> tuple[Path, Path]:
    """(inbox, field CSV): the real `trapcls predict` over two camera folders of real frames and a truncated JPEG."""
    root = tmp_path_factory.mktemp("md")
    inbox = root / "inbox"
    shutil.copytree(BURST, inbox / "cam_reconyx")
    shutil.copytree(SAMPLES, inbox / "cam_samples", ignore=shutil.ignore_patterns("*.md"))
    whole = (SAMPLES / "impala-1.jpg").read_bytes()
    (inbox / "cam_samples" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    out = root / "pred.csv"
    trapcls("predict", inbox, "--out", out)
    return inbox, out


def write_field_csv(path: Path, classes: list[str], rows: list[list[str]], *, model: str | None = MODEL,
                    blank: bool = True) -> Path:
    """A hand-made field CSV: rows are [path, captured, *probabilities] or [path, captured, "error", text]."""
    header = ["path", "captured", "label", "probability", *(["is_blank"] if blank else []), *classes, "status",
              "error", *(["model"] if model else [])]
    lines = []
    for name, captured, *cells in rows:
        if cells[0] == "error":
            body = ["", "", *([""] if blank else []), *[""] * len(classes), "error", cells[1]]
        else:
            probs = [float(c) for c in cells]
            top = max(range(len(probs)), key=probs.__getitem__)
            flag = [str(probs[classes.index("blank")] >= 0.5).lower()] if blank else []
            body = [classes[top], str(probs[top]), *flag, *cells, "ok", ""]
        lines.append([name, captured, *body, *([model] if model else [])])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *lines])
    return path


CLASSES = ["fox", "blank", "human", "car"]  # blank in the middle: the ids skip its position


@pytest.fixture()
def hand_made(tmp_path) -> Path:
    return write_field_csv(tmp_path / "field.csv", CLASSES, [
        ["cam1/blank.jpg", "2024-05-01T06:30:00+02:00", "0.1", "0.7", "0.1", "0.1"],
        ["cam1/fox.jpg", "2024-05-01T06:31:00", "0.6", "0.2", "0.15", "0.05"],
        ["cam2/bad.jpg", "", "error", "truncated or corrupt image: image file is truncated"],
        ["cam2/car.jpg", "", "0.05", "0.1", "0.05", "0.8"],
        ["cam2/person.jpg", "2024-05-02T12:00:00", "0.1", "0.3", "0.55", "0.05"],
    ])


def test_real_predictions_convert_to_json_the_validator_accepts(predicted, tmp_path):
    inbox, field = predicted
    doc, summary = convert(field, tmp_path / "results.json")
    result = validate(tmp_path / "results.json", image_root=inbox)
    assert result["errors"] == [] and result["warnings"] == []
    rows = read_rows(field)
    assert summary.to == "megadetector" and summary.frames == len(rows) == len(doc["images"]) == 15
    assert any("1 frames were unreadable" in note for note in summary.notes)
    assert [im["file"] for im in doc["images"]] == list(rows)  # the CSV's relative paths, in its order
    assert all("/" in im["file"] and "\\" not in im["file"] for im in doc["images"])
    assert doc["info"]["format_version"] == "1.6"
    assert doc["info"]["classifier"] == next(iter(rows.values()))["model"]
    assert doc["detection_categories"] == DETECTION_CATEGORIES
    header = list(next(iter(rows.values())))
    classes = header[header.index("is_blank") + 1:header.index("status")]
    assert list(doc["classification_categories"].values()) == [c for c in classes if c != "blank"]
    assert set(doc["classification_category_descriptions"]) == set(doc["classification_categories"])


def test_no_absolute_path_of_this_machine_reaches_the_csv_or_the_json(predicted, tmp_path):
    inbox, field = predicted  # predicted from the inbox given by its absolute path
    where = str(inbox.parent)
    doc, _ = convert(field, tmp_path / "results.json")
    text = (tmp_path / "results.json").read_text(encoding="utf-8")
    assert where not in field.read_text(encoding="utf-8") and where not in text
    [failed] = [im for im in doc["images"] if im["detections"] is None]
    assert failed["file"] == "cam_samples/truncated.jpg"  # the file is named once, relative to the inbox
    assert failed["failure"] == read_rows(field)["cam_samples/truncated.jpg"]["error"]
    assert failed["failure"].startswith("truncated or corrupt image: image file is truncated")


def test_real_predictions_follow_the_whole_frame_convention(predicted, tmp_path):
    _, field = predicted
    doc, _ = convert(field, tmp_path / "results.json")
    rows = read_rows(field)
    names = doc["classification_categories"]
    for image in doc["images"]:
        row = rows[image["file"]]
        if row["status"] != "ok":
            assert image["detections"] is None and "truncated" in image["failure"]
            continue
        if row["captured"]:
            assert image["datetime"] == row["captured"].replace("-", ":").replace("T", " ")[:19]
        [detection] = image["detections"]  # no real frame here is blank (the burst is a civet, the samples animals)
        assert detection["bbox"] == list(WHOLE_FRAME) and detection["category"] == "1"
        assert detection["conf"] == pytest.approx(1 - float(row["blank"]), abs=1e-6)
        scores = [p for _, p in detection["classifications"]]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-4)
        top_id, top_p = detection["classifications"][0]
        assert names[top_id] == row["label"]
        assert top_p * detection["conf"] == pytest.approx(float(row["probability"]), abs=1e-5)


def test_hand_made_rows_give_the_exact_entries(hand_made, tmp_path):
    doc, summary = convert(hand_made, tmp_path / "results.json")
    assert validate(doc)["errors"] == []
    images = {im["file"]: im for im in doc["images"]}
    assert doc["classification_categories"] == {"0": "fox", "2": "human", "3": "car"}
    assert images["cam1/blank.jpg"] == {"file": "cam1/blank.jpg", "datetime": "2024:05:01 06:30:00", "detections": []}
    [fox] = images["cam1/fox.jpg"]["detections"]
    assert fox == {"category": "1", "conf": 0.8, "bbox": [0.0, 0.0, 1.0, 1.0],
                   "classifications": [["0", 0.75], ["2", 0.1875], ["3", 0.0625]]}
    assert images["cam2/person.jpg"]["detections"][0]["category"] == "2"
    assert images["cam2/car.jpg"]["detections"][0]["category"] == "3"
    assert "datetime" not in images["cam2/car.jpg"]  # no capture time, no field
    assert images["cam2/bad.jpg"] == {"file": "cam2/bad.jpg", "detections": None,
                                      "failure": "truncated or corrupt image: image file is truncated"}
    assert doc["info"]["classifier"] == MODEL
    assert doc["info"]["detector_metadata"]["typical_detection_threshold"] == 0.5
    assert "no detector" in doc["info"]["detector"] and doc["info"]["custom_metadata"]["trapcls_version"]
    assert summary.frames == 5


def test_the_blank_threshold_decides_which_frames_get_a_detection(hand_made, tmp_path):
    doc, _ = convert(hand_made, tmp_path / "results.json", blank_threshold=0.75)
    images = {im["file"]: im for im in doc["images"]}
    [detection] = images["cam1/blank.jpg"]["detections"]  # P(blank) 0.7 < 0.75: not blank any more
    assert detection["conf"] == pytest.approx(0.3)
    assert [i for i, _ in detection["classifications"]] == ["0", "2", "3"]  # a tie keeps the model's class order
    assert doc["info"]["detector_metadata"]["conservative_detection_threshold"] == pytest.approx(0.25)
    doc, _ = convert(hand_made, tmp_path / "strict.json", blank_threshold=0.1)
    assert sum(bool(im["detections"]) for im in doc["images"]) == 0  # every readable frame is now blank


def test_a_model_without_blank_class_or_model_column(tmp_path):
    field = write_field_csv(tmp_path / "old.csv", ["cat", "dog"], [["a/1.jpg", "", "0.3", "0.7"]],
                            model=None, blank=False)
    doc, summary = convert(field, tmp_path / "old.json")
    assert validate(doc)["errors"] == []
    assert doc["info"]["classifier"] == UNKNOWN_MODEL
    assert doc["classification_categories"] == {"0": "cat", "1": "dog"}
    [detection] = doc["images"][0]["detections"]
    assert detection["conf"] == 1.0 and isinstance(detection["conf"], float)
    assert detection["classifications"] == [["1", 0.7], ["0", 0.3]]
    assert any("no blank class" in n for n in summary.notes) and any("no model column" in n for n in summary.notes)


def test_taxa_give_the_descriptions_and_missing_classes_are_refused(hand_made, tmp_path):
    taxa = tmp_path / "taxa.csv"
    taxa.write_text("class,scientificName,observationType\nfox,Vulpes vulpes,animal\nhuman,Homo sapiens,human\n")
    doc, _ = convert(hand_made, tmp_path / "results.json", taxa=taxa)
    assert doc["classification_category_descriptions"] == {"0": "Vulpes vulpes", "2": "Homo sapiens", "3": "car"}
    taxa.write_text("class,scientificName\nhuman,Homo sapiens\n")
    with pytest.raises(DataError, match=r"has no row for the classes .*fox"):
        convert(hand_made, tmp_path / "other.json", taxa=taxa)
    assert not (tmp_path / "other.json").exists()


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d["images"][1]["detections"][0].pop("bbox"), "has a detection with no box"),
    (lambda d: d["info"].update(format_version=1.6), "format_version is not a string"),
    (lambda d: d["images"][1]["detections"][0].update(conf=1), "illegal confidence value"),
    (lambda d: d["images"][2].update(detections=[]), "failure value but a non-null detections array"),
    (lambda d: d["images"][1]["detections"][0]["classifications"].append(["1", 0.0]), "not in the category list"),
])
def test_the_validator_rejects_corrupted_copies_of_our_output(hand_made, tmp_path, corrupt, message):
    doc, _ = convert(hand_made, tmp_path / "results.json")
    assert validate(doc)["errors"] == []
    broken = copy.deepcopy(doc)
    corrupt(broken)
    [error] = validate(broken)["errors"]
    assert message in error


def test_bad_outputs_and_inputs_are_refused_with_one_line(hand_made, tmp_path):
    with pytest.raises(DataError, match="is a folder; give a JSON file path") as exc:
        convert(hand_made, tmp_path)
    assert "\n" not in str(exc.value)
    out = tmp_path / "results.json"
    out.write_text("keep me")
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        convert(hand_made, out)
    assert out.read_text() == "keep me"
    convert(hand_made, out, overwrite=True)
    with pytest.raises(DataError, match="is the predictions CSV itself"):
        convert(hand_made, hand_made, overwrite=True)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataError, match="Cannot write .*Choose a writable --out"):
        convert(hand_made, blocker / "results.json")
    submission = tmp_path / "submission.csv"
    submission.write_text("id,fox,blank\nIMG_1,0.2,0.8\n")
    with pytest.raises(DataError, match="is a submission CSV"):
        convert(submission, tmp_path / "s.json")


def test_the_cli_writes_the_json_and_refuses_to_overwrite(predicted, tmp_path):
    inbox, field = predicted
    out = tmp_path / "results.json"
    run = ["convert", field, "--to", "megadetector", "--out", out]
    proc = trapcls(*run)
    assert "15 frames" in proc.stdout and "unreadable" in proc.stderr
    assert validate(out, image_root=inbox)["errors"] == []
    again = trapcls(*run, rc=1)
    assert "pass --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
