"""`trapcls events` and the model column: real frames with real EXIF, constructed timelines, the event rule.

The burst tests run `trapcls predict` on the committed RECONYX burst (10 real IR frames, EXIF
2021-04-11 20:43:09 to 20:43:15) and, where ../shared exists, on the full-size originals. The
timeline tests write field CSVs with the real writer (`Layout`) and check the grouping against
hand-worked answers.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from helpers import BURST, REPO, SAMPLES, SHARED_DATA, trapcls
from trapcls.core.model.blank import model_rule
from trapcls.core.model.bundle import load_bundle
from trapcls.core.model.probs import combine_frames
from trapcls.core.system.exceptions import OptionError
from trapcls.core.table.layout import Layout
from trapcls.core.table.read import read_field
from trapcls.core.table.row import Row
from trapcls.results import EventsConfig, run_events

SHARED_BURST = SHARED_DATA / "reconyx_burst"
CLASSES = ("blank", "deer", "fox")
MODEL = "test-model v3 sha256:0123456789ab"
T0 = datetime(2024, 5, 1, 3, 12, 0)



def field_csv(path: Path, frames: list[tuple[str, datetime | None, tuple[float, ...] | None]],
              classes: tuple[str, ...] = CLASSES, model: str = MODEL) -> Path:
    """A field CSV written by the real writer: (path, capture time, probabilities or None for unreadable)."""
    layout = Layout("field", classes, model_rule(None, model), model=model)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(layout.header())
        for rel, when, probs in frames:
            captured = when.isoformat() if when else ""
            row = (Row(rel, np.asarray(probs), captured=captured) if probs is not None
                   else Row(rel, None, captured=captured, error="truncated or corrupt image"))
            writer.writerow(layout.cells(row))
    return path


def events_of(pred: Path, tmp_path: Path, **options) -> list[dict[str, str]]:
    out = tmp_path / "events.csv"
    run_events(EventsConfig(predictions=pred, out=out, **options))
    with open(out, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


BLANK, DEER, FOX = (0.9, 0.06, 0.04), (0.02, 0.95, 0.03), (0.05, 0.15, 0.8)


# --- real frames --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def burst_csv(tmp_path_factory) -> Path:
    """predict over two camera folders: the RECONYX burst (plus one truncated copy of a frame) and the samples."""
    root = tmp_path_factory.mktemp("burst")
    inbox = root / "inbox"
    shutil.copytree(BURST, inbox / "heron")
    shutil.copytree(SAMPLES, inbox / "samples", ignore=shutil.ignore_patterns("*.md"))
    frame = sorted(BURST.glob("*.JPG"))[4].read_bytes()
    (inbox / "heron" / "cut-short.JPG").write_bytes(frame[: len(frame) // 2])  # EXIF intact, pixels cut
    trapcls("predict", inbox, "--out", root / "pred.csv")
    return root / "pred.csv"


def test_the_real_burst_is_exactly_one_event_and_a_cut_short_frame_counts_in_it(burst_csv, tmp_path):
    table = read_field(burst_csv)
    bad = next(f for f in table.rows if f.path == "heron/cut-short.JPG")
    assert not bad.ok and bad.captured == "2021-04-11T20:43:12"  # the EXIF header survived the truncation
    rows = events_of(burst_csv, tmp_path)
    heron = [r for r in rows if r["deployment"] == "heron"]
    assert len(heron) == 1
    event = heron[0]
    assert (event["start"], event["end"]) == ("2021-04-11T20:43:09", "2021-04-11T20:43:15")
    assert (event["frames"], event["unreadable"], event["untimed"]) == ("11", "1", "false")
    assert event["event_id"] == "heron/20210411T204309"
    assert event["model"] == load_bundle(REPO / "trapcls" / "default_bundle").model_id
    probs = np.array([float(event[c]) for c in table.classes])
    assert probs.sum() == pytest.approx(1.0) and event["label"] == table.classes[int(probs.argmax())]
    # The samples carry no EXIF time: each is an event of its own, flagged.
    samples = [r for r in rows if r["deployment"] == "samples"]
    assert len(samples) == 4 and all(r["untimed"] == "true" and r["frames"] == "1" for r in samples)


@pytest.mark.slow
def test_the_full_size_shared_burst_is_one_event_too(tmp_path):
    if not SHARED_BURST.is_dir():
        pytest.skip(f"{SHARED_BURST} is not available (project machines and CI only); the committed copy is tested")
    trapcls("predict", SHARED_BURST, "--out", tmp_path / "pred.csv")
    done = trapcls("events", tmp_path / "pred.csv", "--out", tmp_path / "events.csv")
    assert "10 frames -> 1 events" in done.stdout
    rows = list(csv.DictReader(open(tmp_path / "events.csv", encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["frames"] == "10" and rows[0]["deployment"] == "."


def test_predict_names_the_model_on_every_field_row_and_not_in_the_submission(burst_csv, tmp_path):
    model = load_bundle(REPO / "trapcls" / "default_bundle").model_id
    assert model.startswith("trapcls-default v2 sha256:") and len(model.rsplit(":", 1)[1]) == 12
    rows = list(csv.DictReader(open(burst_csv, encoding="utf-8")))
    assert {r["model"] for r in rows} == {model}
    trapcls("predict", BURST, "--format", "submission", "--out", tmp_path / "sub.csv")
    header = (tmp_path / "sub.csv").read_text().splitlines()[0].split(",")
    assert header == ["id", *load_bundle(REPO / "trapcls" / "default_bundle").classes]


@pytest.mark.slow
def test_two_models_never_share_a_csv(tiny_run, tmp_path):
    """Resuming with another model, or merging two models' shards, is refused (same classes or not)."""
    ours = tmp_path / "ours"
    shutil.copytree(tiny_run / "bundle", ours)
    other = tmp_path / "other"
    shutil.copytree(tiny_run / "bundle", other)
    manifest = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps({**manifest, "name": "other-model"}))
    out = tmp_path / "pred.csv"
    trapcls("predict", BURST, "--bundle", ours, "--out", out, "--shard", "1/2")
    trapcls("predict", BURST, "--bundle", other, "--out", tmp_path / "b.csv", "--shard", "2/2")
    assert load_bundle(ours).model_id.startswith("run sha256:")  # named after its run folder
    assert load_bundle(other).model_id.startswith("other-model sha256:")
    refused = trapcls("predict", BURST, "--bundle", other, "--out", out, "--shard", "1/2", rc=None)
    assert refused.returncode == 1 and "holds results of the model" in refused.stderr
    assert "Traceback" not in refused.stderr
    merged = trapcls("merge", out, tmp_path / "b.csv", "--out", tmp_path / "all.csv", rc=None)
    assert merged.returncode == 1 and "different models" in merged.stderr


