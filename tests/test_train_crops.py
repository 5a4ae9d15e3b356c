"""`trapcls train DATA --detections md.json`: the frames split first and then cropped, what is left out and
counted, the crop as the dataset yields it, the crop geometry in the checkpoint and the bundle, --from-bundle
across whole frames and crops, and bad detections through the CLI.

The frames are the committed demo frames (examples/demo/train); their MegaDetector files are written here by
hand, with boxes chosen around the animals (several on the frames with several animals).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from helpers import DEMO, trapcls
from trapcls.core.frames.crop import CropSpec, crop, preprocess_crops
from trapcls.core.frames.detections import Box, Entry, load_detections
from trapcls.core.frames.labels import Sample, load_samples
from trapcls.core.frames.preprocess import PreprocessSpec, load_image, preprocess, resize
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.checkpoint import load_checkpoint
from trapcls.training import TrainConfig
from trapcls.training.crops import CropCounts, crop_boxes, plan_crops
from trapcls.training.dataset import ImageDataset

DATA = DEMO / "train"
BLANK_FP, BLANK_A, BLANK_B = (f"blank/{name}-23d2-11e8-a6a3-ec086b02610b.jpg" for name in ("59b12f67", "59ec53fd",
                                                                                            "5a1e5306"))
# file -> boxes (category id, confidence, [x, y, w, h]); a frame not listed has one animal box at 0.9 around its
# middle. The file states typical_detection_threshold 0.3.
BOXES: dict[str, list[tuple[str, float, list[float]]]] = {
    "baboon/baboon-1.jpg": [("1", 0.95, [0.2, 0.2, 0.6, 0.7]), ("2", 0.6, [0.0, 0.0, 0.15, 0.4])],  # + a "person"
    "baboon/baboon-trailcam-2.JPG": [("1", 0.9, [0.45, 0.35, 0.2, 0.4]), ("1", 0.7, [0.65, 0.45, 0.2, 0.3])],
    "buffalo/buffalo-2.jpg": [("1", 0.9, [0.0, 0.3, 0.4, 0.6]), ("1", 0.8, [0.4, 0.3, 0.35, 0.45]),
                              ("1", 0.5, [0.85, 0.3, 0.15, 0.3])],
    "elephant/elephant-1.jpg": [("1", 0.9, [0.1, 0.3, 0.15, 0.6]), ("1", 0.95, [0.4, 0.0, 0.5, 1.0])],
    "elephant/elephant-2.jpg": [("1", 0.25, [0.0, 0.0, 1.0, 1.0])],  # below the file's 0.3, above 0.2
    "warthog/warthog-trailcam-2.JPG": [("1", 0.6, [0.1, 0.45, 0.2, 0.2]), ("1", 0.4, [0.5, 0.55, 0.1, 0.15])],
    "zebra/zebra-2.jpg": [("1", 0.1, [0.5, 0.0, 0.3, 0.8])],  # a low-confidence box only
    BLANK_FP: [("1", 0.5, [0.3, 0.5, 0.2, 0.2])],  # the detector's false positive
    BLANK_A: [],
    BLANK_B: [("1", 0.05, [0.1, 0.1, 0.1, 0.1])],
}
FAILED, MISSING = "buffalo/buffalo-1.jpg", "warthog/warthog-2.jpg"
# What the file above gives at its own threshold (0.3), counted by hand.
EXPECTED = CropCounts(frames=21, crops=19, blank_crops=1, blank_frames=2, no_box=2, no_entry=1, failed=1,
                      boxes_left_out=1)
TINY = {"arch": "test_efficientnet", "img_size": 64, "batch_size": 8, "workers": 0}


def frames() -> list[str]:
    return sorted(s.path.relative_to(DATA).as_posix() for s in load_samples(DATA))


def write_md(path: Path, **change) -> Path:
    """A MegaDetector 1.4 file for the demo frames (BOXES), with `change` applied to the whole document."""
    images = []
    for file in frames():
        if file == MISSING:
            continue
        if file == FAILED:
            images.append({"file": file, "failure": "Failure image access", "detections": None})
            continue
        boxes = BOXES.get(file, [("1", 0.9, [0.25, 0.2, 0.5, 0.6])])
        images.append({"file": file, "detections": [{"category": c, "conf": p, "bbox": b} for c, p, b in boxes]})
    doc = {"info": {"format_version": "1.4", "detector": "md_v5a.0.0",
                    "detector_metadata": {"typical_detection_threshold": 0.3}},
           "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}, "images": images, **change}
    path.write_text(json.dumps(doc))
    return path


def setup_run(config: TrainConfig):
    """A Trainer set up (data read, split, cropped, model and loaders built), not trained."""
    from trapcls.training import distributed
    from trapcls.training.trainer import Trainer

    with distributed.session() as dist:
        trainer = Trainer(config, dist)
        trainer.setup()
    return trainer


def boxes_by_frame(samples: list[Sample]) -> dict[Path, set[int | None]]:
    found = defaultdict(set)
    for s in samples:
        found[s.path].add(None if s.box is None else s.box.index)
    return found


# --- what a frame gives -----------------------------------------------------------------------------------


def test_counts_of_samples_and_left_out_frames_match_the_hand_count(tmp_path):
    samples = load_samples(DATA)
    plan = plan_crops(DATA, write_md(tmp_path / "md.json"), None, samples)
    expanded = plan.expand(samples, "all")
    assert plan.threshold == 0.3 and "typical_detection_threshold" in plan.threshold_from
    assert plan.counts["all"] == EXPECTED and len(expanded) == EXPECTED.samples == 22
    by_frame = boxes_by_frame(expanded)
    assert by_frame[DATA / "buffalo/buffalo-2.jpg"] == {0, 1, 2}  # every animal box at or above 0.3
    assert by_frame[DATA / "warthog/warthog-trailcam-2.JPG"] == {0, 1}
    assert by_frame[DATA / "baboon/baboon-1.jpg"] == {0}  # the person beside the baboon is left out
    assert by_frame[DATA / BLANK_FP] == {0} and by_frame[DATA / BLANK_A] == by_frame[DATA / BLANK_B] == {None}
    for gone in ("zebra/zebra-2.jpg", "elephant/elephant-2.jpg", FAILED, MISSING):
        assert DATA / gone not in by_frame
    assert {s.label for s in expanded if s.path == DATA / BLANK_FP} == {"blank"}
    summary = "\n".join(plan.lines())
    assert "20 of 21 frames have an entry" in summary
    assert "2 with no box at or above the threshold; 1 not in the detections file; 1 the detector failed on" in summary
    assert "1 person/vehicle boxes beside an animal box left out" in summary


def test_a_given_threshold_replaces_the_files_own(tmp_path):
    samples = load_samples(DATA)
    plan = plan_crops(DATA, write_md(tmp_path / "md.json"), 0.2, samples)
    plan.expand(samples, "all")
    counts = plan.counts["all"]
    assert (plan.threshold, plan.threshold_from) == (0.2, "--detection-threshold")
    assert (counts.no_box, counts.crops) == (EXPECTED.no_box - 1, EXPECTED.crops + 1)  # elephant-2's box at 0.25


def test_person_and_vehicle_boxes_are_crops_only_on_a_frame_without_an_animal_box():
    person, animal, weak = (Box(0, "person", 0.8, 0.1, 0.1, 0.2, 0.5), Box(1, "animal", 0.9, 0.5, 0.5, 0.3, 0.3),
                            Box(2, "vehicle", 0.1, 0.0, 0.0, 0.5, 0.5))
    assert crop_boxes(Entry("a.jpg", (person, animal, weak)), 0.2) == ((animal,), 1)
    assert crop_boxes(Entry("b.jpg", (person, weak)), 0.2) == ((person,), 0)  # a frame labelled human, say
    assert crop_boxes(Entry("c.jpg", (weak,)), 0.2) == ((), 0)


# --- split first, then crop -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("split", [{"val_fraction": 0.3}, {"folds": 3, "fold": 2}])
def test_the_split_is_made_on_frames_so_a_frames_boxes_stay_together(tmp_path, split):
    md = write_md(tmp_path / "md.json")
    trainer = setup_run(TrainConfig(data=DATA, out=tmp_path / "run", detections=md, **TINY, **split))
    train, val = boxes_by_frame(trainer.train_set), boxes_by_frame(trainer.val_set)
    assert train and val and not set(train) & set(val)
    every = boxes_by_frame(plan_crops(DATA, md, None, load_samples(DATA)).expand(load_samples(DATA), "all"))
    for path, boxes in {**train, **val}.items():
        assert boxes == every[path]  # all of a frame's boxes, in one part
    assert set(train) | set(val) == set(every)
    # split.csv holds the frames (left-out ones too), the part each frame's samples went to.
    rows = [line.split(",") for line in (tmp_path / "run" / "split.csv").read_text().splitlines()[1:]]
    parts = {Path(r[0]): r[-1] for r in rows}
    assert len(parts) == 21 and all(parts[p] == "train" for p in train) and all(parts[p] == "val" for p in val)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["crops"]["train"]["crops"] + config["crops"]["val"]["crops"] == EXPECTED.crops
    assert config["train_images"] == len(trainer.train_set) and config["crops"]["threshold"] == 0.3


@pytest.mark.slow
def test_a_resumed_run_crops_its_saved_split_the_same_way(tmp_path):
    from trapcls.workflow import run_train

    md = write_md(tmp_path / "md.json")
    config = TrainConfig(data=DATA, out=tmp_path / "run", detections=md, epochs=1, export="none", **TINY)
    first = setup_run(config)
    run_train(TrainConfig(**{**config.__dict__, "overwrite": True}))
    resumed = setup_run(TrainConfig(**{**config.__dict__, "resume": True}))
    assert resumed.state is not None  # it read last.pt and split.csv
    for part in ("train_set", "val_set"):
        assert [(s.path.resolve(), s.box) for s in getattr(resumed, part)] == \
            [(s.path.resolve(), s.box) for s in getattr(first, part)]


# --- the dataset ------------------------------------------------------------------------------------------


def test_a_crop_sample_is_exactly_what_predict_feeds_the_model_for_that_box(tmp_path):
    spec = PreprocessSpec(height=64, width=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    path = DATA / "buffalo/buffalo-2.jpg"
    box = load_detections(write_md(tmp_path / "md.json")).entries["buffalo/buffalo-2.jpg"].boxes[2]
    crop_sample, frame_sample = Sample(path, "buffalo", box=box), Sample(path, "buffalo")
    data = ImageDataset([crop_sample, frame_sample], {"buffalo": 0}, spec, augment=None)
    (x, y), (whole, _) = data[0], data[1]
    assert y == 0 and np.array_equal(x.numpy(), preprocess_crops(path, [box], spec)[0][0])
    assert np.array_equal(whole.numpy(), preprocess(path, spec))  # a whole frame: as before, untouched
    assert not np.array_equal(x.numpy(), whole.numpy())
    # Augmented, the crop (not the frame) is what the augmentation gets: with one that only resizes, the same input.
    seen = []

    def only_resize(img):
        seen.append(img)
        return resize(img, spec)

    augmented = ImageDataset([crop_sample], {"buffalo": 0}, spec, augment=only_resize)[0][0]
    assert np.array_equal(np.asarray(seen[0]), np.asarray(crop(load_image(path), box)))
    assert np.array_equal(augmented.numpy(), x.numpy())


# --- the checkpoint and the bundle ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory) -> Path:
    """A real crop run on the demo frames, exported: a tiny random-init model, 1 epoch."""
    from trapcls.workflow import run_train

    tmp = tmp_path_factory.mktemp("crops")
    out = tmp / "run"
    result = run_train(TrainConfig(data=DATA, out=out, detections=write_md(tmp / "md.json"), epochs=1,
                                   val_fraction=0.3, **TINY))
    (out / "lines.txt").write_text("\n".join(result.lines()))
    return out


@pytest.mark.slow
def test_a_crop_run_records_its_geometry_in_best_pt_and_the_bundle(crop_run):
    assert load_checkpoint(crop_run)["crop"] == CropSpec().to_dict()
    bundle = load_bundle(crop_run / "bundle")
    assert bundle.crop == CropSpec()
    assert json.loads((crop_run / "bundle" / "bundle.json").read_text())["crop"] == {
        "geometry": "square", "margin": 0.1, "pad": "black"}
    lines = (crop_run / "lines.txt").read_text()
    assert "frames left out: 2 with no box" in lines and "detection threshold 0.3" in lines


@pytest.mark.slow
def test_a_whole_frame_run_records_no_crop(tiny_run):
    assert "crop" not in load_checkpoint(tiny_run)
    assert load_bundle(tiny_run / "bundle").crop is None
    assert "crop" not in json.loads((tiny_run / "bundle" / "bundle.json").read_text())


@pytest.mark.slow
def test_from_bundle_across_whole_frames_and_crops_warns_with_the_reason(crop_run, tiny_run, tmp_path, caplog):
    from trapcls.workflow import run_train

    common = {"epochs": 1, "export": "none", "img_size": 64, "batch_size": 8, "workers": 0}
    with caplog.at_level(logging.WARNING, logger="trapcls.training.trainer"):
        run_train(TrainConfig(data=DATA, out=tmp_path / "a", from_bundle=crop_run / "bundle", **common))
    assert "was trained on detector crops; this run trains on whole frames" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trapcls.training.trainer"):
        run_train(TrainConfig(data=DATA, out=tmp_path / "b", from_bundle=tiny_run / "bundle",
                              detections=write_md(tmp_path / "md.json"), **common))
    assert "was trained on whole frames; this run trains on detector crops" in caplog.text
    assert load_checkpoint(tmp_path / "b")["crop"] == CropSpec().to_dict()  # the new model says what it takes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trapcls.training.trainer"):
        run_train(TrainConfig(data=DATA, out=tmp_path / "c", from_bundle=crop_run / "bundle",
                              detections=write_md(tmp_path / "md.json"), **common))
    assert "was trained on" not in caplog.text  # crops on a crop model: nothing to say


# --- bad input through the CLI ----------------------------------------------------------------------------


def _bad_box(doc):
    doc["images"][0]["detections"][0]["bbox"] = [0.5, 0.5, 0.7, 0.2]


def _bad_category(doc):
    doc["images"][0]["detections"][0]["category"] = "4"


def _elsewhere(doc):
    for image in doc["images"]:
        image["file"] = "cams/" + image["file"].replace(".", "-copy.")


def _video(doc):
    doc["images"].append({"file": "baboon/clip.mp4", "frames": [], "detections": []})


def _coco(doc):
    doc.clear()
    doc.update({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []})


@pytest.mark.parametrize(("damage", "message"), [
    (_coco, "is not a MegaDetector output file: it needs an 'images' list and 'detection_categories'"),
    (_bad_box, "detection 0 has bbox [0.5, 0.5, 0.7, 0.2], outside the frame"),
    (_bad_category, "detection 0 has category '4', which detection_categories (1, 2, 3) does not define"),
    (_elsewhere, "none of the 21 frames has an entry in"),
    (_video, "baboon/clip.mp4 is a video entry"),
])
def test_bad_detections_are_one_line_and_exit_1(tmp_path, damage, message):
    md = write_md(tmp_path / "md.json")
    doc = json.loads(md.read_text())
    damage(doc)
    md.write_text(json.dumps(doc))
    proc = trapcls("train", DATA, "--detections", md, "--out", tmp_path / "run", "--arch", "test_efficientnet",
                   "--no-export", rc=1)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [proc.stderr.splitlines()[-1]]


def test_a_threshold_that_leaves_one_class_is_refused(tmp_path):
    proc = trapcls("train", DATA, "--detections", write_md(tmp_path / "md.json"), "--detection-threshold", "1",
                   "--out", tmp_path / "run", "--arch", "test_efficientnet", "--no-export", rc=1)
    assert "error: md.json at detection threshold 1 leaves 2 training samples in 1 class(es)" in proc.stderr
    assert "a classifier needs at least 2" in proc.stderr


@pytest.mark.parametrize(("value", "with_detections", "message"), [
    ("1.5", True, "'--detection-threshold': must be between 0 and 1, got 1.5"),
    ("-0.1", True, "'--detection-threshold': must be between 0 and 1, got -0.1"),
    ("0.5", False, "'--detection-threshold': applies to detector boxes: give --detections too"),
])
def test_a_bad_detection_threshold_is_usage_exit_2(tmp_path, value, with_detections, message):
    detections = ["--detections", write_md(tmp_path / "md.json")] if with_detections else []
    proc = trapcls("train", DATA, "--detection-threshold", value, *detections, "--out", tmp_path / "run", "--arch",
                   "test_efficientnet", rc=2)
    assert message in proc.stderr
