"""Untrusted names and files around the prediction CSV (issue 26, items 1, 2, 5 and 12): a mistyped --out never
loses a byte, a file name that is not UTF-8 or holds a carriage return is classified and round-trips through
resume, merge and events, the formula guard is one-to-one, and a CSV saved by Excel or edited by hand is read
or refused with one line. Real frames, real files with real byte names, the real CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import FRAMES, csv_rows, trapcls

FRAME = sorted(FRAMES.glob("*.jpg"))[0]
LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # 'café.jpg' as a Latin-1 card writes it: not UTF-8


def _card(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(FRAME, folder / name)
    return folder


def _predict(folder: Path, out: Path, *flags: str, rc: int = 0):
    return trapcls("predict", folder, "--out", out, *flags, rc=rc)


# --- item 1: --out is checked before a byte changes -------------------------------------------------------------


def _victims(root: Path, tiny_run: Path) -> dict[str, Path]:
    root.mkdir()
    labels = root / "labels.csv"
    labels.write_bytes(b"path,label\na.jpg,bird\nb.jpg,blank")  # no final newline, as editors often leave it
    model = root / "model.onnx"
    shutil.copyfile(tiny_run / "bundle" / "model.onnx", model)
    photo = root / "photo.jpg"
    shutil.copyfile(FRAME, photo)
    submission = root / "submission.csv"  # a trapcls CSV of the other kind, torn at its end
    submission.write_bytes(b"id,a,b\nx,0.5,0.5\ny,0.2")
    return {"labels": labels, "model": model, "photo": photo, "submission": submission}


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_naming_a_file_that_is_not_this_kind_of_csv_is_refused_and_left_byte_identical(tmp_path, tiny_run,
                                                                                           overwrite):
    card = _card(tmp_path / "card", ["a.jpg"])
    victims = _victims(tmp_path / "victims", tiny_run)
    before = {name: path.read_bytes() for name, path in victims.items()}
    for name, path in victims.items():
        if overwrite and name == "submission":
            continue  # --overwrite may replace a trapcls CSV of another kind: that is what it is for
        proc = _predict(card, path, *(["--overwrite"] if overwrite else []), rc=1)
        assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert path.read_bytes() == before[name], f"{name} changed"


def test_all_csv_of_the_daemon_is_checked_before_a_byte_changes(tmp_path, tiny_run):
    victims = _victims(tmp_path / "victims", tiny_run)
    inbox = _card(tmp_path / "inbox" / "camA", ["a.jpg"]).parent
    before = victims["labels"].read_bytes()
    proc = trapcls("watch", inbox, "--bundle", tiny_run / "bundle", "--out", tmp_path / "out", "--all-csv",
                   victims["labels"], "--idle-exit", "1", rc=1, here=False)
    assert "not a trapcls predictions CSV" in proc.stderr and "Traceback" not in proc.stderr
    assert victims["labels"].read_bytes() == before


def test_a_torn_predictions_csv_is_still_repaired_and_resumed(tmp_path):
    card = _card(tmp_path / "card", ["a.jpg", "b.jpg"])
    out = tmp_path / "p.csv"
    _predict(card, out)
    whole = out.read_bytes()
    out.write_bytes(whole[:-7])  # a run killed inside its last line
    proc = _predict(card, out)
    assert "incomplete last line" in proc.stderr
    assert out.read_bytes() == whole


def test_a_header_torn_by_a_killed_run_is_rewritten(tmp_path):
    card = _card(tmp_path / "card", ["a.jpg"])
    out, fresh = tmp_path / "p.csv", tmp_path / "fresh.csv"
    _predict(card, fresh)
    out.write_bytes(fresh.read_bytes()[:20])  # killed while writing the header: its start, no newline
    _predict(card, out)
    assert out.read_bytes() == fresh.read_bytes()


# --- item 2 and 5: names that are not UTF-8, or hold a carriage return ----------------------------------------------


NAMES = ["a.jpg", LATIN1, "line\rbreak.jpg", "tab\tname.jpg", "back\\slash.jpg"]


def test_names_that_are_not_utf8_or_hold_control_characters_are_classified_and_written_losslessly(tmp_path):
    card = _card(tmp_path / "card", NAMES)
    (card / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    _predict(card, out)
    text = out.read_bytes().decode("utf-8")  # strictly UTF-8, whatever the names
    lines = text.split("\n")[1:-1]
    assert len(lines) == 6 and "\r" not in text  # one line per frame: no bare carriage return splits one
    rows = csv_rows(out)
    assert {"'caf\\xE9.jpg", "'line\\x0Dbreak.jpg", "'tab\\x09name.jpg", "back\\slash.jpg", "a.jpg",
            "'bad\\xFF.jpg"} == set(rows)
    assert rows["'caf\\xE9.jpg"]["status"] == "ok" and rows["'bad\\xFF.jpg"]["status"] == "error"
    with open(out, newline="", encoding="utf-8") as fh:  # what any CSV reader sees: whole rows
        assert {len(r) for r in csv.reader(fh)} == {len(text.split("\n")[0].split(","))}


@pytest.mark.slow
def test_such_names_round_trip_through_resume_shards_merge_and_events(tmp_path):
    card = _card(tmp_path / "card", NAMES)
    whole = tmp_path / "whole.csv"
    _predict(card, whole)
    written = whole.read_bytes()
    assert "5 files were already in" in _predict(card, whole).stderr  # resume knows every name as done
    assert whole.read_bytes() == written
    shards = [tmp_path / f"s{k}.csv" for k in (1, 2)]
    for k, shard in enumerate(shards, start=1):
        _predict(card, shard, "--shard", f"{k}/2")
    merged = tmp_path / "merged.csv"
    trapcls("merge", *shards, "--out", merged)
    assert merged.read_bytes() == whole.read_bytes()
    events = tmp_path / "events.csv"
    trapcls("events", whole, "--out", events)
    first = {row["first_file"] for row in csv_rows(events, key="event_id").values()}
    assert first == set(csv_rows(whole))
    trapcls("convert", whole, "--to", "megadetector", "--out", tmp_path / "md.json")
    files = {image["file"] for image in json.loads((tmp_path / "md.json").read_text(encoding="utf-8"))["images"]}
    assert files == {"a.jpg", "caf\\xe9.jpg", "line\rbreak.jpg", "tab\tname.jpg", "back\\slash.jpg"}


# --- item 12: the guard is one-to-one; Excel's BOM; duplicate class columns --------------------------------------


def test_the_formula_guard_keeps_names_that_differ_by_a_leading_quote_apart(tmp_path):
    card = _card(tmp_path / "card", ["=a.jpg", "'=a.jpg", "'b.jpg", "b.jpg"])
    out = tmp_path / "p.csv"
    _predict(card, out)
    assert set(csv_rows(out)) == {"'=a.jpg", "''=a.jpg", "''b.jpg", "b.jpg"}
    trapcls("events", out, "--out", tmp_path / "events.csv")  # read back: four frames, four events
    assert len(csv_rows(tmp_path / "events.csv", key="event_id")) == 4


def test_a_csv_saved_by_excel_with_a_byte_order_mark_is_read_and_resumed(tmp_path):
    card = _card(tmp_path / "card", ["a.jpg", "b.jpg"])
    out = tmp_path / "p.csv"
    _predict(card, out)
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    trapcls("events", out, "--out", tmp_path / "events.csv")
    trapcls("convert", out, "--to", "megadetector", "--out", tmp_path / "md.json")
    assert "2 files were already in" in _predict(card, out).stderr


def test_a_csv_whose_header_names_a_class_twice_is_refused(tmp_path):
    card = _card(tmp_path / "card", ["a.jpg"])
    out = tmp_path / "p.csv"
    _predict(card, out)
    header, *rest = out.read_text().split("\n")
    cells = header.split(",")
    first = cells.index("is_blank") + 1
    cells[first + 1] = cells[first]  # the second class renamed to the first, as a hand edit does
    out.write_text("\n".join([",".join(cells), *rest]))
    proc = trapcls("events", out, "--out", tmp_path / "e.csv", rc=1)
    assert f"{cells[first]} occurs more than once" in proc.stderr


def test_a_csv_whose_header_holds_two_blank_classes_is_refused(tmp_path):
    card = _card(tmp_path / "card", ["a.jpg"])
    out = tmp_path / "p.csv"
    _predict(card, out)
    header, *rest = out.read_text().split("\n")
    out.write_text("\n".join([header.replace(",bird,", ",BLANK,"), *rest]))  # a hand edit: two blank columns
    proc = trapcls("events", out, "--out", tmp_path / "e.csv", rc=1)
    assert "all mean blank" in proc.stderr
