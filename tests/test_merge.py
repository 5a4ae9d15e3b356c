"""merge: shard CSVs join into the bytes of one sorted run; bad sources are refused by name."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from trapcls.core.frames.discover import ImageFile
from trapcls.core.system.exceptions import DataError
from trapcls.predict.merge import MergeSummary, merge_csvs
from trapcls.predict.shard import select_shard

FIELD = ["path", "capture_time", "label", "is_blank", "p_blank", "p_deer", "status"]


def _rows(n: int) -> list[list[str]]:
    return [[f"cam{i % 3}/IMG_{i:04d}.JPG", "2024-05-01 03:12:00", "deer", "false", f"{i / 1000:.6f}",
             f"{1 - i / 1000:.6f}", "ok"] for i in range(n)]


def _csv(rows: list[list[str]], header: list[str] = FIELD) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def test_shards_merge_into_the_bytes_of_one_sorted_run(tmp_path):
    rows = _rows(60)
    files = [ImageFile(path=tmp_path / row[0], rel=row[0]) for row in rows]
    by_key = {row[0]: row for row in rows}
    shards = []
    for k in (1, 2, 3):
        chosen = [by_key[f.rel] for f in select_shard(files, k, 3)]
        shards.append(_write(tmp_path / f"shard{k}" / "out.csv", _csv(list(reversed(chosen)))))  # any order
    summary = merge_csvs(shards, tmp_path / "all.csv")
    assert summary == MergeSummary(rows=60, sources=3, out=tmp_path / "all.csv")
    assert (tmp_path / "all.csv").read_bytes() == _csv(sorted(rows)).encode("utf-8")


def test_the_submission_format_merges_too_and_a_header_only_shard_is_fine(tmp_path):
    header = ["id", "antelope_duiker", "bird", "blank"]
    a = _write(tmp_path / "a.csv", _csv([["ZJ0002", "0.1", "0.2", "0.7"], ["ZJ0000", "0.3", "0.3", "0.4"]], header))
    b = _write(tmp_path / "b.csv", _csv([], header))
    c = _write(tmp_path / "c.csv", _csv([["ZJ0001", "1e-05", "0.5", "0.49999"]], header))
    assert merge_csvs([a, b, c], tmp_path / "out" / "sub.csv").rows == 3
    assert (tmp_path / "out" / "sub.csv").read_text().splitlines() == [
        "id,antelope_duiker,bird,blank", "ZJ0000,0.3,0.3,0.4", "ZJ0001,1e-05,0.5,0.49999", "ZJ0002,0.1,0.2,0.7"]


def test_a_header_mismatch_names_the_file_and_shows_both_headers(tmp_path):
    a = _write(tmp_path / "a.csv", _csv(_rows(2)))
    other = FIELD[:5] + ["p_boar"] + FIELD[6:]
    b = _write(tmp_path / "b.csv", _csv([], other))
    with pytest.raises(DataError, match="b.csv has other columns than .*a.csv") as info:
        merge_csvs([a, b], tmp_path / "out.csv")
    assert "p_boar" in str(info.value) and "p_deer" in str(info.value)
    assert not (tmp_path / "out.csv").exists()


def test_a_long_header_is_shortened_in_the_message(tmp_path):
    wide = ["id"] + [f"species_{i:03d}" for i in range(200)]
    a = _write(tmp_path / "a.csv", _csv([], wide))
    b = _write(tmp_path / "b.csv", _csv([], wide[:-1]))
    with pytest.raises(DataError, match=r"\.\.\.") as info:
        merge_csvs([a, b], tmp_path / "out.csv")
    assert len(str(info.value)) < 500


def test_a_torn_last_line_is_refused_with_what_to_do(tmp_path):
    good = _write(tmp_path / "s1.csv", _csv(_rows(3)))
    text = _csv(_rows(5))
    torn = _write(tmp_path / "s2.csv", text[: len(text) - 7])
    with pytest.raises(DataError, match="s2.csv ends in an incomplete line.*[Rr]e-run that shard"):
        merge_csvs([good, torn], tmp_path / "out.csv")


def test_a_torn_quoted_cell_and_a_ragged_row_are_refused(tmp_path):
    quoted = _write(tmp_path / "q.csv", _csv([]) + '"cam/a,\n')  # ends in a newline inside an open quote
    with pytest.raises(DataError, match="q.csv is not a valid CSV"):
        merge_csvs([quoted], tmp_path / "out.csv")
    ragged = _write(tmp_path / "r.csv", _csv(_rows(2)) + "cam/x.jpg,2024\n")
    with pytest.raises(DataError, match="r.csv: row 4 has 2 cells"):
        merge_csvs([ragged], tmp_path / "out.csv")


def test_missing_and_empty_sources_are_refused_by_name(tmp_path):
    good = _write(tmp_path / "s1.csv", _csv(_rows(3)))
    with pytest.raises(DataError, match="Cannot read .*nope.csv"):
        merge_csvs([good, tmp_path / "nope.csv"], tmp_path / "out.csv")
    with pytest.raises(DataError, match="empty.csv is empty"):
        merge_csvs([good, _write(tmp_path / "empty.csv", "")], tmp_path / "out.csv")
    with pytest.raises(DataError, match="Nothing to merge"):
        merge_csvs([], tmp_path / "out.csv")


def test_duplicate_keys_are_refused_with_count_examples_and_files(tmp_path):
    rows = _rows(10)
    a = _write(tmp_path / "a.csv", _csv(rows[:6]))
    b = _write(tmp_path / "b.csv", _csv(rows[4:]))  # rows 4 and 5 in both
    with pytest.raises(DataError, match=r"2 keys occur more than once") as info:
        merge_csvs([a, b], tmp_path / "out.csv")
    message = str(info.value)
    assert rows[4][0] in message and rows[5][0] in message and "a.csv" in message and "b.csv" in message
    within = _write(tmp_path / "c.csv", _csv(rows[:3] + rows[:1]))
    with pytest.raises(DataError, match=r"1 key occurs more than once.*c.csv, .*c.csv"):
        merge_csvs([within], tmp_path / "out.csv")
    with pytest.raises(DataError, match="more than once"):
        merge_csvs([a, a], tmp_path / "out.csv")


def test_merging_a_file_into_itself_sorts_it_once_and_is_then_idempotent(tmp_path):
    rows = _rows(20)
    out = _write(tmp_path / "pred.csv", _csv(rows[10:] + rows[:10]))
    assert merge_csvs([out], out).rows == 20
    first = out.read_bytes()
    assert first == _csv(sorted(rows)).encode("utf-8")
    merge_csvs([out], out)
    assert out.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"]  # no temp file left behind


def test_quoted_cells_commas_and_neutralised_formulas_survive_byte_exact(tmp_path):
    tricky = [
        ["'=HYPERLINK(\"http://x\")/a.jpg", "", "deer", "false", "0.1", "0.9", "ok"],
        ["cam, north/b.jpg", "", "blank", "true", "0.9", "0.1", "ok"],
        ["cam/\"quoted\".jpg", "", "", "", "", "", "error: cannot identify image file, not a JPEG"],
        ["'+cmd|' /C calc'!A0.jpg", "", "deer", "false", "0.000001", "0.999999", "ok"],
        ["cam/line\nbreak.jpg", "", "deer", "false", "0.5", "0.5", "ok"],
        ["kamera/bärenfoto-ß.jpg", "", "deer", "false", "0.25", "0.75", "ok"],
    ]
    a = _write(tmp_path / "a.csv", _csv(tricky[:3]))
    b = _write(tmp_path / "b.csv", _csv(tricky[3:]))
    merge_csvs([a, b], tmp_path / "out.csv")
    data = (tmp_path / "out.csv").read_bytes()
    assert data == _csv(sorted(tricky)).encode("utf-8")
    assert b'"\'=HYPERLINK(""http://x"")/a.jpg"' in data and b'"cam, north/b.jpg"' in data
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh))[1:] == sorted(tricky)
