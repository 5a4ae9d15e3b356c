"""discover: quoted globs, file lists, symlinks out of the inputs, special files, and shards."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from helpers import write_jpeg
from trapcls.core.frames.discover import ImageFile, discover_images
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.predict.shard import parse_shard, select_shard


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def _rels(files: list[ImageFile]) -> list[str]:
    return [f.rel for f in files]


def test_a_quoted_recursive_glob_is_expanded_without_a_shell(tmp_path, monkeypatch):
    _touch(tmp_path, "cams/c1/a.JPG", "cams/c1/deep/b.JPG", "cams/c2/c.jpg", "cams/.hid/d.JPG",
           "cams/c2/e.JPG.part", "cams/f.JPG", "other/g.JPG")
    found = discover_images([tmp_path / "cams" / "**" / "*.JPG"])
    # ** spans zero or more folders; case-sensitive like a shell; hidden and temp names never match
    assert _rels(found) == ["c1/a.JPG", "c1/deep/b.JPG", "f.JPG"]
    assert all(f.path.is_absolute() and f.path.exists() for f in found)
    monkeypatch.chdir(tmp_path)
    assert _rels(discover_images([Path("cams/c*/*.JPG")])) == ["c1/a.JPG"]
    # a path that exists is taken literally even when its name looks like a glob
    _touch(tmp_path, "raw[1]/h.jpg", "raw1/i.jpg")
    assert _rels(discover_images([Path("raw[1]")])) == ["h.jpg"]


def test_a_glob_matching_folders_walks_them_and_mixes_with_plain_inputs(tmp_path, monkeypatch):
    _touch(tmp_path, "cams/c1/a.jpg", "cams/c1/deep/b.png", "cams/c2/c.jpg", "cams/x/d.jpg", "other/e.jpg")
    monkeypatch.chdir(tmp_path)
    found = discover_images([Path("cams/c?"), Path("other")])
    assert _rels(found) == ["cams/c1/a.jpg", "cams/c1/deep/b.png", "cams/c2/c.jpg", "other/e.jpg"]


def test_a_glob_matching_nothing_is_an_error_naming_it(tmp_path):
    _touch(tmp_path, "cams/a.jpg", "cams/notes.txt")
    for pattern in ("cams/**/*.JPG", "cams/*.txt", "nowhere/*/x.jpg"):
        with pytest.raises(DataError, match=r"match '.*" + pattern.replace("*", r"\*")):
            discover_images([tmp_path / pattern])


def test_a_glob_does_not_hang_on_symlink_loops(tmp_path):
    _touch(tmp_path, "cam/a.jpg")
    for name in ("up", "up2", "self"):  # glob.glob("**") follows these and runs for minutes
        (tmp_path / "cam" / name).symlink_to(tmp_path if name != "self" else tmp_path / "cam")
    done = []
    worker = threading.Thread(target=lambda: done.append(discover_images([tmp_path / "**" / "*.jpg"])), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done and _rels(done[0]) == ["cam/a.jpg"]


def test_a_file_list_takes_comments_relative_entries_and_keeps_missing_ones(tmp_path):
    write_jpeg(tmp_path / "data" / "cam1" / "a.jpg")
    write_jpeg(tmp_path / "data" / "cam2" / "b.jpg")
    _touch(tmp_path, "data/cam3/c.jpg", "data/cam3/notes.txt")
    listing = tmp_path / "data" / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# frames to redo\n\n../cam1/a.jpg\n   \n"
        f"{tmp_path / 'data' / 'cam2' / 'b.jpg'}\r\n"
        "../cam1/gone.jpg\n"  # missing: still listed, so it gets an error row downstream
        "../cam3/notes.txt\n"  # explicitly listed: included even though it is not an image
        "  # an indented comment\n"
    )
    found = discover_images([], file_list=listing)
    assert _rels(found) == ["cam1/a.jpg", "cam1/gone.jpg", "cam2/b.jpg", "cam3/notes.txt"]
    assert not found[1].path.exists()
    # combined with a folder; overlapping entries are not doubled
    both = discover_images([tmp_path / "data" / "cam1"], file_list=listing)
    assert _rels(both) == _rels(found)


def test_a_missing_or_unreadable_file_list_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="file list .*nope.txt"):
        discover_images([], file_list=tmp_path / "nope.txt")
    binary = tmp_path / "list.txt"
    binary.write_bytes(b"\xff\xfe\x00a.jpg")
    with pytest.raises(DataError, match="file list .*list.txt"):
        discover_images([], file_list=binary)
    with pytest.raises(DataError, match="No input given"):
        discover_images([])
    blank = tmp_path / "blank.txt"
    blank.write_text("# nothing yet\n\n")
    with pytest.raises(DataError, match="file list .*blank.txt names no files"):
        discover_images([], file_list=blank)


def test_symlinks_out_of_the_inputs_are_skipped_and_counted_inside_ones_kept(tmp_path, caplog):
    _touch(tmp_path, "root/cam/a.jpg", "elsewhere/secret.jpg", "far/other.jpg")
    cam = tmp_path / "root" / "cam"
    (cam / "inside.jpg").symlink_to(cam / "a.jpg")
    (cam / "out1.jpg").symlink_to(tmp_path / "elsewhere" / "secret.jpg")
    (cam / "out2.jpg").symlink_to(Path("..") / ".." / "far" / "other.jpg")
    (cam / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    with caplog.at_level(logging.WARNING, logger="trapcls.core.frames.discover"):
        found = discover_images([tmp_path / "root"])
    assert _rels(found) == ["cam/a.jpg", "cam/inside.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "skipped 2 symlinks that point outside the inputs" in warnings[0]
    assert "broken or looping symlinks skipped: 1" in warnings[1] and "dangling.jpg" in warnings[1]
    # naming the target's folder (a named file's root is its folder) makes that link an inside one
    caplog.clear()
    found = discover_images([tmp_path / "root", tmp_path / "elsewhere" / "secret.jpg"])
    assert "root/cam/out1.jpg" in _rels(found) and "root/cam/out2.jpg" not in _rels(found)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_an_image_is_skipped_by_a_walk_but_kept_when_named(tmp_path):
    write_jpeg(tmp_path / "cam" / "a.jpg")
    fifo = tmp_path / "cam" / "x.jpg"
    os.mkfifo(fifo)
    done = []
    worker = threading.Thread(target=lambda: done.append(discover_images([tmp_path])), daemon=True)
    worker.start()
    worker.join(timeout=10)  # opening the FIFO would block forever
    assert done and _rels(done[0]) == ["cam/a.jpg"]
    assert _rels(discover_images([fifo])) == ["x.jpg"]  # named explicitly: the decoder gives it an error row


@pytest.mark.parametrize("text,expected", [("1/1", (1, 1)), ("3/8", (3, 8)), (" 8 / 8 ", (8, 8)), ("01/10", (1, 10))])
def test_parse_shard_accepts_k_of_n(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text,message", [
    ("0/4", r"count from 1 .*SLURM_ARRAY_TASK_ID\+1\)\)/4"),
    ("5/4", "between 1 and N=4"),
    ("1/0", "at least 1"),
    ("2", "expected K/N"),
    ("a/b", "expected K/N"),
    ("-1/4", "expected K/N"),
    ("1/4/2", "expected K/N"),
    ("", "expected K/N"),
])
def test_parse_shard_errors_name_the_flag_and_the_form(text, message):
    with pytest.raises(OptionError, match="shard") as info:
        parse_shard(text)
    assert info.match(message)


def _files(names: list[str]) -> list[ImageFile]:
    return [ImageFile(path=Path("/x") / name, rel=name) for name in names]


def test_shards_are_disjoint_cover_everything_keep_order_and_are_balanced():
    files = _files([f"cam{i % 7}/IMG_{i:04d}.JPG" for i in range(1000)])
    shards = [select_shard(files, k, 4) for k in range(1, 5)]
    chosen = [f.rel for shard in shards for f in shard]
    assert sorted(chosen) == sorted(f.rel for f in files) and len(set(chosen)) == len(files)
    for shard in shards:
        assert shard == [f for f in files if f in shard]  # input order kept
        assert 200 <= len(shard) <= 300  # 250 expected; a fixed hash makes this exact, not flaky
    assert select_shard(files, 1, 1) == files


def test_a_file_keeps_its_shard_when_files_are_added_and_across_processes():
    old = _files([f"a/{i}.jpg" for i in range(200)])
    new = _files([f"b/{i}.jpg" for i in range(300)]) + old
    for k in range(1, 6):
        before = {f.rel for f in select_shard(old, k, 5)}
        after = {f.rel for f in select_shard(new, k, 5)}
        assert before == after & {f.rel for f in old}
    # sha1 of the path, not hash(): a fixed answer that PYTHONHASHSEED cannot change
    assert [k for k in range(1, 4) if select_shard(_files(["cam/IMG_0001.JPG"]), k, 3)] == [_expected_shard()]


def _expected_shard() -> int:
    import hashlib

    return int.from_bytes(hashlib.sha1(b"cam/IMG_0001.JPG").digest()[:8], "big") % 3 + 1


def test_select_shard_takes_non_utf8_names_and_refuses_bad_k():
    odd = _files([os.fsdecode(b"cam/\xff\xfe.jpg"), "cam/b.jpg"])
    assert sorted(f.rel for k in (1, 2) for f in select_shard(odd, k, 2)) == sorted(f.rel for f in odd)
    with pytest.raises(OptionError, match="shard"):
        select_shard(odd, 0, 2)