# --- constructed timelines ----------------------------------------------------------------------

def test_gap_just_under_joins_and_just_over_splits(tmp_path):
    frames = [("cam/a.jpg", T0, DEER), ("cam/b.jpg", T0 + timedelta(seconds=120), DEER),
              ("cam/c.jpg", T0 + timedelta(seconds=241), DEER)]
    rows = events_of(field_csv(tmp_path / "p.csv", frames), tmp_path)
    assert [r["frames"] for r in rows] == ["2", "1"]  # 120 s is not more than --gap 120; 121 s is
    assert [r["start"] for r in rows] == [T0.isoformat(), (T0 + timedelta(seconds=241)).isoformat()]
    rows = events_of(field_csv(tmp_path / "p.csv", frames), tmp_path, gap=119)
    assert [r["frames"] for r in rows] == ["1", "1", "1"]


def test_identical_times_are_one_event_even_with_gap_zero(tmp_path):
    frames = [("cam/a.jpg", T0, BLANK), ("cam/b.jpg", T0, DEER), ("cam/c.jpg", T0 + timedelta(seconds=1), FOX)]
    rows = events_of(field_csv(tmp_path / "p.csv", frames), tmp_path, gap=0)
    assert [r["frames"] for r in rows] == ["2", "1"]
    assert rows[0]["label"] == "deer"


def test_names_running_against_time_and_row_order_do_not_matter(tmp_path):
    """File names say z..a while the clock says a..z; shuffled rows give the same events.csv."""
    frames = [(f"cam/{chr(ord('z') - i)}.jpg", T0 + timedelta(seconds=30 * i + (400 if i >= 5 else 0)), DEER)
              for i in range(10)]
    first = events_of(field_csv(tmp_path / "p.csv", frames), tmp_path)
    assert [(r["frames"], r["first_file"]) for r in first] == [("5", "cam/z.jpg"), ("5", "cam/u.jpg")]
    expected = (tmp_path / "events.csv").read_bytes()
    for seed in range(3):
        random.Random(seed).shuffle(frames)
        events_of(field_csv(tmp_path / "p.csv", frames), tmp_path)
        assert (tmp_path / "events.csv").read_bytes() == expected


def test_frames_without_time_are_their_own_flagged_events_never_merged_by_name(tmp_path):
    frames = [("cam/IMG_0001.JPG", None, DEER), ("cam/IMG_0002.JPG", None, DEER), ("cam/IMG_0003.JPG", T0, FOX)]
    rows = events_of(field_csv(tmp_path / "p.csv", frames), tmp_path)
    assert [(r["frames"], r["untimed"], r["start"]) for r in rows] == [
        ("1", "false", T0.isoformat()), ("1", "true", ""), ("1", "true", "")]
    assert [r["event_id"] for r in rows] == ["cam/20240501T031200", "cam/untimed:IMG_0001.JPG",
                                             "cam/untimed:IMG_0002.JPG"]


def test_two_cameras_overlapping_in_time_stay_apart_and_depth_chooses_the_deployment(tmp_path):
    frames = [("site1/camA/1.jpg", T0, DEER), ("site1/camB/1.jpg", T0 + timedelta(seconds=5), FOX),
              ("site1/camA/2.jpg", T0 + timedelta(seconds=10), DEER), ("root.jpg", T0, BLANK)]
    pred = field_csv(tmp_path / "p.csv", frames)
    rows = events_of(pred, tmp_path, deployment_depth=2)
    assert [(r["deployment"], r["frames"], r["label"]) for r in rows] == [
        (".", "1", "blank"), ("site1/camA", "2", "deer"), ("site1/camB", "1", "fox")]
    rows = events_of(pred, tmp_path)  # depth 1: site1 is one camera, and its three frames one event
    assert [(r["deployment"], r["frames"]) for r in rows] == [(".", "1"), ("site1", "3")]
    rows = events_of(pred, tmp_path, deployment_depth=0)
    assert [(r["deployment"], r["frames"]) for r in rows] == [(".", "4")]


def test_unreadable_frames_count_in_their_event_and_an_all_unreadable_event_has_no_label(tmp_path):
    frames = [("cam/a.jpg", T0, DEER), ("cam/b.jpg", T0 + timedelta(seconds=2), None),
              ("cam/c.jpg", T0 + timedelta(hours=1), None)]
    rows = events_of(field_csv(tmp_path / "p.csv", frames), tmp_path)
    assert [(r["frames"], r["unreadable"], r["label"]) for r in rows] == [("2", "1", "deer"), ("1", "1", "")]
    assert float(rows[0]["deer"]) == pytest.approx(0.95 / 0.98 * 0.98)  # the unreadable frame adds nothing
    assert rows[1]["blank"] == "" and rows[1]["is_blank"] == ""


# --- the event rule -----------------------------------------------------------------------------

def test_one_confident_animal_frame_makes_an_animal_event_and_blanks_stay_blank(tmp_path):
    heron = [("cam/%d.jpg" % i, T0 + timedelta(seconds=i), BLANK) for i in range(9)]
    heron.insert(4, ("cam/x.jpg", T0 + timedelta(seconds=4), DEER))
    blanks = [("cam/b%d.jpg" % i, T0 + timedelta(hours=1, seconds=i), BLANK) for i in range(10)]
    rows = events_of(field_csv(tmp_path / "p.csv", heron + blanks), tmp_path)
    animal, empty = rows
    assert (animal["label"], animal["is_blank"]) == ("deer", "false")
    assert float(animal["blank"]) == pytest.approx(0.02)
    assert (empty["label"], empty["is_blank"], float(empty["blank"])) == ("blank", "true", pytest.approx(0.9))
    for row in rows:
        assert sum(float(row[c]) for c in CLASSES) == pytest.approx(1.0)


def test_event_probs_rule_by_hand():
    probs = np.array([[0.9, 0.06, 0.04], [0.2, 0.2, 0.6]])
    # P(blank) = min = 0.2; deer and fox share 0.8 by summed evidence 0.26 : 0.64.
    assert combine_frames(probs, 0) == pytest.approx([0.2, 0.8 * 0.26 / 0.9, 0.8 * 0.64 / 0.9])
    assert combine_frames(np.array([[1.0, 0.0, 0.0]] * 3), 0) == pytest.approx([1.0, 0.0, 0.0])
    assert combine_frames(probs, None) == pytest.approx(probs.mean(axis=0))  # a model without a blank class


def test_blank_threshold_decides_is_blank_and_a_model_without_blank_has_no_flag(tmp_path):
    pred = field_csv(tmp_path / "p.csv", [("cam/a.jpg", T0, (0.6, 0.3, 0.1))])
    assert events_of(pred, tmp_path)[0]["is_blank"] == "true"
    assert events_of(pred, tmp_path, blank_threshold=0.7)[0]["is_blank"] == "false"
    pred = field_csv(tmp_path / "q.csv", [("cam/a.jpg", T0, (0.7, 0.3))], classes=("deer", "fox"))
    row = events_of(pred, tmp_path)[0]
    assert "is_blank" not in row and row["label"] == "deer"
    with pytest.raises(OptionError, match="no blank class"):
        events_of(pred, tmp_path, blank_threshold=0.5)


# --- bad input ----------------------------------------------------------------------------------

def _bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_1_never_a_traceback(tmp_path):
    good = field_csv(tmp_path / "good.csv", [("cam/a.jpg", T0, DEER)])
    header = ",".join(Layout("field", CLASSES, model_rule(None, MODEL), model=MODEL).header())
    cases = {
        "submission": (_bad(tmp_path, "sub.csv", "id,blank,deer,fox\nZJ1,0.1,0.2,0.7\n"), "trapcls predict"),
        "other CSV": (_bad(tmp_path, "other.csv", "filepath,label\na.jpg,deer\n"), "not a trapcls predictions"),
        "missing columns": (_bad(tmp_path, "cut.csv", "path,captured,label,probability,blank,deer,fox\n"),
                            "not a trapcls predictions"),
        "duplicate paths": (_bad(tmp_path, "dup.csv", good.read_text() + good.read_text().splitlines()[1] + "\n"),
                            "more than once"),
        "bad time": (_bad(tmp_path, "time.csv", header + "\ncam/a.jpg,yesterday,deer,0.9,false,0.1,0.9,0,ok,,m\n"),
                     "ISO 8601"),
        "not numbers": (_bad(tmp_path, "nan.csv", header + "\ncam/a.jpg,,deer,0.9,false,x,0.9,0,ok,,m\n"),
                        "not a number"),
        "missing file": (tmp_path / "nowhere.csv", "does not exist"),
    }
    for name, (path, message) in cases.items():
        proc = trapcls("events", path, "--out", tmp_path / "e.csv", rc=None)
        assert proc.returncode == 1, (name, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
    (tmp_path / "a-file").write_text("x")
    for out, message in ((tmp_path / "a-file" / "events.csv", "Cannot write"), (tmp_path, "is a folder")):
        proc = trapcls("events", good, "--out", out, rc=None)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    for flags in (["--gap", "-1"], ["--deployment-depth", "-1"], ["--blank-threshold", "2"]):
        proc = trapcls("events", good, "--out", tmp_path / "e.csv", *flags, rc=None)
        assert proc.returncode == 2 and f"Invalid value for '{flags[0]}'" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    proc = trapcls("events", good, rc=None)  # no --out: bad usage
    assert proc.returncode == 2 and "--out" in proc.stderr


@pytest.mark.slow
def test_convert_bad_input_is_one_line_and_exit_1_or_2_never_a_traceback(tmp_path):
    good = field_csv(tmp_path / "good.csv", [("cam/a.jpg", T0, DEER), ("cam/b.jpg", T0, BLANK)])
    taxa = _bad(tmp_path, "taxa.csv", "class,scientificName\nfox,Vulpes vulpes\n")  # deer is missing
    (tmp_path / "a-file").write_text("x")
    sub = _bad(tmp_path, "sub.csv", "id,blank,deer,fox\nZJ1,0.1,0.2,0.7\n")
    cases = [
        (["--to", "megadetector", "--out", tmp_path / "r.json", "--taxa", taxa], 1, "no row for the classes deer"),
        (["--to", "camtrap-dp", "--out", tmp_path / "dp", "--timezone", "+01:00", "--taxa", taxa], 1,
         "no row for the classes deer"),
        (["--to", "megadetector", "--out", tmp_path / "a-file" / "r.json"], 1, "Cannot write"),
        (["--to", "camtrap-dp", "--out", tmp_path / "a-file" / "dp", "--timezone", "+01:00"], 1, "Cannot write"),
        (["--to", "camtrap-dp", "--out", tmp_path / "dp"], 1, "--timezone"),
        (["--to", "camtrap-dp", "--out", tmp_path / "dp", "--timezone", "Mars/Base"], 2, "--timezone"),
        (["--to", "megadetector", "--out", tmp_path / "r.json", "--blank-threshold", "1.5"], 2, "--blank-threshold"),
        (["--to", "excel", "--out", tmp_path / "r.json"], 2, "excel"),
        (["--out", tmp_path / "r.json"], 2, "--to"),
    ]
    for args, code, message in cases:
        proc = trapcls("convert", good, *args, rc=None)
        assert proc.returncode == code and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
    for target in ("megadetector", "camtrap-dp"):
        proc = trapcls("convert", sub, "--to", target, "--out", tmp_path / "x", rc=None)
        assert proc.returncode == 1 and "trapcls predict" in proc.stderr and "Traceback" not in proc.stderr
